//! The route matcher on requests as the host would present them.

use std::collections::BTreeMap;

use bbproxy_sdk::testing::FakeRequest;
use bbproxy_sdk::v2::Route;

use super::*;
use crate::RouteTable;

/// A table of `a.test` (backends), `b.test` (no backends) and a pool `p`
/// that the routes (JSON as the host passes it) are given to.
fn table(routes: &str) -> RouteTable {
    let routes: BTreeMap<String, Vec<RouteSpec>> =
        bbproxy_sdk::parse_config(routes).unwrap_or_else(|e| panic!("{e}"));
    RouteTable::new(["a.test", "b.test"], None)
        .unwrap()
        .with_routes(routes, |n| n == "b.test")
        .unwrap_or_else(|e| panic!("{e}"))
}

fn route(t: &RouteTable, req: &FakeRequest) -> Route {
    t.route_request(&req.as_request())
}

/// The route reference of route `i` of a.test.
fn to(i: usize) -> Route {
    Route::domain_route(0, u32::try_from(i).unwrap())
}

fn get(target: &str) -> FakeRequest {
    FakeRequest::get("a.test", target)
}

#[test]
fn prefixes_are_segment_aware() {
    let t = table(
        r#"{"a.test": [{"match": {"path_prefix": "/api/"}}, {"match": {"path_prefix": "/web"}}]}"#,
    );
    assert_eq!(route(&t, &get("/api")), to(0));
    assert_eq!(route(&t, &get("/api/")), to(0));
    assert_eq!(route(&t, &get("/api/v1/x?q=1")), to(0));
    assert_eq!(route(&t, &get("/apix")), Route::upstream(0));
    assert_eq!(route(&t, &get("/web")), to(1));
    assert_eq!(route(&t, &get("/web/a")), to(1));
    assert_eq!(route(&t, &get("/website")), Route::upstream(0));
}

#[test]
fn exact_paths_and_regexes() {
    let t = table(
        r#"{"a.test": [{"match": {"path": "/old"}}, {"match": {"path_regex": "^/v[0-9]+/items$"}}, {"match": {"path_regex": "\\.php"}}]}"#,
    );
    assert_eq!(route(&t, &get("/old")), to(0));
    assert_eq!(route(&t, &get("/old/")), Route::upstream(0));
    assert_eq!(route(&t, &get("/v2/items")), to(1));
    assert_eq!(route(&t, &get("/v2/items/7")), Route::upstream(0));
    // Unanchored as written: anywhere in the path.
    assert_eq!(route(&t, &get("/x/index.php")), to(2));
}

#[test]
fn methods() {
    let t = table(
        r#"{"a.test": [{"match": {"method": ["GET", "HEAD"]}}, {"match": {"method": ["delete"]}}]}"#,
    );
    assert_eq!(route(&t, &get("/")), to(0));
    assert_eq!(route(&t, &FakeRequest::new("HEAD", "a.test", "/")), to(0));
    assert_eq!(route(&t, &FakeRequest::new("DELETE", "a.test", "/")), to(1));
    assert_eq!(
        route(&t, &FakeRequest::new("POST", "a.test", "/")),
        Route::upstream(0)
    );
}

#[test]
fn headers_exact_and_present() {
    let t = table(
        r#"{"a.test": [{"match": {"header": {"x-env": "canary", "x-user": true}}}, {"match": {"header": {"X-Env": "canary"}}}, {"match": {"header": {"x-debug": true}}}]}"#,
    );
    let canary = get("/").header("X-Env", "canary");
    assert_eq!(route(&t, &canary.clone().header("x-user", "")), to(0));
    assert_eq!(route(&t, &canary), to(1));
    assert_eq!(
        route(&t, &get("/").header("x-env", "Canary")),
        Route::upstream(0)
    );
    assert_eq!(route(&t, &get("/").header("x-debug", "0")), to(2));
    // The first value counts, as the host reports it.
    assert_eq!(
        route(
            &t,
            &get("/").header("x-env", "stable").header("x-env", "canary")
        ),
        Route::upstream(0)
    );
}

#[test]
fn query_parameters() {
    let t = table(
        r#"{"a.test": [{"match": {"query": {"v": "2", "beta": ""}}}, {"match": {"query": {"v": "1"}}}]}"#,
    );
    assert_eq!(route(&t, &get("/?beta&v=2")), to(0));
    assert_eq!(route(&t, &get("/?v=2&beta=")), to(0));
    assert_eq!(route(&t, &get("/?v=2")), Route::upstream(0));
    assert_eq!(route(&t, &get("/?x=0&v=1")), to(1));
    assert_eq!(route(&t, &get("/?v=10")), Route::upstream(0));
    assert_eq!(route(&t, &get("/")), Route::upstream(0));
    assert!(query_has("a=1&b=2", "b", "2") && !query_has("a=1&b=2", "a", "2"));
}

#[test]
fn client_ips_both_families() {
    let t = table(
        r#"{"a.test": [{"match": {"client_ip": ["10.0.0.0/8", "2001:db8::/32"]}}, {"match": {"client_ip": ["192.0.2.7"]}}]}"#,
    );
    let from = |ip: &str| route(&t, &get("/").client(ip));
    assert_eq!(from("10.9.8.7"), to(0));
    assert_eq!(from("::ffff:10.0.0.1"), to(0));
    assert_eq!(from("2001:db8:5::1"), to(0));
    assert_eq!(from("2001:db9::1"), Route::upstream(0));
    assert_eq!(from("192.0.2.7"), to(1));
    assert_eq!(from("192.0.2.8"), Route::upstream(0));
    assert_eq!(from("not an address"), Route::upstream(0));
}

#[test]
fn all_matchers_must_hold_and_the_first_match_wins() {
    let t = table(
        r#"{"a.test": [
        {"match": {"path_prefix": "/api", "method": ["POST"], "header": {"x-env": "canary"}}},
        {"match": {"path_prefix": "/api", "method": ["POST"]}, "respond": {"status": 403, "body": "no"}},
        {"match": {"path_prefix": "/api"}},
        {}
    ]}"#,
    );
    let post = |target| FakeRequest::new("POST", "a.test", target);
    assert_eq!(route(&t, &post("/api/x").header("x-env", "canary")), to(0));
    assert_eq!(route(&t, &post("/api/x")), Route::respond(403, "no"));
    assert_eq!(route(&t, &get("/api/x").header("x-env", "canary")), to(2));
    assert_eq!(route(&t, &get("/elsewhere")), to(3));
}

#[test]
fn no_match_goes_to_the_domain_or_404_without_backends() {
    let t = table(r#"{"b.test": [{"match": {"path_prefix": "/api"}}]}"#);
    assert_eq!(
        route(&t, &FakeRequest::get("b.test", "/api/1")),
        Route::domain_route(1, 0)
    );
    let missed = route(&t, &FakeRequest::get("b.test", "/x"));
    assert_eq!(missed.direct_response().map(|r| r.status), Some(404));
    // a.test has no routes: its host decides, as before.
    assert_eq!(route(&t, &get("/api/1")), Route::upstream(0));
    assert_eq!(
        route(&t, &FakeRequest::get("c.test", "/"))
            .direct_response()
            .map(|r| r.status),
        Some(421)
    );
}

#[test]
fn bad_routes_are_init_errors() {
    let parse =
        |s: &str| -> BTreeMap<String, Vec<RouteSpec>> { bbproxy_sdk::parse_config(s).unwrap() };
    let base = || RouteTable::new(["a.test"], None).unwrap();
    let e = base()
        .with_routes(parse(r#"{"z.test": [{}]}"#), |_| false)
        .unwrap_err();
    assert!(
        e.contains("\"z.test\", which is not a configured domain"),
        "{e}"
    );
    let e = base()
        .with_routes(
            parse(r#"{"a.test": [{}, {"match": {"path_regex": "("}}]}"#),
            |_| false,
        )
        .unwrap_err();
    assert!(
        e.contains("routes of \"a.test\", route 1: path_regex"),
        "{e}"
    );
    let e = base()
        .with_routes(
            parse(r#"{"a.test": [{"match": {"client_ip": ["1.2.3.4/40"]}}]}"#),
            |_| false,
        )
        .unwrap_err();
    assert!(e.contains("client_ip \"1.2.3.4/40\""), "{e}");
}

#[test]
fn first_segments() {
    assert_eq!(first_segment("/api/v1"), Some("api"));
    assert_eq!(first_segment("/api"), Some("api"));
    assert_eq!(first_segment("/"), Some(""));
    assert_eq!(first_segment("//x"), Some(""));
    assert_eq!(first_segment("*"), None);
    assert_eq!(first_segment(""), None);
}

/// The routes of the segment-index test: every kind of matcher, with and
/// without a path, interleaved.
const INDEXED_ROUTES: [&str; 11] = [
    r#"{"match": {"header": {"x-env": "canary"}}}"#,
    r#"{"match": {"path_prefix": "/api/v1"}}"#,
    r#"{"match": {"path": "/api"}}"#,
    r#"{"match": {"query": {"v": "2"}}}"#,
    r#"{"match": {"path_prefix": "/api", "method": ["POST"]}}"#,
    r#"{"match": {"path_regex": "^/s[0-9]"}}"#,
    r#"{"match": {"path": "/static/app.js", "path_prefix": "/static"}}"#,
    r#"{"match": {"path_prefix": "/static"}}"#,
    r#"{"match": {"path": "/"}}"#,
    r#"{"match": {"path_prefix": "/x/"}}"#,
    r#"{"match": {"path_prefix": "/api"}}"#,
];

/// Checks that the segment index picks the same route as trying every
/// route in turn, for each request of a grid of paths on, beside and off
/// the routes' segments; returns the answers seen.
fn index_agrees(routes: &[&str]) -> std::collections::BTreeSet<String> {
    let mut specs: BTreeMap<String, Vec<RouteSpec>> =
        bbproxy_sdk::parse_config(&format!(r#"{{"a.test": [{}]}}"#, routes.join(","))).unwrap();
    let specs = specs.remove("a.test").unwrap();
    let domain = DomainRoutes::compile("a.test", 0, specs).unwrap();
    let paths = [
        "/",
        "/api",
        "/api/",
        "/api/v1",
        "/api/v1/x",
        "/api/v2",
        "/apix",
        "/static",
        "/static/app.js",
        "/static/x",
        "/staticx",
        "/s1",
        "//",
        "//x",
        "/x",
        "/x/y",
        "/xy",
        "*",
        "",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for path in paths {
        for method in ["GET", "POST"] {
            for headers in [&[][..], &[("x-env", "canary")][..]] {
                for query in [None, Some("v=2")] {
                    let lent = Lent {
                        method,
                        path,
                        query,
                        client_addr: "192.0.2.1",
                        headers,
                    };
                    let index = domain.find(&Facts::new(&lent));
                    let linear = domain.find_linear(&Facts::new(&lent));
                    assert_eq!(index, linear, "{method} {path} {headers:?} {query:?}");
                    seen.insert(format!("{index:?}"));
                }
            }
        }
    }
    seen
}

#[test]
fn the_segment_index_agrees_with_trying_every_route() {
    let seen = index_agrees(&INDEXED_ROUTES);
    // Every route is some request's answer, and no route is one too: the
    // grid reaches them all, so the comparison is not vacuous.
    assert_eq!(seen.len(), INDEXED_ROUTES.len() + 1, "{seen:?}");
    // The same with a catch-all prefix in the middle (`/`, and `//`, whose
    // base is also empty), which every path starting with `/` reaches
    // unless an earlier route took it.
    for catch_all in [
        r#"{"match": {"path_prefix": "/"}}"#,
        r#"{"match": {"path_prefix": "//"}}"#,
    ] {
        let mut routes = INDEXED_ROUTES.to_vec();
        routes.insert(4, catch_all);
        let route4 = format!("{:?}", Some(&Route::domain_route(0, 4)));
        assert!(index_agrees(&routes).contains(&route4), "{route4}");
    }
}

#[test]
fn the_router_declares_what_its_routes_read() {
    use bbproxy_sdk::v2::Fact;
    let t = table(
        r#"{"a.test": [
            {"match": {"header": {"X-Env": "canary"}, "method": ["POST"]}},
            {"match": {"query": {"v": "2"}}},
            {"match": {"client_ip": ["10.0.0.0/8"], "header": {"x-env": true, "x-team": "a"}}}
        ], "b.test": [{"match": {"path": "/b"}}]}"#,
    );
    assert_eq!(
        t.needs().facts(16),
        [
            Fact::Path,
            Fact::Method,
            Fact::Query,
            Fact::ClientAddr,
            Fact::header("x-env"),
            Fact::header("x-team"),
        ]
    );
    // The most read first when there are too many.
    assert_eq!(t.needs().facts(2), [Fact::Path, Fact::Method]);
    assert!(table("{}").needs().facts(16).is_empty());
}

#[test]
fn declared_facts_route_as_reads_through_the_request_do() {
    use bbproxy_sdk::testing::TestHost;
    use bbproxy_sdk::v2::Router;
    let host = TestHost::new().upstream("a.test", 1).upstream("b.test", 0);
    let config = r#"{"routes": {"a.test": [
        {"match": {"path_prefix": "/api/", "header": {"x-env": "canary"}}},
        {"match": {"method": ["DELETE"]}, "respond": {"status": 405, "body": "no"}}
    ]}}"#;
    let mut router: crate::HostRouter = host.router_v2(config).unwrap();
    assert_eq!(router.facts().len(), 3);
    let req = get("/api/x").header("X-Env", "canary");
    assert_eq!(host.route_v2(&mut router, &req), Ok(to(0)));
    let req = FakeRequest::new("DELETE", "a.test", "/api/x");
    assert!(
        matches!(host.route_v2(&mut router, &req), Ok(Route::Respond(ref r)) if r.status == 405)
    );
    assert_eq!(
        host.route_v2(&mut router, &get("/api/x")),
        Ok(Route::upstream(0))
    );
}

/// The domains without routes are the ones the router says go to their
/// own upstream (the proxy then answers them without a call); a domain
/// with routes is always asked. TestHost::route_v2 refuses an answer
/// that contradicts the claim, so every request below also checks it.
#[test]
fn domains_without_routes_are_self_routed() {
    use bbproxy_sdk::testing::TestHost;
    use bbproxy_sdk::v2::Router;
    assert_eq!(table("{}").self_routed(), [0, 1]);
    let with_a = r#"{"a.test": [{"match": {"path": "/x"}, "respond": {"status": 204}}]}"#;
    assert_eq!(table(with_a).self_routed(), [1]);

    let host = TestHost::new().upstream("a.test", 1).upstream("b.test", 1);
    let config = format!(r#"{{"routes": {with_a}}}"#);
    let mut router: crate::HostRouter = host.router_v2(&config).unwrap();
    assert_eq!(router.self_routed_domains(), [1]);
    for (host_name, path) in [("a.test", "/"), ("a.test", "/x"), ("b.test", "/x")] {
        let req = FakeRequest::get(host_name, path);
        assert!(
            host.route_v2(&mut router, &req).is_ok(),
            "{host_name}{path}"
        );
    }
}
