//! Plugins for contract 0.2.0 (`bbproxy:plugin@0.2.0`, `wit/v0.2`): the
//! same three decision roles, shaped so that a request's decisions cost a
//! few hundred nanoseconds in the proxy.
//!
//! - A [`Router`] is told the domain the proxy matched the request's host
//!   to and answers with upstream numbers ([`Route::Upstream`]), so the
//!   common answer passes no string either way; the domains it always
//!   sends to their own upstream it lists once
//!   ([`Router::self_routed_domains`]), and the proxy routes their
//!   requests without calling it.
//! - A [`Balancer`] gets [`Candidates`], read on demand: round-robin needs
//!   only their number, and nothing is copied that the policy does not
//!   read; the upstreams it picks round-robin over a shared counter it
//!   lists once ([`Balancer::round_robin_upstreams`]), and the proxy
//!   takes their turns without calling it.
//! - A [`Breaker`] says which outcomes it need not see
//!   ([`Breaker::skip_closed_responses_below`]): for most breakers the
//!   successful responses of a closed backend, which is nearly every
//!   request.
//! - A [`Filter`](crate::Filter) (the same trait as 0.1.1's) says whether
//!   it edits responses at all
//!   ([`Filter::edits_responses`](crate::Filter::edits_responses)); when
//!   not, the proxy never calls its `on_response`.
//! - Each declares the request [`Fact`]s it reads on every call
//!   ([`Router::facts`], [`Balancer::facts`],
//!   [`Filter::request_facts`](crate::Filter::request_facts)): their values
//!   come with the call, and [`Request`]'s accessors answer them without
//!   calling into the proxy. Any other read still works, one host call
//!   each.
//!
//! Everything else (the [`Request`], [`Backend`], [`Outcome`], [`Verdict`]
//! types, the host functions, [`testing`](crate::testing)) is shared with
//! 0.1.x: those WIT interfaces did not change. Export with
//! `bbproxy_sdk::v2::export!(Type: role)`. A 0.1.x plugin keeps working:
//! the proxy loads both.
//!
//! ```
//! use bbproxy_sdk::v2::{Balancer, Candidates};
//! use bbproxy_sdk::Request;
//!
//! /// The candidate with fewer requests in flight of the first two.
//! #[derive(Default)]
//! struct FirstTwo;
//!
//! impl Balancer for FirstTwo {
//!     fn pick(&mut self, _: &Request, _: u32, candidates: &Candidates) -> Option<u32> {
//!         if candidates.len() < 2 {
//!             return Some(0);
//!         }
//!         let (a, b) = (candidates.get(0), candidates.get(1));
//!         Some(if b.in_flight < a.in_flight { 1 } else { 0 })
//!     }
//! }
//!
//! bbproxy_sdk::v2::export!(FirstTwo: balancer);
//! # fn main() {}
//! ```

use crate::bindings::v2::balancer::bbproxy::plugin0_2_0::candidates as host;
use crate::{Backend, Outcome, Request, Verdict, expect_no_config};

pub use crate::bindings::v2::router::bbproxy::plugin0_2_0::decisions::{
    DomainRoute, Fact, FilterCalls, OutcomeCalls, Route,
};

/// The most facts a plugin may declare (the proxy refuses an `init` that
/// declares more).
pub use bbproxy_plugin_contract::MAX_FACTS;

/// Checks declared `facts` as the proxy does when `init` returns them
/// (for the test host: in a component, the proxy checks).
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn check_facts(facts: &[Fact]) -> Result<(), String> {
    bbproxy_plugin_contract::check_facts(
        facts.len(),
        facts.iter().filter_map(|f| match f {
            Fact::Header(n) => Some(n.as_str()),
            _ => None,
        }),
    )
}

impl Fact {
    /// `Fact::Header(name)`.
    ///
    /// ```
    /// assert_eq!(bbproxy_sdk::v2::Fact::header("X-User"), bbproxy_sdk::v2::Fact::Header("X-User".into()));
    /// ```
    pub fn header(name: impl Into<String>) -> Fact {
        Fact::Header(name.into())
    }
}

impl Route {
    /// Forward to upstream number `n` (an index into
    /// [`upstreams()`](crate::upstreams); see [`upstream_number`]).
    pub fn upstream(n: u32) -> Route {
        Route::Upstream(n)
    }

    /// Forward (or redirect) as `domains.<domain>.routes[<index>]` in
    /// config.json says (the built-in router's answer for a route).
    pub fn domain_route(domain: u32, index: u32) -> Route {
        Route::DomainRoute(DomainRoute { domain, index })
    }

    /// Answer the client directly with `status` and a plain-text body.
    ///
    /// ```
    /// let r = bbproxy_sdk::v2::Route::respond(403, "no\n");
    /// assert!(matches!(r, bbproxy_sdk::v2::Route::Respond(ref d) if d.status == 403));
    /// ```
    pub fn respond(status: u16, body: impl Into<String>) -> Route {
        Route::Respond(crate::DirectResponse {
            status,
            body: body.into(),
        })
    }

    /// The direct answer, if this is one.
    ///
    /// ```
    /// use bbproxy_sdk::v2::Route;
    /// assert_eq!(Route::respond(404, "").direct_response().map(|r| r.status), Some(404));
    /// assert!(Route::upstream(0).direct_response().is_none());
    /// ```
    pub fn direct_response(&self) -> Option<&crate::DirectResponse> {
        match self {
            Route::Respond(r) => Some(r),
            _ => None,
        }
    }
}

/// The number of the upstream named `name` (a domain or a pool), the
/// number a [`Route::Upstream`] carries. It asks the host for the whole
/// list: call it in `init` and keep the answer.
///
/// ```
/// let host = bbproxy_sdk::testing::TestHost::new().upstream("a.test", 1).upstream("b.test", 1);
/// assert_eq!(bbproxy_sdk::v2::upstream_number("b.test"), Some(1));
/// assert_eq!(bbproxy_sdk::v2::upstream_number("c.test"), None);
/// # drop(host);
/// ```
pub fn upstream_number(name: &str) -> Option<u32> {
    let i = crate::upstreams().iter().position(|u| u.name == name)?;
    u32::try_from(i).ok()
}

/// The candidates of one `pick`: the backends that may take the request,
/// never none. In the proxy each read is a call into the host; read only
/// what the policy needs. They come in the upstream's configured order,
/// each backend once, so when [`Candidates::len`] equals the upstream's
/// [`backends`](crate::Upstream::backends) candidate `i` is backend `i`
/// and a policy keyed on the backend needs no read at all (the test host
/// refuses a list the proxy could not give).
///
/// ```
/// use bbproxy_sdk::testing::backends;
/// let list = backends(3);
/// let c = bbproxy_sdk::v2::Candidates::from_slice(&list);
/// assert_eq!((c.len(), c.get(2).id), (3, 2));
/// assert_eq!(c.all().len(), 3);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    source: CandidateSource<'a>,
}

#[derive(Debug, Clone, Copy)]
enum CandidateSource<'a> {
    /// The host's, through the `candidates` interface (whose imports a
    /// native build never reaches: it has no host to call).
    Host(u32),
    /// A list in memory: tests, and native benchmarks of a policy.
    Slice(&'a [Backend]),
}

impl<'a> Candidates<'a> {
    /// Candidates held in memory, as tests and benchmarks give them.
    pub fn from_slice(backends: &'a [Backend]) -> Candidates<'a> {
        Candidates {
            source: CandidateSource::Slice(backends),
        }
    }

    /// The `count` candidates of the host's `pick` call in progress.
    pub(crate) fn from_host(count: u32) -> Candidates<'static> {
        Candidates {
            source: CandidateSource::Host(count),
        }
    }

    /// How many there are (at least 1 in a `pick`).
    #[inline]
    pub fn len(&self) -> u32 {
        match self.source {
            CandidateSource::Host(n) => n,
            CandidateSource::Slice(s) => u32::try_from(s.len()).unwrap_or(u32::MAX),
        }
    }

    /// Whether there are none (never, in a `pick` the proxy makes).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The candidate at `index`. Panics when `index >= len()` (in the
    /// proxy, a fault of the call).
    #[inline]
    pub fn get(&self, index: u32) -> Backend {
        match self.source {
            CandidateSource::Host(_) => host::get(index),
            CandidateSource::Slice(s) => s[index as usize],
        }
    }

    /// Every candidate's backend id, in order: what hashing, stickiness
    /// or a priority order needs, much cheaper than [`Candidates::all`].
    ///
    /// ```
    /// use bbproxy_sdk::testing::backend;
    /// let list = [backend(4), backend(1)];
    /// assert_eq!(bbproxy_sdk::v2::Candidates::from_slice(&list).ids(), [4, 1]);
    /// ```
    pub fn ids(&self) -> Vec<u32> {
        match self.source {
            CandidateSource::Host(_) => host::ids(),
            CandidateSource::Slice(s) => s.iter().map(|b| b.id).collect(),
        }
    }

    /// Every candidate, in order: one copy of the whole list.
    pub fn all(&self) -> Vec<Backend> {
        match self.source {
            CandidateSource::Host(_) => host::all(),
            CandidateSource::Slice(s) => s.to_vec(),
        }
    }
}

/// A 0.2.0 router (WIT world `router` of `bbproxy:plugin@0.2.0`). Export it
/// with `bbproxy_sdk::v2::export!(R: router);`.
///
/// ```
/// use bbproxy_sdk::{Request, testing::{FakeRequest, TestHost}};
/// use bbproxy_sdk::v2::{Fact, Route, Router, upstream_number};
///
/// /// `/admin` to the admin upstream, the rest by host.
/// struct Admin { admin: u32 }
/// impl Router for Admin {
///     fn init(_: &str) -> Result<Self, String> {
///         let admin = upstream_number("admin.test").ok_or("no admin.test upstream")?;
///         Ok(Admin { admin })
///     }
///     // Read on every call: sent with it, so `req.path()` calls nothing.
///     fn facts(&self) -> Vec<Fact> {
///         vec![Fact::Path]
///     }
///     fn route(&mut self, req: &Request, domain: Option<u32>) -> Route {
///         match domain {
///             _ if req.path().starts_with("/admin") => Route::upstream(self.admin),
///             Some(d) => Route::upstream(d),
///             None => Route::respond(421, "unknown host\n"),
///         }
///     }
/// }
///
/// let host = TestHost::new().upstream("admin.test", 1).upstream("www.test", 1);
/// let mut router: Admin = host.router_v2("{}").unwrap();
/// let mut route = |req| host.route_v2(&mut router, &req);
/// assert_eq!(route(FakeRequest::get("www.test", "/admin/users")), Ok(Route::upstream(0)));
/// assert_eq!(route(FakeRequest::get("www.test", "/")), Ok(Route::upstream(1)));
/// assert_eq!(route(FakeRequest::get("x.test", "/")), Ok(Route::respond(421, "unknown host\n")));
/// ```
pub trait Router: Sized + 'static {
    /// Creates the plugin instance, as [`crate::Router::init`] does.
    fn init(config: &str) -> Result<Self, String>;

    /// The request facts [`Router::route`] reads on every call, asked once
    /// right after `init` (at most [`MAX_FACTS`]): the proxy sends their
    /// values with each call, and the [`Request`] answers them without a
    /// call into the proxy. The default declares none.
    fn facts(&self) -> Vec<Fact> {
        Vec::new()
    }

    /// The domains (upstream numbers) whose every request this router
    /// sends to the domain's own upstream, `Route::upstream(domain)`,
    /// whatever else the request holds: asked once right after `init`,
    /// and the proxy then answers those requests itself, without calling
    /// [`Router::route`] (a call costs about a microsecond in the proxy).
    /// The built-in router lists every domain without `routes`. The
    /// default lists none. [`TestHost::route_v2`](crate::testing::TestHost::route_v2)
    /// checks the claim: it still calls `route` and refuses another answer.
    ///
    /// ```
    /// use bbproxy_sdk::{Request, testing::{FakeRequest, TestHost}};
    /// use bbproxy_sdk::v2::{Route, Router};
    /// /// Everything to upstream 0, yet it says domain 1 goes to its own.
    /// struct Wrong;
    /// impl Router for Wrong {
    ///     fn init(_: &str) -> Result<Self, String> { Ok(Wrong) }
    ///     fn self_routed_domains(&self) -> Vec<u32> { vec![1] }
    ///     fn route(&mut self, _: &Request, _: Option<u32>) -> Route { Route::upstream(0) }
    /// }
    /// let host = TestHost::new().upstream("a.test", 1).upstream("b.test", 1);
    /// let mut r = Wrong;
    /// assert_eq!(host.route_v2(&mut r, &FakeRequest::get("a.test", "/")), Ok(Route::upstream(0)));
    /// let err = host.route_v2(&mut r, &FakeRequest::get("b.test", "/")).unwrap_err();
    /// assert!(err.starts_with("self_routed_domains lists domain 1"), "{err}");
    /// ```
    fn self_routed_domains(&self) -> Vec<u32> {
        Vec::new()
    }

    /// Decides where `req` goes. `domain` is the upstream number of the
    /// domain its host matches (exact name, then the longest wildcard), or
    /// `None`.
    fn route(&mut self, req: &Request, domain: Option<u32>) -> Route;
}

/// A 0.2.0 balancer (WIT world `balancer` of `bbproxy:plugin@0.2.0`).
/// Export it with `bbproxy_sdk::v2::export!(B: balancer);`.
pub trait Balancer: Default + 'static {
    /// Creates the plugin instance; the default accepts only an empty
    /// configuration (see [`expect_no_config`]).
    fn init(config: &str) -> Result<Self, String> {
        expect_no_config(config)?;
        Ok(Self::default())
    }

    /// The request facts [`Balancer::pick`] reads on every call (a hash
    /// key's header, say), as [`Router::facts`]. The default declares none.
    fn facts(&self) -> Vec<Fact> {
        Vec::new()
    }

    /// The upstreams (by number) whose every pick is round-robin over a
    /// shared [`Counter`](crate::Counter): candidate
    /// `counter.fetch_add(1)` modulo their number (as
    /// [`round_robin_turn`](bbproxy_plugin_contract::balancers::round_robin_turn)
    /// takes it), whatever else the request holds. Asked once right after
    /// `init`; the proxy then answers those picks itself, advancing the
    /// same counter, without calling [`Balancer::pick`] (a call costs
    /// about a microsecond in the proxy). The built-in balancer lists its
    /// `round-robin` upstreams. The default lists none.
    /// [`TestHost::pick_v2`](crate::testing::TestHost::pick_v2) checks the
    /// claim: it still calls `pick` and refuses another candidate than the
    /// counter's turn, or a counter moved by other than one.
    ///
    /// ```
    /// use bbproxy_sdk::{Counter, Request, testing::{FakeRequest, TestHost, backends}};
    /// use bbproxy_sdk::v2::{Balancer, Candidates};
    /// /// Says it goes round-robin on upstream 0, yet always takes the first.
    /// struct Wrong(Counter);
    /// impl Default for Wrong {
    ///     fn default() -> Self { Wrong(Counter::new("wrong.turns")) }
    /// }
    /// impl Balancer for Wrong {
    ///     fn round_robin_upstreams(&self) -> Vec<(u32, &Counter)> { vec![(0, &self.0)] }
    ///     fn pick(&mut self, _: &Request, _: u32, _: &Candidates) -> Option<u32> {
    ///         self.0.fetch_add(1);
    ///         Some(0)
    ///     }
    /// }
    /// let host = TestHost::new().upstream("a.test", 3);
    /// let req = FakeRequest::get("a.test", "/");
    /// let mut b = Wrong::default();
    /// assert_eq!(host.pick_v2(&mut b, &req, 0, &backends(3)), Ok(0), "turn 0 is candidate 0");
    /// let err = host.pick_v2(&mut b, &req, 0, &backends(3)).unwrap_err();
    /// assert!(err.starts_with("round_robin_upstreams lists upstream 0"), "{err}");
    /// ```
    fn round_robin_upstreams(&self) -> Vec<(u32, &crate::Counter)> {
        Vec::new()
    }

    /// Picks one of `candidates` for `req` on upstream number `upstream`:
    /// an index below `candidates.len()`; `None` or an index out of range
    /// is a plugin fault. The default is the SDK's shared round-robin (as
    /// [`crate::Balancer::pick`]'s), which reads no candidate.
    fn pick(&mut self, req: &Request, upstream: u32, candidates: &Candidates) -> Option<u32> {
        let _ = req;
        crate::default_round_robin(upstream, candidates.len() as usize)
    }
}

/// A 0.2.0 breaker (WIT world `breaker` of `bbproxy:plugin@0.2.0`).
/// Export it with `bbproxy_sdk::v2::export!(B: breaker);`.
pub trait Breaker: Default + 'static {
    /// Creates the plugin instance; the default accepts only an empty
    /// configuration (see [`expect_no_config`]).
    fn init(config: &str) -> Result<Self, String> {
        expect_no_config(config)?;
        Ok(Self::default())
    }

    /// The status below which a response of a closed backend is left to
    /// the proxy, which counts it as a success that keeps the backend
    /// closed without calling [`Breaker::on_outcome`]. Asked once, right
    /// after `init`. The default, 0, asks for every outcome; a breaker
    /// whose verdict for such a response is always
    /// [`Verdict::closed(false)`](Verdict::closed) answers 500 (it counts
    /// 5xx as failures) or 600.
    fn skip_closed_responses_below(&self) -> u16 {
        0
    }

    /// As [`crate::Breaker::on_outcome`]; the default is
    /// [`crate::default_verdict`].
    fn on_outcome(&mut self, upstream: u32, backend: &Backend, outcome: &Outcome) -> Verdict {
        let _ = upstream;
        crate::default_verdict(backend, outcome)
    }
}

/// Exports a type as the component's 0.2.0 implementation of one role:
/// `bbproxy_sdk::v2::export!(Type: router | balancer | breaker | filter);`,
/// once per crate. See [`crate::export!`] for how instances are kept. A
/// filter implements the one [`Filter`](crate::Filter) trait of both
/// versions; exported here, its
/// [`edits_responses`](crate::Filter::edits_responses) is asked once.
#[doc(inline)]
pub use crate::__export_v2 as export;
