//! The origin server of `bench/run.sh`: answers `/64k` with 65536 bytes and
//! anything else with a 13-byte body, from memory, over HTTP/1.1 keep-alive.
//! One thread, so that pinned next to the load generator it costs one known
//! share of that core and every proxy row talks to the same thing.
//!
//! Usage: `bbproxy-bench-backend ADDR` (e.g. `127.0.0.1:0`); prints the bound
//! address on its first line of stdout, then serves until killed.

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SMALL: &[u8] = b"Hello, world\n";
const LARGE_LEN: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bbproxy-bench-backend ADDR (e.g. 127.0.0.1:0)"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(&addr))
}

async fn serve(addr: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    // The harness reads the port from here; flush so it does not wait on a
    // buffered pipe.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{bound}")?;
    out.flush()?;
    drop(out);

    let small = Bytes::from_static(SMALL);
    let large = Bytes::from(vec![b'x'; LARGE_LEN]);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: keep serving the
            // connections that exist rather than exit mid-benchmark.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let (small, large) = (small.clone(), large.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let body = if req.uri().path() == "/64k" {
                    large.clone()
                } else {
                    small.clone()
                };
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
