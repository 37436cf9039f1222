//! `policy/*`: the decisions of one request under a policy config, through
//! a real generation (`Generation::build`, as a reload builds it): the
//! router's answer for 20 routes (the request matches the last), the
//! route's filter chain on the request (the built-in `headers` filter,
//! then the Rust example API-key filter, a component), the consistent-hash
//! pick among 16 backends, the breaker's verdict, and the chain on the
//! response. The same calls, with the same checks, as
//! `host/src/proxy/` makes for a request that gets a 200.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bbproxy::filter::{Chain, ResponseCtx};
use bbproxy::generation::{Generation, RouteAction, RouteTarget};
use bbproxy::plugin::{
    Backend, BreakerState, Outcome, OutcomeKind, RequestView, Route, Runtime, Tenant,
};
use bbproxy::upstream::Registry;
use criterion::Criterion;

#[path = "../../build/nested.rs"]
mod nested;

const BACKENDS: u32 = 16;
const HOST: &str = "bench.local";

/// The Rust example API-key filter, built with the nested cargo the tests
/// use (into its own target dir under this build's).
fn api_key_filter() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the host crate is in the workspace")
        .to_path_buf();
    let target = PathBuf::from(env!("OUT_DIR")).join(nested::TARGET_SUBDIR);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--quiet", "--target", nested::WASM_TARGET])
        .args([
            "--profile",
            nested::PROFILE,
            "-p",
            "example-rust-api-key-filter",
        ])
        .arg("--target-dir")
        .arg(&target);
    for var in nested::SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo for the filter");
    assert!(status.success(), "building the API-key filter failed");
    target
        .join(nested::WASM_TARGET)
        .join(nested::PROFILE)
        .join("example_rust_api_key_filter.wasm")
}

/// 20 routes on one domain, the last one forwarding `/api/` with
/// `x-env: prod` to a 16-backend pool hashed on `x-user`, through the
/// domain's built-in filter and the route's component.
fn config_text(filter: &Path) -> String {
    let mut routes: Vec<String> = (0..19)
        .map(|i| {
            format!(
                r#"{{"match": {{"path_prefix": "/r{i}/", "method": ["GET"]}}, "upstream": "api"}}"#
            )
        })
        .collect();
    routes.push(format!(
        r#"{{"match": {{"path_prefix": "/api/", "header": {{"x-env": "prod"}}}}, "upstream": "api",
            "filters": [{{"path": {:?}, "config": {{"keys": ["k-4f1c9a"]}}}}]}}"#,
        filter.display().to_string()
    ));
    let backends: Vec<String> = (0..BACKENDS)
        .map(|i| format!(r#""127.0.0.1:{}""#, 9000 + i))
        .collect();
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "access_log": false,
            "upstreams": {{"api": {{"backends": [{}],
                "balancer": {{"kind": "consistent-hash", "hash_on": "header:x-user"}}}}}},
            "domains": {{"{HOST}": {{"backends": ["127.0.0.1:8999"],
                "filters": [{{"builtin": "headers", "config": {{
                    "request": {{"set": {{"x-env-seen": "prod"}}}},
                    "response": {{"remove": ["server"], "set": {{"x-content-type-options": "nosniff"}}}}}}}}],
                "routes": [{}]}}}}}}"#,
        backends.join(", "),
        routes.join(",\n")
    )
}

/// Boxed, as the proxy makes it when the request arrives and lends it to
/// each plugin call.
fn request_view() -> Box<RequestView> {
    let (parts, ()) = http::Request::get("/api/items?page=2")
        .header(http::header::HOST, HOST)
        .header(http::header::USER_AGENT, "criterion")
        .header("x-env", "prod")
        .header("x-user", "alice")
        .header("x-api-key", "k-4f1c9a")
        .body(())
        .expect("request")
        .into_parts();
    Box::new(RequestView {
        parts,
        host: HOST.to_owned(),
        client: SocketAddr::from(([127, 0, 0, 1], 40000)),
    })
}

/// A backend's response head as the proxy's codec hands it over, with the
/// `server` header the domain's response filter removes.
fn backend_response() -> http::Response<()> {
    let mut resp = http::Response::new(());
    resp.headers_mut().insert(
        http::header::SERVER,
        http::HeaderValue::from_static("origin"),
    );
    resp
}

/// One request as its decisions find it: the request's head, and the
/// backend's response head that the chain edits on the way back. Both are
/// made before the timing and dropped after it: parsing and freeing them
/// belongs to the request's codecs, not to its decisions.
struct Exchange {
    view: Option<Box<RequestView>>,
    response: http::Response<()>,
}

impl Exchange {
    fn fresh() -> Self {
        Exchange {
            view: Some(request_view()),
            response: backend_response(),
        }
    }
}

/// The generation and what one request needs from it.
struct Policy {
    generation: Generation,
    candidates: Vec<Backend>,
}

impl Policy {
    fn route(&self, view: &mut Option<Box<RequestView>>) -> &RouteTarget {
        let (domain, index) = match self
            .generation
            .router
            .primary
            .route(Tenant::Upstream(0), view)
            .expect("route")
        {
            Route::DomainRoute { domain, index } => (domain, index),
            other => panic!("router answered {other:?}"),
        };
        match self.generation.route_action(domain, index) {
            Some(RouteAction::Forward(target)) => target,
            _ => panic!("route {index} of domain {domain} is no forwarding route"),
        }
    }

    fn pick(&self, view: &mut Option<Box<RequestView>>, upstream: u32) -> usize {
        self.generation
            .balancer
            .primary
            .pick(view, upstream, &self.candidates)
            .expect("pick")
    }

    fn outcome(&self, upstream: u32, chosen: usize) {
        let verdict = self
            .generation
            .breaker
            .primary
            .on_outcome(
                upstream,
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

    /// Every decision of one request; the view is given back as the
    /// request path would hand it to the next.
    fn one(&self, exchange: &mut Exchange) -> usize {
        let Exchange {
            view,
            response: resp,
        } = exchange;
        let target = self.route(view);
        let chain: &Chain = &target.filters;
        if chain.request(view, Tenant::Upstream(0)).is_err() {
            panic!("the filter chain stopped the request");
        }
        let chosen = self.pick(view, target.upstream);
        self.outcome(target.upstream, chosen);
        let with = ResponseCtx {
            tenant: Tenant::Upstream(0),
            request: view,
            backend: "127.0.0.1:9000",
            upstream: target.upstream,
        };
        if chain.response(resp, with).is_err() {
            panic!("the filter chain failed the response");
        }
        assert!(resp.headers().get(http::header::SERVER).is_none());
        chosen
    }
}

pub fn policy(c: &mut Criterion) {
    let filter = api_key_filter();
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let _in_tokio = tokio.enter();
    let dir = std::env::temp_dir().join(format!("bbproxy-bench-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.json");
    std::fs::write(&path, config_text(&filter)).expect("config");
    let config = Arc::new(bbproxy_config::load(&path).expect("the policy config is valid"));
    let runtime = Runtime::new().expect("runtime");
    let registry = Registry::new(1);
    let generation = Generation::build(1, config, &runtime, &registry).expect("generation");
    let candidates = (0..BACKENDS)
        .map(|id| Backend {
            in_flight: id % 3,
            consecutive_successes: 10,
            latency_ewma_us: 300 + u64::from(id),
            requests: 1000,
            breaker: BreakerState::Closed,
            ..Backend::fresh(id)
        })
        .collect();
    let policy = Policy {
        generation,
        candidates,
    };
    // Checked once outside the timing: a route that does not match, a
    // filter that answers or a plugin that faults would flatter it.
    let fresh = || Some(request_view());
    let mut view = fresh();
    let first = policy.one(&mut Exchange::fresh());
    assert_eq!(
        policy.one(&mut Exchange::fresh()),
        first,
        "the hash pick is stable"
    );
    let target = policy.route(&mut fresh());
    assert_eq!(target.filters.len(), 2);
    assert_eq!(target.filters.components().count(), 1);

    let mut group = c.benchmark_group("policy");
    let id = format!("{BACKENDS}");
    // A fresh request and response head per iteration: the filters edit
    // both. Lent by reference, so they are dropped after the timing:
    // freeing a request belongs to the request, not to its decisions, and
    // with `iter_batched` the timing also paid for freeing the batch's
    // buffer.
    group.bench_function(format!("all/{id}"), |b| {
        b.iter_batched_ref(
            Exchange::fresh,
            |exchange| black_box(policy.one(exchange)),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function(format!("route/{id}"), |b| {
        b.iter(|| black_box(policy.route(&mut view).upstream))
    });
    group.bench_function(format!("filters/{id}"), |b| {
        b.iter_batched_ref(
            fresh,
            |view| black_box(target.filters.request(view, Tenant::Upstream(0)).is_ok()),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function(format!("pick/{id}"), |b| {
        b.iter(|| black_box(policy.pick(&mut view, target.upstream)))
    });
    group.finish();
    let g = &policy.generation;
    for faults in [
        g.router.primary.faults(),
        g.balancer.primary.faults(),
        g.breaker.primary.faults(),
    ]
    .into_iter()
    .chain(g.filter_components().map(|f| f.faults()))
    {
        assert_eq!(faults, 0, "a plugin faulted during the benchmark");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
