//! Each role's calls into its plugin: the typed export called through
//! [`Plugin::call`](super::Plugin), its answer checked by [`super::answer`].

use wasmtime::Store;
use wasmtime::component::Resource;

use super::answer::{self, Route};
use super::bindings;
use super::state::PluginState;
use super::world::Versioned;
use super::{
    Backend, BalancerWorld, BreakerState, BreakerWorld, Fault, FilterAction, FilterWorld,
    HeaderEdit, Outcome, OutcomeKind, Plugin, RequestView, ResponseView, RouterWorld, Tenant,
    Verdict,
};

/// A borrow of the request resource for one call. The rep is unused: the
/// host answers from the request held in the store.
fn request_borrow() -> Resource<bindings::RequestHandle> {
    Resource::new_borrow(0)
}

impl<W: super::World> Plugin<W> {
    /// Runs `call` with the values of the facts this 0.2.0 plugin declared,
    /// for the request lent to `store`: built inside the call, so a call
    /// that never enters the plugin (suspended, no instance) or a 0.1.x one
    /// builds nothing, and into the store's buffer, so no call allocates
    /// for them.
    fn with_facts<R>(
        &self,
        store: &mut Store<PluginState>,
        call: impl FnOnce(&mut Store<PluginState>, Option<&str>) -> R,
    ) -> R {
        let mut values = std::mem::take(&mut store.data_mut().facts);
        let declared = self
            .init_answer()
            .facts
            .write_values(store.data().request.as_deref(), &mut values);
        let answer = call(store, declared.then_some(values.as_str()));
        store.data_mut().facts = values;
        answer
    }
}

impl Plugin<RouterWorld> {
    /// Asks the router where the request goes. The answer is checked: an
    /// upstream must be configured (a 0.1.x router's name: a domain, a pool
    /// or a route reference such as `example.com#2`; a 0.2.0 router's
    /// number: below the number of upstreams), a direct response must have
    /// a valid status and a body of at most [`MAX_DIRECT_BODY_BYTES`].
    /// `tenant` is the domain the request's host matched: the router's
    /// faults are kept per matched domain, and a 0.2.0 router is told it.
    /// A domain the router declared at `init` to go to its own upstream
    /// (`router-answers`) is answered so without entering the router.
    ///
    /// [`MAX_DIRECT_BODY_BYTES`]: super::MAX_DIRECT_BODY_BYTES
    pub fn route(
        &self,
        tenant: Tenant,
        request: &mut Option<Box<RequestView>>,
    ) -> Result<Route, Fault> {
        let domain = match tenant {
            Tenant::Upstream(i) => Some(i),
            Tenant::Unmatched => None,
        };
        // The router said at `init` that this domain's requests go to its
        // own upstream: its answer without entering it.
        if let Some(i) = domain
            && self.init_answer().routes_to_itself(i)
        {
            return Ok(Route::Upstream(i));
        }
        self.call(
            tenant,
            request,
            &mut None,
            |e, store| {
                Ok(match e {
                    Versioned::V1(e) => Versioned::V1(e.call_route(store, request_borrow())?),
                    Versioned::V2(e) => Versioned::V2(self.with_facts(store, |store, facts| {
                        e.call_route(store, request_borrow(), facts, domain)
                    })?),
                })
            },
            |route| match route {
                Versioned::V1(r) => {
                    answer::check_route_v1(r, |name| self.upstream_index.get(name).copied())
                }
                Versioned::V2(r) => answer::check_route_v2(r, self.upstream_index.len()),
            },
        )
    }
}

impl Plugin<BalancerWorld> {
    /// Asks the balancer which of `candidates` gets the request; the answer
    /// is checked to be an index into `candidates`. A 0.1.x balancer gets
    /// them as a list; a 0.2.0 one gets their number and reads them
    /// through the `candidates` interface if it needs to. An upstream the
    /// balancer declared at `init` to pick round-robin over a shared
    /// counter (`balancer-answers`) gets that counter's next turn without
    /// entering the balancer.
    pub fn pick(
        &self,
        request: &mut Option<Box<RequestView>>,
        upstream: u32,
        candidates: &[Backend],
    ) -> Result<usize, Fault> {
        if let Some(i) = self
            .init_answer()
            .round_robin_pick(upstream, candidates.len())
        {
            return Ok(i);
        }
        let count = u32::try_from(candidates.len()).unwrap_or(u32::MAX);
        self.call(
            Tenant::Upstream(upstream),
            request,
            &mut None,
            |e, store| match e {
                Versioned::V1(e) => e.call_pick(store, request_borrow(), upstream, candidates),
                Versioned::V2(e) => {
                    store.data_mut().candidates.extend_from_slice(candidates);
                    let choice = self.with_facts(store, |store, facts| {
                        e.call_pick(store, request_borrow(), facts, upstream, count)
                    });
                    store.data_mut().candidates.clear();
                    choice
                }
            },
            |choice| answer::check_pick(choice, candidates.len()),
        )
    }
}

impl Plugin<BreakerWorld> {
    /// Asks the breaker for a backend's state after `outcome`. An outcome
    /// the breaker left to the host (a 0.2.0 breaker's `outcome-calls`: a
    /// response below its status to a closed backend) is a success that
    /// keeps the backend closed, without a call.
    pub fn on_outcome(
        &self,
        upstream: u32,
        backend: Backend,
        outcome: Outcome,
    ) -> Result<Verdict, Fault> {
        if self.leaves_to_host(&backend, &outcome) {
            return Ok(Verdict {
                failure: false,
                state: BreakerState::Closed,
                open_for_ms: 0,
                probes: 1,
            });
        }
        self.call(
            Tenant::Upstream(upstream),
            &mut None,
            &mut None,
            |e, store| match e {
                Versioned::V1(e) => e.call_on_outcome(store, upstream, backend, outcome),
                Versioned::V2(e) => e.call_on_outcome(store, upstream, backend, outcome),
            },
            |verdict| {
                answer::check_verdict(&verdict)?;
                Ok(verdict)
            },
        )
    }

    /// Whether the breaker said at `init` that it need not see `outcome`
    /// of `backend`.
    fn leaves_to_host(&self, backend: &Backend, outcome: &Outcome) -> bool {
        bbproxy_plugin_contract::leaves_to_host(
            backend.breaker == BreakerState::Closed,
            outcome.kind == OutcomeKind::Response,
            outcome.status,
            self.init_answer().skip_closed_responses_below,
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
        request: &mut Option<Box<RequestView>>,
    ) -> Result<FilterAction, Fault> {
        self.call(
            tenant,
            request,
            &mut None,
            |e, store| match e {
                Versioned::V1(e) => e.call_on_request(store, request_borrow()),
                Versioned::V2(e) => self.with_facts(store, |store, facts| {
                    e.call_on_request(store, request_borrow(), facts)
                }),
            },
            answer::check_request_action,
        )
    }

    /// Runs the filter's `on-response` on `response`, with the request as
    /// it was sent; returns its checked header changes. A 0.2.0 filter
    /// that said at `init` it edits no response is not called: no changes.
    pub fn on_response(
        &self,
        tenant: Tenant,
        request: &mut Option<Box<RequestView>>,
        response: &mut Option<ResponseView>,
    ) -> Result<Vec<HeaderEdit>, Fault> {
        if !self.init_answer().on_response {
            return Ok(Vec::new());
        }
        self.call(
            tenant,
            request,
            response,
            |e, store| match e {
                Versioned::V1(e) => e.call_on_response(store, request_borrow(), response_borrow()),
                Versioned::V2(e) => e.call_on_response(store, request_borrow(), response_borrow()),
            },
            |edits| answer::check_header_edits(&edits),
        )
    }
}

/// A borrow of the response resource for one call (see
/// [`request_borrow`]).
fn response_borrow() -> Resource<bindings::ResponseHandle> {
    Resource::new_borrow(0)
}

#[cfg(test)]
mod tests {
    use super::super::{Runtime, bundle, test_plugins};
    use super::*;

    /// An answer holding a string is freed by the plugin when its next call
    /// starts, not by a post-return call of its own (the SDK's bindings,
    /// sdk/defer_post_return.py): the bundled router declares no
    /// post-return for `route`, and 20,000 answers of 8 KiB each (160 MiB
    /// in all) never outgrow a 16 MiB instance, each arriving whole.
    #[test]
    fn an_answer_is_freed_at_the_next_call_without_a_post_return() {
        let has = |name: &[u8]| bundle::ROUTER.windows(name.len()).any(|w| w == name);
        assert!(has(b"cabi_post_init"), "init keeps its post-return");
        assert!(!has(b"cabi_post_route"), "route has a post-return");

        let body = "0123456789abcdef".repeat(512);
        let config = format!(
            r#"{{"routes": {{"a.test": [{{"match": {{"path": "/big"}},
                "respond": {{"status": 200, "body": "{body}"}}}}]}}}}"#
        );
        let runtime = Runtime::new().unwrap();
        let router: Plugin<RouterWorld> =
            test_plugins::load(&runtime, bundle::ROUTER, &config, &["a.test"], 1);
        let (parts, ()) = http::Request::get("/big").body(()).unwrap().into_parts();
        let mut view = Some(Box::new(RequestView {
            parts,
            host: "a.test".into(),
            client: "192.0.2.1:5000".parse().unwrap(),
        }));
        for i in 0..20_000 {
            match router.route(Tenant::Upstream(0), &mut view) {
                Ok(Route::Respond {
                    status: 200,
                    body: b,
                }) if b == body => {}
                other => panic!("call {i}: {other:?}"),
            }
        }
        assert_eq!(router.faults(), 0);
        assert_eq!(router.calls(), 20_000);
    }
}
