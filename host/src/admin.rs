//! The admin listener: `/metrics` (Prometheus text), `/status` (JSON: what
//! is loaded and how every backend is doing), `/healthz` (the process is up)
//! and `/readyz` (a generation is loaded and the listeners are bound).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::app::Shared;
use crate::generation::{Generation, Slot, Source};
use crate::plugin::World;
use crate::proxy::ProxyBody;
use crate::telemetry;

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
                metrics::counter!("bbproxy_accept_errors_total").increment(1);
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
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
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

fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<ProxyBody> {
    match req.uri().path() {
        "/metrics" => {
            let generation = shared.generation.load();
            let body = telemetry::render(&generation, shared.connections);
            with_type(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                body,
            )
        }
        "/status" => {
            let body = serde_json::to_string_pretty(&status(shared)).unwrap_or_default();
            with_type(StatusCode::OK, "application/json", body)
        }
        "/healthz" => with_type(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            if shared.ready.load(Ordering::Acquire) {
                with_type(StatusCode::OK, "text/plain", "ready\n".to_owned())
            } else {
                with_type(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    "not ready: listeners are not bound yet\n".to_owned(),
                )
            }
        }
        _ => with_type(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /status, /healthz or /readyz\n".to_owned(),
        ),
    }
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

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn plugin<W: World>(slot: &Slot<W>, loaded_at: SystemTime) -> Value {
    json!({
        "role": W::ROLE,
        "source": match &slot.source {
            Source::Builtin => "builtin".to_owned(),
            Source::File(p) => p.display().to_string(),
        },
        "name": slot.primary.name(),
        "sha256": slot.primary.sha256(),
        "loaded_at": unix(loaded_at),
        "faults": slot.primary.faults(),
        "fallback": slot.fallback.as_ref().map(|_| "builtin"),
    })
}

/// The `/status` document.
pub fn status(shared: &Shared) -> Value {
    let g: Arc<Generation> = shared.generation.load_full();
    let now = crate::clock::monotonic_ms();
    let domains: Vec<Value> = g
        .upstreams
        .iter()
        .map(|u| {
            let backends: Vec<Value> = u
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let s = b
                        .state
                        .snapshot(i as u32, b.weight, b.state.breaker.state(now));
                    json!({
                        "address": b.state.authority,
                        "weight": b.weight,
                        "breaker": telemetry::breaker_label(s.breaker),
                        "in_flight": s.in_flight,
                        "consecutive_failures": s.consecutive_failures,
                        "consecutive_successes": s.consecutive_successes,
                        "latency_ewma_us": s.latency_ewma_us,
                        "requests": s.requests,
                        "connections_open": shared.connections.open(&b.state.authority),
                    })
                })
                .collect();
            json!({ "name": u.name, "backends": backends })
        })
        .collect();
    let last_error = shared
        .last_reload_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": g.id,
        "config": shared.config_path.display().to_string(),
        "loaded_at": unix(g.loaded_at),
        "ready": shared.ready.load(Ordering::Acquire),
        "plugins": [
            plugin(&g.router, g.loaded_at),
            plugin(&g.balancer, g.loaded_at),
            plugin(&g.breaker, g.loaded_at),
        ],
        "domains": domains,
        "reload_attempts": shared.reload_attempts.load(Ordering::Relaxed),
        "last_reload_error": last_error.map(|e| json!({ "at": unix(e.at), "error": e.message })),
    })
}
