//! The plugin seam: the request path's three calls into plugins (route,
//! pick, on-outcome), each with its fail-open fallback to the built-in
//! plugin of the same role, and the host's checks on what comes back. The
//! rest of the request path sees only upstream numbers, backend indexes and
//! [`ProxyError`]s, so a change of the plugin ABI stays in this file.

use http::header::LOCATION;
use http::{Response, StatusCode};

use super::ProxyBody;
use super::error::{ProxyError, Role, text};
use crate::generation::{BackendSlot, Generation, RouteAction, RouteTarget, Slot};
use crate::plugin::{
    Backend, BreakerState, BreakerWorld, Fault, Outcome, RequestView, Route, Tenant,
};

/// The router's answer.
#[derive(Debug)]
pub(super) enum Decision<'g> {
    /// Forward to the upstream with this number; the request's host
    /// matched domain `tenant` (whose filters it goes through).
    Upstream(u32, Tenant),
    /// Forward as a domain's route says (its target, path and settings);
    /// the request's host matched domain `tenant`.
    Route(&'g RouteTarget, Tenant),
    /// Answer directly (the built-in router's 421, a plugin's own answer).
    Respond(Response<ProxyBody>),
}

/// Asks the router where the request in `view` goes (its host picks the
/// tenant too), falling back to the built-in router when the configured
/// one faults and its policy is fail-open. A name that is no configured
/// domain is the router's fault.
/// The router's faults are kept per domain the host matches (its tenant),
/// so one domain's bad requests never suspend another's routing.
pub(super) fn route<'g>(
    generation: &'g Generation,
    view: &mut Option<Box<RequestView>>,
) -> Result<Decision<'g>, ProxyError> {
    let tenant = generation.tenant_of(view.as_deref().map_or("", |v| v.host.as_str()));
    let slot = generation.router_for(tenant);
    let answer = match slot.primary.route(tenant, view) {
        Ok(r) => Ok(r),
        Err(fault) => match &slot.fallback {
            Some(builtin) => builtin.route(tenant, view),
            None => Err(fault),
        },
    };
    match answer.map_err(|fault| ProxyError::plugin(Role::Router, fault))? {
        Route::Upstream(i) => Ok(Decision::Upstream(i, tenant)),
        Route::DomainRoute { domain, index } => match generation.route_action(domain, index) {
            Some(RouteAction::Forward(target)) => Ok(Decision::Route(target, tenant)),
            Some(RouteAction::Redirect { status, location }) => {
                let mut resp = text(*status, "");
                resp.headers_mut().insert(LOCATION, location.clone());
                Ok(Decision::Respond(resp))
            }
            None => {
                let fault = slot.primary.record(
                    Fault::BadAnswer(format!(
                        "route named route {index} of {}, which is not a forwarding or redirecting route",
                        generation.upstream_name(domain).unwrap_or("an unknown domain")
                    )),
                    tenant,
                );
                Err(ProxyError::plugin(Role::Router, fault))
            }
        },
        Route::Respond { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Ok(Decision::Respond(text(status, body)))
        }
    }
}

/// Asks the balancer which of `candidates` (backends of upstream
/// `upstream` that may take the request) gets it; an index into
/// `candidates`.
pub(super) fn pick(
    generation: &Generation,
    view: &mut Option<Box<RequestView>>,
    upstream: u32,
    candidates: &[Backend],
) -> Result<usize, ProxyError> {
    let slot = generation.balancer_for(upstream);
    match slot.primary.pick(view, upstream, candidates) {
        Ok(i) => Ok(i),
        Err(fault) => match &slot.fallback {
            Some(builtin) => builtin.pick(view, upstream, candidates),
            None => Err(fault),
        },
    }
    .map_err(|fault| ProxyError::plugin(Role::Balancer, fault))
}

/// Gives the breaker an attempt's outcome and applies its verdict at
/// `now_ms` (`clock::monotonic_ms`, read by the caller for `before`). A
/// faulting breaker leaves the backend's state as it was (there is no safe
/// guess to make); with a fail-open policy the built-in breaker decides
/// instead, with fail-closed the fault is returned and the request is
/// answered with 503.
pub(super) fn report_outcome(
    generation: &Generation,
    upstream_name: &str,
    upstream: u32,
    backend: &BackendSlot,
    before: Backend,
    outcome: Outcome,
    now_ms: u64,
) -> Result<(), ProxyError> {
    let slot: &Slot<BreakerWorld> = generation.breaker_for(upstream);
    let verdict = slot
        .primary
        .on_outcome(upstream, before, outcome)
        .or_else(|fault| match &slot.fallback {
            Some(builtin) => builtin.on_outcome(upstream, before, outcome),
            None => Err(fault),
        })
        .map_err(|fault| ProxyError::plugin(Role::Breaker, fault))?;
    backend.state.record_result(&verdict, &outcome);
    if let Some(state) = backend.state.breaker.apply(&verdict, now_ms) {
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
