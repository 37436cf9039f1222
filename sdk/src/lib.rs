//! Write [BBProxy](https://github.com/bbproxy/bbproxy) plugins in Rust.
//!
//! A BBProxy plugin is a WebAssembly component that makes one kind of
//! decision for the proxy: a [`Router`] picks the upstream for a request, a
//! [`Balancer`] picks one backend of that upstream, and a [`Breaker`] turns
//! the outcomes of forwarded requests into circuit-breaker states. This crate
//! hides the component-model bindings: implement one trait, then call
//! [`export!`] once.
//!
//! ```
//! use bbproxy_sdk::{Backend, Balancer, Request};
//!
//! /// Sends every request to the backend with the fewest requests in flight.
//! #[derive(Default)]
//! struct LeastBusy;
//!
//! impl Balancer for LeastBusy {
//!     fn pick(&mut self, _req: &Request, _upstream: u32, candidates: &[Backend]) -> Option<u32> {
//!         let (index, _) = candidates.iter().enumerate().min_by_key(|(_, b)| b.in_flight)?;
//!         u32::try_from(index).ok()
//!     }
//! }
//!
//! bbproxy_sdk::export!(LeastBusy: balancer);
//! # fn main() {}
//! ```
//!
//! The plugin crate needs only this crate and `crate-type = ["cdylib"]`
//! (the SDK re-exports [`serde`] and [`serde_json`] for configurations: see
//! [`parse_config`]); build it with
//! `cargo build --target wasm32-wasip2 --release` and point config.json at
//! `target/wasm32-wasip2/release/<crate>.wasm`. (BBProxy's own plugins
//! use `--profile plugin`, a profile its workspace defines; outside it, set
//! `opt-level = "s"`, `lto = true` and `strip = true` in your
//! `[profile.release]` for a small component.)
//!
//! # Instances and state
//!
//! The host creates plugin instances, reuses them for many calls and may
//! discard them at any time. Each instance gets one call to `init` with the
//! plugin's JSON configuration; the value it returns is kept for the instance
//! and receives every later call as `&mut self`. State that must be shared
//! between instances (all worker threads see different instances) or survive a
//! reload belongs in the host's shared state: [`Counter`], [`kv_get`],
//! [`kv_set`], [`kv_delete`].
//!
//! # Testing
//!
//! Host functions ([`log`], [`upstreams`], [`Counter`], the methods of
//! [`Request`], ...) call the proxy when the plugin runs as a component. When
//! the crate is compiled for any other target, as `cargo test` does, they are
//! answered by an in-process host instead, so a plugin's unit tests call its
//! real `init`, `route`, `pick` and `on_outcome` with a fake request and
//! backends, and assert on the answers. See [`testing`].
#![deny(missing_docs)]

use std::cell::RefCell;

// The generated bindings. Hidden: plugin authors use the traits below and the
// re-exports; only `export!` reaches in here.
#[doc(hidden)]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    /// Bindings of the `router` world. The shared `types` and `host`
    /// interfaces are generated here (with every type, used by this world or
    /// not) and reused by the other worlds, so each WIT type is one Rust type.
    pub mod router {
        wit_bindgen::generate!({
            path: "../wit",
            world: "router",
            generate_unused_types: true,
            additional_derives: [PartialEq],
            pub_export_macro: true,
            export_macro_name: "export_router",
            default_bindings_module: "bbproxy_sdk::bindings::router",
        });
    }

    /// Bindings of the `balancer` world.
    pub mod balancer {
        wit_bindgen::generate!({
            path: "../wit",
            world: "balancer",
            with: {
                "bbproxy:plugin/types@0.1.0": crate::bindings::router::bbproxy::plugin::types,
                "bbproxy:plugin/host@0.1.0": crate::bindings::router::bbproxy::plugin::host,
            },
            pub_export_macro: true,
            export_macro_name: "export_balancer",
            default_bindings_module: "bbproxy_sdk::bindings::balancer",
        });
    }

    /// Bindings of the `breaker` world.
    pub mod breaker {
        wit_bindgen::generate!({
            path: "../wit",
            world: "breaker",
            with: {
                "bbproxy:plugin/types@0.1.0": crate::bindings::router::bbproxy::plugin::types,
                "bbproxy:plugin/host@0.1.0": crate::bindings::router::bbproxy::plugin::host,
            },
            pub_export_macro: true,
            export_macro_name: "export_breaker",
            default_bindings_module: "bbproxy_sdk::bindings::breaker",
        });
    }
}

mod host;
mod request;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

use bindings::router::bbproxy::plugin::types as wit_types;

pub use host::{Counter, kv_delete, kv_get, kv_set, log, monotonic_ns, random, upstreams, wall_ms};
pub use request::Request;
/// ```
/// use bbproxy_sdk::{Backend, BreakerState};
/// // What a balancer's `candidates` hold; `testing::backend(id)` builds one.
/// let b = Backend {
///     id: 2, weight: 3, in_flight: 1, consecutive_failures: 0, consecutive_successes: 7,
///     latency_ewma_us: 1_200, requests: 40, breaker: BreakerState::Closed,
/// };
/// assert!(b.breaker == BreakerState::Closed && b.weight == 3);
/// ```
pub use wit_types::Backend;
/// ```
/// use bbproxy_sdk::{BreakerState, Verdict};
/// assert_eq!(Verdict::half_open(false, 1).state, BreakerState::HalfOpen);
/// assert_ne!(BreakerState::Open, BreakerState::Closed);
/// ```
pub use wit_types::BreakerState;
/// ```
/// use bbproxy_sdk::{DirectResponse, Route};
/// let moved = Route::respond(410, "gone\n");
/// assert_eq!(moved.direct_response(), Some(&DirectResponse { status: 410, body: "gone\n".into() }));
/// ```
pub use wit_types::DirectResponse;
/// ```
/// use bbproxy_sdk::{Level, log, testing::TestHost};
/// let host = TestHost::new();
/// log(Level::Info, "ready");
/// assert_eq!(host.logs()[0].level, Level::Info);
/// ```
pub use wit_types::Level;
/// ```
/// use bbproxy_sdk::{Outcome, OutcomeKind};
/// // What a breaker's `on_outcome` receives; `testing::response` builds one.
/// let timeout = Outcome { kind: OutcomeKind::Timeout, status: 0, latency_us: 5_000_000 };
/// assert!(timeout.is_failure(false));
/// ```
pub use wit_types::Outcome;
/// ```
/// use bbproxy_sdk::{Outcome, OutcomeKind};
/// let refused = Outcome { kind: OutcomeKind::ConnectError, status: 0, latency_us: 300 };
/// assert!(!refused.is_response());
/// assert_eq!(refused.kind, OutcomeKind::ConnectError);
/// ```
pub use wit_types::OutcomeKind;
/// ```
/// use bbproxy_sdk::Route;
/// match Route::to("app.test") {
///     Route::Upstream(name) => assert_eq!(name, "app.test"),
///     Route::Respond(_) => unreachable!(),
/// }
/// ```
pub use wit_types::Route;
/// ```
/// use bbproxy_sdk::{Upstream, testing::TestHost};
/// let _host = TestHost::new().upstream("app.test", 2);
/// let first: Upstream = bbproxy_sdk::upstreams().remove(0);
/// assert_eq!((first.name.as_str(), first.balancer.as_str(), first.backends), ("app.test", "round-robin", 2));
/// ```
pub use wit_types::Upstream;
/// ```
/// use bbproxy_sdk::{BreakerState, Verdict};
/// let v = Verdict::open(true, 5_000, 2);
/// assert_eq!((v.failure, v.state, v.open_for_ms, v.probes), (true, BreakerState::Open, 5_000, 2));
/// ```
pub use wit_types::Verdict;

impl Route {
    /// Forwards the request to the upstream `name` (a key of `domains` in
    /// config.json).
    ///
    /// ```
    /// # use bbproxy_sdk::Route;
    /// assert_eq!(Route::to("example.com"), Route::Upstream("example.com".into()));
    /// ```
    pub fn to(name: impl Into<String>) -> Route {
        Route::Upstream(name.into())
    }

    /// Answers the client directly with `status` and a plain-text `body`,
    /// without contacting any backend.
    ///
    /// ```
    /// # use bbproxy_sdk::Route;
    /// let route = Route::respond(404, "not here\n");
    /// assert_eq!(route.direct_response().map(|r| r.status), Some(404));
    /// ```
    pub fn respond(status: u16, body: impl Into<String>) -> Route {
        Route::Respond(DirectResponse {
            status,
            body: body.into(),
        })
    }

    /// The upstream name, if this route forwards.
    ///
    /// ```
    /// # use bbproxy_sdk::Route;
    /// assert_eq!(Route::to("a.example").upstream(), Some("a.example"));
    /// assert_eq!(Route::respond(421, "").upstream(), None);
    /// ```
    pub fn upstream(&self) -> Option<&str> {
        match self {
            Route::Upstream(name) => Some(name),
            Route::Respond(_) => None,
        }
    }

    /// The direct response, if this route answers the client itself.
    ///
    /// ```
    /// # use bbproxy_sdk::Route;
    /// assert!(Route::to("a.example").direct_response().is_none());
    /// ```
    pub fn direct_response(&self) -> Option<&DirectResponse> {
        match self {
            Route::Upstream(_) => None,
            Route::Respond(response) => Some(response),
        }
    }
}

impl Verdict {
    /// The backend is (or stays) closed: it gets traffic normally.
    ///
    /// ```
    /// # use bbproxy_sdk::{BreakerState, Verdict};
    /// let v = Verdict::closed(false);
    /// assert_eq!((v.failure, v.state), (false, BreakerState::Closed));
    /// ```
    pub fn closed(failure: bool) -> Verdict {
        Verdict {
            failure,
            state: BreakerState::Closed,
            open_for_ms: 0,
            probes: 1,
        }
    }

    /// The backend is (or stays) open for `open_for_ms` milliseconds; after
    /// that the host lets at most `probes` requests at a time through
    /// (half-open). `probes` below 1 is raised to 1.
    ///
    /// ```
    /// # use bbproxy_sdk::{BreakerState, Verdict};
    /// let v = Verdict::open(true, 30_000, 1);
    /// assert_eq!((v.state, v.open_for_ms, v.probes), (BreakerState::Open, 30_000, 1));
    /// ```
    pub fn open(failure: bool, open_for_ms: u64, probes: u32) -> Verdict {
        Verdict {
            failure,
            state: BreakerState::Open,
            open_for_ms,
            probes: probes.max(1),
        }
    }

    /// The backend is (or stays) half-open: at most `probes` requests at a
    /// time reach it. `probes` below 1 is raised to 1.
    ///
    /// ```
    /// # use bbproxy_sdk::{BreakerState, Verdict};
    /// let v = Verdict::half_open(false, 2);
    /// assert_eq!((v.state, v.probes), (BreakerState::HalfOpen, 2));
    /// ```
    pub fn half_open(failure: bool, probes: u32) -> Verdict {
        Verdict {
            failure,
            state: BreakerState::HalfOpen,
            open_for_ms: 0,
            probes: probes.max(1),
        }
    }
}

impl Outcome {
    /// Whether the backend answered with response headers (any status).
    ///
    /// ```
    /// # use bbproxy_sdk::{Outcome, OutcomeKind};
    /// let ok = Outcome { kind: OutcomeKind::Response, status: 503, latency_us: 900 };
    /// assert!(ok.is_response());
    /// ```
    pub fn is_response(&self) -> bool {
        self.kind == OutcomeKind::Response
    }

    /// Whether this outcome is a failure of the backend: anything but a
    /// response, or, with `count_5xx`, a response with status 500 or above.
    ///
    /// ```
    /// # use bbproxy_sdk::{Outcome, OutcomeKind};
    /// let reset = Outcome { kind: OutcomeKind::Reset, status: 0, latency_us: 10 };
    /// let error = Outcome { kind: OutcomeKind::Response, status: 502, latency_us: 10 };
    /// assert!(reset.is_failure(false));
    /// assert!(!error.is_failure(false));
    /// assert!(error.is_failure(true));
    /// ```
    pub fn is_failure(&self, count_5xx: bool) -> bool {
        !self.is_response() || (count_5xx && self.status >= 500)
    }
}

/// The serde crate, re-exported so a plugin's configuration type needs no
/// dependency of its own. Derive with `#[derive(bbproxy_sdk::serde::Deserialize)]`
/// and `#[serde(crate = "bbproxy_sdk::serde")]` (see [`parse_config`]).
pub use serde;
/// The serde_json crate, re-exported for plugins that read or write JSON
/// beyond their configuration (see [`parse_config`] for the configuration).
pub use serde_json;

/// Parses a plugin's JSON configuration (the text `init` receives) into `T`.
/// The configuration must be a JSON object (serde alone would also accept an
/// array for a struct); the `Err` text names what is wrong, ready to be
/// returned from `init` with the plugin's own prefix.
///
/// ```
/// use bbproxy_sdk::serde::Deserialize;
///
/// #[derive(Debug, PartialEq, Deserialize)]
/// #[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
/// struct Config {
///     upstream: String,
///     #[serde(default)]
///     percent: u32,
/// }
///
/// let c: Config = bbproxy_sdk::parse_config(r#"{"upstream": "a.test"}"#).unwrap();
/// assert_eq!(c, Config { upstream: "a.test".into(), percent: 0 });
/// let err = bbproxy_sdk::parse_config::<Config>(r#"["a.test"]"#).unwrap_err();
/// assert_eq!(err, r#"expected a JSON object, got ["a.test"]"#);
/// let err = bbproxy_sdk::parse_config::<Config>("{}").unwrap_err();
/// assert!(err.starts_with("missing field `upstream`"), "{err}");
/// ```
pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, String> {
    if !config.trim_start().starts_with('{') {
        return Err(format!("expected a JSON object, got {}", config.trim()));
    }
    serde_json::from_str(config).map_err(|e| e.to_string())
}

/// Checks that a plugin that takes no configuration got none: `config` must be
/// empty, `null` or an empty JSON object (whitespace allowed). This is what the
/// default `init` of every role trait does.
///
/// ```
/// assert!(bbproxy_sdk::expect_no_config(" { } ").is_ok());
/// assert!(bbproxy_sdk::expect_no_config(r#"{"x": 1}"#).is_err());
/// ```
pub fn expect_no_config(config: &str) -> Result<(), String> {
    let compact: String = config.chars().filter(|c| !c.is_whitespace()).collect();
    match compact.as_str() {
        "" | "{}" | "null" => Ok(()),
        _ => Err(format!(
            "this plugin takes no configuration, got {}",
            config.trim()
        )),
    }
}

/// A plugin that chooses where each request goes (WIT world `router`).
///
/// Every method has a default, so `#[derive(Default)] struct R; impl Router
/// for R {}` is a (useless) router. Export it with
/// `bbproxy_sdk::export!(R: router);`.
///
/// ```
/// use bbproxy_sdk::{Request, Route, Router, testing::{FakeRequest, TestHost}};
///
/// /// Sends `/admin` to a separate upstream named in the configuration.
/// #[derive(Default)]
/// struct Admin { upstream: String }
///
/// impl Router for Admin {
///     fn init(config: &str) -> Result<Self, String> {
///         // A real plugin would parse JSON with serde_json.
///         let upstream = config.trim().trim_matches(|c| c == '"').to_string();
///         if upstream.is_empty() { return Err("expected an upstream name".into()) }
///         Ok(Admin { upstream })
///     }
///     fn route(&mut self, req: &Request) -> Route {
///         if req.path().starts_with("/admin") {
///             Route::to(&self.upstream)
///         } else {
///             Route::to(req.host())
///         }
///     }
/// }
///
/// let host = TestHost::new().upstream("admin.test", 1).upstream("www.test", 1);
/// let mut router: Admin = host.router(r#""admin.test""#).unwrap();
/// let admin = FakeRequest::get("www.test", "/admin/users");
/// assert_eq!(host.route(&mut router, &admin), Ok(Route::to("admin.test")));
/// assert!(host.router::<Admin>("").is_err());
/// ```
pub trait Router: Default + 'static {
    /// Creates the plugin instance; called once per instance before any other
    /// call, with the plugin's `config` from config.json as JSON text (`{}`
    /// when absent). An error rejects the generation that loads the plugin,
    /// and its text is shown to the operator.
    ///
    /// The default accepts only an empty configuration (see
    /// [`expect_no_config`]) and returns `Self::default()`.
    ///
    /// ```
    /// use bbproxy_sdk::{Router, serde::Deserialize, testing::TestHost};
    ///
    /// #[derive(Default, Deserialize)]
    /// #[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
    /// struct Fixed { upstream: String }
    ///
    /// impl Router for Fixed {
    ///     fn init(config: &str) -> Result<Self, String> {
    ///         let me: Fixed = bbproxy_sdk::parse_config(config)?;
    ///         if !bbproxy_sdk::upstreams().iter().any(|u| u.name == me.upstream) {
    ///             return Err(format!("{:?} is not a configured upstream", me.upstream));
    ///         }
    ///         Ok(me)
    ///     }
    /// }
    ///
    /// let host = TestHost::new().upstream("a.test", 1);
    /// assert!(host.router::<Fixed>(r#"{"upstream": "a.test"}"#).is_ok());
    /// assert!(host.router::<Fixed>(r#"{"upstream": "b.test"}"#).is_err());
    /// ```
    fn init(config: &str) -> Result<Self, String> {
        expect_no_config(config)?;
        Ok(Self::default())
    }

    /// Decides where `req` goes: an upstream name ([`Route::to`]) or a direct
    /// answer ([`Route::respond`]).
    ///
    /// The default answers `404 Not Found`.
    ///
    /// ```
    /// use bbproxy_sdk::{Request, Route, Router, testing::{FakeRequest, TestHost}};
    ///
    /// /// Refuses anything but GET, sends the rest by host.
    /// #[derive(Default)]
    /// struct ReadOnly;
    /// impl Router for ReadOnly {
    ///     fn route(&mut self, req: &Request) -> Route {
    ///         if req.method() != "GET" {
    ///             return Route::respond(405, "read-only\n");
    ///         }
    ///         Route::to(req.host())
    ///     }
    /// }
    ///
    /// let host = TestHost::new().upstream("a.test", 1);
    /// let mut router = ReadOnly;
    /// assert_eq!(host.route(&mut router, &FakeRequest::get("a.test", "/")), Ok(Route::to("a.test")));
    /// let post = FakeRequest::new("POST", "a.test", "/");
    /// assert_eq!(host.route(&mut router, &post), Ok(Route::respond(405, "read-only\n")));
    /// ```
    fn route(&mut self, req: &Request) -> Route {
        let _ = req;
        Route::respond(404, "bbproxy: no route\n")
    }
}

/// A plugin that chooses one backend of an upstream for each request (WIT
/// world `balancer`). Export it with `bbproxy_sdk::export!(B: balancer);`.
///
/// ```
/// use bbproxy_sdk::{Backend, Balancer, Request, testing::{FakeRequest, TestHost, backend}};
///
/// /// The heaviest-weighted candidate.
/// #[derive(Default)]
/// struct Heaviest;
///
/// impl Balancer for Heaviest {
///     fn pick(&mut self, _req: &Request, _upstream: u32, candidates: &[Backend]) -> Option<u32> {
///         let (i, _) = candidates.iter().enumerate().max_by_key(|(_, b)| b.weight)?;
///         u32::try_from(i).ok()
///     }
/// }
///
/// let host = TestHost::new().upstream("app.test", 2);
/// let mut lb: Heaviest = host.balancer("{}").unwrap();
/// let candidates = [backend(0), Backend { weight: 5, ..backend(1) }];
/// assert_eq!(host.pick(&mut lb, &FakeRequest::get("app.test", "/"), 0, &candidates), Ok(1));
/// ```
pub trait Balancer: Default + 'static {
    /// Creates the plugin instance; called once per instance before any other
    /// call, with the plugin's `config` from config.json as JSON text (`{}`
    /// when absent). An error rejects the generation that loads the plugin.
    ///
    /// The default accepts only an empty configuration (see
    /// [`expect_no_config`]) and returns `Self::default()`.
    ///
    /// ```
    /// use bbproxy_sdk::{Balancer, serde::Deserialize, testing::TestHost};
    ///
    /// /// Sends everything to one backend id, named in the configuration.
    /// #[derive(Default, Deserialize)]
    /// #[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
    /// struct Pinned { id: u32 }
    /// impl Balancer for Pinned {
    ///     fn init(config: &str) -> Result<Self, String> {
    ///         bbproxy_sdk::parse_config(config).map_err(|e| format!("invalid pinned config: {e}"))
    ///     }
    /// }
    ///
    /// let host = TestHost::new();
    /// assert_eq!(host.balancer::<Pinned>(r#"{"id": 2}"#).map(|p| p.id), Ok(2));
    /// let err = host.balancer::<Pinned>(r#"{"id": -1}"#).err().unwrap();
    /// assert!(err.starts_with("invalid pinned config: invalid value"), "{err}");
    /// ```
    fn init(config: &str) -> Result<Self, String> {
        expect_no_config(config)?;
        Ok(Self::default())
    }

    /// Picks a backend for `req` among `candidates`: the backends of upstream
    /// number `upstream` (an index into [`upstreams()`]) that can take it
    /// now: not open (nor half-open with every probe slot taken), passing
    /// their health check, and on a retry not already tried by this request.
    /// `candidates` is never empty. Returns an index into
    /// `candidates`; `None` or an index out of range is a plugin fault (the
    /// host falls back to its failure policy).
    ///
    /// The default is round-robin over a shared [`Counter`] per upstream
    /// (named `bbproxy.sdk.rr.<upstream>`), so every instance on every worker
    /// takes turns.
    ///
    /// ```
    /// use bbproxy_sdk::{Backend, Balancer, Request, testing::{FakeRequest, TestHost, backend}};
    ///
    /// /// The candidate with the fewest requests in flight; the first on a tie.
    /// #[derive(Default)]
    /// struct LeastBusy;
    /// impl Balancer for LeastBusy {
    ///     fn pick(&mut self, _: &Request, _: u32, candidates: &[Backend]) -> Option<u32> {
    ///         let (i, _) = candidates.iter().enumerate().min_by_key(|(_, b)| b.in_flight)?;
    ///         u32::try_from(i).ok()
    ///     }
    /// }
    ///
    /// let host = TestHost::new().upstream("a.test", 3);
    /// let busy = |id, in_flight| Backend { in_flight, ..backend(id) };
    /// let candidates = [busy(0, 4), busy(1, 0), busy(2, 9)];
    /// assert_eq!(host.pick(&mut LeastBusy, &FakeRequest::get("a.test", "/"), 0, &candidates), Ok(1));
    /// ```
    fn pick(&mut self, req: &Request, upstream: u32, candidates: &[Backend]) -> Option<u32> {
        let _ = req;
        default_round_robin(upstream, candidates.len())
    }
}

/// A plugin that turns the outcomes of forwarded requests into each backend's
/// circuit-breaker state (WIT world `breaker`). Export it with
/// `bbproxy_sdk::export!(B: breaker);`.
///
/// ```
/// use bbproxy_sdk::{Backend, BreakerState, Breaker, Outcome, Verdict, testing::{TestHost, backend, response}};
/// use std::time::Duration;
///
/// /// Opens a backend for 10 s after any 5xx response.
/// #[derive(Default)]
/// struct NoFiveHundreds;
///
/// impl Breaker for NoFiveHundreds {
///     fn on_outcome(&mut self, _upstream: u32, _backend: &Backend, outcome: &Outcome) -> Verdict {
///         if outcome.is_failure(true) { Verdict::open(true, 10_000, 1) } else { Verdict::closed(false) }
///     }
/// }
///
/// let host = TestHost::new().upstream("app.test", 1);
/// let mut breaker: NoFiveHundreds = host.breaker("{}").unwrap();
/// let error = response(502, Duration::from_millis(3));
/// assert_eq!(host.on_outcome(&mut breaker, 0, &backend(0), &error).unwrap().state, BreakerState::Open);
/// ```
pub trait Breaker: Default + 'static {
    /// Creates the plugin instance; called once per instance before any other
    /// call, with the plugin's `config` from config.json as JSON text (`{}`
    /// when absent). An error rejects the generation that loads the plugin.
    ///
    /// The default accepts only an empty configuration (see
    /// [`expect_no_config`]) and returns `Self::default()`.
    ///
    /// ```
    /// use bbproxy_sdk::{Breaker, serde::Deserialize, testing::TestHost};
    ///
    /// #[derive(Default, Deserialize)]
    /// #[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
    /// struct Strict { threshold: u32 }
    /// impl Breaker for Strict {
    ///     fn init(config: &str) -> Result<Self, String> {
    ///         let me: Strict = bbproxy_sdk::parse_config(config)?;
    ///         if me.threshold == 0 {
    ///             return Err("threshold must be at least 1".into());
    ///         }
    ///         Ok(me)
    ///     }
    /// }
    ///
    /// let host = TestHost::new();
    /// assert!(host.breaker::<Strict>(r#"{"threshold": 3}"#).is_ok());
    /// assert_eq!(host.breaker::<Strict>(r#"{"threshold": 0}"#).err().unwrap(), "threshold must be at least 1");
    /// ```
    fn init(config: &str) -> Result<Self, String> {
        expect_no_config(config)?;
        Ok(Self::default())
    }

    /// Called once per attempt that reached the backend, when its outcome is
    /// known, with the backend's stats just before this outcome is counted
    /// (`backend`) and what happened (`outcome`). Not called for a request
    /// refused by a full backend queue nor for a client-body failure. Returns
    /// the backend's state from now on (see the [`Verdict`] constructors).
    ///
    /// The default is [`default_verdict`]: 5 consecutive failures (errors
    /// and timeouts, not HTTP statuses) open the backend for 30 s, then one
    /// probe at a time; a successful probe closes it, a failed one reopens it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use bbproxy_sdk::{Backend, Breaker, BreakerState, Outcome, Verdict};
    /// use bbproxy_sdk::testing::{TestHost, backend, record, response};
    ///
    /// /// Opens after two slow (over 1 s) or failed outcomes in a row.
    /// #[derive(Default)]
    /// struct NoSlowpokes;
    /// impl Breaker for NoSlowpokes {
    ///     fn on_outcome(&mut self, _: u32, b: &Backend, o: &Outcome) -> Verdict {
    ///         let bad = o.is_failure(false) || o.latency_us > 1_000_000;
    ///         if bad && b.consecutive_failures + 1 >= 2 {
    ///             Verdict::open(true, 5_000, 1)
    ///         } else {
    ///             Verdict::closed(bad)
    ///         }
    ///     }
    /// }
    ///
    /// let host = TestHost::new().upstream("a.test", 1);
    /// let (mut breaker, mut b) = (NoSlowpokes, backend(0));
    /// let slow = response(200, Duration::from_secs(2));
    /// for want in [BreakerState::Closed, BreakerState::Open] {
    ///     let v = host.on_outcome(&mut breaker, 0, &b, &slow).unwrap();
    ///     assert_eq!(v.state, want);
    ///     record(&mut b, &slow, &v);
    /// }
    /// ```
    fn on_outcome(&mut self, upstream: u32, backend: &Backend, outcome: &Outcome) -> Verdict {
        let _ = upstream;
        default_verdict(backend, outcome)
    }
}

/// The decision of the default [`Breaker::on_outcome`]: a failure is any
/// outcome but a response; closed → open after 5 consecutive failures (30 s,
/// 1 probe); half-open → closed on a success, → open on a failure; an open
/// backend stays open.
///
/// ```
/// use bbproxy_sdk::{Backend, BreakerState, Outcome, OutcomeKind, default_verdict};
/// let backend = Backend {
///     id: 0, weight: 1, in_flight: 0, consecutive_failures: 4, consecutive_successes: 0,
///     latency_ewma_us: 0, requests: 10, breaker: BreakerState::Closed,
/// };
/// let timeout = Outcome { kind: OutcomeKind::Timeout, status: 0, latency_us: 5_000_000 };
/// assert_eq!(default_verdict(&backend, &timeout).state, BreakerState::Open);
/// ```
pub fn default_verdict(backend: &Backend, outcome: &Outcome) -> Verdict {
    const THRESHOLD: u32 = 5;
    const OPEN_FOR_MS: u64 = 30_000;
    let failure = outcome.is_failure(false);
    match backend.breaker {
        BreakerState::Closed if failure && backend.consecutive_failures + 1 >= THRESHOLD => {
            Verdict::open(true, OPEN_FOR_MS, 1)
        }
        BreakerState::Closed => Verdict::closed(failure),
        BreakerState::HalfOpen if failure => Verdict::open(true, OPEN_FOR_MS, 1),
        BreakerState::HalfOpen => Verdict::closed(false),
        BreakerState::Open => Verdict::open(failure, OPEN_FOR_MS, 1),
    }
}

thread_local! {
    // Counters of the default round-robin `pick`, opened on first use per
    // upstream index.
    static DEFAULT_RR: RefCell<Vec<Option<Counter>>> = const { RefCell::new(Vec::new()) };
}

fn default_round_robin(upstream: u32, candidates: usize) -> Option<u32> {
    let len = u64::try_from(candidates).ok().filter(|&n| n > 0)?;
    let index = usize::try_from(upstream).ok()?;
    let n = DEFAULT_RR.with(|counters| {
        let mut counters = counters.borrow_mut();
        if counters.len() <= index {
            counters.resize_with(index + 1, || None);
        }
        counters[index]
            .get_or_insert_with(|| Counter::new(&format!("bbproxy.sdk.rr.{upstream}")))
            .fetch_add(1)
    });
    // The counter may wrap to negative after 2^63 calls; reinterpret the bits.
    u32::try_from((n as u64) % len).ok()
}

/// Logs a decision call that arrived before `init` succeeded (a host bug, or a
/// host that ignored a failed init).
fn uninitialised(role: &str) {
    log(
        Level::Error,
        &format!("bbproxy-sdk: {role} plugin called before a successful init"),
    );
}

/// Support for [`export!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use super::{
        Backend, Balancer, Breaker, Outcome, Request, Route, Router, Verdict, bindings,
        uninitialised,
    };
    pub use std::cell::RefCell;
    pub use std::thread::LocalKey;

    use bindings::router::bbproxy::plugin::types::Request as WitRequest;

    /// The per-instance slot of one exported plugin type, declared by
    /// `export!` in the plugin crate (a `static` cannot be generic here).
    pub trait Slot: 'static {
        /// The user's plugin type.
        type Plugin: 'static;
        /// The thread-local holding the instance created by `init`.
        fn slot() -> &'static LocalKey<RefCell<Option<Self::Plugin>>>;
    }

    fn init<S: Slot>(make: impl FnOnce() -> Result<S::Plugin, String>) -> Result<(), String> {
        // Drop any previous instance first, so `make` sees a clean slate.
        S::slot().with(|cell| cell.replace(None));
        let plugin = make()?;
        S::slot().with(|cell| cell.replace(Some(plugin)));
        Ok(())
    }

    fn with<S: Slot, R>(call: impl FnOnce(&mut S::Plugin) -> R) -> Option<R> {
        S::slot().with(|cell| {
            let mut guard = cell.try_borrow_mut().ok()?;
            guard.as_mut().map(call)
        })
    }

    impl<S> bindings::router::Guest for S
    where
        S: Slot,
        S::Plugin: Router,
    {
        fn init(config: String) -> Result<(), String> {
            init::<S>(|| <S::Plugin as Router>::init(&config))
        }

        fn route(req: &WitRequest) -> Route {
            with::<S, _>(|plugin| plugin.route(&Request::from_host(req))).unwrap_or_else(|| {
                uninitialised("router");
                Route::respond(503, "bbproxy: router plugin not initialised\n")
            })
        }
    }

    impl<S> bindings::balancer::Guest for S
    where
        S: Slot,
        S::Plugin: Balancer,
    {
        fn init(config: String) -> Result<(), String> {
            init::<S>(|| <S::Plugin as Balancer>::init(&config))
        }

        fn pick(req: &WitRequest, upstream: u32, candidates: Vec<Backend>) -> Option<u32> {
            with::<S, _>(|plugin| plugin.pick(&Request::from_host(req), upstream, &candidates))
                .unwrap_or_else(|| {
                    uninitialised("balancer");
                    None
                })
        }
    }

    impl<S> bindings::breaker::Guest for S
    where
        S: Slot,
        S::Plugin: Breaker,
    {
        fn init(config: String) -> Result<(), String> {
            init::<S>(|| <S::Plugin as Breaker>::init(&config))
        }

        fn on_outcome(upstream: u32, backend: Backend, outcome: Outcome) -> Verdict {
            with::<S, _>(|plugin| plugin.on_outcome(upstream, &backend, &outcome)).unwrap_or_else(
                || {
                    uninitialised("breaker");
                    // Change nothing: keep the state the host has.
                    Verdict {
                        failure: outcome.is_failure(false),
                        state: backend.breaker,
                        open_for_ms: 0,
                        probes: 1,
                    }
                },
            )
        }
    }
}

/// Exports a plugin type as the component's implementation of one role.
///
/// Syntax: `bbproxy_sdk::export!(Type: role);` where `role` is `router`,
/// `balancer` or `breaker` and `Type` implements the matching trait
/// ([`Router`], [`Balancer`], [`Breaker`]). Use it once per crate, at item
/// level (a component implements exactly one role).
///
/// The macro creates the Wasm exports `init` and the role's decision function.
/// `init` builds the instance with `Type::init(config)` and keeps it in a
/// thread-local (Wasm instances are single-threaded); every later call gets it
/// as `&mut self`. A decision call before a successful `init` is logged and
/// answered with the role's fault signal: a `503` direct response (router),
/// `None` (balancer), or an unchanged state (breaker).
///
/// ```
/// #[derive(Default)]
/// struct Everything;
/// impl bbproxy_sdk::Router for Everything {
///     fn route(&mut self, _req: &bbproxy_sdk::Request) -> bbproxy_sdk::Route {
///         bbproxy_sdk::Route::to("example.com")
///     }
/// }
/// bbproxy_sdk::export!(Everything: router);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export {
    ($plugin:ty : router) => {
        $crate::__export_role!($plugin, router, export_router);
    };
    ($plugin:ty : balancer) => {
        $crate::__export_role!($plugin, balancer, export_balancer);
    };
    ($plugin:ty : breaker) => {
        $crate::__export_role!($plugin, breaker, export_breaker);
    };
    ($($other:tt)*) => {
        ::core::compile_error!(
            "usage: bbproxy_sdk::export!(Type: role); where role is `router`, `balancer` or `breaker`"
        );
    };
}

/// Implementation of [`export!`]; not part of the API.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_role {
    ($plugin:ty, $role:ident, $export:ident) => {
        const _: () = {
            struct BbproxyExport;

            ::std::thread_local! {
                static BBPROXY_INSTANCE: $crate::__private::RefCell<::core::option::Option<$plugin>> =
                    const { $crate::__private::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::__private::Slot for BbproxyExport {
                type Plugin = $plugin;
                fn slot() -> &'static $crate::__private::LocalKey<
                    $crate::__private::RefCell<::core::option::Option<$plugin>>,
                > {
                    &BBPROXY_INSTANCE
                }
            }

            $crate::bindings::$role::$export!(BbproxyExport with_types_in $crate::bindings::$role);
        };
    };
}
