//! The request path: route → breaker admission → pick → forward → outcome.
//!
//! Every decision comes from the generation's plugins; the host enforces
//! their answers (unknown upstream, index out of range and traps are plugin
//! faults) and owns everything that touches sockets.

mod body;
mod connector;
mod forward;
mod headers;
mod limits;
pub mod observe;
mod request_body;
mod retry;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bbproxy_config::Config;
use http::{Request, Response, StatusCode, header};
use hyper::body::Incoming;

pub use body::{BodyError, ProxyBody, UpstreamIdle};
pub use connector::{ConnectionCounts, Counted, Counting, connection_counts};
pub use forward::UpstreamError;
pub use request_body::{BodyFault, RequestBody};
pub use retry::RetryBudget;

use crate::clock;
use crate::drain::Drain;
use crate::generation::{Generation, Slot, UpstreamSlot};
use crate::plugin::{
    Backend, BreakerState, BreakerWorld, Fault, Outcome, OutcomeKind, RequestView, Route, Tenant,
};
use crate::server::conn::ConnTimeoutOverride;
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

/// The proxy service shared by every connection.
#[derive(Debug)]
pub struct Proxy {
    generation: Arc<ArcSwap<Generation>>,
    drain: Arc<Drain>,
    observer: Arc<observe::Observer>,
}

impl Proxy {
    /// A proxy serving whatever generation `generation` holds at the time
    /// each request starts.
    /// Requests are recorded into `observer`.
    pub fn new(generation: Arc<ArcSwap<Generation>>, observer: Arc<observe::Observer>) -> Self {
        Self {
            generation,
            drain: Arc::default(),
            observer,
        }
    }

    /// The config of the current generation.
    pub fn config(&self) -> Arc<Config> {
        self.generation.load().config.clone()
    }

    /// Open connections and tunnels, and the shutdown phase.
    pub fn drain(&self) -> &Arc<Drain> {
        &self.drain
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
        // The host is normalised once, for routing and the access log; the
        // log's own copies are made only when it is on.
        let host = headers::request_host(req.uri(), req.headers());
        let access = self.observer.access_log().then(|| observe::AccessFields {
            method: req.method().clone(),
            host: host.clone(),
            path: req.uri().path().to_owned(),
        });
        // If this future is dropped before `respond` (the client went
        // away), dropping `started` still accounts for the request.
        let mut started = self.observer.start(generation.id, access);
        let mut resp = self
            .serve(&generation, req, host, client, scheme, &mut started.route)
            .await;
        // Only a domain that sets its own values: for the others the
        // connection's own (the top level's) apply, and the common case
        // allocates nothing.
        let top = &generation.config.timeouts;
        if let Some(t) = started.route.timeouts
            && (t.keep_alive != top.keep_alive || t.client_write != top.client_write)
        {
            resp.extensions_mut().insert(ConnTimeoutOverride {
                keep_alive: t.keep_alive,
                client_write: t.client_write,
            });
        }
        let finish = started.respond(resp.status().as_u16());
        resp.body_mut().on_finish(finish);
        Ok(resp)
    }

    /// Records an answer the listener gave before routing (an ACME
    /// HTTP-01 token, the redirect to HTTPS) like any other response:
    /// counted with no domain or backend, and access-logged.
    pub fn record_local(
        &self,
        req: &Request<Incoming>,
        mut resp: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        let access = self.observer.access_log().then(|| observe::AccessFields {
            method: req.method().clone(),
            host: headers::request_host(req.uri(), req.headers()),
            path: req.uri().path().to_owned(),
        });
        let started = self.observer.start(self.generation.load().id, access);
        let finish = started.respond(resp.status().as_u16());
        resp.body_mut().on_finish(finish);
        resp
    }

    async fn serve<'g>(
        &self,
        generation: &'g Generation,
        mut req: Request<Incoming>,
        host: String,
        client: SocketAddr,
        scheme: Scheme,
        route_record: &mut observe::Route<'g>,
    ) -> Response<ProxyBody> {
        let upgrade = upgrade::requested(&req);
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        if let Err(r) = limits::check_head(&parts, &generation.config.limits) {
            return reject(r);
        }
        let mut view = Some(RequestView {
            parts,
            host: host.clone(),
            client,
        });

        let tenant = generation.tenant_of(&host);
        let upstream = match route(generation, tenant, &mut view) {
            Ok(Route::Upstream(name)) => match generation.upstream_index(&name) {
                Some(i) => i,
                None => {
                    let fault = generation.router_for(tenant).primary.record(
                        Fault::BadAnswer(format!(
                            "route named upstream {name:?}, which is not a configured domain"
                        )),
                        tenant,
                    );
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
        route_record.domain = Some(&up.metrics);
        route_record.timeouts = Some(&up.settings.timeouts);
        let settings = &up.settings;
        // HTTP/2 toward backends has no Upgrade and no extended CONNECT
        // (hyper's client sends neither): say so instead of a backend error.
        if upgrade.is_some() && settings.protocol != bbproxy_config::UpstreamProtocol::Http1 {
            return text(
                StatusCode::NOT_IMPLEMENTED,
                "bbproxy: upgrades (WebSocket) need an \"http1\" domain; this one speaks HTTP/2 to its backends\n",
            );
        }
        if let Some(v) = &view
            && let Err(r) =
                limits::check_declared_length(&v.parts.headers, settings.limits.max_body_size)
        {
            return reject(r);
        }
        let slot = request_body::BodySlot::new(
            body,
            settings.timeouts.client_body,
            settings.limits.max_body_size,
        );
        up.retry_budget.deposit();

        let mut tried: Vec<usize> = Vec::new();
        let mut last_error: Option<UpstreamError> = None;
        let mut head: Option<forward::Head> = None;
        loop {
            if view.is_none()
                && let Some(h) = &head
            {
                view = Some(retry_view(h, &host, client));
            }
            let (index, probe) = match choose(generation, &mut view, upstream, up, &tried) {
                Ok(c) => c,
                // After a failed attempt the last failure is the answer.
                Err(resp) => {
                    return match last_error {
                        Some(e) => failure(&up.name, e),
                        None => resp.map_or_else(exhausted, |r| *r),
                    };
                }
            };
            let backend = &up.backends[index];
            route_record.backend = Some((&backend.metrics, &backend.state.authority));
            route_record.activity = Some(&backend.state.activity);
            let head = match (&mut head, view.take()) {
                (Some(h), _) => h,
                (None, Some(v)) => {
                    head.insert(forward::prepare(v, scheme.as_str(), upgrade.as_ref()))
                }
                (None, None) => {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "bbproxy: internal error\n",
                    );
                }
            };
            let Some(body) = slot.attempt() else {
                // An earlier attempt took the body; nothing more to try.
                return text(StatusCode::BAD_GATEWAY, "bbproxy: backend failed\n");
            };
            tried.push(index);
            // The last possible attempt takes the headers; one that may be
            // followed by a retry sends a copy.
            let last = tried.len() >= settings.retries.attempts as usize
                || tried.len() >= up.backends.len();
            let headers = if last {
                std::mem::take(&mut head.headers)
            } else {
                head.headers.clone()
            };
            let result = self
                .attempt(
                    generation, up, upstream, index, probe, head, headers, &slot, body,
                )
                .await;
            let e = match result {
                Ok(mut resp) => {
                    if let (Some(client_upgrade), Some(upgrade)) = (client_upgrade, &upgrade) {
                        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                            let backend = &backend.state.authority;
                            return switch(client_upgrade, upgrade, resp, &self.drain, backend);
                        }
                        if upgrade.extended_connect && resp.status().is_success() {
                            // A 2xx would tell the client its tunnel is open.
                            let why = format!(
                                "backend {} answered {} instead of 101 to an upgrade to {:?}",
                                backend.state.authority,
                                resp.status(),
                                upgrade.protocol
                            );
                            tracing::warn!(upstream = %up.name, "extended CONNECT failed: {why}");
                            return text(StatusCode::BAD_GATEWAY, format!("bbproxy: {why}\n"));
                        }
                    }
                    headers::strip_hop_by_hop(resp.headers_mut());
                    return resp;
                }
                Err(e) => e,
            };
            // Only when another backend could take it: a retry with nowhere
            // to go would spend the budget and log a retry that never happens.
            let may_retry = retry::retryable(&e, &head.method)
                && tried.len() < settings.retries.attempts as usize
                && !slot.taken()
                && has_untried(up, &tried);
            if matches!(e, UpstreamError::Overloaded { .. }) {
                metrics::counter!("bbproxy_backend_queue_rejected_total", "upstream" => up.name.clone())
                    .increment(1);
            }
            if may_retry && up.retry_budget.withdraw() {
                metrics::counter!("bbproxy_upstream_retries_total", "upstream" => up.name.clone())
                    .increment(1);
                tracing::info!(upstream = %up.name, backend = %backend.state.authority, "retrying on another backend: {e}");
                last_error = Some(e);
                continue;
            }
            return failure(&up.name, e);
        }
    }

    /// One attempt on backend `index`: connection slot, send, breaker
    /// outcome. The response body keeps the backend's in-flight count and
    /// slot until it ends.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        generation: &Generation,
        up: &UpstreamSlot,
        upstream: u32,
        index: usize,
        probe: bool,
        head: &forward::Head,
        headers: http::HeaderMap,
        slot: &request_body::BodySlot,
        body: RequestBody,
    ) -> Result<Response<ProxyBody>, UpstreamError> {
        let backend = &up.backends[index];
        let limits = &up.settings.limits;
        let permit = backend
            .state
            .limiter
            .acquire(
                limits.max_connections_per_backend,
                limits.backend_queue,
                limits.backend_queue_timeout,
            )
            .await
            .map_err(|refused| {
                if probe {
                    backend.state.breaker.release_probe();
                }
                UpstreamError::Overloaded {
                    backend: backend.state.authority.clone(),
                    refused,
                }
            })?;
        let guard = backend.state.start();
        let result = forward::send(
            &up.client,
            &backend.state,
            head,
            headers,
            slot,
            body,
            &up.settings.timeouts,
        )
        .await;

        let outcome = match &result {
            Ok((resp, latency)) => Some(Outcome {
                kind: OutcomeKind::Response,
                status: resp.status().as_u16(),
                latency_us: micros(*latency),
            }),
            Err(e) => e.outcome_kind().map(|kind| {
                match kind {
                    OutcomeKind::ConnectError => backend.metrics.connect_errors.increment(1),
                    OutcomeKind::Timeout => backend.metrics.timeouts.increment(1),
                    OutcomeKind::Response | OutcomeKind::Reset => {}
                }
                Outcome {
                    kind,
                    status: 0,
                    latency_us: micros(e.latency()),
                }
            }),
        };
        let mut breaker_fault = None;
        if let Some(outcome) = outcome {
            if outcome.kind == OutcomeKind::Response {
                backend.state.record_latency(outcome.latency_us);
            }
            // Read now, not when the request was sent: the breaker must see
            // that the backend opened meanwhile, or a late success would
            // close it before its open period ends.
            let before = backend.state.snapshot(
                index as u32,
                backend.weight,
                backend.state.breaker.state(clock::monotonic_ms()),
            );
            breaker_fault =
                report_outcome(generation, &up.name, upstream, backend, before, outcome).err();
        }
        if probe {
            backend.state.breaker.release_probe();
        }
        if let Some(fault) = breaker_fault {
            // Fail-closed: without a working breaker no answer goes out,
            // whatever the backend said (its body is dropped unread).
            return Err(UpstreamError::BreakerFault(fault));
        }
        let (resp, _) = result?;
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(
            parts,
            ProxyBody::upstream(body, (guard, permit), up.settings.timeouts.idle),
        ))
    }
}

/// Why a backend cannot take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Excluded {
    Drained,
    Open,
    ProbeBusy,
    Unhealthy,
}

impl Excluded {
    fn as_str(self) -> &'static str {
        match self {
            Excluded::Drained => "drained",
            Excluded::Open => "circuit open",
            Excluded::ProbeBusy => "half-open, probe slot taken",
            Excluded::Unhealthy => "fails its health check",
        }
    }
}

/// Whether `b` may take a request now (half-open: a probe slot is free).
fn eligibility(b: &crate::generation::BackendSlot, now: u64) -> Result<(), Excluded> {
    if b.state.is_drained() {
        return Err(Excluded::Drained);
    }
    if !b.state.health.is_healthy() {
        return Err(Excluded::Unhealthy);
    }
    match b.state.breaker.admission(now) {
        Admission::Closed | Admission::Probe => Ok(()),
        Admission::Refused if b.state.breaker.state(now) == BreakerState::Open => {
            Err(Excluded::Open)
        }
        Admission::Refused => Err(Excluded::ProbeBusy),
    }
}

/// Whether a backend this request has not tried could take it now.
fn has_untried(up: &UpstreamSlot, tried: &[usize]) -> bool {
    let now = clock::monotonic_ms();
    up.backends
        .iter()
        .enumerate()
        .any(|(i, b)| !tried.contains(&i) && eligibility(b, now).is_ok())
}

/// Picks a backend among those the breaker admits, the health checks
/// consider healthy, and this request has not tried yet. Half-open ones only
/// while a probe slot is free: picked, then the probe slot is taken for
/// real; if a concurrent request took it first, pick again without it.
///
/// `Err(None)`: every backend was already tried by this request, which is
/// nothing to log (the caller has the real failure). `Err(Some(r))`: the
/// answer to send, after one log line naming each excluded backend and why.
fn choose(
    generation: &Generation,
    view: &mut Option<RequestView>,
    upstream: u32,
    up: &UpstreamSlot,
    tried: &[usize],
) -> Result<(usize, bool), Option<Box<Response<ProxyBody>>>> {
    let now = clock::monotonic_ms();
    let mut excluded: Vec<(usize, Excluded)> = Vec::new();
    // Built once, and all the loop needs: a candidate's `id` is its backend
    // index, and a half-open one was admitted only as a probe.
    let mut stats: Vec<Backend> = Vec::with_capacity(up.backends.len());
    for (i, b) in up.backends.iter().enumerate() {
        if tried.contains(&i) {
            continue;
        }
        if let Err(why) = eligibility(b, now) {
            excluded.push((i, why));
            continue;
        }
        stats.push(
            b.state
                .snapshot(i as u32, b.weight, b.state.breaker.state(now)),
        );
    }
    loop {
        if stats.is_empty() {
            if excluded.is_empty() {
                return Err(None);
            }
            let why = excluded
                .iter()
                .map(|&(i, why)| format!("{} {}", up.backends[i].state.authority, why.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            tracing::warn!(upstream = %up.name, "no backend available: {why}");
            return Err(Some(Box::new(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("bbproxy: no backend of {} is available ({why})\n", up.name),
            ))));
        }
        let chosen = match pick(generation, view, upstream, &stats) {
            Ok(i) => i,
            Err(fault) => return Err(Some(Box::new(fault_response("balancer", &fault)))),
        };
        let index = stats[chosen].id as usize;
        let probe = stats[chosen].breaker == BreakerState::HalfOpen;
        if !probe || up.backends[index].state.breaker.try_take_probe() {
            return Ok((index, probe));
        }
        stats.remove(chosen);
        excluded.push((index, Excluded::ProbeBusy));
    }
}

/// The answer when nothing was tried and nothing is left, which only an
/// upstream without backends can reach.
fn exhausted() -> Response<ProxyBody> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        "bbproxy: no backend available\n",
    )
}

/// What the balancer sees on a retry: the upstream request as sent.
fn retry_view(head: &forward::Head, host: &str, client: SocketAddr) -> RequestView {
    let mut parts = Request::new(()).into_parts().0;
    parts.method = head.method.clone();
    parts.uri = http::Uri::from(head.path.clone());
    parts.headers = head.headers.clone();
    RequestView {
        parts,
        host: host.to_owned(),
        client,
    }
}

/// Passes a backend's 101 to the client (a 200 for an HTTP/2 extended
/// CONNECT) and joins the two connections.
fn switch(
    client: hyper::upgrade::OnUpgrade,
    upgrade: &upgrade::Requested,
    resp: Response<ProxyBody>,
    drain: &Arc<Drain>,
    backend: &str,
) -> Response<ProxyBody> {
    let mut resp = resp;
    let upstream = hyper::upgrade::on(&mut resp);
    let (mut parts, body) = resp.into_parts();
    upgrade.client_response(&mut parts);
    // The body holds the backend's in-flight count and connection slot:
    // the tunnel keeps them while it lasts.
    upgrade::tunnel(client, upstream, body, drain, backend.to_owned());
    Response::from_parts(parts, ProxyBody::empty())
}

/// The response for a request that failed for good.
fn failure(upstream: &str, e: UpstreamError) -> Response<ProxyBody> {
    tracing::warn!(upstream, "request failed: {e}");
    let mut resp = text(e.status(), format!("bbproxy: {e}\n"));
    if matches!(e, UpstreamError::Body(_)) {
        // The rest of the body is still on the wire: do not read it as the
        // next request.
        resp.headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    resp
}

fn reject(r: limits::Rejection) -> Response<ProxyBody> {
    metrics::counter!("bbproxy_requests_rejected_total", "status" => r.status.as_str().to_owned())
        .increment(1);
    let mut resp = text(r.status, format!("bbproxy: {}\n", r.reason));
    resp.headers_mut()
        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    resp
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Asks the router, falling back to the built-in router when the configured
/// one faults and its policy is fail-open.
fn route(
    generation: &Generation,
    tenant: Tenant,
    view: &mut Option<RequestView>,
) -> Result<Route, Fault> {
    let slot = generation.router_for(tenant);
    match slot.primary.route(tenant, view) {
        Ok(r) => Ok(r),
        Err(fault) => match &slot.fallback {
            Some(builtin) => builtin.route(tenant, view),
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
    let slot = generation.balancer_for(upstream);
    match slot.primary.pick(view, upstream, candidates) {
        Ok(i) => Ok(i),
        Err(fault) => match &slot.fallback {
            Some(builtin) => builtin.pick(view, upstream, candidates),
            None => Err(fault),
        },
    }
}

/// Gives the breaker the outcome and applies its verdict. A faulting breaker
/// leaves the backend's state as it was (there is no safe guess to make);
/// with a fail-open policy the built-in breaker decides instead, with
/// fail-closed the fault is returned and the request answered with 503.
fn report_outcome(
    generation: &Generation,
    upstream_name: &str,
    upstream: u32,
    backend: &crate::generation::BackendSlot,
    before: Backend,
    outcome: Outcome,
) -> Result<(), Fault> {
    let slot: &Slot<BreakerWorld> = generation.breaker_for(upstream);
    let verdict = slot
        .primary
        .on_outcome(upstream, before, outcome)
        .or_else(|fault| match &slot.fallback {
            Some(builtin) => builtin.on_outcome(upstream, before, outcome),
            None => Err(fault),
        });
    let verdict = verdict?;
    backend.state.record_result(&verdict, &outcome);
    if let Some(state) = backend.state.breaker.apply(&verdict, clock::monotonic_ms()) {
        tracing::info!(
            upstream = upstream_name,
            backend = %backend.state.authority,
            state = ?state,
            "circuit breaker {}",
            match state {
                BreakerState::Open => "opened",
                BreakerState::HalfOpen => "half-open",
                BreakerState::Closed => "closed",
            }
        );
    }
    Ok(())
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
