//! The built-in router's decision for a domain with 20 routes, natively on
//! the compiled table (what `init` builds). `matching/*` lends the request's
//! parts (the matching alone); `sdk-request/*` reads them through the SDK's
//! request stand-in, which like the host returns a fresh string per call.
//!
//! `cargo bench -p bbproxy-plugin-router --bench routes`; issue 18's target
//! is a median of 300 ns or less for `routes/20/matching/last` (the request
//! matches only the last route, so all 20 are tried). The `cpu/*` cases
//! time the same calls in the thread's CPU time rather than wall time: on a
//! shared machine wall time also counts the time the thread waited for a
//! core.

use std::collections::BTreeMap;
use std::hint::black_box;

use bbproxy_plugin_router::RouteTable;
use bbproxy_plugin_router::routes::{Lent, RouteSpec};
use bbproxy_sdk::testing::FakeRequest;
use bbproxy_sdk::v2::Route;
use cpu_time::ThreadTime;
use criterion::{Criterion, criterion_group, criterion_main};

/// 20 routes of every kind of matcher; only the last matches `request()`.
fn routes() -> String {
    let mut routes = Vec::new();
    for i in 0..6 {
        routes.push(format!(r#"{{"match": {{"path_prefix": "/service{i}/"}}}}"#));
    }
    for i in 0..3 {
        routes.push(format!(r#"{{"match": {{"path": "/exact/{i}"}}}}"#));
    }
    routes.push(r#"{"match": {"path_regex": "^/v[0-9]+/legacy/"}}"#.to_owned());
    routes.push(r#"{"match": {"method": ["PUT", "DELETE"], "path_prefix": "/admin"}}"#.to_owned());
    routes.push(r#"{"match": {"header": {"x-env": "canary"}}}"#.to_owned());
    routes.push(r#"{"match": {"header": {"x-debug": true}, "path_prefix": "/api"}}"#.to_owned());
    routes.push(r#"{"match": {"query": {"version": "3"}}}"#.to_owned());
    routes.push(r#"{"match": {"client_ip": ["10.0.0.0/8", "2001:db8::/32"]}}"#.to_owned());
    routes.push(r#"{"match": {"path": "/old"}, "respond": {"status": 410}}"#.to_owned());
    for i in 0..3 {
        routes.push(format!(r#"{{"match": {{"path_prefix": "/static{i}"}}}}"#));
    }
    routes.push(r#"{"match": {"path_prefix": "/api/", "method": ["GET", "POST"]}}"#.to_owned());
    assert_eq!(routes.len(), 20);
    format!(r#"{{"bench.test": [{}]}}"#, routes.join(","))
}

fn table() -> RouteTable {
    let specs: BTreeMap<String, Vec<RouteSpec>> =
        bbproxy_sdk::parse_config(&routes()).expect("routes parse");
    RouteTable::new(["bench.test"], None)
        .expect("table")
        .with_routes(specs, |_| false)
        .expect("routes compile")
}

fn bench(c: &mut Criterion) {
    let table = table();
    let headers = [("content-type", "application/json")];
    let last = Lent {
        method: "POST",
        path: "/api/users/7",
        query: Some("page=2"),
        client_addr: "192.0.2.10",
        headers: &headers,
    };
    let none = Lent {
        method: "GET",
        path: "/nothing/here",
        query: None,
        client_addr: "192.0.2.10",
        headers: &[],
    };
    assert_eq!(
        table.decide("bench.test", &last),
        Route::domain_route(0, 19)
    );
    assert_eq!(table.decide("bench.test", &none), Route::upstream(0));
    let last_sdk = FakeRequest::new("POST", "bench.test", "/api/users/7?page=2")
        .header("content-type", "application/json")
        .client("192.0.2.10");
    let none_sdk = FakeRequest::get("bench.test", "/nothing/here");
    assert_eq!(
        table.route_request(&last_sdk.as_request()),
        Route::domain_route(0, 19)
    );
    let mut group = c.benchmark_group("routes/20");
    for (name, req) in [("matching/last", last), ("matching/none", none)] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(table.decide(black_box("bench.test"), black_box(&req))))
        });
    }
    for (name, req) in [
        ("sdk-request/last", &last_sdk),
        ("sdk-request/none", &none_sdk),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(table.route_request(black_box(&req.as_request()))))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("routes/20/cpu");
    for (name, req) in [("matching/last", last), ("matching/none", none)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = ThreadTime::now();
                for _ in 0..iters {
                    black_box(table.decide(black_box("bench.test"), black_box(&req)));
                }
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
