//! The admin listener: `/` (the dashboard), `/metrics` (Prometheus text),
//! `/status` (JSON: what is loaded and how every backend is doing),
//! `/healthz` (the process is up), `/readyz` (a generation is loaded and the
//! listeners are bound), and the actions `POST /backends/drain` and
//! `/backends/undrain` (only with `admin.token`).

mod actions;
mod dashboard;
mod scrape;
mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use status::status;

use crate::proxy::ProxyBody;
use crate::state::Shared;

/// Serves the admin endpoints on `listener` until `shutdown` turns true.
/// It speaks HTTP/1.1 (what scrapers and curl use). Each connection must
/// send its request head within the current
/// generation's `timeouts.client_header` (also how long an idle keep-alive
/// connection stays open), so a client that connects and stalls does not
/// hold a task and a descriptor forever.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors or a transient network error: back off
                // instead of spinning (as the proxy listeners do).
                metrics::counter!(crate::telemetry::names::ACCEPT_ERRORS).increment(1);
                tracing::warn!("admin accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let header_timeout = shared.generation.load().config.timeouts.client_header;
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, req).await) }
            });
            // HTTP/1.1 only: an auto (h1/h2) connection first waits for
            // enough bytes to tell the versions apart, with no timeout.
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                // Zero disables the timeout, as for the proxy listeners.
                .header_read_timeout((!header_timeout.is_zero()).then_some(header_timeout));
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

async fn answer(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    match req.uri().path() {
        "/" | "/index.html" if read_only(req.method()) => dashboard::page(shared),
        "/metrics" if read_only(req.method()) => {
            let generation = shared.generation.load();
            let body = scrape::render(&generation, shared.connections);
            with_type(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/status" if read_only(req.method()) => {
            let doc = status(shared);
            // Pretty for people with curl; `?compact` for the dashboard,
            // whose 1,000-backend document would otherwise be mostly
            // indentation (every sparkline number on its own line).
            let body = if req.uri().query() == Some("compact") {
                serde_json::to_string(&doc)
            } else {
                serde_json::to_string_pretty(&doc)
            };
            with_type(StatusCode::OK, "application/json", body.unwrap_or_default())
        }
        "/healthz" if read_only(req.method()) => {
            with_type(StatusCode::OK, "text/plain", "ok\n".to_owned())
        }
        "/readyz" if read_only(req.method()) => {
            if !shared.ready.load(Ordering::Acquire) {
                return with_type(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: listeners are not bound yet\n".to_owned(),
                );
            }
            // A replica that lacks a certificate it cannot fetch (the
            // storage is down) sends those clients elsewhere; one that has
            // every certificate stays ready through the outage.
            let waiting = shared.certs.waiting_on_storage();
            if waiting.is_empty() {
                with_type(StatusCode::OK, "text/plain", "ready\n".to_owned())
            } else {
                with_type(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!(
                        "not ready: the certificate storage is unreachable and there is no certificate yet for {}\n",
                        waiting.join(", ")
                    ),
                )
            }
        }
        "/backends/drain" => actions::drain(shared, req, true).await,
        "/backends/undrain" => actions::drain(shared, req, false).await,
        "/" | "/index.html" | "/metrics" | "/status" | "/healthz" | "/readyz" => {
            let mut resp = with_type(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "only GET and HEAD are allowed here\n".to_owned(),
            );
            resp.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            resp
        }
        _ => with_type(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try / (the dashboard), /metrics, /status, /healthz or /readyz\n".to_owned(),
        ),
    }
}

fn read_only(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    resp
}
