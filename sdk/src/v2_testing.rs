//! [`TestHost`] calls of 0.2.0 plugins ([`crate::v2`]): the same checks
//! and the same host-side shortcuts as the proxy makes.

use bbproxy_plugin_contract as contract;
use bbproxy_plugin_contract::hosts::HostMatcher;

use crate::testing::{FakeRequest, TestHost, checked_pick, contract_state};
use crate::v2::{Balancer, Breaker, Candidates, Fact, Route, Router, check_facts};
use crate::{Backend, BreakerState, Outcome, OutcomeKind, Verdict};

impl TestHost {
    /// Creates a 0.2.0 router instance the way the proxy does:
    /// `R::init(config)`.
    pub fn router_v2<R: Router>(&self, config: &str) -> Result<R, String> {
        R::init(config)
    }

    /// Creates a 0.2.0 balancer instance: `B::init(config)`.
    pub fn balancer_v2<B: Balancer>(&self, config: &str) -> Result<B, String> {
        B::init(config)
    }

    /// Creates a 0.2.0 breaker instance: `B::init(config)`.
    pub fn breaker_v2<B: Breaker>(&self, config: &str) -> Result<B, String> {
        B::init(config)
    }

    /// Asks a 0.2.0 `router` where `req` goes, telling it the domain the
    /// request's host matches among the upstreams (exact name, then the
    /// longest wildcard), as the proxy does. An upstream number out of
    /// range, a direct answer the proxy would refuse, or, for a domain the
    /// router lists in [`Router::self_routed_domains`], any answer but the
    /// domain's own upstream (the proxy would not have asked), is an `Err`.
    ///
    /// ```
    /// use bbproxy_sdk::{Request, testing::{FakeRequest, TestHost}};
    /// use bbproxy_sdk::v2::{Route, Router};
    /// struct Told;
    /// impl Router for Told {
    ///     fn init(_: &str) -> Result<Self, String> { Ok(Told) }
    ///     fn route(&mut self, _: &Request, domain: Option<u32>) -> Route {
    ///         Route::upstream(domain.unwrap_or(7))
    ///     }
    /// }
    /// let host = TestHost::new().upstream("a.test", 1).upstream("*.b.test", 1);
    /// let mut r = Told;
    /// assert_eq!(host.route_v2(&mut r, &FakeRequest::get("x.b.test", "/")), Ok(Route::upstream(1)));
    /// let err = host.route_v2(&mut r, &FakeRequest::get("c.test", "/")).unwrap_err();
    /// assert_eq!(err, "route named upstream 7, but there are 2 upstreams");
    /// ```
    pub fn route_v2<R: Router>(&self, router: &mut R, req: &FakeRequest) -> Result<Route, String> {
        let upstreams = self.upstreams();
        let matcher = HostMatcher::new(upstreams.iter().map(|u| u.name.as_str()), None);
        let domain = matcher
            .lookup(&req.as_request().host())
            .and_then(|i| u32::try_from(i).ok());
        let route = with_facts(req, router.facts(), |r| router.route(r, domain))?;
        // The proxy answers a self-routed domain without calling `route`:
        // an answer that differs would be a claim the proxy trusts wrongly.
        if let Some(d) = domain
            && router.self_routed_domains().contains(&d)
            && route != Route::upstream(d)
        {
            return Err(format!(
                "self_routed_domains lists domain {d}, whose requests the proxy then sends to upstream {d} without calling route, but route answered {route:?}"
            ));
        }
        match &route {
            Route::Upstream(n) => {
                contract::check_route_number(*n, "upstream", upstreams.len())?;
            }
            Route::DomainRoute(r) => {
                contract::check_route_number(r.domain, "the route of domain", upstreams.len())?;
            }
            Route::Respond(r) => contract::check_route_respond(r.status, r.body.len())?,
        }
        Ok(route)
    }

    /// Asks a 0.2.0 `balancer` which of `candidates` gets `req` on
    /// upstream number `upstream`; as [`TestHost::pick`]. For an upstream
    /// the balancer lists in [`Balancer::round_robin_upstreams`], an answer
    /// other than its counter's turn, or a counter not moved by exactly
    /// one, is an `Err` (the proxy would have taken the turn itself).
    ///
    /// ```
    /// use bbproxy_sdk::{Request, testing::{FakeRequest, TestHost, backends}};
    /// use bbproxy_sdk::v2::{Balancer, Candidates};
    /// #[derive(Default)]
    /// struct Last;
    /// impl Balancer for Last {
    ///     fn pick(&mut self, _: &Request, _: u32, c: &Candidates) -> Option<u32> { Some(c.len() - 1) }
    /// }
    /// let host = TestHost::new().upstream("a.test", 3);
    /// let req = FakeRequest::get("a.test", "/");
    /// assert_eq!(host.pick_v2(&mut Last, &req, 0, &backends(3)), Ok(2));
    /// ```
    pub fn pick_v2<B: Balancer>(
        &self,
        balancer: &mut B,
        req: &FakeRequest,
        upstream: u32,
        candidates: &[Backend],
    ) -> Result<usize, String> {
        let facts = balancer.facts();
        // The turn the proxy would take for an upstream declared
        // round-robin, read before the call moves the counter.
        let turn = balancer
            .round_robin_upstreams()
            .into_iter()
            .find(|(u, _)| *u == upstream)
            .map(|(_, turns)| turns.get());
        let pick = with_facts(req, facts, |r| {
            checked_pick(upstream, candidates, || {
                balancer.pick(r, upstream, &Candidates::from_slice(candidates))
            })
        })??;
        if let Some(before) = turn {
            let expected = contract::balancers::round_robin_turn(before, candidates.len());
            let after = balancer
                .round_robin_upstreams()
                .into_iter()
                .find(|(u, _)| *u == upstream)
                .map(|(_, turns)| turns.get());
            if expected != Some(pick) || after != Some(before.wrapping_add(1)) {
                return Err(format!(
                    "round_robin_upstreams lists upstream {upstream}, whose picks the proxy then answers without calling pick (turn {before} of its counter: candidate {}), but pick answered {pick} and moved the counter to {}",
                    expected.map_or("none".to_owned(), |e| e.to_string()),
                    after.map_or("an undeclared one".to_owned(), |a| a.to_string()),
                ));
            }
        }
        Ok(pick)
    }

    /// Gives a 0.2.0 `breaker` an outcome of `backend`, as the proxy does:
    /// an outcome the breaker leaves to the host
    /// ([`Breaker::skip_closed_responses_below`]) gets the host's verdict,
    /// a success that keeps the backend closed, without a call.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bbproxy_sdk::{Backend, BreakerState, Outcome, Verdict};
    /// use bbproxy_sdk::testing::{TestHost, backend, response};
    /// use bbproxy_sdk::v2::Breaker;
    /// /// Opens on anything it sees, but sees no response under 500.
    /// #[derive(Default)]
    /// struct Touchy;
    /// impl Breaker for Touchy {
    ///     fn skip_closed_responses_below(&self) -> u16 { 500 }
    ///     fn on_outcome(&mut self, _: u32, _: &Backend, _: &Outcome) -> Verdict {
    ///         Verdict::open(true, 1_000, 1)
    ///     }
    /// }
    /// let host = TestHost::new().upstream("a.test", 1);
    /// let ok = response(200, Duration::from_millis(1));
    /// let v = host.on_outcome_v2(&mut Touchy, 0, &backend(0), &ok).unwrap();
    /// assert_eq!(v, Verdict::closed(false));
    /// let bad = response(502, Duration::from_millis(1));
    /// assert_eq!(host.on_outcome_v2(&mut Touchy, 0, &backend(0), &bad).unwrap().state, BreakerState::Open);
    /// ```
    pub fn on_outcome_v2<B: Breaker>(
        &self,
        breaker: &mut B,
        upstream: u32,
        backend: &Backend,
        outcome: &Outcome,
    ) -> Result<Verdict, String> {
        if contract::leaves_to_host(
            backend.breaker == BreakerState::Closed,
            outcome.kind == OutcomeKind::Response,
            outcome.status,
            breaker.skip_closed_responses_below(),
        ) {
            return Ok(Verdict::closed(false));
        }
        let verdict = breaker.on_outcome(upstream, backend, outcome);
        contract::check_verdict(contract_state(verdict.state), verdict.probes)?;
        Ok(verdict)
    }
}

/// Runs `call` with `req` as the proxy lends it to a 0.2.0 call: the
/// declared `facts` checked as the proxy checks them at init, and their
/// values sent with the call.
pub(crate) fn with_facts<T>(
    req: &FakeRequest,
    facts: Vec<Fact>,
    call: impl FnOnce(&crate::Request) -> T,
) -> Result<T, String> {
    check_facts(&facts)?;
    let r = req.as_request();
    // Nothing is pushed yet: `lent` reads each through the fake request.
    let values: Vec<Option<String>> = facts
        .iter()
        .map(|f| r.lent(f).map(std::borrow::Cow::into_owned))
        .collect();
    let values: Vec<Option<&str>> = values.iter().map(Option::as_deref).collect();
    Ok(call(&r.with_pushed(&facts, &values)))
}
