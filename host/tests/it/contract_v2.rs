//! Contract 0.2.0 (`wit/v0.2`) next to 0.1.x: the default bundle speaks
//! 0.2.0, a 0.1.x plugin still loads and decides, and each 0.2.0 change
//! (the router told the matched domain, candidates read on demand, the
//! breaker's skipped successes, a filter's skipped responses) does what the
//! WIT says, called directly.

use std::time::Duration;

use bbproxy::plugin::{
    Backend, Backoff, BalancerWorld, BreakerState, BreakerWorld, Fault, FilterWorld, Limits,
    LoadError, Outcome, OutcomeKind, Plugin, ResponseView, Route, RouterWorld, Runtime, Tenant,
    World, bundle,
};

use crate::common::direct::{upstreams, view};
use crate::common::{example_plugin, fixture};

/// Loads `bytes` as role `W` with `config` over upstreams `a.test` and
/// `b.test`, never suspended after faults.
fn load<W: World>(runtime: &Runtime, bytes: &[u8], config: &str) -> Result<Plugin<W>, LoadError> {
    Plugin::load(
        runtime,
        "test",
        bytes,
        config.to_owned(),
        Limits {
            timeout: Duration::from_millis(100),
            memory: 16 << 20,
            backoff: Backoff {
                after: u32::MAX,
                ..Backoff::default()
            },
        },
        upstreams(&["a.test", "b.test"]),
    )
}

fn v2_balancer(runtime: &Runtime, mode: &str) -> Result<Plugin<BalancerWorld>, LoadError> {
    let bytes = std::fs::read(fixture("v2_balancer.wasm")).unwrap();
    load(runtime, &bytes, &format!(r#"{{"mode": "{mode}"}}"#))
}

fn response(status: u16) -> Outcome {
    Outcome {
        kind: OutcomeKind::Response,
        status,
        latency_us: 500,
    }
}

#[test]
fn the_default_bundle_speaks_0_2_0_and_a_0_1_plugin_still_decides() {
    let runtime = Runtime::new().unwrap();
    let router = load::<RouterWorld>(&runtime, bundle::ROUTER, "{}").unwrap();
    let balancer = load::<BalancerWorld>(&runtime, bundle::BALANCER, "{}").unwrap();
    let breaker = load::<BreakerWorld>(&runtime, bundle::BREAKER, "{}").unwrap();
    for contract in [router.contract(), balancer.contract(), breaker.contract()] {
        assert_eq!(contract, "0.2.0");
    }
    // An SDK plugin of contract 0.1.1, which gets its candidates as a list.
    let bytes = std::fs::read(example_plugin("rust_last_backend.wasm")).unwrap();
    let old = load::<BalancerWorld>(&runtime, &bytes, "{}").unwrap();
    assert_eq!(old.contract(), "0.1.1");
    let candidates = [3, 7, 1].map(Backend::fresh);
    assert_eq!(old.pick(&mut view("a.test"), 0, &candidates).unwrap(), 1);
}

#[test]
fn a_0_2_0_router_is_told_the_domain_the_host_matched() {
    let runtime = Runtime::new().unwrap();
    // b.test has a route (that these requests do not match), so the
    // router is asked for its requests; a.test has none, so the router
    // said at init that a.test goes to its own upstream.
    let config = r#"{"routes": {"b.test": [{"match": {"path": "/never"}}]}}"#;
    let router = load::<RouterWorld>(&runtime, bundle::ROUTER, config).unwrap();
    // Told domain 1, it answers 1 without reading the request's host
    // (which here names a.test, so reading it would answer 0).
    let told = router.route(Tenant::Upstream(1), &mut view("a.test"));
    assert_eq!(told.unwrap(), Route::Upstream(1));
    assert_eq!(router.calls(), 1);
    // Domain 0 is answered by the host, without a call.
    let own = router.route(Tenant::Upstream(0), &mut view("b.test"));
    assert_eq!(own.unwrap(), Route::Upstream(0));
    assert_eq!(router.calls(), 1);
    // No domain matched: it reads the host itself.
    let read = router.route(Tenant::Unmatched, &mut view("b.test"));
    assert_eq!(read.unwrap(), Route::Upstream(1));
    match router.route(Tenant::Unmatched, &mut view("c.test")) {
        Ok(Route::Respond { status, body }) => {
            assert_eq!(status, 421);
            assert!(body.contains("c.test"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(router.faults(), 0);
}

#[test]
fn a_0_2_0_balancer_reads_its_candidates_through_the_host() {
    let runtime = Runtime::new().unwrap();
    let candidates = [(3, 1), (7, 0), (5, 9)].map(|(id, in_flight)| Backend {
        in_flight,
        ..Backend::fresh(id)
    });
    let pick = |plugin: &Plugin<BalancerWorld>| plugin.pick(&mut view("a.test"), 0, &candidates);
    // The whole list, and each candidate alone, are the ones passed in.
    let highest = v2_balancer(&runtime, "highest-id").unwrap();
    assert_eq!(pick(&highest).unwrap(), 1);
    let busiest = v2_balancer(&runtime, "get-each").unwrap();
    assert_eq!(pick(&busiest).unwrap(), 2);
    // A read past the end is a fault of the call, every time (the faulted
    // instance is replaced, and the next one reads past the end again).
    let past = v2_balancer(&runtime, "get-past-end").unwrap();
    for _ in 0..2 {
        match pick(&past) {
            Err(Fault::Trap(reason)) => assert!(
                reason.contains("candidates.get(3): out of range, the pick has 3 candidates"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(past.faults(), 2);
    // Outside a pick there are no candidates.
    let err = v2_balancer(&runtime, "read-in-init")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("candidates read outside of a pick call"),
        "{err}"
    );
}

#[test]
fn a_0_2_0_breaker_leaves_successes_of_closed_backends_to_the_host() {
    let runtime = Runtime::new().unwrap();
    let closed = Backend::fresh(0);
    let half_open = Backend {
        breaker: BreakerState::HalfOpen,
        ..Backend::fresh(0)
    };
    let error = Outcome {
        kind: OutcomeKind::ConnectError,
        status: 0,
        latency_us: 500,
    };

    // 5xx are not failures by default: every response of a closed backend
    // is the host's to count.
    let breaker = load::<BreakerWorld>(&runtime, bundle::BREAKER, "{}").unwrap();
    assert_eq!(breaker.init_answer().skip_closed_responses_below, 600);
    for status in [200, 404, 503] {
        let v = breaker.on_outcome(0, closed, response(status)).unwrap();
        assert!(!v.failure && v.state == BreakerState::Closed, "{v:?}");
    }
    assert_eq!(breaker.calls(), 0, "no outcome above needed the breaker");
    let v = breaker.on_outcome(0, closed, error).unwrap();
    assert!(v.failure, "{v:?}");
    assert_eq!(breaker.calls(), 1, "an error reaches the breaker");
    let v = breaker.on_outcome(0, half_open, response(200)).unwrap();
    assert_eq!(v.state, BreakerState::Closed, "{v:?}");
    assert_eq!(breaker.calls(), 2, "a probe's outcome reaches the breaker");

    // Counting 5xx as failures, the breaker sees them.
    let strict =
        load::<BreakerWorld>(&runtime, bundle::BREAKER, r#"{"failure_on_5xx": true}"#).unwrap();
    assert_eq!(strict.init_answer().skip_closed_responses_below, 500);
    assert!(!strict.on_outcome(0, closed, response(499)).unwrap().failure);
    assert_eq!(strict.calls(), 0);
    assert!(strict.on_outcome(0, closed, response(500)).unwrap().failure);
    assert_eq!(strict.calls(), 1);

    // A 0.1.x breaker is called for every outcome, as before.
    let bytes = std::fs::read(fixture("hostile_breaker.wasm")).unwrap();
    let old = load::<BreakerWorld>(&runtime, &bytes, r#"{"mode": "good"}"#).unwrap();
    assert_eq!(old.init_answer().skip_closed_responses_below, 0);
    old.on_outcome(0, closed, response(200)).unwrap();
    assert_eq!(old.calls(), 1);
}

#[test]
fn a_0_2_0_filter_that_edits_no_response_is_not_called_for_one() {
    let runtime = Runtime::new().unwrap();
    let response = || {
        Some(ResponseView {
            status: http::StatusCode::OK,
            headers: http::HeaderMap::new(),
            backend: "127.0.0.1:9".to_owned(),
            upstream: 0,
        })
    };
    // The Rust API-key example: 0.2.0, checks requests only.
    let bytes = std::fs::read(example_plugin("rust_api_key_filter.wasm")).unwrap();
    let keys = load::<FilterWorld>(&runtime, &bytes, r#"{"keys": ["k-1"]}"#).unwrap();
    assert_eq!(keys.contract(), "0.2.0");
    assert!(!keys.init_answer().on_response);
    let edits = keys.on_response(Tenant::Upstream(0), &mut view("a.test"), &mut response());
    assert!(edits.unwrap().is_empty());
    assert_eq!(keys.calls(), 0, "on-response was not called");
    keys.on_request(Tenant::Upstream(0), &mut view("a.test"))
        .unwrap();
    assert_eq!(keys.calls(), 1, "on-request still is");

    // A 0.1.1 filter is called for every response, as before.
    let bytes = std::fs::read(fixture("test_filter.wasm")).unwrap();
    let old = load::<FilterWorld>(&runtime, &bytes, r#"{"mode": "edit", "name": "t"}"#).unwrap();
    assert_eq!(old.contract(), "0.1.1");
    assert!(old.init_answer().on_response);
    let edits = old.on_response(Tenant::Upstream(0), &mut view("a.test"), &mut response());
    assert!(!edits.unwrap().is_empty());
    assert_eq!(old.calls(), 1);
}

/// `view` for `a.test` with `headers` and `method path`.
fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<Box<bbproxy::plugin::RequestView>> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "a.test");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    Some(Box::new(bbproxy::plugin::RequestView {
        parts,
        host: "a.test".to_owned(),
        client: "127.0.0.1:9".parse().unwrap(),
    }))
}

#[test]
fn a_0_2_0_plugin_gets_the_facts_it_declared_with_the_call() {
    let runtime = Runtime::new().unwrap();
    // The API-key example declares its header: checking it reads nothing
    // back through the host.
    let bytes = std::fs::read(example_plugin("rust_api_key_filter.wasm")).unwrap();
    let keys = load::<FilterWorld>(&runtime, &bytes, r#"{"keys": ["k-1"]}"#).unwrap();
    assert_eq!(keys.init_answer().facts.len(), 1);
    let good = keys.on_request(
        Tenant::Upstream(0),
        &mut request("GET", "/", &[("X-Api-Key", "k-1")]),
    );
    assert!(
        matches!(good, Ok(bbproxy::plugin::FilterAction::Forward { ref headers, .. }) if headers.len() == 1),
        "{good:?}"
    );
    let bad = keys.on_request(
        Tenant::Upstream(0),
        &mut request("GET", "/", &[("x-api-key", "k-2")]),
    );
    assert!(
        matches!(bad, Ok(bbproxy::plugin::FilterAction::Respond(ref r)) if r.status == http::StatusCode::UNAUTHORIZED),
        "{bad:?}"
    );
    assert_eq!(keys.calls(), 2);
    assert_eq!(keys.request_reads(), 0, "the key came with the calls");

    // The default router declares what its routes read (the path, the
    // method, a header) and routes on those values alone.
    let config = r#"{"routes": {"a.test": [
        {"match": {"path_prefix": "/api/", "method": ["POST"]}},
        {"match": {"header": {"x-env": "canary"}}},
        {"match": {"path": "/gone"}, "respond": {"status": 410, "body": "gone"}}
    ]}}"#;
    let router = load::<RouterWorld>(&runtime, bundle::ROUTER, config).unwrap();
    assert_eq!(router.init_answer().facts.len(), 3, "path, method, x-env");
    let route = |method, path, headers: &[(&str, &str)]| {
        router
            .route(Tenant::Upstream(0), &mut request(method, path, headers))
            .unwrap()
    };
    let to = |index| Route::DomainRoute { domain: 0, index };
    assert_eq!(route("POST", "/api/x", &[]), to(0));
    assert_eq!(route("GET", "/api/x", &[("x-env", "canary")]), to(1));
    assert_eq!(route("GET", "/api/x", &[]), Route::Upstream(0));
    assert!(matches!(
        route("GET", "/gone", &[]),
        Route::Respond { status: 410, .. }
    ));
    assert_eq!(router.request_reads(), 0, "every fact came with the calls");
}

#[test]
fn a_bad_fact_declaration_fails_init_as_the_plugins_fault_not_the_configs() {
    let runtime = Runtime::new().unwrap();
    let err = v2_balancer(&runtime, "bad-fact").unwrap_err().to_string();
    assert!(
        err.contains(r#"init answered what the proxy cannot take: declared fact header("bad name"): not a valid header name"#),
        "{err}"
    );
    assert!(!err.contains("rejected its config"), "{err}");
}
