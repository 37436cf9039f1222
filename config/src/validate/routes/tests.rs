//! `upstreams` and a domain's `routes`, through the public API: every
//! accepted shape, and the line each mistake gets, with its key path.

use std::time::Duration;

use crate::tests::{backend, err, ok};
use crate::*;

/// A document with the pool `api`, and `routes` for `example.com`.
fn routed(routes: &str) -> String {
    format!(
        r#"{{"upstreams": {{"api": {{"backends": ["127.0.0.1:9001", "127.0.0.1:9002"], "balancer": "least-request", "timeouts": {{"upstream_connect": "1s"}}}}}},
            "domains": {{"example.com": {{"backends": ["127.0.0.1:8080"], "routes": {routes}}},
                        "other.test": ["127.0.0.1:7000"]}}}}"#
    )
}

fn routed_err(routes: &str) -> String {
    err(&routed(routes))
}

#[test]
fn pools_are_upstreams_after_the_domains() {
    let c = ok(&routed("[]"));
    assert_eq!(c.pools.len(), 1);
    let api = &c.pools[0];
    assert_eq!(api.name, "api");
    assert_eq!(
        api.backends,
        [backend("127.0.0.1", 9001), backend("127.0.0.1", 9002)]
    );
    assert_eq!(api.balancer, "least-request");
    assert_eq!(api.upstream.timeouts.connect, Duration::from_secs(1));
    assert!(api.routes.is_empty() && api.tls.is_none());
    let names: Vec<&str> = c.upstreams().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["example.com", "other.test", "api"]);
    // The list form works for a pool too.
    let c = ok(r#"{"upstreams": {"b": ["b:1"]}, "domains": {"a.test": ["a:1"]}}"#);
    assert_eq!(c.pools[0].backends, [backend("b", 1)]);
}

#[test]
fn domains_without_routes_keep_their_meaning() {
    let c = ok(r#"{"domains": {"a.test": ["a:1"], "b.test": {"backends": ["b:1"]}}}"#);
    assert!(c.pools.is_empty());
    assert!(c.domains.iter().all(|d| d.routes.is_empty()));
    assert_eq!(c.domains[1].backends, [backend("b", 1)]);
}

#[test]
fn every_matcher_and_action() {
    let c = ok(&routed(
        r#"[
        {"match": {"path_prefix": "/api/", "method": ["get", "POST"]}, "upstream": "api", "strip_prefix": "/api",
         "timeouts": {"upstream_response_headers": "5s"}, "retries": {"attempts": 1}},
        {"match": {"header": {"X-Env": "canary", "x-debug": true}, "query": {"v": "2"}}, "upstream": "other.test"},
        {"match": {"client_ip": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]}, "upstream": "Example.COM"},
        {"match": {"path": "/old"}, "redirect": {"location": "/new"}},
        {"match": {"path": "/gone"}, "redirect": {"status": 301, "location": "https://x.test/"}},
        {"match": {"path_regex": "^/v[0-9]+/"}, "respond": {"status": 404}},
        {"respond": {"status": 503, "body": "down"}}
    ]"#,
    ));
    let r = &c.domains[0].routes;
    assert_eq!(r.len(), 7);
    assert_eq!(r[0].matcher.path_prefix.as_deref(), Some("/api/"));
    assert_eq!(r[0].matcher.methods, ["GET", "POST"]);
    let Action::Forward(f) = &r[0].action else {
        panic!("{:?}", r[0].action)
    };
    assert_eq!(f.upstream, "api");
    assert_eq!(f.strip_prefix.as_deref(), Some("/api"));
    // The route's own timeout, over the pool's (connect 1s), over the
    // top level's defaults.
    assert_eq!(f.timeouts.response_headers, Duration::from_secs(5));
    assert_eq!(f.timeouts.connect, Duration::from_secs(1));
    assert_eq!(f.timeouts.idle, UpstreamTimeouts::default().idle);
    assert_eq!(f.retries.attempts, 1);
    assert_eq!(f.retries.budget_percent, Retries::default().budget_percent);
    assert_eq!(
        r[1].matcher.headers,
        [
            ("x-env".to_owned(), HeaderMatch::Exact("canary".into())),
            ("x-debug".to_owned(), HeaderMatch::Present)
        ]
    );
    assert_eq!(r[1].matcher.query, [("v".to_owned(), "2".to_owned())]);
    let Action::Forward(f) = &r[1].action else {
        panic!()
    };
    assert_eq!(
        (f.upstream.as_str(), &f.retries),
        ("other.test", &Retries::default())
    );
    assert_eq!(r[2].matcher.client_ip.len(), 3);
    assert_eq!(r[2].matcher.client_ip[2].to_string(), "192.0.2.7/32");
    let Action::Forward(f) = &r[2].action else {
        panic!()
    };
    assert_eq!(f.upstream, "example.com");
    assert_eq!(
        r[3].action,
        Action::Redirect {
            status: 308,
            location: "/new".into()
        }
    );
    assert_eq!(
        r[4].action,
        Action::Redirect {
            status: 301,
            location: "https://x.test/".into()
        }
    );
    assert_eq!(r[5].matcher.path_regex.as_deref(), Some("^/v[0-9]+/"));
    assert_eq!(
        r[5].action,
        Action::Respond {
            status: 404,
            body: String::new()
        }
    );
    assert_eq!(r[6].matcher, Match::default());
    assert_eq!(
        r[6].action,
        Action::Respond {
            status: 503,
            body: "down".into()
        }
    );
}

#[test]
fn a_domain_with_routes_needs_no_backends() {
    let c = ok(r#"{"upstreams": {"p": ["p:1"]},
        "domains": {"a.test": {"routes": [{"upstream": "p"}]}}}"#);
    assert!(c.domains[0].backends.is_empty());
    let e = err(r#"{"domains": {"a.test": {"routes": []}}}"#);
    assert_eq!(
        e,
        "config.json: domains.a.test.backends: required: a list of backend addresses like [\"localhost:8080\"]"
    );
    // Nor can a route forward to such a domain.
    let e = err(r#"{"upstreams": {"p": ["p:1"]}, "domains": {
        "a.test": {"routes": [{"upstream": "p"}]},
        "b.test": {"backends": ["b:1"], "routes": [{"upstream": "a.test"}]}}}"#);
    assert_eq!(
        e,
        "config.json: domains.b.test.routes[0].upstream: \"a.test\" has no backends (its own requests only go through its routes)"
    );
}

#[test]
fn unknown_upstreams_name_the_key() {
    assert_eq!(
        routed_err(r#"[{"match": {"path": "/a"}}, {"upstream": "nope"}]"#),
        "config.json: domains.example.com.routes[0]: a route needs exactly one action, \"upstream\", \"redirect\" or \"respond\"; none is given"
    );
    assert_eq!(
        routed_err(r#"[{"match": {"path": "/a"}, "upstream": "api"}, {"upstream": "nope"}]"#),
        "config.json: domains.example.com.routes[1].upstream: unknown upstream \"nope\": not a pool of \"upstreams\" (api) nor a domain"
    );
}

#[test]
fn bad_matchers_name_the_key() {
    let cases = [
        (
            r#"{"path_regex": "(unclosed"}"#,
            "routes[0].match.path_regex: invalid regular expression \"(unclosed\": unclosed group",
        ),
        (
            r#"{"client_ip": ["10.0.0.0/8", "10.1.2.3/8"]}"#,
            "routes[0].match.client_ip[1]: invalid IP block \"10.1.2.3/8\": bits are set after the prefix; did you mean \"10.0.0.0/8\"?",
        ),
        (
            r#"{"client_ip": ["fe80::/200"]}"#,
            "routes[0].match.client_ip[0]: invalid IP block \"fe80::/200\": prefix length /200 is longer than the address",
        ),
        (
            r#"{"client_ip": ["banana"]}"#,
            "routes[0].match.client_ip[0]: invalid IP block \"banana\": expected an IP block like \"10.0.0.0/8\", \"2001:db8::/32\" or one address",
        ),
        (
            r#"{"method": ["GET", "B@D"]}"#,
            "routes[0].match.method[1]: expected an HTTP method like \"GET\" or a list of them, got \"B@D\"",
        ),
        (
            r#"{"method": []}"#,
            "routes[0].match.method: expected an HTTP method like \"GET\" or a list of them, got []",
        ),
        (
            r#"{"method": ["get", "GET"]}"#,
            "routes[0].match.method[1]: GET is listed twice",
        ),
        (
            r#"{"path_prefix": "api"}"#,
            "routes[0].match.path_prefix: expected a request path like \"/api/\" (starting with /, no query), got \"api\"",
        ),
        (
            r#"{"path": "/a?b=1"}"#,
            "routes[0].match.path: expected a request path like \"/api/\" (starting with /, no query), got \"/a?b=1\"",
        ),
        (
            r#"{"header": {"x-env": false}}"#,
            "routes[0].match.header.x-env: expected the exact value as a string, or true for any value, got false",
        ),
        (
            r#"{"header": {"bad name": "1"}}"#,
            "routes[0].match.header.bad name: \"bad name\" is not a valid header name",
        ),
        (
            r#"{"header": {}}"#,
            "routes[0].match.header: empty: give at least one, like {\"x-env\": \"canary\"}, or leave the key out",
        ),
        (
            r#"{"query": {"v": 2}}"#,
            "routes[0].match.query.v: expected a parameter name and its value as a string, got 2",
        ),
    ];
    for (m, want) in cases {
        let e = routed_err(&format!(r#"[{{"match": {m}, "upstream": "api"}}]"#));
        assert_eq!(e, format!("config.json: domains.example.com.{want}"), "{m}");
    }
    let e = routed_err(r#"[{"match": {"paht": "/"}, "upstream": "api"}]"#);
    assert!(e.starts_with("config.json: unknown key `domains.example.com.routes[0].match.paht` (expected one of: path, path_prefix, path_regex, method, header, query, client_ip); did you mean `path`?"), "{e}");
}

#[test]
fn bad_actions_name_the_key() {
    let cases = [
        (
            r#"{"upstream": "api", "respond": {"status": 404}}"#,
            "routes[0]: a route needs exactly one action, \"upstream\", \"redirect\" or \"respond\"; upstream and respond are given",
        ),
        (
            r#"{"respond": {"status": 404}, "strip_prefix": "/a"}"#,
            "routes[0].strip_prefix: applies to routes that forward (\"upstream\") only",
        ),
        (
            r#"{"redirect": {"location": "/x"}, "timeouts": {"upstream_connect": "1s"}}"#,
            "routes[0].timeouts: applies to routes that forward (\"upstream\") only",
        ),
        (
            r#"{"upstream": "api", "strip_prefix": "api"}"#,
            "routes[0].strip_prefix: expected a path prefix like \"/api\", got \"api\"",
        ),
        (
            r#"{"upstream": ""}"#,
            "routes[0].upstream: expected the name of a pool of \"upstreams\" or of a domain, got \"\"",
        ),
        (
            r#"{"redirect": {"status": 200, "location": "/x"}}"#,
            "routes[0].redirect.status: expected 301, 302, 303, 307 or 308, got 200",
        ),
        (
            r#"{"redirect": {}}"#,
            "routes[0].redirect.location: required: where to send the client, like \"/new\"",
        ),
        (
            r#"{"respond": {"status": 600}}"#,
            "routes[0].respond.status: expected an HTTP status from 100 to 599, got 600",
        ),
        (
            r#"{"respond": {"body": "x"}}"#,
            "routes[0].respond.status: required: the HTTP status to answer with",
        ),
        (
            r#"{"upstream": "api", "timeouts": {"upstream_connect": "soon"}}"#,
            "routes[0].timeouts.upstream_connect: invalid duration \"soon\": ",
        ),
        (
            r#"{"upstream": "api", "retries": {"attempts": 11}}"#,
            "routes[0].retries.attempts: 11 is too many: at most 10 attempts per request",
        ),
    ];
    for (route, want) in cases {
        let e = routed_err(&format!("[{route}]"));
        let want = format!("config.json: domains.example.com.{want}");
        assert!(e.starts_with(&want), "{route}\n got: {e}\nwant: {want}");
    }
}

#[test]
fn duplicate_and_shadowed_routes_are_errors() {
    let cases = [
        (
            r#"[{"match": {"path_prefix": "/a"}, "upstream": "api"}, {"match": {"path_prefix": "/a/"}, "respond": {"status": 404}}]"#,
            "routes[1]: can never match: its match is the same as that of the earlier route domains.example.com.routes[0]",
        ),
        (
            r#"[{"upstream": "api"}, {"match": {"path": "/x"}, "upstream": "api"}]"#,
            "routes[1]: can never match: every request it matches is matched first by the earlier route domains.example.com.routes[0]",
        ),
        (
            r#"[{"match": {"path_prefix": "/a"}, "upstream": "api"}, {"match": {"path": "/b"}, "upstream": "api"}, {"match": {"path_prefix": "/a/b", "method": "GET"}, "upstream": "api"}]"#,
            "routes[2]: can never match: every request it matches is matched first by the earlier route domains.example.com.routes[0]",
        ),
        (
            r#"[{"match": {"method": ["GET", "POST"], "header": {"x": true}}, "upstream": "api"}, {"match": {"method": "GET", "header": {"x": "1"}}, "upstream": "api"}]"#,
            "routes[1]: can never match: every request it matches is matched first by the earlier route domains.example.com.routes[0]",
        ),
        (
            r#"[{"match": {"client_ip": "10.0.0.0/8"}, "upstream": "api"}, {"match": {"client_ip": ["10.1.0.0/16"], "query": {"a": "b"}}, "upstream": "api"}]"#,
            "routes[1]: can never match: every request it matches is matched first by the earlier route domains.example.com.routes[0]",
        ),
    ];
    for (routes, want) in cases {
        let e = routed_err(routes);
        assert_eq!(
            e,
            format!("config.json: domains.example.com.{want}"),
            "{routes}"
        );
    }
    // Narrower first, wider later: both can match.
    ok(&routed(
        r#"[{"match": {"path_prefix": "/a/b"}, "upstream": "api"}, {"match": {"path_prefix": "/a"}, "upstream": "api"},
            {"match": {"path_prefix": "/ab"}, "upstream": "api"}, {"match": {"method": "GET"}, "upstream": "api"},
            {"match": {"method": ["GET", "PUT"]}, "upstream": "api"}, {"match": {"path_regex": "^/x"}, "upstream": "api"},
            {"match": {"path_regex": "^/y"}, "upstream": "api"}, {"match": {"client_ip": ["10.0.0.0/8"]}, "upstream": "api"},
            {"match": {"client_ip": ["0.0.0.0/0", "::/0"]}, "upstream": "api"}]"#,
    ));
}

#[test]
fn pool_names_and_keys() {
    let e = err(r#"{"upstreams": {"a#b": ["p:1"]}, "domains": {"a.test": ["a:1"]}}"#);
    assert_eq!(
        e,
        "config.json: upstreams.a#b: invalid pool name \"a#b\": it must be non-empty and without '#'"
    );
    let e = err(r#"{"upstreams": {"": ["p:1"]}, "domains": {"a.test": ["a:1"]}}"#);
    assert_eq!(
        e,
        "config.json: upstreams.: invalid pool name \"\": it must be non-empty and without '#'"
    );
    let e = err(r#"{"upstreams": {"A.test": ["p:1"]}, "domains": {"a.test": ["a:1"]}}"#);
    assert_eq!(
        e,
        "config.json: upstreams.A.test: \"A.test\" is also a domain (domains.a.test); a route names either, so give the pool another name"
    );
    for key in [
        r#""tls": "off""#,
        r#""routes": []"#,
        r#""router": {"path": "r.wasm"}"#,
    ] {
        let e = err(&format!(
            r#"{{"upstreams": {{"p": {{"backends": ["p:1"], {key}}}}}, "domains": {{"a.test": ["a:1"]}}}}"#
        ));
        assert!(
            e.contains(
                ": a pool of \"upstreams\" has no host: tls, router, routes and filters are keys of a domain"
            ),
            "{e}"
        );
        assert!(e.starts_with("config.json: upstreams.p."), "{e}");
    }
    let e = err(
        r#"{"upstreams": {"p": {"backends": ["p:1"], "balancr": "x"}}, "domains": {"a.test": ["a:1"]}}"#,
    );
    assert!(
        e.starts_with("config.json: unknown key `upstreams.p.balancr`"),
        "{e}"
    );
    let e = err(r#"{"upstreams": {"p": {"backends": []}}, "domains": {"a.test": ["a:1"]}}"#);
    assert!(
        e.starts_with("config.json: upstreams.p.backends: empty backend list"),
        "{e}"
    );
    let e = err(
        r#"{"upstreams": {"p": {"backends": ["p:1"], "balancer": "sticky"}}, "domains": {"a.test": ["a:1"]}}"#,
    );
    assert!(
        e.starts_with("config.json: upstreams.p.balancer: unknown balancer \"sticky\""),
        "{e}"
    );
}

#[test]
fn routes_need_the_builtin_router() {
    let own = err(
        r#"{"upstreams": {"p": ["p:1"]}, "domains": {"a.test": {"backends": ["a:1"],
        "router": {"path": "r.wasm"}, "routes": [{"upstream": "p"}]}}}"#,
    );
    assert_eq!(
        own,
        "config.json: domains.a.test.routes: routes are matched by the built-in router, but this domain's router is a plugin of your own (domains.a.test.router); route in that plugin, or remove one of the two"
    );
    let global = err(
        r#"{"plugins": {"router": {"path": "r.wasm"}}, "upstreams": {"p": ["p:1"]},
        "domains": {"a.test": {"backends": ["a:1"], "routes": [{"upstream": "p"}]}}}"#,
    );
    assert!(
        global.ends_with("(plugins.router); route in that plugin, or remove one of the two"),
        "{global}"
    );
    let reserved = err(
        r#"{"plugins": {"router": {"config": {"routes": {}}}}, "domains": {"a.test": ["a:1"]}}"#,
    );
    assert!(
        reserved.starts_with("config.json: plugins.router.config.routes: reserved:"),
        "{reserved}"
    );
}
