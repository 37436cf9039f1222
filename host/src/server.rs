//! Listeners: binding (with errors that say how to fix them), the accept
//! loop, HTTP/1.1 and HTTP/2 (h2c prior knowledge) connections, TLS, and
//! graceful drain on shutdown.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::front::Front;
use crate::proxy::{Proxy, Scheme};
use crate::tls::{Accepted, TlsTerminator};

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({setting}): {reason}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The config key it came from (`listen.http`).
    pub setting: &'static str,
    /// What went wrong and how to fix it.
    pub reason: String,
}

/// Binds `addr`, turning the common failures into advice.
pub async fn bind(addr: SocketAddr, setting: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|e| BindError {
        addr,
        setting,
        reason: match e.kind() {
            io::ErrorKind::AddrInUse => format!(
                "address already in use: another process is listening there; stop it or set another port in {setting}"
            ),
            io::ErrorKind::PermissionDenied => format!(
                "permission denied: ports below 1024 need privileges; set a port of 1024 or more in {setting}, \
                 or allow the binary with `sudo setcap cap_net_bind_service=+ep $(command -v bbproxy)`"
            ),
            io::ErrorKind::AddrNotAvailable => format!(
                "address not available: no interface of this machine has that IP; fix {setting}"
            ),
            _ => e.to_string(),
        },
    })
}

/// Serves `listener` until `shutdown` turns true, then stops accepting and
/// lets open connections finish within `grace`.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    scheme: Scheme,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    serve_front(
        listener,
        Arc::new(Front::new(proxy, scheme)),
        None,
        shutdown,
        grace,
    )
    .await;
}

/// Like [`serve`], with `front` answering requests and, with `tls`, a TLS
/// handshake (in the connection's own task) before HTTP.
pub async fn serve_front(
    listener: TcpListener,
    front: Arc<Front>,
    tls: Option<TlsTerminator>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a transient network error: back off
                // instead of spinning, and keep serving existing connections.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let front = front.clone();
        let service = service_fn(move |req| {
            let front = front.clone();
            async move { front.handle(req, peer).await }
        });
        let Some(tls) = &tls else {
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(client = %peer, "connection ended with error: {e}");
                }
            });
            continue;
        };
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let stream = match tls.accept(stream).await {
                Ok(Accepted::Http(stream)) => stream,
                Ok(Accepted::Challenge) => return,
                Err(e) => {
                    tracing::debug!(client = %peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(client = %peer, "connection ended with error: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period of {grace:?} passed with connections still open");
    }
}
