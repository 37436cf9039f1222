//! Unit-test plugins with plain `cargo test`: no proxy, no Wasm toolchain.
//!
//! Compiled for every target except `wasm32`, this module is an in-process
//! host. The SDK's host functions ([`log`](crate::log),
//! [`Counter`](crate::Counter), [`kv_get`](crate::kv_get),
//! [`random`](crate::random), [`monotonic_ns`](crate::monotonic_ns),
//! [`upstreams`](crate::upstreams), ...) and the [`Request`] and
//! [`Response`] accessors are answered here instead of by the proxy (from a
//! [`FakeRequest`] and a [`FakeResponse`]), so a plugin's code runs natively,
//! unchanged. Nothing of it is in a plugin's `.wasm`.
//!
//! A test creates a [`TestHost`] (which resets the host of the current
//! thread: tests running in parallel do not see each other), declares the
//! upstreams, creates plugin instances with the same `init` the proxy calls,
//! and makes decisions on [`FakeRequest`]s and [`backend`]s (a filter's on
//! [`FakeRequest`]s and [`FakeResponse`]s, below):
//!
//! ```
//! use bbproxy_sdk::testing::{FakeRequest, TestHost, backends};
//! use bbproxy_sdk::{Backend, Balancer, Counter, Request};
//!
//! /// Round-robin over a counter shared by every instance.
//! struct Turns(Counter);
//! impl Default for Turns {
//!     fn default() -> Self { Turns(Counter::new("turns")) }
//! }
//! impl Balancer for Turns {
//!     fn pick(&mut self, _: &Request, _: u32, candidates: &[Backend]) -> Option<u32> {
//!         Some((self.0.fetch_add(1) as usize % candidates.len()) as u32)
//!     }
//! }
//!
//! let host = TestHost::new().upstream("app.test", 3);
//! // Two instances, as two worker threads of the proxy would have.
//! let mut a: Turns = host.balancer("{}").unwrap();
//! let mut b: Turns = host.balancer("{}").unwrap();
//! let req = FakeRequest::get("app.test", "/");
//! let candidates = backends(3);
//! let picks = [
//!     host.pick(&mut a, &req, 0, &candidates),
//!     host.pick(&mut b, &req, 0, &candidates),
//!     host.pick(&mut a, &req, 0, &candidates),
//! ];
//! assert_eq!(picks, [Ok(0), Ok(1), Ok(2)]);
//! assert_eq!(host.counter("turns"), 3);
//! ```
//!
//! [`TestHost::pick`], [`TestHost::route`], [`TestHost::on_outcome`],
//! [`TestHost::on_request`] and [`TestHost::on_response`] apply the checks
//! the proxy applies to each answer (the same code: the
//! `bbproxy-plugin-contract` crate), and return the fault the proxy would
//! count as an `Err`: an index out of range or `None`; an upstream not
//! declared with [`TestHost::upstream`], a name over 1 KiB, a status outside
//! 100..=599 or a direct body over 64 KiB; an open or half-open verdict with
//! 0 probes; a filter's header edit of a header it may not change
//! (`content-length`, `host`, hop-by-hop headers) or with an invalid name or
//! value, a new path or query that is not a valid request target part, an
//! answer with a status outside 200..=599 or a body over 64 KiB.
//!
//! A filter's edits can then be made on the fake request or response
//! ([`FakeRequest::apply`], [`FakeResponse::apply`]), as the proxy makes
//! them, so a test asserts on the message the backend or the client gets:
//!
//! ```
//! use bbproxy_sdk::{Filter, HeaderEdit, Request, RequestAction, RequestEdits, Response};
//! use bbproxy_sdk::testing::{FakeRequest, FakeResponse, TestHost};
//!
//! /// Hides the client's cookies from the backend, and the backend's software from the client.
//! #[derive(Default)]
//! struct Private;
//! impl Filter for Private {
//!     fn on_request(&mut self, _: &Request) -> RequestAction {
//!         RequestEdits::new().remove_header("cookie").into()
//!     }
//!     fn on_response(&mut self, _: &Request, _: &Response) -> Vec<HeaderEdit> {
//!         vec![HeaderEdit::remove("server"), HeaderEdit::remove("x-powered-by")]
//!     }
//! }
//!
//! let host = TestHost::new();
//! let mut filter: Private = host.filter("{}").unwrap();
//! let mut req = FakeRequest::get("a.test", "/").header("Cookie", "session=1");
//! let action = host.on_request(&mut filter, &req).unwrap();
//! req.apply(action.edits().unwrap()).unwrap();
//! assert_eq!(req.as_request().header("cookie"), None);
//!
//! let mut resp = FakeResponse::new(200).header("Server", "Apache").header("X-Powered-By", "PHP");
//! let edits = host.on_response(&mut filter, &req, &resp).unwrap();
//! resp.apply(&edits).unwrap();
//! assert!(resp.headers().is_empty());
//! ```
//!
//! The host state is per thread: a test that spawns threads sees a fresh
//! host in each of them.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::time::Duration;

use bbproxy_plugin_contract as contract;

use crate::{
    Backend, Balancer, Breaker, BreakerState, Filter, HeaderEdit, Level, Outcome, OutcomeKind,
    Request, RequestAction, RequestEdits, Response, Route, Router, Upstream, Verdict,
};

/// Largest key the key-value store accepts, in bytes (as in the proxy).
const MAX_KEY_BYTES: usize = 256;
/// Largest value the key-value store accepts, in bytes (as in the proxy).
const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys the key-value store holds (as in the proxy).
const MAX_KEYS: usize = 10_000;

/// One line a plugin logged, as [`TestHost::logs`] returns it.
///
/// ```
/// use bbproxy_sdk::{Level, log, testing::{LogLine, TestHost}};
/// let host = TestHost::new();
/// log(Level::Error, "backend list is empty");
/// assert_eq!(host.logs(), [LogLine { level: Level::Error, message: "backend list is empty".into() }]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Its level.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// The host state of one thread.
#[derive(Debug)]
struct State {
    monotonic_ns: u64,
    wall_ms: u64,
    rng: u64,
    scripted: VecDeque<u64>,
    upstreams: Vec<Upstream>,
    counters: BTreeMap<String, i64>,
    kv: BTreeMap<String, String>,
    logs: Vec<LogLine>,
}

impl Default for State {
    fn default() -> Self {
        State {
            monotonic_ns: 0,
            // 2026-01-01T00:00:00Z: a fixed, plausible wall clock.
            wall_ms: 1_767_225_600_000,
            rng: 0x5eed,
            scripted: VecDeque::new(),
            upstreams: Vec::new(),
            counters: BTreeMap::new(),
            kv: BTreeMap::new(),
            logs: Vec::new(),
        }
    }
}

thread_local! {
    static HOST: RefCell<State> = RefCell::new(State::default());
}

fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    HOST.with(|state| f(&mut state.borrow_mut()))
}

/// splitmix64: small, fast and good enough for load-balancing decisions.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The host functions of [`crate::host`], answered from the thread's state.
pub(crate) mod native {
    use super::*;

    pub(crate) fn log(level: Level, message: &str) {
        // Printed through the test harness's capture, so a failing test shows
        // what the plugin said.
        eprintln!("[plugin {level:?}] {message}");
        with(|s| {
            s.logs.push(LogLine {
                level,
                message: message.to_owned(),
            })
        });
    }

    pub(crate) fn monotonic_ns() -> u64 {
        with(|s| s.monotonic_ns)
    }

    pub(crate) fn wall_ms() -> u64 {
        with(|s| s.wall_ms)
    }

    pub(crate) fn random() -> u64 {
        with(|s| match s.scripted.pop_front() {
            Some(value) => value,
            None => splitmix64(&mut s.rng),
        })
    }

    pub(crate) fn upstreams() -> Vec<Upstream> {
        with(|s| s.upstreams.clone())
    }

    pub(crate) fn kv_get(key: &str) -> Option<String> {
        with(|s| s.kv.get(key).cloned())
    }

    pub(crate) fn kv_set(key: &str, value: &str) -> bool {
        if key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            return false;
        }
        with(|s| {
            if s.kv.len() >= MAX_KEYS && !s.kv.contains_key(key) {
                return false;
            }
            s.kv.insert(key.to_owned(), value.to_owned());
            true
        })
    }

    pub(crate) fn kv_delete(key: &str) -> bool {
        with(|s| s.kv.remove(key).is_some())
    }

    pub(crate) fn counter_open(name: &str) -> String {
        with(|s| {
            s.counters.entry(name.to_owned()).or_insert(0);
        });
        name.to_owned()
    }

    /// Replaces the counter's value with `f(old)`; returns the old value.
    pub(crate) fn counter_update(name: &str, f: impl FnOnce(i64) -> i64) -> i64 {
        with(|s| {
            let value = s.counters.entry(name.to_owned()).or_insert(0);
            let old = *value;
            *value = f(old);
            old
        })
    }
}

/// The in-process host of the current thread, for tests.
///
/// Creating one resets the thread's host: no upstreams, counters at zero, an
/// empty key-value store, the monotonic clock at 0, and a fixed random seed,
/// so every test starts from the same state and is reproducible. Methods
/// taking `&self` read or change that state between plugin calls.
///
/// ```
/// use bbproxy_sdk::testing::TestHost;
///
/// let host = TestHost::new()
///     .upstream("app.test", 2)
///     .upstream_with_balancer("api.test", "least-request", 3);
/// let names: Vec<String> = bbproxy_sdk::upstreams().into_iter().map(|u| u.name).collect();
/// assert_eq!(names, ["app.test", "api.test"]);
/// assert_eq!(host.upstreams()[1].balancer, "least-request");
/// ```
#[derive(Debug)]
pub struct TestHost {
    // The state is thread-local: keep the handle on the thread it reset.
    _not_send: PhantomData<*const ()>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// Resets the current thread's host and returns a handle on it.
    ///
    /// ```
    /// let c = bbproxy_sdk::Counter::new("n");
    /// c.fetch_add(5);
    /// let _host = bbproxy_sdk::testing::TestHost::new();
    /// assert_eq!(c.get(), 0);
    /// ```
    pub fn new() -> TestHost {
        with(|s| *s = State::default());
        TestHost {
            _not_send: PhantomData,
        }
    }

    /// Declares an upstream (a key of `domains` in config.json) with
    /// `backends` backends and the default balancer setting `round-robin`.
    /// Its index in [`crate::upstreams`] is the number of upstreams declared
    /// before it.
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new().upstream("app.test", 3);
    /// assert_eq!(host.upstreams()[0].backends, 3);
    /// ```
    pub fn upstream(self, name: &str, backends: u32) -> TestHost {
        self.upstream_with_balancer(name, "round-robin", backends)
    }

    /// Declares an upstream with a `balancer` setting, as
    /// `{"backends": [...], "balancer": "..."}` would in config.json.
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new()
    ///     .upstream_with_balancer("app.test", "least-request", 2);
    /// assert_eq!(host.upstreams()[0].balancer, "least-request");
    /// ```
    pub fn upstream_with_balancer(self, name: &str, balancer: &str, backends: u32) -> TestHost {
        with(|s| {
            s.upstreams.push(Upstream {
                name: name.to_owned(),
                balancer: balancer.to_owned(),
                backends,
            })
        });
        self
    }

    /// The declared upstreams, as [`crate::upstreams`] returns them.
    ///
    /// ```
    /// assert!(bbproxy_sdk::testing::TestHost::new().upstreams().is_empty());
    /// ```
    pub fn upstreams(&self) -> Vec<Upstream> {
        native::upstreams()
    }

    /// Moves both clocks forward by `by`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// host.advance(Duration::from_millis(1500));
    /// assert_eq!(bbproxy_sdk::monotonic_ns(), 1_500_000_000);
    /// ```
    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        with(|s| {
            s.monotonic_ns = s.monotonic_ns.saturating_add(ns);
            s.wall_ms = s.wall_ms.saturating_add(ms);
        });
    }

    /// Sets the wall clock, in milliseconds since the Unix epoch.
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// host.set_wall_ms(42);
    /// assert_eq!(bbproxy_sdk::wall_ms(), 42);
    /// ```
    pub fn set_wall_ms(&self, ms: u64) {
        with(|s| s.wall_ms = ms);
    }

    /// Restarts the random sequence from `seed` (dropping scripted values).
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// host.seed_random(7);
    /// let first = bbproxy_sdk::random();
    /// host.seed_random(7);
    /// assert_eq!(bbproxy_sdk::random(), first);
    /// ```
    pub fn seed_random(&self, seed: u64) {
        with(|s| {
            s.rng = seed;
            s.scripted.clear();
        });
    }

    /// Makes the next calls of [`crate::random`] return `values`, in order;
    /// after them the seeded sequence continues.
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// host.script_random([3, 1]);
    /// assert_eq!((bbproxy_sdk::random(), bbproxy_sdk::random()), (3, 1));
    /// ```
    pub fn script_random(&self, values: impl IntoIterator<Item = u64>) {
        with(|s| s.scripted.extend(values));
    }

    /// The value of the shared counter `name` (0 if never opened).
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// bbproxy_sdk::Counter::new("hits").fetch_add(2);
    /// assert_eq!(host.counter("hits"), 2);
    /// ```
    pub fn counter(&self, name: &str) -> i64 {
        with(|s| s.counters.get(name).copied().unwrap_or(0))
    }

    /// Sets the shared counter `name`, as a predecessor plugin (or another
    /// worker) might have left it.
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// host.set_counter("hits", 99);
    /// assert_eq!(bbproxy_sdk::Counter::new("hits").get(), 99);
    /// ```
    pub fn set_counter(&self, name: &str, value: i64) {
        with(|s| {
            s.counters.insert(name.to_owned(), value);
        });
    }

    /// Reads the shared key-value store.
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// bbproxy_sdk::kv_set("k", "v");
    /// assert_eq!(host.kv_get("k").as_deref(), Some("v"));
    /// ```
    pub fn kv_get(&self, key: &str) -> Option<String> {
        native::kv_get(key)
    }

    /// Writes the shared key-value store (with the proxy's limits).
    ///
    /// ```
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// assert!(host.kv_set("drain", "10.0.0.1:80"));
    /// assert_eq!(bbproxy_sdk::kv_get("drain").as_deref(), Some("10.0.0.1:80"));
    /// ```
    pub fn kv_set(&self, key: &str, value: &str) -> bool {
        native::kv_set(key, value)
    }

    /// Everything plugins logged since the host was created.
    ///
    /// ```
    /// use bbproxy_sdk::{Level, testing::TestHost};
    /// let host = TestHost::new();
    /// bbproxy_sdk::log(Level::Warn, "odd");
    /// assert_eq!(host.logs()[0].level, Level::Warn);
    /// assert_eq!(host.logs()[0].message, "odd");
    /// ```
    pub fn logs(&self) -> Vec<LogLine> {
        with(|s| s.logs.clone())
    }

    /// Creates a router instance the way the proxy does: `R::init(config)`.
    ///
    /// ```
    /// # #[derive(Default)] struct Nowhere;
    /// # impl bbproxy_sdk::Router for Nowhere {}
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// assert!(host.router::<Nowhere>("{}").is_ok());
    /// assert!(host.router::<Nowhere>(r#"{"unexpected": 1}"#).is_err());
    /// ```
    pub fn router<R: Router>(&self, config: &str) -> Result<R, String> {
        R::init(config)
    }

    /// Creates a balancer instance the way the proxy does: `B::init(config)`.
    ///
    /// ```
    /// # #[derive(Default)] struct Rr;
    /// # impl bbproxy_sdk::Balancer for Rr {}
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// assert!(host.balancer::<Rr>("{}").is_ok());
    /// ```
    pub fn balancer<B: Balancer>(&self, config: &str) -> Result<B, String> {
        B::init(config)
    }

    /// Creates a breaker instance the way the proxy does: `B::init(config)`.
    ///
    /// ```
    /// # #[derive(Default)] struct Default5;
    /// # impl bbproxy_sdk::Breaker for Default5 {}
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// assert!(host.breaker::<Default5>("").is_ok());
    /// ```
    pub fn breaker<B: Breaker>(&self, config: &str) -> Result<B, String> {
        B::init(config)
    }

    /// Creates a filter instance the way the proxy does: `F::init(config)`.
    ///
    /// ```
    /// # #[derive(Default)] struct PassThrough;
    /// # impl bbproxy_sdk::Filter for PassThrough {}
    /// let host = bbproxy_sdk::testing::TestHost::new();
    /// assert!(host.filter::<PassThrough>("{}").is_ok());
    /// assert!(host.filter::<PassThrough>(r#"{"unexpected": 1}"#).is_err());
    /// ```
    pub fn filter<F: Filter>(&self, config: &str) -> Result<F, String> {
        F::init(config)
    }

    /// Asks `filter` what to do with `req` before it is forwarded. An
    /// answer the proxy would count as a plugin fault is an `Err` in the
    /// proxy's words (see [`check_request_action`]); apply a forward's
    /// edits with [`FakeRequest::apply`].
    ///
    /// ```
    /// use bbproxy_sdk::{Filter, Request, RequestAction, RequestEdits, testing::{FakeRequest, TestHost}};
    /// #[derive(Default)]
    /// struct Reframe;
    /// impl Filter for Reframe {
    ///     fn on_request(&mut self, _: &Request) -> RequestAction {
    ///         RequestEdits::new().set_header("Content-Length", "0").into()
    ///     }
    /// }
    /// let host = TestHost::new();
    /// let err = host.on_request(&mut Reframe, &FakeRequest::get("a.test", "/")).unwrap_err();
    /// assert!(err.starts_with("on-request edits: a filter cannot change content-length ("), "{err}");
    /// ```
    pub fn on_request<F: Filter>(
        &self,
        filter: &mut F,
        req: &FakeRequest,
    ) -> Result<RequestAction, String> {
        let facts = filter.request_facts();
        let action = crate::v2_testing::with_facts(req, facts, |r| filter.on_request(r))?;
        check_request_action(&action)?;
        Ok(action)
    }

    /// Asks `filter` which header changes to make to the backend's response
    /// head `resp` to `req`. An answer the proxy would count as a plugin
    /// fault is an `Err` in the proxy's words (see
    /// [`check_response_edits`]); make the edits with
    /// [`FakeResponse::apply`].
    ///
    /// ```
    /// use bbproxy_sdk::{Filter, HeaderEdit, Request, Response};
    /// use bbproxy_sdk::testing::{FakeRequest, FakeResponse, TestHost};
    /// #[derive(Default)]
    /// struct NoStore;
    /// impl Filter for NoStore {
    ///     fn on_response(&mut self, _: &Request, resp: &Response) -> Vec<HeaderEdit> {
    ///         if resp.status() >= 400 { vec![HeaderEdit::set("cache-control", "no-store")] } else { vec![] }
    ///     }
    /// }
    /// let host = TestHost::new();
    /// let req = FakeRequest::get("a.test", "/");
    /// assert_eq!(host.on_response(&mut NoStore, &req, &FakeResponse::new(200)), Ok(vec![]));
    /// let edits = host.on_response(&mut NoStore, &req, &FakeResponse::new(502)).unwrap();
    /// assert_eq!(edits, [HeaderEdit::set("cache-control", "no-store")]);
    /// ```
    pub fn on_response<F: Filter>(
        &self,
        filter: &mut F,
        req: &FakeRequest,
        resp: &FakeResponse,
    ) -> Result<Vec<HeaderEdit>, String> {
        let edits = filter.on_response(&req.as_request(), &resp.as_response());
        check_response_edits(&edits)?;
        Ok(edits)
    }

    /// Asks `router` where `req` goes. An answer the proxy would count as a
    /// plugin fault is an `Err` describing it, in the proxy's words: an
    /// upstream name not declared with [`TestHost::upstream`], a name over
    /// 1 KiB, a direct response with a status outside 100..=599 or a body over
    /// 64 KiB.
    ///
    /// ```
    /// use bbproxy_sdk::{Request, Route, Router, testing::{FakeRequest, TestHost}};
    /// #[derive(Default)]
    /// struct ByPath;
    /// impl Router for ByPath {
    ///     fn route(&mut self, req: &Request) -> Route {
    ///         if req.path().starts_with("/api/") { Route::to("api.test") } else { Route::to("web.test") }
    ///     }
    /// }
    /// let host = TestHost::new().upstream("api.test", 1).upstream("web.test", 1);
    /// let mut router: ByPath = host.router("{}").unwrap();
    /// let api = host.route(&mut router, &FakeRequest::get("x.test", "/api/v1"));
    /// assert_eq!(api, Ok(Route::to("api.test")));
    /// ```
    pub fn route<R: Router>(&self, router: &mut R, req: &FakeRequest) -> Result<Route, String> {
        let route = router.route(&req.as_request());
        match &route {
            Route::Upstream(name) => contract::check_route_upstream(name, |name| {
                with(|s| s.upstreams.iter().any(|u| u.name == name))
            })?,
            Route::Respond(r) => contract::check_route_respond(r.status, r.body.len())?,
        }
        Ok(route)
    }

    /// Asks `balancer` which of `candidates` gets `req` on upstream number
    /// `upstream`, and returns the index. As in the proxy, `candidates` must
    /// not be empty, and `None` or an index out of range is a fault (`Err`).
    ///
    /// ```
    /// use bbproxy_sdk::{Backend, Balancer, Request, testing::{FakeRequest, TestHost, backend}};
    /// #[derive(Default)]
    /// struct Broken;
    /// impl Balancer for Broken {
    ///     fn pick(&mut self, _: &Request, _: u32, candidates: &[Backend]) -> Option<u32> {
    ///         Some(candidates.len() as u32) // one past the end
    ///     }
    /// }
    /// let host = TestHost::new().upstream("app.test", 1);
    /// let mut lb: Broken = host.balancer("{}").unwrap();
    /// let err = host.pick(&mut lb, &FakeRequest::get("app.test", "/"), 0, &[backend(0)]);
    /// assert_eq!(err, Err("pick returned index 1 for 1 candidates".to_string()));
    /// ```
    pub fn pick<B: Balancer>(
        &self,
        balancer: &mut B,
        req: &FakeRequest,
        upstream: u32,
        candidates: &[Backend],
    ) -> Result<usize, String> {
        checked_pick(upstream, candidates, || {
            balancer.pick(&req.as_request(), upstream, candidates)
        })
    }

    /// Tells `breaker` what happened to a request sent to `backend` and
    /// returns its verdict. Use [`record`] to update the backend's stats
    /// from it as the proxy does. A verdict the proxy would count as a plugin
    /// fault (open or half-open with 0 probes) is an `Err` describing it.
    ///
    /// ```
    /// use bbproxy_sdk::{Backend, BreakerState, Outcome, Verdict, testing::{TestHost, backend, failure}};
    /// # #[derive(Default)] struct Default5;
    /// # impl bbproxy_sdk::Breaker for Default5 {}
    /// let host = TestHost::new().upstream("app.test", 1);
    /// let mut breaker: Default5 = host.breaker("{}").unwrap();
    /// let verdict = host.on_outcome(&mut breaker, 0, &backend(0), &failure()).unwrap();
    /// assert!(verdict.failure);
    /// assert_eq!(verdict.state, BreakerState::Closed);
    ///
    /// /// Builds its verdict by hand and forgets the probes.
    /// #[derive(Default)]
    /// struct NoProbes;
    /// impl bbproxy_sdk::Breaker for NoProbes {
    ///     fn on_outcome(&mut self, _: u32, _: &Backend, _: &Outcome) -> Verdict {
    ///         Verdict { failure: true, state: BreakerState::Open, open_for_ms: 1_000, probes: 0 }
    ///     }
    /// }
    /// let err = host.on_outcome(&mut NoProbes, 0, &backend(0), &failure()).unwrap_err();
    /// assert_eq!(err, "on-outcome answered state Open with 0 probes (at least 1)");
    /// ```
    pub fn on_outcome<B: Breaker>(
        &self,
        breaker: &mut B,
        upstream: u32,
        backend: &Backend,
        outcome: &Outcome,
    ) -> Result<Verdict, String> {
        let verdict = breaker.on_outcome(upstream, backend, outcome);
        contract::check_verdict(contract_state(verdict.state), verdict.probes)?;
        Ok(verdict)
    }
}

/// A request for tests: what the proxy's `request` resource would answer.
///
/// The host is stored the way the proxy presents it (lower case, without the
/// port), the target is split into path and query, and header names match
/// case-insensitively, first value wins.
///
/// ```
/// use bbproxy_sdk::testing::FakeRequest;
/// let req = FakeRequest::new("POST", "api.test", "/v1/items?dry-run=1")
///     .header("content-type", "application/json")
///     .client("2001:db8::7");
/// assert_eq!(req.as_request().query().as_deref(), Some("dry-run=1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRequest {
    pub(crate) method: String,
    pub(crate) host: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) client: String,
    headers: Vec<(String, String)>,
}

impl FakeRequest {
    /// A request with `method`, for `host` (a port is dropped), to `target`
    /// (path and optional `?query`), from client `192.0.2.1`.
    ///
    /// ```
    /// let req = bbproxy_sdk::testing::FakeRequest::new("delete", "a.test", "/x");
    /// assert_eq!(req.as_request().method(), "DELETE");
    /// ```
    pub fn new(method: &str, host: &str, target: &str) -> FakeRequest {
        let host = host.to_ascii_lowercase();
        let host = match host.rsplit_once(':') {
            // Keep an IPv6 literal's colons; drop only a trailing `:port`.
            Some((name, port))
                if port.chars().all(|c| c.is_ascii_digit())
                    && (!name.contains(':') || name.ends_with(']')) =>
            {
                name.to_owned()
            }
            _ => host,
        };
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (target.to_owned(), None),
        };
        FakeRequest {
            method: method.to_ascii_uppercase(),
            host,
            path,
            query,
            client: "192.0.2.1".to_owned(),
            headers: Vec::new(),
        }
    }

    /// A `GET` request for `host` to `target`.
    ///
    /// ```
    /// let req = bbproxy_sdk::testing::FakeRequest::get("a.test", "/");
    /// assert_eq!(req.as_request().method(), "GET");
    /// ```
    pub fn get(host: &str, target: &str) -> FakeRequest {
        FakeRequest::new("GET", host, target)
    }

    /// Adds a header (kept after any earlier one of the same name).
    ///
    /// ```
    /// let req = bbproxy_sdk::testing::FakeRequest::get("a.test", "/").header("x-user", "7");
    /// assert_eq!(req.as_request().header("X-User").as_deref(), Some("7"));
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> FakeRequest {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the client IP address (as text).
    ///
    /// ```
    /// let req = bbproxy_sdk::testing::FakeRequest::get("a.test", "/").client("10.1.2.3");
    /// assert_eq!(req.as_request().client_addr(), "10.1.2.3");
    /// ```
    pub fn client(mut self, addr: &str) -> FakeRequest {
        self.client = addr.to_owned();
        self
    }

    /// The [`Request`] view a plugin method takes.
    ///
    /// ```
    /// use bbproxy_sdk::Router;
    /// # #[derive(Default)] struct R;
    /// # impl Router for R {}
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("a.test", "/");
    /// let route = R::default().route(&fake.as_request());
    /// assert_eq!(route.direct_response().map(|r| r.status), Some(404));
    /// ```
    pub fn as_request(&self) -> Request<'_> {
        Request::from_fake(self)
    }

    /// Every header, in order, as `(name, value)`: what the backend would
    /// get after [`apply`](FakeRequest::apply).
    ///
    /// ```
    /// let req = bbproxy_sdk::testing::FakeRequest::get("a.test", "/").header("X-A", "1");
    /// assert_eq!(req.headers(), [("X-A".to_string(), "1".to_string())]);
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Every value of the header `name` (case-insensitive), in order.
    ///
    /// ```
    /// let req = bbproxy_sdk::testing::FakeRequest::get("a.test", "/")
    ///     .header("x-tag", "a").header("X-Tag", "b");
    /// assert_eq!(req.header_values("X-TAG"), ["a", "b"]);
    /// ```
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    /// Makes a filter's `forward` edits on this request, as the proxy
    /// does: the header edits in order, then the path and the query (an
    /// empty query removes it). Edits the proxy would refuse are an `Err`
    /// (see [`check_request_action`]) and nothing is changed.
    ///
    /// ```
    /// use bbproxy_sdk::{RequestEdits, testing::FakeRequest};
    /// let mut req = FakeRequest::get("a.test", "/old?x=1").header("x-a", "1").header("x-a", "2");
    /// let edits = RequestEdits::new().set_header("X-A", "3").add_header("x-b", "4").path("/new").query("");
    /// req.apply(&edits).unwrap();
    /// assert_eq!((req.header_values("x-a"), req.header_values("x-b")), (vec!["3"], vec!["4"]));
    /// assert_eq!((req.as_request().path(), req.as_request().query()), ("/new".into(), None));
    ///
    /// let err = req.apply(&RequestEdits::new().remove_header("x-a").path("new")).unwrap_err();
    /// assert_eq!(err, r#"on-request edits: invalid path "new": it must start with /"#);
    /// assert_eq!(req.header_values("x-a"), ["3"]); // refused: nothing was changed
    /// ```
    pub fn apply(&mut self, edits: &RequestEdits) -> Result<(), String> {
        check_request_action(&RequestAction::Forward(edits.clone()))?;
        apply_header_edits(&mut self.headers, &edits.headers);
        if let Some(path) = &edits.path {
            self.path.clone_from(path);
        }
        if let Some(query) = &edits.query {
            self.query = (!query.is_empty()).then(|| query.clone());
        }
        Ok(())
    }

    /// What the proxy answers a plugin's `header(name)` with (see
    /// `Request::header`): the first value, or every `cookie` joined.
    pub(crate) fn header_value(&self, name: &str) -> Option<String> {
        if name.eq_ignore_ascii_case("cookie") {
            let all = self.header_values(name);
            return (!all.is_empty()).then(|| all.join("; "));
        }
        first(&self.headers, name).map(str::to_owned)
    }
}

/// A backend's response head for tests: what the proxy's `response`
/// resource would answer to a filter's `on_response`.
///
/// Header names match case-insensitively, first value wins; the backend
/// is `127.0.0.1:9001` of upstream 0 unless set.
///
/// ```
/// use bbproxy_sdk::testing::FakeResponse;
/// let resp = FakeResponse::new(503).header("retry-after", "5").backend("10.0.0.7:8080").upstream(1);
/// let view = resp.as_response();
/// assert_eq!((view.status(), view.backend(), view.upstream()), (503, "10.0.0.7:8080".into(), 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeResponse {
    pub(crate) status: u16,
    pub(crate) backend: String,
    pub(crate) upstream: u32,
    headers: Vec<(String, String)>,
}

impl FakeResponse {
    /// A response head with `status` and no headers, from backend
    /// `127.0.0.1:9001` of upstream 0.
    ///
    /// ```
    /// let resp = bbproxy_sdk::testing::FakeResponse::new(204);
    /// assert_eq!(resp.as_response().status(), 204);
    /// ```
    pub fn new(status: u16) -> FakeResponse {
        FakeResponse {
            status,
            backend: "127.0.0.1:9001".to_owned(),
            upstream: 0,
            headers: Vec::new(),
        }
    }

    /// Adds a header (kept after any earlier one of the same name).
    ///
    /// ```
    /// let resp = bbproxy_sdk::testing::FakeResponse::new(200).header("Server", "nginx");
    /// assert_eq!(resp.as_response().header("server").as_deref(), Some("nginx"));
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> FakeResponse {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the backend that answered, as configured.
    ///
    /// ```
    /// let resp = bbproxy_sdk::testing::FakeResponse::new(200).backend("https://api.internal:8443");
    /// assert_eq!(resp.as_response().backend(), "https://api.internal:8443");
    /// ```
    pub fn backend(mut self, backend: &str) -> FakeResponse {
        self.backend = backend.to_owned();
        self
    }

    /// Sets the upstream number of the backend.
    ///
    /// ```
    /// let resp = bbproxy_sdk::testing::FakeResponse::new(200).upstream(3);
    /// assert_eq!(resp.as_response().upstream(), 3);
    /// ```
    pub fn upstream(mut self, upstream: u32) -> FakeResponse {
        self.upstream = upstream;
        self
    }

    /// The [`Response`] view a filter's `on_response` takes.
    ///
    /// ```
    /// let resp = bbproxy_sdk::testing::FakeResponse::new(418);
    /// assert_eq!(resp.as_response().status(), 418);
    /// ```
    pub fn as_response(&self) -> Response<'_> {
        Response::from_fake(self)
    }

    /// Every header, in order, as `(name, value)`: what the client would
    /// get after [`apply`](FakeResponse::apply).
    ///
    /// ```
    /// let resp = bbproxy_sdk::testing::FakeResponse::new(200);
    /// assert!(resp.headers().is_empty());
    /// ```
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// Every value of the header `name` (case-insensitive), in order.
    ///
    /// ```
    /// let resp = bbproxy_sdk::testing::FakeResponse::new(200)
    ///     .header("Set-Cookie", "a=1").header("set-cookie", "b=2");
    /// assert_eq!(resp.header_values("set-cookie"), ["a=1", "b=2"]);
    /// ```
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    /// Makes a filter's `on_response` edits on this head, in order, as the
    /// proxy does. Edits the proxy would refuse are an `Err` (see
    /// [`check_response_edits`]) and nothing is changed.
    ///
    /// ```
    /// use bbproxy_sdk::{HeaderEdit, testing::FakeResponse};
    /// let mut resp = FakeResponse::new(200).header("Server", "nginx").header("Vary", "accept");
    /// resp.apply(&[HeaderEdit::remove("server"), HeaderEdit::add("vary", "cookie")]).unwrap();
    /// assert_eq!(resp.header_values("server"), Vec::<&str>::new());
    /// assert_eq!(resp.header_values("vary"), ["accept", "cookie"]);
    /// ```
    pub fn apply(&mut self, edits: &[HeaderEdit]) -> Result<(), String> {
        check_response_edits(edits)?;
        apply_header_edits(&mut self.headers, edits);
        Ok(())
    }

    pub(crate) fn header_value(&self, name: &str) -> Option<&str> {
        first(&self.headers, name)
    }
}

/// Checks a filter's `on_request` answer as the proxy does (the same code:
/// `bbproxy_plugin_contract::filters`). `Err` names what it refused: a
/// header a filter may not change (`content-length`, `transfer-encoding`,
/// `host`, hop-by-hop headers), an invalid header name or value, a path
/// that does not start with `/` or holds `?`, `#`, spaces or control
/// characters, a query with `#`, spaces or control characters, an answer
/// with a status outside 200..=599 or a body over 64 KiB.
///
/// ```
/// use bbproxy_sdk::{RequestAction, RequestEdits, testing::check_request_action};
/// assert!(check_request_action(&RequestEdits::new().remove_header("x-api-key").into()).is_ok());
/// let answer = RequestAction::respond(401, "").with_header("Connection", "close");
/// let err = check_request_action(&answer).unwrap_err();
/// assert!(err.starts_with("on-request answer: a filter cannot change connection ("), "{err}");
/// assert!(check_request_action(&RequestAction::respond(100, "")).is_err());
/// ```
pub fn check_request_action(action: &RequestAction) -> Result<(), String> {
    match action {
        RequestAction::Forward(edits) => contract::filters::check_forward(
            edits.headers.iter().map(HeaderEdit::as_contract),
            edits.path.as_deref(),
            edits.query.as_deref(),
        ),
        RequestAction::Respond(answer) => contract::filters::check_respond(
            answer.status,
            answer
                .headers
                .iter()
                .map(|h| (h.name.as_str(), h.value.as_str())),
            answer.body.len(),
        ),
    }
}

/// Checks a filter's `on_response` answer as the proxy does (the same
/// code: `bbproxy_plugin_contract::filters`). `Err` names the header it
/// refused: one a filter may not change, an invalid name or value.
///
/// ```
/// use bbproxy_sdk::{HeaderEdit, testing::check_response_edits};
/// assert!(check_response_edits(&[HeaderEdit::set("x-frame-options", "DENY")]).is_ok());
/// let err = check_response_edits(&[HeaderEdit::remove("Transfer-Encoding")]).unwrap_err();
/// assert!(err.starts_with("on-response edits: a filter cannot change transfer-encoding ("), "{err}");
/// ```
pub fn check_response_edits(edits: &[HeaderEdit]) -> Result<(), String> {
    contract::filters::check_response_edits(edits.iter().map(HeaderEdit::as_contract))
}

/// The first value of header `name` (case-insensitive).
fn first<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Every value of header `name` (case-insensitive), in order.
fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Makes checked header edits, in order: `set` replaces every value (the
/// new one goes last), `add` appends, `remove` drops every value.
fn apply_header_edits(headers: &mut Vec<(String, String)>, edits: &[HeaderEdit]) {
    for edit in edits {
        match edit {
            HeaderEdit::Set(h) => {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&h.name));
                headers.push((h.name.clone(), h.value.clone()));
            }
            HeaderEdit::Add(h) => headers.push((h.name.clone(), h.value.clone())),
            HeaderEdit::Remove(name) => headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
        }
    }
}

/// A healthy backend with position `id`: weight 1, nothing in flight, no
/// history, breaker closed. Change fields with struct update syntax.
///
/// ```
/// use bbproxy_sdk::{Backend, testing::backend};
/// let slow = Backend { latency_ewma_us: 80_000, in_flight: 4, ..backend(1) };
/// assert_eq!((slow.id, slow.weight), (1, 1));
/// ```
pub fn backend(id: u32) -> Backend {
    Backend {
        id,
        weight: 1,
        in_flight: 0,
        consecutive_failures: 0,
        consecutive_successes: 0,
        latency_ewma_us: 0,
        requests: 0,
        breaker: BreakerState::Closed,
    }
}

/// `n` healthy backends with ids `0..n`.
///
/// ```
/// let ids: Vec<u32> = bbproxy_sdk::testing::backends(3).iter().map(|b| b.id).collect();
/// assert_eq!(ids, [0, 1, 2]);
/// ```
pub fn backends(n: u32) -> Vec<Backend> {
    (0..n).map(backend).collect()
}

/// An outcome: the backend answered with `status` after `latency`.
///
/// ```
/// use std::time::Duration;
/// let o = bbproxy_sdk::testing::response(503, Duration::from_millis(3));
/// assert!(o.is_response() && o.latency_us == 3_000);
/// ```
pub fn response(status: u16, latency: Duration) -> Outcome {
    Outcome {
        kind: OutcomeKind::Response,
        status,
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    }
}

/// An outcome: the connection was refused after 1 ms.
///
/// ```
/// assert!(bbproxy_sdk::testing::failure().is_failure(false));
/// ```
pub fn failure() -> Outcome {
    Outcome {
        kind: OutcomeKind::ConnectError,
        status: 0,
        latency_us: 1_000,
    }
}

/// Updates `backend`'s statistics after `outcome` and the breaker's
/// `verdict`, as the proxy does (the same rule:
/// [`bbproxy_plugin_contract::record`]): one more request, the latency
/// folded into the moving average (responses only), the consecutive
/// failure/success counts from `verdict.failure`, and the breaker state from
/// `verdict.state`. A success while the verdict keeps the backend open is a
/// late answer to a request sent before it opened and counts for nothing.
///
/// ```
/// use std::time::Duration;
/// use bbproxy_sdk::{Verdict, testing::{backend, record, response}};
/// let mut b = backend(0);
/// record(&mut b, &response(200, Duration::from_millis(10)), &Verdict::closed(false));
/// record(&mut b, &response(200, Duration::from_millis(30)), &Verdict::closed(false));
/// assert_eq!((b.requests, b.consecutive_successes, b.latency_ewma_us), (2, 2, 15_000));
/// // Opened: a late success changes nothing.
/// record(&mut b, &response(200, Duration::from_millis(1)), &Verdict::open(false, 1_000, 1));
/// assert_eq!(b.consecutive_successes, 0);
/// ```
pub fn record(backend: &mut Backend, outcome: &Outcome, verdict: &Verdict) {
    let mut stats = contract::Stats {
        requests: backend.requests,
        consecutive_failures: backend.consecutive_failures,
        consecutive_successes: backend.consecutive_successes,
        latency_ewma_us: backend.latency_ewma_us,
        breaker: contract_state(backend.breaker),
    };
    let latency = outcome.is_response().then_some(outcome.latency_us);
    contract::record(
        &mut stats,
        latency,
        verdict.failure,
        contract_state(verdict.state),
    );
    backend.requests = stats.requests;
    backend.consecutive_failures = stats.consecutive_failures;
    backend.consecutive_successes = stats.consecutive_successes;
    backend.latency_ewma_us = stats.latency_ewma_us;
    backend.breaker = verdict.state;
}

/// A pick among `candidates` of upstream number `upstream` as the proxy
/// makes it: never with none, never with a list the proxy could not give
/// (each candidate is one of the upstream's backends, listed once, in
/// configured order: a balancer may rely on it), and its answer checked
/// (`pick` makes it).
pub(crate) fn checked_pick(
    upstream: u32,
    candidates: &[Backend],
    pick: impl FnOnce() -> Option<u32>,
) -> Result<usize, String> {
    if candidates.is_empty() {
        return Err("the proxy never calls pick with no candidates".into());
    }
    if candidates.windows(2).any(|w| w[0].id >= w[1].id) {
        return Err(
            "the proxy lists candidates in configured order, each once: their ids increase".into(),
        );
    }
    let backends = usize::try_from(upstream)
        .ok()
        .and_then(|u| native::upstreams().get(u).map(|u| u.backends));
    if let (Some(backends), Some(last)) = (backends, candidates.last())
        && last.id >= backends
    {
        return Err(format!(
            "candidate id {} is no backend of upstream {upstream}, which has {backends}",
            last.id
        ));
    }
    contract::check_pick(pick(), candidates.len())
}

pub(crate) fn contract_state(state: BreakerState) -> contract::BreakerState {
    match state {
        BreakerState::Closed => contract::BreakerState::Closed,
        BreakerState::Open => contract::BreakerState::Open,
        BreakerState::HalfOpen => contract::BreakerState::HalfOpen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default)]
    struct Defaults;
    impl Router for Defaults {}
    impl Balancer for Defaults {}
    impl Breaker for Defaults {}

    #[test]
    fn the_default_balancer_is_round_robin_shared_by_instances() {
        let host = TestHost::new().upstream("a.test", 3).upstream("b.test", 2);
        let mut one: Defaults = host.balancer("{}").unwrap();
        let mut two: Defaults = host.balancer("{}").unwrap();
        let req = FakeRequest::get("a.test", "/");
        let picks: Vec<usize> = (0..6)
            .map(|i| {
                let lb = if i % 2 == 0 { &mut one } else { &mut two };
                host.pick(lb, &req, 0, &backends(3)).unwrap()
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Each upstream has its own turn counter.
        assert_eq!(host.pick(&mut one, &req, 1, &backends(2)), Ok(0));
        assert_eq!(host.counter("bbproxy.sdk.rr.0"), 6);
        assert_eq!(host.counter("bbproxy.sdk.rr.1"), 1);
    }

    #[test]
    fn a_reset_host_forgets_counters_seen_by_old_instances() {
        let host = TestHost::new();
        let mut lb: Defaults = host.balancer("{}").unwrap();
        let req = FakeRequest::get("a.test", "/");
        assert_eq!(host.pick(&mut lb, &req, 0, &backends(2)), Ok(0));
        let host = TestHost::new();
        assert_eq!(host.pick(&mut lb, &req, 0, &backends(2)), Ok(0));
    }

    #[test]
    fn the_default_breaker_opens_and_recovers_through_a_probe() {
        let host = TestHost::new().upstream("a.test", 1);
        let mut breaker: Defaults = host.breaker("{}").unwrap();
        let mut b = backend(0);
        for _ in 0..4 {
            let v = host.on_outcome(&mut breaker, 0, &b, &failure()).unwrap();
            assert_eq!(v.state, BreakerState::Closed);
            record(&mut b, &failure(), &v);
        }
        let v = host.on_outcome(&mut breaker, 0, &b, &failure()).unwrap();
        assert_eq!((v.state, v.open_for_ms), (BreakerState::Open, 30_000));
        record(&mut b, &failure(), &v);
        // The proxy moves it to half-open after the open period.
        b.breaker = BreakerState::HalfOpen;
        let ok = response(200, Duration::from_millis(2));
        assert_eq!(
            host.on_outcome(&mut breaker, 0, &b, &ok),
            Ok(Verdict::closed(false))
        );
    }

    #[test]
    fn the_default_router_answers_404_and_bad_answers_are_faults() {
        let host = TestHost::new();
        let mut router: Defaults = host.router("").unwrap();
        let route = host
            .route(&mut router, &FakeRequest::get("a.test", "/"))
            .unwrap();
        assert_eq!(route.direct_response().map(|r| r.status), Some(404));

        #[derive(Default)]
        struct Bad;
        impl Router for Bad {
            fn route(&mut self, _: &Request) -> Route {
                Route::respond(99, "")
            }
        }
        impl Balancer for Bad {
            fn pick(&mut self, _: &Request, _: u32, _: &[Backend]) -> Option<u32> {
                None
            }
        }
        let req = FakeRequest::get("a.test", "/");
        assert_eq!(
            host.route(&mut Bad, &req),
            Err("route answered with status 99, outside 100..=599".into())
        );
        assert_eq!(
            host.pick(&mut Bad, &req, 0, &backends(1)),
            Err("pick returned none for a non-empty candidate list".into())
        );
        assert!(host.pick(&mut Bad, &req, 0, &[]).is_err());
    }

    /// Answers whatever route it holds.
    #[derive(Default)]
    struct Says(Option<Route>);
    impl Router for Says {
        fn route(&mut self, _: &Request) -> Route {
            self.0.clone().unwrap_or_else(|| Route::respond(500, ""))
        }
    }

    #[test]
    fn route_faults_are_the_proxys() {
        let host = TestHost::new().upstream("a.test", 1);
        let req = FakeRequest::get("a.test", "/");
        let route = |r: Route| host.route(&mut Says(Some(r)), &req);
        assert_eq!(route(Route::to("a.test")), Ok(Route::to("a.test")));
        assert_eq!(
            route(Route::to("b.test")),
            Err("route named upstream \"b.test\", which is not a configured domain".into())
        );
        let long = "a".repeat(1025);
        assert_eq!(
            route(Route::to(long)),
            Err("route named an upstream of 1025 bytes (at most 1024)".into())
        );
        assert!(route(Route::respond(599, "x".repeat(64 * 1024))).is_ok());
        assert_eq!(
            route(Route::respond(200, "x".repeat(64 * 1024 + 1))),
            Err("route answered with a body of 65537 bytes (at most 65536)".into())
        );
        assert!(route(Route::respond(600, "")).is_err());
        // With no upstream declared, no name is known.
        let host = TestHost::new();
        assert!(
            host.route(&mut Says(Some(Route::to("a.test"))), &req)
                .is_err()
        );
    }

    #[test]
    fn verdict_faults_are_the_proxys() {
        #[derive(Default)]
        struct Fixed(Option<Verdict>);
        impl Breaker for Fixed {
            fn on_outcome(&mut self, _: u32, _: &Backend, _: &Outcome) -> Verdict {
                self.0.unwrap_or(Verdict::closed(false))
            }
        }
        let host = TestHost::new().upstream("a.test", 1);
        let verdict = |state, probes| {
            let v = Verdict {
                failure: true,
                state,
                open_for_ms: 5,
                probes,
            };
            host.on_outcome(&mut Fixed(Some(v)), 0, &backend(0), &failure())
        };
        assert!(verdict(BreakerState::Closed, 0).is_ok());
        assert!(verdict(BreakerState::Open, 1).is_ok());
        assert_eq!(
            verdict(BreakerState::Open, 0),
            Err("on-outcome answered state Open with 0 probes (at least 1)".into())
        );
        assert_eq!(
            verdict(BreakerState::HalfOpen, 0),
            Err("on-outcome answered state HalfOpen with 0 probes (at least 1)".into())
        );
    }

    #[test]
    fn host_ports_and_ipv6_literals() {
        assert_eq!(FakeRequest::get("A.test:443", "/").host, "a.test");
        assert_eq!(FakeRequest::get("[::1]:8080", "/").host, "[::1]");
        assert_eq!(FakeRequest::get("[::1]", "/").host, "[::1]");
        assert_eq!(FakeRequest::get("a.test", "/?").query.as_deref(), Some(""));
    }

    impl Filter for Defaults {}

    /// Answers whatever it holds, from both hooks.
    #[derive(Default)]
    struct Answers {
        action: Option<RequestAction>,
        edits: Vec<HeaderEdit>,
    }
    impl Filter for Answers {
        fn on_request(&mut self, _: &Request) -> RequestAction {
            self.action.clone().unwrap_or_else(RequestAction::forward)
        }
        fn on_response(&mut self, _: &Request, _: &Response) -> Vec<HeaderEdit> {
            self.edits.clone()
        }
    }

    fn forwarding(edits: RequestEdits) -> Answers {
        Answers {
            action: Some(edits.into()),
            edits: Vec::new(),
        }
    }

    #[test]
    fn the_default_filter_forwards_unchanged_and_edits_no_response() {
        let host = TestHost::new();
        let mut filter: Defaults = host.filter("").unwrap();
        assert!(host.filter::<Defaults>(r#"{"x": 1}"#).is_err());
        let req = FakeRequest::get("a.test", "/?a=1").header("x-a", "1");
        let action = host.on_request(&mut filter, &req).unwrap();
        assert_eq!(action, RequestAction::forward());
        let mut edited = req.clone();
        edited.apply(action.edits().unwrap()).unwrap();
        assert_eq!(edited, req);
        let resp = FakeResponse::new(200).header("server", "x");
        assert_eq!(host.on_response(&mut filter, &req, &resp), Ok(vec![]));
    }

    #[test]
    fn a_refused_header_is_reported_by_name_in_every_answer() {
        let host = TestHost::new();
        let req = FakeRequest::get("a.test", "/");
        let want = "a filter cannot change content-length (it frames the message; a changed \
                    framing lets the proxy and the backend disagree on where a message ends)";

        let mut sets = forwarding(RequestEdits::new().set_header("Content-Length", "0"));
        assert_eq!(
            host.on_request(&mut sets, &req),
            Err(format!("on-request edits: {want}"))
        );
        let mut answers = Answers {
            action: Some(RequestAction::respond(401, "").with_header("content-length", "0")),
            edits: Vec::new(),
        };
        assert_eq!(
            host.on_request(&mut answers, &req),
            Err(format!("on-request answer: {want}"))
        );
        let mut removes = Answers {
            action: None,
            edits: vec![
                HeaderEdit::set("x-a", "1"),
                HeaderEdit::remove("content-length"),
            ],
        };
        assert_eq!(
            host.on_response(&mut removes, &req, &FakeResponse::new(200)),
            Err(format!("on-response edits: {want}"))
        );
        // The same edits on a fake message are refused whole.
        let mut resp = FakeResponse::new(200).header("content-length", "5");
        assert!(resp.apply(&removes.edits).is_err());
        assert_eq!(resp, FakeResponse::new(200).header("content-length", "5"));
    }

    #[test]
    fn filter_answers_outside_the_contract_are_faults() {
        let host = TestHost::new();
        let req = FakeRequest::get("a.test", "/");
        let on_request = |action: RequestAction| {
            let mut filter = Answers {
                action: Some(action),
                edits: Vec::new(),
            };
            host.on_request(&mut filter, &req)
        };
        assert!(on_request(RequestAction::respond(200, "x".repeat(64 * 1024))).is_ok());
        assert_eq!(
            on_request(RequestAction::respond(401, "x".repeat(64 * 1024 + 1))),
            Err("on-request answered with a body of 65537 bytes (at most 65536)".into())
        );
        assert_eq!(
            on_request(RequestAction::respond(103, "")),
            Err("on-request answered with status 103, outside 200..=599".into())
        );
        assert!(on_request(RequestAction::respond(600, "")).is_err());
        let edits = |e: RequestEdits| on_request(e.into());
        assert!(edits(RequestEdits::new().path("/a/%20").query("b=1")).is_ok());
        assert!(edits(RequestEdits::new().path("a")).is_err());
        assert!(edits(RequestEdits::new().path("/a?b=1")).is_err());
        assert!(edits(RequestEdits::new().query("b=1#top")).is_err());
        assert!(edits(RequestEdits::new().set_header("host", "evil.test")).is_err());
        assert!(edits(RequestEdits::new().add_header("x-a", "1\r\nx-b: 2")).is_err());
        assert_eq!(
            edits(RequestEdits::new().remove_header("bad name")),
            Err(r#"on-request edits: invalid header name "bad name""#.into())
        );
    }

    #[test]
    fn request_edits_apply_in_order_like_the_proxy() {
        let mut req = FakeRequest::get("a.test", "/p?q=1")
            .header("X-A", "1")
            .header("x-b", "2")
            .header("x-a", "3");
        let edits = RequestEdits::new()
            .add_header("x-c", "4")
            .set_header("x-a", "5")
            .remove_header("X-B")
            .add_header("x-a", "6");
        req.apply(&edits).unwrap();
        assert_eq!(
            req.headers(),
            [
                ("x-c".to_owned(), "4".to_owned()),
                ("x-a".to_owned(), "5".to_owned()),
                ("x-a".to_owned(), "6".to_owned()),
            ]
        );
        // No path or query edit keeps them; an empty query removes it.
        assert_eq!(req.as_request().path(), "/p");
        assert_eq!(req.as_request().query().as_deref(), Some("q=1"));
        req.apply(&RequestEdits::new().query("r=2")).unwrap();
        assert_eq!(req.as_request().query().as_deref(), Some("r=2"));
        req.apply(&RequestEdits::new().path("/n").query(""))
            .unwrap();
        assert_eq!(
            (req.as_request().path(), req.as_request().query()),
            ("/n".into(), None)
        );
        // Refused edits change nothing, not even the good ones before them.
        let before = req.clone();
        let refused = RequestEdits::new()
            .remove_header("x-a")
            .set_header("te", "trailers");
        assert!(
            req.apply(&refused)
                .unwrap_err()
                .contains("cannot change te")
        );
        assert_eq!(req, before);
    }

    #[test]
    fn the_response_head_answers_what_the_test_built() {
        let host = TestHost::new();
        /// Copies the head into headers, to see what the filter saw.
        #[derive(Default)]
        struct Echo;
        impl Filter for Echo {
            fn on_response(&mut self, req: &Request, resp: &Response) -> Vec<HeaderEdit> {
                vec![
                    HeaderEdit::set("x-status", resp.status().to_string()),
                    HeaderEdit::set("x-backend", resp.backend()),
                    HeaderEdit::set("x-upstream", resp.upstream().to_string()),
                    HeaderEdit::set("x-server", resp.header("SERVER").unwrap_or_default()),
                    HeaderEdit::set("x-path", req.path()),
                ]
            }
        }
        let req = FakeRequest::get("a.test", "/seen");
        let mut resp = FakeResponse::new(502)
            .header("Server", "a")
            .header("server", "b")
            .backend("10.0.0.9:81")
            .upstream(4);
        let edits = host.on_response(&mut Echo, &req, &resp).unwrap();
        resp.apply(&edits).unwrap();
        let first = |name| resp.as_response().header(name);
        assert_eq!(first("x-status").as_deref(), Some("502"));
        assert_eq!(first("x-backend").as_deref(), Some("10.0.0.9:81"));
        assert_eq!(first("x-upstream").as_deref(), Some("4"));
        assert_eq!(first("x-server").as_deref(), Some("a"));
        assert_eq!(first("x-path").as_deref(), Some("/seen"));
        assert_eq!(resp.header_values("server"), ["a", "b"]);
    }

    #[test]
    fn kv_limits_match_the_proxy() {
        let host = TestHost::new();
        assert!(!host.kv_set("k", &"v".repeat(MAX_VALUE_BYTES + 1)));
        for i in 0..MAX_KEYS {
            assert!(host.kv_set(&format!("k{i}"), ""));
        }
        assert!(!host.kv_set("one-too-many", ""));
        assert!(host.kv_set("k0", "overwrite is fine"));
    }
}
