//! Each role's calls into its plugin: the typed export called through
//! [`Plugin::call`](super::Plugin), its answer checked by [`super::answer`].

use wasmtime::component::Resource;

use super::answer;
use super::bindings;
use super::{
    Backend, BalancerWorld, BreakerWorld, Fault, FilterAction, FilterWorld, HeaderEdit, Outcome,
    Plugin, RequestView, ResponseView, Route, RouterWorld, Tenant, Verdict,
};

/// A borrow of the request resource for one call. The rep is unused: the
/// host answers from the request held in the store.
fn request_borrow() -> Resource<bindings::RequestHandle> {
    Resource::new_borrow(0)
}

impl Plugin<RouterWorld> {
    /// Whether a router may answer `name`: an upstream, or a route
    /// reference of one (`example.com#2`), which the generation resolves
    /// (an unknown route is a fault there).
    fn knows(&self, name: &str) -> bool {
        self.upstream_index.contains_key(name)
            || name
                .rsplit_once(bbproxy_plugin_contract::routes::ROUTE_REF_SEPARATOR)
                .is_some_and(|(domain, i)| {
                    self.upstream_index.contains_key(domain) && i.parse::<usize>().is_ok()
                })
    }

    /// Asks the router where the request goes. The answer is checked: an
    /// upstream must be a configured domain, a direct response must have a
    /// valid status and a body of at most [`MAX_DIRECT_BODY_BYTES`].
    /// `tenant` is the domain the request's host matched: the router's
    /// faults are kept per matched domain.
    pub fn route(&self, tenant: Tenant, request: &mut Option<RequestView>) -> Result<Route, Fault> {
        self.call(
            tenant,
            request,
            &mut None,
            |e, store| e.call_route(store, request_borrow()),
            |route| {
                answer::check_route(&route, |name| self.knows(name))?;
                Ok(route)
            },
        )
    }
}

impl Plugin<BalancerWorld> {
    /// Asks the balancer which of `candidates` gets the request; the answer
    /// is checked to be an index into `candidates`.
    pub fn pick(
        &self,
        request: &mut Option<RequestView>,
        upstream: u32,
        candidates: &[Backend],
    ) -> Result<usize, Fault> {
        self.call(
            Tenant::Upstream(upstream),
            request,
            &mut None,
            |e, store| e.call_pick(store, request_borrow(), upstream, candidates),
            |choice| answer::check_pick(choice, candidates.len()),
        )
    }
}

impl Plugin<BreakerWorld> {
    /// Asks the breaker for a backend's state after `outcome`.
    pub fn on_outcome(
        &self,
        upstream: u32,
        backend: Backend,
        outcome: Outcome,
    ) -> Result<Verdict, Fault> {
        self.call(
            Tenant::Upstream(upstream),
            &mut None,
            &mut None,
            |e, store| e.call_on_outcome(store, upstream, backend, outcome),
            |verdict| {
                answer::check_verdict(&verdict)?;
                Ok(verdict)
            },
        )
    }
}

impl Plugin<FilterWorld> {
    /// Runs the filter's `on-request` on `request` (the domain `tenant`'s);
    /// the answer is checked (headers a filter may change, a valid
    /// target, an answer's status and size).
    pub fn on_request(
        &self,
        tenant: Tenant,
        request: &mut Option<RequestView>,
    ) -> Result<FilterAction, Fault> {
        self.call(
            tenant,
            request,
            &mut None,
            |e, store| e.call_on_request(store, request_borrow()),
            answer::check_request_action,
        )
    }

    /// Runs the filter's `on-response` on `response`, with the request as
    /// it was sent; returns its checked header changes.
    pub fn on_response(
        &self,
        tenant: Tenant,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
    ) -> Result<Vec<HeaderEdit>, Fault> {
        self.call(
            tenant,
            request,
            response,
            |e, store| e.call_on_response(store, request_borrow(), response_borrow()),
            |edits| answer::check_header_edits(&edits),
        )
    }
}

/// A borrow of the response resource for one call (see
/// [`request_borrow`]).
fn response_borrow() -> Resource<bindings::ResponseHandle> {
    Resource::new_borrow(0)
}
