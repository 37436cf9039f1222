//! The request path, in phases (docs/request-path.md draws them):
//!
//! 1. admit: the head's limits ([`limits`]);
//! 2. route: the router plugin names the upstream ([`decide`]);
//! 3. select: eligible backends, the balancer's pick ([`select`]);
//! 4. attempt: the exchange with one backend ([`attempt`], over
//!    `upstream::exchange`);
//! 5. outcome: the breaker plugin's verdict on it ([`decide`]);
//!
//! with select → attempt → outcome repeated while a failure allows a retry.
//! The request's filter chain (`crate::filter`, picked with the route)
//! edits the upstream head once, before the first attempt ([`forward`]),
//! and the backend's response on its way to the client.
//! One [`RequestCtx`](ctx::RequestCtx) carries the request's state through
//! the phases; every way a request ends without a backend's answer is one
//! [`ProxyError`], turned into the client's answer in one place.
//!
//! Every decision comes from the generation's plugins; the host enforces
//! their answers (unknown upstream, index out of range and traps are plugin
//! faults) and owns everything that touches sockets.
#![allow(
    clippy::disallowed_methods,
    reason = "std Instant until the request path moves to tokio::time::Instant (issue 15)"
)]

mod attempt;
mod body;
mod ctx;
mod decide;
pub mod error;
mod forward;
mod head_checks;
mod headers;
pub mod observe;
mod select;
mod sticky;
mod upgrade;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bbproxy_config::{Config, UpstreamProtocol};
use http::{Request, Response, StatusCode};

pub use body::{BodyError, ProxyBody, UpstreamIdle};
pub use error::{ProxyError, text};

use crate::conn_override::ConnTimeoutOverride;
use crate::drain::Drain;
use crate::filter::{ResponseCtx, Stop};
use crate::generation::Generation;
use crate::plugin::{FilterAnswer, RequestView};
use crate::splice::SpliceTarget;
use crate::telemetry::otel::{self, ServerRequest};
use crate::upstream::request_body::{BodySlot, ClientBody, RequestBody};
use ctx::{RequestCtx, Routed};
use error::{ErrorKind, Role};
use select::Picked;

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

/// Where a connection's requests come from: its address, and that
/// address's `X-Forwarded-For` text, made once for the connection.
#[derive(Debug, Clone)]
pub struct Client {
    /// The peer's address.
    pub addr: SocketAddr,
    forwarded_for: Option<http::HeaderValue>,
}

impl Client {
    /// The client at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            forwarded_for: headers::forwarded_for(addr.ip()),
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
    /// With `splice` (the client's plain HTTP/1 connection), a backend's
    /// large body may go to the client through a pipe (`crate::splice`).
    pub async fn handle(
        &self,
        req: Box<Request<ClientBody>>,
        client: Client,
        scheme: Scheme,
        splice: Option<SpliceTarget>,
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
        if let Some(t) = self.observer.tracing() {
            started.route.trace = Some(Box::new(t.server_span(ServerRequest {
                method: req.method(),
                path: req.uri().path(),
                scheme: scheme.as_str(),
                host: &host,
                client: client.addr,
                version: otel::protocol_version(req.version()),
                headers: req.headers(),
            })));
        }
        let start = started.at();
        // The context ends with this block, dropped where it is: given to
        // `drop` it was copied first (584 bytes, once a request).
        let mut resp = {
            let mut ctx =
                RequestCtx::new(&generation, host, client, scheme, start, &mut started.route);
            ctx.splice = splice;
            // Every failure becomes its answer here. The context stays this
            // future's local, lent to the phases: moved into a callee's
            // async fn it was kept twice more in the request's boxed future
            // (the argument and its binding, 528 bytes each).
            match self.run(&mut ctx, req).await {
                Ok(resp) => resp,
                Err(e) => e.into_response(ctx.upstream_name()),
            }
        };
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
        req: &Request<ClientBody>,
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

    async fn run(
        &self,
        ctx: &mut RequestCtx<'_, '_>,
        mut req: Box<Request<ClientBody>>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // Admit.
        ctx.upgrade = upgrade::requested(&req);
        let client_upgrade = ctx.upgrade.is_some().then(|| hyper::upgrade::on(&mut *req));
        let (parts, body) = (*req).into_parts();
        head_checks::check_head(&parts, &ctx.generation.config.limits)?;
        // Boxed: each plugin call moves the view into its store and back,
        // which is a pointer's copy instead of the whole head's. The host
        // is lent to it, not copied: `forward` takes it back with the head.
        ctx.view = Some(Box::new(RequestView {
            parts,
            host: std::mem::take(&mut ctx.host),
            client: ctx.client,
        }));

        // Route.
        let since = ctx.record.decision_start();
        let decision = decide::route(ctx.generation, &mut ctx.view);
        ctx.record.decision("router", since);
        let generation = ctx.generation;
        let slot_of = |i: u32| {
            generation.upstreams.get(i as usize).ok_or_else(|| {
                ProxyError::from(ErrorKind::Internal(
                    "the router's upstream index is out of range",
                ))
            })
        };
        let routed = match decision? {
            decide::Decision::Upstream(i, tenant) => {
                Routed::upstream(i, slot_of(i)?, generation.filters_for(tenant), tenant)
            }
            decide::Decision::Route(target, tenant) => {
                Routed::route(target, slot_of(target.upstream)?, tenant)
            }
            decide::Decision::Respond(resp) => return Ok(resp),
        };
        let slot = routed.slot;
        ctx.routed = Some(routed);
        ctx.record.domain = Some(&slot.metrics);
        ctx.record.timeouts = Some(&routed.settings.timeouts);
        let settings = routed.settings;
        // HTTP/2 toward backends has no Upgrade and no extended CONNECT
        // (hyper's client sends neither): say so instead of a backend error.
        if ctx.upgrade.is_some() && settings.protocol != UpstreamProtocol::Http1 {
            return Err(ErrorKind::UpgradeUnsupported.into());
        }
        if let Some(v) = &mut ctx.view {
            head_checks::check_declared_length(&v.parts.headers, settings.limits.max_body_size)?;
            let client = ctx.forwarded_for.as_ref();
            forward::prepare(v, ctx.scheme.as_str(), client, ctx.upgrade.as_ref(), routed);
        }
        // Filters: before the pick, so an answer (a failed access check)
        // costs no backend anything and the balancer sees their edits.
        if !routed.filters.is_empty() {
            let since = ctx.record.decision_start();
            let stopped = routed.filters.request(&mut ctx.view, routed.tenant);
            ctx.record.decision("filter", since);
            match stopped {
                Ok(()) => {}
                Err(Stop::Answer(a)) => return Ok(filter_answer(a)),
                Err(Stop::Fault(fault)) => return Err(ProxyError::plugin(Role::Filter, fault)),
            }
        }
        let body = BodySlot::new(
            body,
            settings.timeouts.client_body,
            settings.limits.max_body_size,
        );
        routed.retry_budget.deposit();
        sticky::note_request(ctx, routed);

        let resp = self.forward(ctx, routed, &body).await?;
        self.answer(ctx, client_upgrade, routed, resp)
    }

    /// What the client gets of a backend's response: a protocol switch's
    /// 101 joins the two connections; any other response loses its
    /// hop-by-hop headers and goes through the request's filters.
    fn answer(
        &self,
        ctx: &mut RequestCtx<'_, '_>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
        routed: Routed<'_>,
        mut resp: Response<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if let (Some(client_upgrade), Some(requested)) = (client_upgrade, &ctx.upgrade) {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                let backend = ctx.record.backend.map_or("", |(_, addr)| addr);
                return Ok(switch(
                    client_upgrade,
                    requested,
                    resp,
                    &self.drain,
                    backend,
                ));
            }
            if requested.extended_connect && resp.status().is_success() {
                // A 2xx would tell the client its tunnel is open.
                let backend = ctx.record.backend.map_or("", |(_, addr)| addr);
                return Err(ErrorKind::UpgradeRefused(format!(
                    "backend {backend} answered {} instead of 101 to an upgrade to {:?}",
                    resp.status(),
                    requested.protocol
                ))
                .into());
            }
        }
        headers::strip_hop_by_hop(resp.headers_mut());
        sticky::answer(ctx, routed, &mut resp);
        // Backends' responses only: the proxy's own answers (errors,
        // redirects, `respond` routes, a filter's answer) and a protocol
        // switch's 101 are not filtered.
        if routed.filters.is_empty() {
            return Ok(resp);
        }
        let mut request = match ctx.head.take() {
            Some(head) if routed.filters.components_on_response() => {
                Some(forward::sent_view(head, &ctx.host, ctx.client))
            }
            _ => None,
        };
        let with = ResponseCtx {
            tenant: routed.tenant,
            request: &mut request,
            backend: ctx.record.backend.map_or("", |(_, addr)| addr),
            upstream: routed.index,
        };
        let since = ctx.record.decision_start();
        let filtered = routed.filters.response(&mut resp, with);
        ctx.record.decision("filter", since);
        match filtered {
            Ok(()) => Ok(resp),
            // The backend's body is dropped unread: its connection is not
            // reused (see `upstream::pool`).
            Err(Stop::Fault(fault)) => Err(ProxyError::plugin(Role::Filter, fault)),
            Err(Stop::Answer(_)) => Err(ErrorKind::Internal("a response filter answered").into()),
        }
    }

    /// Select → attempt → outcome, again on another backend while the
    /// failure allows it, backends are left, the body was not taken and
    /// the upstream's retry budget has a retry.
    async fn forward<'g>(
        &self,
        ctx: &mut RequestCtx<'g, '_>,
        routed: Routed<'g>,
        body: &std::sync::Arc<BodySlot>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let up = routed.slot;
        let settings = routed.settings;
        loop {
            // A retry's pick sees the request as the first attempt sent it.
            if ctx.view.is_none()
                && let Some(h) = &ctx.head
            {
                ctx.view = Some(forward::retry_view(h, &ctx.host, ctx.client));
            }
            let since = ctx.record.decision_start();
            let chosen = select::choose(ctx, routed);
            ctx.record.decision("balancer", since);
            let picked = match chosen {
                Ok(p) => p,
                // After a failed attempt the last failure is the answer.
                Err(e) => return Err(ctx.last_error.take().unwrap_or(e)),
            };
            let backend = &up.backends[picked.index];
            ctx.record.backend = Some((&backend.metrics, &backend.state.authority));
            ctx.record.activity = Some(&backend.state.activity);
            if ctx.head.is_none() {
                forward::build_head(ctx)?;
            }
            let Some(request_body) = body.attempt() else {
                return Err(ErrorKind::Internal("the request body was already sent").into());
            };
            ctx.tried.push(picked.index);
            // The last possible attempt takes the headers; one that may be
            // followed by a retry sends a copy, as does one whose response
            // a filter component will read the request with.
            let last = (ctx.tried.len() >= settings.retries.attempts as usize
                || ctx.tried.len() >= up.backends.len())
                && !routed.filters.components_on_response();
            let Some(head) = ctx.head.as_mut() else {
                return Err(ErrorKind::Internal("no upstream head").into());
            };
            let headers = if last {
                std::mem::take(&mut head.headers)
            } else {
                head.headers.clone()
            };
            // Boxed, so the futures above this one stay small (see below).
            let result =
                boxed(|| traced_attempt(ctx, routed, picked, headers, body, request_body)).await;
            let e = match result {
                Ok((resp, at)) => {
                    ctx.record.answered_at = Some(at);
                    return Ok(resp);
                }
                Err(e) => e,
            };
            if matches!(e.kind(), ErrorKind::Overloaded { .. }) {
                metrics::counter!(crate::telemetry::names::BACKEND_QUEUE_REJECTED, "upstream" => up.name.clone())
                    .increment(1);
            }
            // Only when another backend could take it: a retry with nowhere
            // to go would spend the budget and log a retry that never happens.
            let may_retry = e.retryable()
                && ctx.tried.len() < settings.retries.attempts as usize
                && !body.taken()
                && select::has_untried(ctx, routed);
            if may_retry && routed.retry_budget.withdraw() {
                metrics::counter!(crate::telemetry::names::UPSTREAM_RETRIES, "upstream" => up.name.clone())
                    .increment(1);
                tracing::info!(upstream = %up.name, backend = %backend.state.authority, "retrying on another backend: {e}");
                ctx.last_error = Some(e);
                continue;
            }
            return Err(e);
        }
    }
}

/// One attempt, as a client span of the request's trace (the backend's
/// parent) when the request is traced. Its future holds the backend
/// exchange's (about 4 KiB) and `forward` boxes it: each future of the
/// request's chain is copied once when it is created, its callee's size
/// included, so without the box each of the five above copied it again
/// (`memmove` was 6 % of the proxy's CPU under the h1 load).
async fn traced_attempt(
    ctx: &RequestCtx<'_, '_>,
    routed: Routed<'_>,
    picked: Picked,
    mut headers: http::HeaderMap,
    body: &BodySlot,
    request_body: RequestBody,
) -> Result<(Response<ProxyBody>, tokio::time::Instant), ProxyError> {
    let authority = &routed.slot.backends[picked.index].state.authority;
    // Boxed: an untraced request's future carries a pointer, not the span.
    let mut span = match (&ctx.record.trace, &ctx.head) {
        (Some(t), Some(head)) => {
            let span = t.attempt(&head.method, authority, ctx.tried.len() - 1);
            span.inject(&mut headers);
            Some(Box::new(span))
        }
        _ => None,
    };
    let result =
        attempt::attempt(ctx, routed, picked, headers, body, request_body, &mut span).await;
    if let Some(span) = span {
        match &result {
            Ok((resp, _)) => span.answered(resp.status().as_u16()),
            Err(e) => span.failed(e.label(), e),
        }
    }
    result
}

/// The client's answer from a filter that answered instead of forwarding.
fn filter_answer(a: FilterAnswer) -> Response<ProxyBody> {
    let mut resp = text(a.status, a.body);
    // The filter's headers replace the defaults (its own content-type);
    // a name it gives twice keeps both values.
    let headers = resp.headers_mut();
    for (name, _) in &a.headers {
        headers.remove(name);
    }
    for (name, value) in a.headers {
        headers.append(name, value);
    }
    resp
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

/// The future `make` returns, in a box of its own. `Box::pin(f(..))` makes
/// the future first, on the stack, and then copies all of it into the
/// allocation (the attempt's is over 2 KiB, of which the arguments are a
/// few words); with the allocation made first the compiler can build the
/// future where it stays.
pub(crate) fn boxed<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}
