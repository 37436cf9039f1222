//! `filters` in `plugins`, a domain and a route, through the public API:
//! the chains as read, and the line each mistake gets, with its key path.

use crate::tests::{err, ok, with};
use crate::*;

fn name(s: &'static str) -> HeaderName {
    HeaderName::from_static(s)
}

fn value(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

/// A document whose domain `example.com` has `filters` as its chain.
fn domain_with(filters: &str) -> String {
    format!(
        r#"{{"domains": {{"example.com": {{"backends": ["127.0.0.1:8080"], "filters": {filters}}}}}}}"#
    )
}

/// The error for a domain whose chain is `[entry]`.
fn entry_err(entry: &str) -> String {
    err(&domain_with(&format!("[{entry}]")))
}

/// The error for one direction's edits of a domain's built-in filter.
fn edits_err(request: &str) -> String {
    entry_err(&format!(
        r#"{{"builtin": "headers", "config": {{"request": {request}}}}}"#
    ))
}

#[test]
fn chains_are_read_in_order_at_every_level() {
    let c = ok(r#"{
        "plugins": {"filters": [
            {"builtin": "headers", "config": {"response": {"remove": ["Server", "x-powered-by"]}}}
        ]},
        "upstreams": {"api": ["127.0.0.1:9001"]},
        "domains": {"example.com": {"backends": ["127.0.0.1:8080"],
            "filters": [
                {"builtin": "headers", "config": {
                    "request": {"set": {"X-A": "1", "x-z": ""}, "add": {"x-b": "2"}, "remove": ["x-c"]},
                    "response": {"set": {"strict-transport-security": "max-age=63072000"}}}},
                {"builtin": "headers"}
            ],
            "routes": [{"match": {"path_prefix": "/api"}, "upstream": "api",
                        "filters": [{"builtin": "headers", "config": {"request": {"add": {"x-route": "api"}}}}]},
                       {"match": {"path": "/plain"}, "upstream": "api"}]}}
    }"#);
    let headers = |f: &Filter| match f {
        Filter::Headers(h) => h.clone(),
        Filter::Wasm(w) => panic!("{w:?}"),
    };
    let global = headers(&c.plugins.filters[0]);
    assert_eq!(global.request, HeaderEdits::default());
    assert_eq!(
        global.response.remove,
        [name("server"), name("x-powered-by")]
    );

    let d = &c.domains[0];
    assert_eq!(d.filters.len(), 2);
    let first = headers(&d.filters[0]);
    assert_eq!(
        first.request,
        HeaderEdits {
            remove: vec![name("x-c")],
            set: vec![(name("x-a"), value("1")), (name("x-z"), value(""))],
            add: vec![(name("x-b"), value("2"))],
        }
    );
    assert_eq!(
        first.response.set,
        [(name("strict-transport-security"), value("max-age=63072000"))]
    );
    // No config: a filter that changes nothing.
    assert_eq!(d.filters[1], Filter::Headers(HeaderFilter::default()));
    let route = headers(&d.routes[0].filters[0]);
    assert_eq!(route.request.add, [(name("x-route"), value("api"))]);
    assert!(d.routes[1].filters.is_empty());
    assert!(c.pools[0].filters.is_empty());
}

#[test]
fn no_filters_anywhere_is_empty_chains() {
    let c = ok(&with(r#""plugins": {"filters": []}"#));
    assert!(c.plugins.filters.is_empty());
    assert!(c.domains[0].filters.is_empty());
    let c = ok(&domain_with("[]"));
    assert!(c.plugins.filters.is_empty() && c.domains[0].filters.is_empty());
}

#[test]
fn headers_a_filter_may_not_change_are_refused_with_their_key_path() {
    assert_eq!(
        edits_err(r#"{"set": {"Content-Length": "0"}}"#),
        "config.json: domains.example.com.filters[0].config.request.set.Content-Length: a filter \
         cannot change content-length (it frames the message; a changed framing lets the proxy \
         and the backend disagree on where a message ends)"
    );
    for (edit, key) in [
        (
            r#"{"add": {"transfer-encoding": "chunked"}}"#,
            "add.transfer-encoding",
        ),
        (r#"{"remove": ["x-ok", "host"]}"#, "remove[1]"),
        (r#"{"set": {"connection": "close"}}"#, "set.connection"),
        (r#"{"add": {"upgrade": "h2c"}}"#, "add.upgrade"),
        (r#"{"remove": ["te"]}"#, "remove[0]"),
        (r#"{"set": {"keep-alive": "1"}}"#, "set.keep-alive"),
        (
            r#"{"set": {"proxy-authorization": "x"}}"#,
            "set.proxy-authorization",
        ),
    ] {
        let e = edits_err(edit);
        assert!(
            e.starts_with(&format!(
                "config.json: domains.example.com.filters[0].config.request.{key}: a filter cannot change "
            )),
            "{edit}: {e}"
        );
    }
    // The same rule for responses, the global chain and a route's.
    let e = err(&with(
        r#""plugins": {"filters": [{"builtin": "headers", "config": {"response": {"remove": ["transfer-encoding"]}}}]}"#,
    ));
    assert!(
        e.starts_with("config.json: plugins.filters[0].config.response.remove[0]: a filter cannot change transfer-encoding ("),
        "{e}"
    );
    let e = err(
        r#"{"domains": {"example.com": {"backends": ["127.0.0.1:8080"], "routes": [
        {"upstream": "example.com", "filters": [{"builtin": "headers"}, {"builtin": "headers", "config": {"request": {"set": {"host": "x"}}}}]}]}}}"#,
    );
    assert!(
        e.starts_with("config.json: domains.example.com.routes[0].filters[1].config.request.set.host: a filter cannot change host ("),
        "{e}"
    );
}

#[test]
fn header_names_and_values_must_be_valid_http() {
    assert_eq!(
        edits_err(r#"{"set": {"bad name": "1"}}"#),
        "config.json: domains.example.com.filters[0].config.request.set.bad name: invalid header name \"bad name\""
    );
    assert_eq!(
        edits_err(r#"{"remove": [""]}"#),
        "config.json: domains.example.com.filters[0].config.request.remove[0]: invalid header name \"\""
    );
    assert_eq!(
        edits_err(r#"{"add": {"x-a": "line\nbreak"}}"#),
        "config.json: domains.example.com.filters[0].config.request.add.x-a: invalid header value: visible ASCII, spaces and tabs only"
    );
    assert_eq!(
        edits_err(r#"{"set": {"x-a": 1}}"#),
        "config.json: domains.example.com.filters[0].config.request.set.x-a: expected a header value (a string), got 1"
    );
    assert_eq!(
        edits_err(r#"{"remove": "server"}"#),
        "config.json: domains.example.com.filters[0].config.request.remove: expected a list of header names like [\"server\"], got \"server\""
    );
    assert_eq!(
        edits_err(r#"{"remove": [3]}"#),
        "config.json: domains.example.com.filters[0].config.request.remove[0]: expected a header name, got 3"
    );
    assert_eq!(
        edits_err(r#"{"set": {"X-A": "1", "x-a": "2"}}"#),
        "config.json: domains.example.com.filters[0].config.request.set.x-a: set twice (header names are case-insensitive); give it one value"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_key_path() {
    assert!(
        entry_err(r#"{"builtin": "headers", "on_fault": "fail-open"}"#)
            .starts_with("config.json: unknown key `domains.example.com.filters[0].on_fault` (expected one of: builtin, config)"),
    );
    assert!(
        entry_err(r#"{"builtin": "headers", "config": {"requests": {}}}"#)
            .starts_with("config.json: unknown key `domains.example.com.filters[0].config.requests` (expected one of: request, response)"),
    );
    assert!(
        edits_err(r#"{"append": {"x-a": "1"}}"#)
            .starts_with("config.json: unknown key `domains.example.com.filters[0].config.request.append` (expected one of: set, add, remove)"),
    );
}

#[test]
fn entries_name_exactly_one_known_filter() {
    assert_eq!(
        entry_err(r#"{"builtin": "gzip"}"#),
        "config.json: domains.example.com.filters[0].builtin: unknown built-in filter \"gzip\" (built-in: headers)"
    );
    assert_eq!(
        entry_err(r#"{"builtin": "headers", "path": "f.wasm"}"#),
        "config.json: domains.example.com.filters[0]: a filter is either built in (\"builtin\") or a component (\"path\"); both are given"
    );
    assert!(entry_err(r#"{"config": {}}"#).starts_with(
        "config.json: domains.example.com.filters[0].builtin: required: the built-in filter to run (headers)"
    ));
    assert!(
        entry_err(r#""headers""#).starts_with(
            "config.json: domains.example.com.filters[0]: expected an object like {\"builtin\": \"headers\""
        )
    );
    assert!(
        err(&domain_with(r#"{"builtin": "headers"}"#)).starts_with(
            "config.json: domains.example.com.filters: expected a list of filters like"
        )
    );
}

#[test]
fn wasm_filters_are_plugin_entries_that_fail_closed_unless_told() {
    let c = ok(&with(
        r#""plugins": {"filters": [{"builtin": "headers"}, {"path": "/opt/f.wasm", "config": {"k": 1}, "timeout": "5ms"},
                                   {"path": "g.wasm", "on_fault": "fail-open", "memory_limit": "1MiB"}]}"#,
    ));
    let [Filter::Headers(_), Filter::Wasm(f), Filter::Wasm(g)] = c.plugins.filters.as_slice()
    else {
        panic!("{:?}", c.plugins.filters);
    };
    assert_eq!(f.source, PluginSource::Path("/opt/f.wasm".into()));
    assert_eq!(f.config, serde_json::json!({"k": 1}));
    assert_eq!(f.timeout, std::time::Duration::from_millis(5));
    assert_eq!(f.on_fault, OnFault::FailClosed);
    assert_eq!(g.on_fault, OnFault::FailOpen);
    assert_eq!(g.memory_limit, 1 << 20);
    // Relative to config.json's directory, like every plugin path.
    let PluginSource::Path(g_path) = &g.source else {
        panic!("{:?}", g.source);
    };
    assert!(g_path.ends_with("g.wasm") && g_path != std::path::Path::new("g.wasm"));
    assert_eq!(
        c.filter_paths().collect::<Vec<_>>(),
        [std::path::Path::new("/opt/f.wasm"), g_path.as_path()]
    );

    let e = entry_err(r#"{"path": "f.wasm", "builtin_config": {}}"#);
    assert!(
        e.starts_with("config.json: unknown key `domains.example.com.filters[0].builtin_config` (expected one of: path, config, timeout, memory_limit, on_fault, fault_backoff)"),
        "{e}"
    );
    assert!(
        entry_err(r#"{"path": "f.wasm", "on_fault": "ignore"}"#).starts_with(
            "config.json: domains.example.com.filters[0].on_fault: expected \"fail-open\" or \"fail-closed\""
        )
    );
    assert!(
        entry_err(r#"{"path": 7}"#)
            .starts_with("config.json: domains.example.com.filters[0].path: expected"),
    );
}

#[test]
fn filters_belong_to_hosts_and_forwarding_routes() {
    let e = err(
        r#"{"upstreams": {"api": {"backends": ["127.0.0.1:9001"], "filters": []}},
                    "domains": {"example.com": ["127.0.0.1:8080"]}}"#,
    );
    assert_eq!(
        e,
        "config.json: upstreams.api.filters: a pool of \"upstreams\" has no host: tls, router, routes and filters are keys of a domain"
    );
    let e = err(
        r#"{"domains": {"example.com": {"backends": ["127.0.0.1:8080"], "routes": [
        {"match": {"path": "/old"}, "redirect": {"location": "/new"}, "filters": [{"builtin": "headers"}]}]}}}"#,
    );
    assert_eq!(
        e,
        "config.json: domains.example.com.routes[0].filters: applies to routes that forward (\"upstream\") only"
    );
}
