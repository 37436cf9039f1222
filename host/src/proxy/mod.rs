//! The request path: route → breaker admission → pick → forward → outcome.
//!
//! Every decision comes from the generation's plugins; the host enforces
//! their answers (unknown upstream, index out of range and traps are plugin
//! faults) and owns everything that touches sockets.

mod body;
mod forward;
mod headers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

pub use body::ProxyBody;
pub use forward::{Forwarder, UpstreamError};

use crate::clock;
use crate::generation::{Generation, Slot};
use crate::plugin::{Backend, BreakerWorld, Fault, Outcome, OutcomeKind, RequestView, Route};
use crate::upstream::Admission;

/// How a listener's clients reach the proxy, for `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Timeouts of the forwarding path.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting to a backend.
    pub connect: Duration,
    /// From sending the request to the backend's response headers.
    pub response_headers: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            response_headers: Duration::from_secs(60),
        }
    }
}

/// The proxy service shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    generation: Arc<ArcSwap<Generation>>,
    forwarder: Forwarder,
}

impl Proxy {
    /// A proxy serving whatever generation `generation` holds at the time
    /// each request starts.
    pub fn new(generation: Arc<ArcSwap<Generation>>, timeouts: Timeouts) -> Self {
        Self {
            generation,
            forwarder: Forwarder::new(timeouts),
        }
    }

    /// Handles one request. Never fails: every error becomes a response.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        scheme: Scheme,
    ) -> Result<Response<ProxyBody>, Infallible> {
        // Pinned for the whole request, even if a reload swaps it meanwhile.
        let generation = self.generation.load_full();
        Ok(self.serve(&generation, req, client, scheme).await)
    }

    async fn serve(
        &self,
        generation: &Generation,
        req: Request<Incoming>,
        client: SocketAddr,
        scheme: Scheme,
    ) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let host = headers::request_host(&parts.uri, &parts.headers);
        let mut view = Some(RequestView {
            parts,
            host,
            client,
        });

        let upstream = match route(generation, &mut view) {
            Ok(Route::Upstream(name)) => match generation.upstream_index(&name) {
                Some(i) => i,
                None => {
                    let fault = generation.router.primary.record(Fault::BadAnswer(format!(
                        "route named upstream {name:?}, which is not a configured domain"
                    )));
                    return fault_response("router", &fault);
                }
            },
            Ok(Route::Respond(r)) => {
                let status =
                    StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return text(status, r.body);
            }
            Err(fault) => return fault_response("router", &fault),
        };
        let Some(up) = generation.upstreams.get(upstream as usize) else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bbproxy: internal routing error\n",
            );
        };

        // Candidates the breaker admits; half-open ones only while a probe
        // slot is free. Picked, then the probe slot is taken for real: if a
        // concurrent request took it first, pick again without it.
        let now = clock::monotonic_ms();
        let mut candidates: Vec<(usize, Backend, bool)> = up
            .backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| {
                let admission = b.state.breaker.admission(now);
                (admission != Admission::Refused).then(|| {
                    let stats = b
                        .state
                        .snapshot(i as u32, b.weight, b.state.breaker.state(now));
                    (i, stats, admission == Admission::Probe)
                })
            })
            .collect();
        let (index, probe) = loop {
            if candidates.is_empty() {
                tracing::warn!(upstream = %up.name, "no backend available: every breaker is open");
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "bbproxy: no backend of {} is available (circuit open)\n",
                        up.name
                    ),
                );
            }
            let stats: Vec<Backend> = candidates.iter().map(|c| c.1).collect();
            let chosen = match pick(generation, &mut view, upstream, &stats) {
                Ok(i) => i,
                Err(fault) => return fault_response("balancer", &fault),
            };
            let (index, _, probe) = candidates[chosen];
            if !probe || up.backends[index].state.breaker.try_take_probe() {
                break (index, probe);
            }
            candidates.remove(chosen);
        };

        let backend = &up.backends[index];
        let Some(view) = view else {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bbproxy: internal error\n",
            );
        };
        let before = backend.state.snapshot(
            index as u32,
            backend.weight,
            backend.state.breaker.state(now),
        );
        let guard = backend.state.start();
        let result = self
            .forwarder
            .send(
                &backend.state,
                backend.pool.as_ref(),
                view,
                body,
                scheme.as_str(),
            )
            .await;

        let outcome = match &result {
            Ok((resp, latency)) => Outcome {
                kind: OutcomeKind::Response,
                status: resp.status().as_u16(),
                latency_us: micros(*latency),
            },
            Err(e) => Outcome {
                kind: e.outcome_kind(),
                status: 0,
                latency_us: micros(e.latency()),
            },
        };
        if outcome.kind == OutcomeKind::Response {
            backend.state.record_latency(outcome.latency_us);
        }
        report_outcome(generation, &up.name, upstream, backend, before, outcome);
        if probe {
            backend.state.breaker.release_probe();
        }

        match result {
            Ok((resp, _)) => {
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(
                    parts,
                    ProxyBody::Upstream {
                        body,
                        guard: Some(guard),
                    },
                )
            }
            Err(e) => {
                tracing::warn!(upstream = %up.name, backend = %backend.state.authority, "backend failed: {e}");
                text(e.status(), format!("bbproxy: {e}\n"))
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Asks the router, falling back to the built-in router when the configured
/// one faults and its policy is fail-open.
fn route(generation: &Generation, view: &mut Option<RequestView>) -> Result<Route, Fault> {
    let slot = &generation.router;
    match slot.primary.route(view) {
        Ok(r) => Ok(r),
        Err(fault) => match &slot.fallback {
            Some(builtin) => builtin.route(view),
            None => Err(fault),
        },
    }
}

fn pick(
    generation: &Generation,
    view: &mut Option<RequestView>,
    upstream: u32,
    candidates: &[Backend],
) -> Result<usize, Fault> {
    let slot = &generation.balancer;
    match slot.primary.pick(view, upstream, candidates) {
        Ok(i) => Ok(i),
        Err(fault) => match &slot.fallback {
            Some(builtin) => builtin.pick(view, upstream, candidates),
            None => Err(fault),
        },
    }
}

/// Gives the breaker the outcome and applies its verdict. A faulting breaker
/// leaves the backend's state as it was (there is no safe guess to make).
fn report_outcome(
    generation: &Generation,
    upstream_name: &str,
    upstream: u32,
    backend: &crate::generation::BackendSlot,
    before: Backend,
    outcome: Outcome,
) {
    let slot: &Slot<BreakerWorld> = &generation.breaker;
    let verdict = slot
        .primary
        .on_outcome(upstream, before, outcome)
        .or_else(|fault| match &slot.fallback {
            Some(builtin) => builtin.on_outcome(upstream, before, outcome),
            None => Err(fault),
        });
    let Ok(verdict) = verdict else { return };
    backend.state.record_result(verdict.failure);
    if let Some(state) = backend.state.breaker.apply(&verdict, clock::monotonic_ms()) {
        tracing::info!(
            upstream = upstream_name,
            backend = %backend.state.authority,
            state = ?state,
            "circuit breaker {}",
            match state {
                crate::plugin::BreakerState::Open => "opened",
                crate::plugin::BreakerState::HalfOpen => "half-open",
                crate::plugin::BreakerState::Closed => "closed",
            }
        );
    }
}

fn fault_response(role: &str, fault: &Fault) -> Response<ProxyBody> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("bbproxy: {role} plugin fault ({})\n", fault.kind()),
    )
}

/// A short plain-text response written by the proxy.
pub fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
