//! `bbproxy demo`: three small backends on 127.0.0.1 and the proxy in front
//! of them, so a fresh clone shows real traffic with one command.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Starts a demo backend on 127.0.0.1 (any free port) that answers every
/// request with its name and port. Returns its address.
pub async fn backend(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let body = format!(
                        "Hello from {name} (127.0.0.1:{}) — you asked for {} {}\n",
                        addr.port(),
                        req.method(),
                        req.uri().path()
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// The demo's config.json text for backends `addrs`, proxy on `listen`.
pub fn config_json(listen: SocketAddr, addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{{
  "listen": {{ "http": "{listen}" }},
  "admin": null,
  "domains": {{ "localhost": [{}] }},
  "default_domain": "localhost",
  "circuit_breaker_threshold": 3,
  "circuit_breaker_timeout": "10s"
}}"#,
        list.join(", ")
    )
}

/// The demo's config, parsed by the same code as a real config.json.
pub fn config(listen: SocketAddr, addrs: &[SocketAddr]) -> anyhow::Result<bbproxy_config::Config> {
    Ok(bbproxy_config::parse(
        &config_json(listen, addrs),
        Path::new("demo-config.json"),
    )?)
}
