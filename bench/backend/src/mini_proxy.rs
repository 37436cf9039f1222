//! The least a proxy on hyper and tokio does per request: hyper's HTTP/1
//! server toward the client, and for each client connection one backend
//! connection of hyper's HTTP/1 client (its connection task spawned, as
//! hyper's own examples do), the request and the response passed through
//! as they are. No routing, no pool, no header edits, no plugins, no
//! metrics. Against bbproxy in the same run it says how much of bbproxy's
//! CPU per request is hyper and tokio and how much bbproxy's own work
//! (bench/README.md, issue 15). Not a proxy to run: a failed backend
//! connection closes the client's.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Serves one client connection through its own connection to `backend`.
pub async fn serve(client: TcpStream, backend: SocketAddr) -> anyhow::Result<()> {
    let upstream = TcpStream::connect(backend).await?;
    upstream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await?;
    tokio::spawn(conn);
    // HTTP/1 serves one request at a time: the sender is taken for the
    // exchange and put back once the response head is in.
    let slot = Arc::new(Mutex::new(Some(sender)));
    let svc = service_fn(move |req: Request<Incoming>| {
        let slot = slot.clone();
        async move {
            let taken = slot.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.take();
            let mut sender = taken.ok_or_else(|| anyhow::anyhow!("no backend connection"))?;
            sender.ready().await?;
            let resp: Response<Incoming> = sender.send_request(req).await?;
            *slot.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = Some(sender);
            Ok::<_, anyhow::Error>(resp)
        }
    });
    http1::Builder::new()
        .serve_connection(TokioIo::new(client), svc)
        .await?;
    Ok(())
}
