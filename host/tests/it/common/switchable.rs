//! A test backend whose answers can be switched to failures while it
//! runs, for the balancers' and breakers' tests (hashing, sticky cookies).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A backend that answers `backend NAME`, with 500 while `failing` is set.
pub struct Switchable {
    pub addr: SocketAddr,
    pub failing: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Switchable {
    pub async fn start(name: &'static str) -> Switchable {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let f = failing.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let f = f.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let failing = f.load(Ordering::SeqCst);
                        async move {
                            let mut resp =
                                Response::new(Full::new(Bytes::from(format!("backend {name}"))));
                            if failing {
                                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Switchable {
            addr,
            failing,
            task,
        }
    }
}

impl Drop for Switchable {
    fn drop(&mut self) {
        self.task.abort();
    }
}
