//! A request body streams to the backend as it arrives: the backend can see
//! (and answer) its first chunk while the client still holds the rest.

use crate::common;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use common::Proxy;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads only the first body frame and answers with it.
async fn first_chunk_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut body = req.into_body();
                    let mut first = Vec::new();
                    while first.is_empty() {
                        match body.frame().await {
                            Some(Ok(frame)) => {
                                if let Ok(data) = frame.into_data() {
                                    first.extend_from_slice(&data);
                                }
                            }
                            _ => break,
                        }
                    }
                    let text = format!("first chunk: {}", String::from_utf8_lossy(&first));
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_reaches_the_backend_before_the_client_has_sent_it_all() {
    let (backend, _task) = first_chunk_backend().await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": ["{backend}"]}}}}"#
    ))
    .await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    // Head and the first chunk only; the rest (and the terminating chunk)
    // is held back until the answer has come.
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n",
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    let wanted = b"first chunk: hello";
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 1024];
        while !seen.windows(wanted.len()).any(|w| w == wanted) {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(
        read.is_ok(),
        "no answer while the client held the rest of its body: the proxy \
         waited for the whole upload ({text:?})"
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The client may still finish its body; the connection stays usable.
    conn.write_all(b"5\r\nworld\r\n0\r\n\r\n").await.unwrap();
}
