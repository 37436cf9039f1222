//! The decision path of one request through the embedded (default bundle)
//! Wasm plugins, without network: route, pick among N backends, on_outcome.
//! The same calls, in the same order and with the same arguments, as
//! `host/src/proxy/decide.rs` makes for a request that gets a 200. The
//! bundle speaks contract 0.2.0, so `on_outcome` of that 200 is the host's
//! own count (the breaker leaves a closed backend's responses to it), as
//! in the proxy.
//!
//! `cargo bench -p bbproxy --bench decisions`; the issue 6 target is the
//! median of `decisions/all/16` at 1 µs or less. The domain has no routes,
//! so the built-in router said at init that it goes to its own upstream
//! and `route` is the host's answer, without a call, as in the proxy; its
//! upstream is round-robin, so the built-in balancer said at init that
//! its picks are turns of its counter, which the host takes without a
//! call. `decisions/all_routed/16` gives the domain a route (which the
//! request does not match), so the router is called, as for a domain with
//! routes; `decisions/all_asked/16` also balances it `least-request`, so
//! the balancer is called too (it reads the two candidates it compares).
//!
//! `policy/all/16` (issue 18) is every decision of one request under a
//! policy config (`policy.rs`): 20 routes (the request matches the last),
//! consistent hashing over 16 backends, and a chain of the built-in
//! `headers` filter and a filter component both ways; target ≤ 2 µs.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bbproxy::plugin::{
    Backend, BalancerWorld, BreakerState, BreakerWorld, Limits, Outcome, OutcomeKind, Plugin,
    RequestView, Route, RouterWorld, Runtime, Tenant, Upstream, bundle,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

// The allocator of the `bbproxy` binary (`src/main.rs`): the decisions
// allocate (fact values, edit lists, answers), and the figure is the
// proxy's only if they pay what they pay there, not glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const UPSTREAM: &str = "bench.local";
const BACKEND_COUNTS: [u32; 4] = [1, 4, 16, 64];

/// The three default plugins, loaded as `Generation::build` loads them for a
/// config with one domain of `backends` backends.
struct Plugins {
    router: Plugin<RouterWorld>,
    balancer: Plugin<BalancerWorld>,
    breaker: Plugin<BreakerWorld>,
    candidates: Vec<Backend>,
}

impl Plugins {
    /// `routes`: the router's `routes` key (`{}`: none); `balancer`: the
    /// upstream's `balancer` setting.
    fn load(runtime: &Runtime, backends: u32, routes: &str, balancer: &str) -> Self {
        let upstreams: Arc<[Upstream]> = Arc::from(vec![Upstream {
            name: UPSTREAM.to_owned(),
            balancer: balancer.to_owned(),
            backends,
        }]);
        // The defaults of config.json: 10 ms deadline, 16 MiB per instance.
        let limits = Limits::new(Duration::from_millis(10), 16 << 20);
        let router = Plugin::load(
            runtime,
            "builtin",
            bundle::ROUTER,
            format!(r#"{{"default":"{UPSTREAM}","routes":{routes}}}"#),
            limits,
            upstreams.clone(),
        )
        .expect("router loads");
        let balancer = Plugin::load(
            runtime,
            "builtin",
            bundle::BALANCER,
            "{}".to_owned(),
            limits,
            upstreams.clone(),
        )
        .expect("balancer loads");
        let breaker = Plugin::load(
            runtime,
            "builtin",
            bundle::BREAKER,
            r#"{"threshold":3,"timeout_ms":10000}"#.to_owned(),
            limits,
            upstreams,
        )
        .expect("breaker loads");
        let candidates = (0..backends)
            .map(|id| Backend {
                id,
                weight: 1,
                in_flight: id % 3,
                consecutive_failures: 0,
                consecutive_successes: 10,
                latency_ewma_us: 300 + u64::from(id),
                requests: 1000,
                breaker: BreakerState::Closed,
            })
            .collect();
        Self {
            router,
            balancer,
            breaker,
            candidates,
        }
    }

    fn route(&self, view: &mut Option<Box<RequestView>>) {
        match self.router.route(Tenant::Upstream(0), view).expect("route") {
            Route::Upstream(i) => assert_eq!(i, 0),
            other => panic!("router answered {other:?}"),
        }
    }

    fn pick(&self, view: &mut Option<Box<RequestView>>) -> usize {
        self.balancer.pick(view, 0, &self.candidates).expect("pick")
    }

    fn outcome(&self, chosen: usize) {
        let verdict = self
            .breaker
            .on_outcome(
                0,
                self.candidates[chosen],
                Outcome {
                    kind: OutcomeKind::Response,
                    status: 200,
                    latency_us: 300,
                },
            )
            .expect("on_outcome");
        assert!(!verdict.failure);
    }
}

/// Boxed, as the proxy lends it to plugin calls.
fn request_view() -> Box<RequestView> {
    let (parts, ()) = http::Request::get("/index.html")
        .header(http::header::HOST, UPSTREAM)
        .header(http::header::USER_AGENT, "criterion")
        .body(())
        .expect("request")
        .into_parts();
    Box::new(RequestView {
        parts,
        host: UPSTREAM.to_owned(),
        client: SocketAddr::from(([127, 0, 0, 1], 40000)),
    })
}

fn decisions(c: &mut Criterion) {
    let runtime = Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("decisions");
    let routes = format!(r#"{{"{UPSTREAM}":[{{"match":{{"path":"/never"}}}}]}}"#);
    for (name, balancer, balancer_calls) in [
        ("all_routed", "round-robin", 0),
        ("all_asked", "least-request", 1),
    ] {
        let plugins = Plugins::load(&runtime, 16, &routes, balancer);
        let mut view = Some(request_view());
        plugins.route(&mut view);
        plugins.pick(&mut view);
        assert_eq!(plugins.router.calls(), 1, "the router is asked");
        assert_eq!(plugins.balancer.calls(), balancer_calls, "{balancer}");
        group.bench_with_input(BenchmarkId::new(name, 16), &16, |b, _| {
            b.iter(|| {
                plugins.route(&mut view);
                let chosen = plugins.pick(&mut view);
                plugins.outcome(black_box(chosen));
            })
        });
    }
    for backends in BACKEND_COUNTS {
        let plugins = Plugins::load(&runtime, backends, "{}", "round-robin");
        let mut view = Some(request_view());
        // Every call below is checked once outside the timing, so a plugin
        // that faults (and would be answered by its policy, much faster)
        // fails the benchmark instead of flattering it.
        plugins.route(&mut view);
        let chosen = plugins.pick(&mut view);
        plugins.outcome(chosen);
        assert!(view.is_some(), "the request view is handed back");
        group.bench_with_input(BenchmarkId::new("all", backends), &backends, |b, _| {
            b.iter(|| {
                plugins.route(&mut view);
                let chosen = plugins.pick(&mut view);
                plugins.outcome(black_box(chosen));
            })
        });
        group.bench_with_input(BenchmarkId::new("route", backends), &backends, |b, _| {
            b.iter(|| plugins.route(&mut view))
        });
        group.bench_with_input(BenchmarkId::new("pick", backends), &backends, |b, _| {
            b.iter(|| black_box(plugins.pick(&mut view)))
        });
        group.bench_with_input(
            BenchmarkId::new("on_outcome", backends),
            &backends,
            |b, _| b.iter(|| plugins.outcome(black_box(0))),
        );
        for p in [
            plugins.router.faults(),
            plugins.balancer.faults(),
            plugins.breaker.faults(),
        ] {
            assert_eq!(p, 0, "a plugin faulted during the benchmark");
        }
    }
    group.finish();
}

#[path = "decisions/policy.rs"]
mod policy;

criterion_group!(benches, decisions, policy::policy);
criterion_main!(benches);
