//! Unit-test plugins with plain `cargo test`: no proxy, no Wasm toolchain.
//!
//! Compiled for every target except `wasm32`, this module is an in-process
//! host. The SDK's host functions ([`log`](crate::log),
//! [`Counter`](crate::Counter), [`kv_get`](crate::kv_get),
//! [`random`](crate::random), [`monotonic_ns`](crate::monotonic_ns),
//! [`upstreams`](crate::upstreams), ...) and the [`Request`] accessors are
//! answered here instead of by the proxy, so a plugin's code runs natively,
//! unchanged. Nothing of it is in a plugin's `.wasm`.
//!
//! A test creates a [`TestHost`] (which resets the host of the current
//! thread: tests running in parallel do not see each other), declares the
//! upstreams, creates plugin instances with the same `init` the proxy calls,
//! and makes decisions on [`FakeRequest`]s and [`backend`]s:
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
//! [`TestHost::pick`], [`TestHost::route`] and [`TestHost::on_outcome`]
//! apply the checks the proxy applies to each answer (the same code: the
//! `bbproxy-plugin-contract` crate), and return the fault the proxy would
//! count as an `Err`: an index out of range or `None`; an upstream not
//! declared with [`TestHost::upstream`], a name over 1 KiB, a status outside
//! 100..=599 or a direct body over 64 KiB; an open or half-open verdict with
//! 0 probes.
//!
//! The host state is per thread: a test that spawns threads sees a fresh
//! host in each of them.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::marker::PhantomData;
use std::time::Duration;

use bbproxy_plugin_contract as contract;

use crate::{
    Backend, Balancer, Breaker, BreakerState, Level, Outcome, OutcomeKind, Request, Route, Router,
    Upstream, Verdict,
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
        if candidates.is_empty() {
            return Err("the proxy never calls pick with no candidates".into());
        }
        let choice = balancer.pick(&req.as_request(), upstream, candidates);
        contract::check_pick(choice, candidates.len())
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

    /// What the proxy answers a plugin's `header(name)` with (see
    /// `Request::header`): the first value, or every `cookie` joined.
    pub(crate) fn header_value(&self, name: &str) -> Option<String> {
        let mut values = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str());
        if name.eq_ignore_ascii_case("cookie") {
            let all: Vec<&str> = values.collect();
            return (!all.is_empty()).then(|| all.join("; "));
        }
        values.next().map(str::to_owned)
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

fn contract_state(state: BreakerState) -> contract::BreakerState {
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
