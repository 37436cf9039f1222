//! `filters` through the real proxy: the built-in `headers` filter's
//! request edits reach the backend, its response edits reach the client,
//! the global, domain and route chains run in their documented order, a
//! reload swaps them, and `bbproxy check` names a refused header's key.

use std::time::Duration;

use hyper::{HeaderMap, StatusCode};

use crate::common;
use crate::routes::send;
use common::{Backend, HttpClient, Proxy, addrs, client, wait_for};

/// A built-in `headers` filter with `request` and `response` edits, as a
/// chain's JSON entry.
fn headers_filter(request: &str, response: &str) -> String {
    format!(
        r#"{{"builtin": "headers", "config": {{"request": {request}, "response": {response}}}}}"#
    )
}

/// `/headers` on `host` with `headers`: the response's headers, and the
/// request's headers as the backend saw them (`name: value` lines).
async fn exchange(
    http: &HttpClient,
    proxy: &Proxy,
    host: &str,
    headers: &[(&str, &str)],
) -> (HeaderMap, Vec<String>) {
    let (status, response, body) = send(http, proxy, "GET", "/headers", host, headers).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (response, body.lines().map(str::to_owned).collect())
}

/// The values of `name` the backend saw, in order.
fn seen<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

/// The values of `name` the client got, in order.
fn got<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_edits_reach_the_backend() {
    let b = Backend::start("b").await;
    let filter = headers_filter(
        r#"{"set": {"X-Set": "proxy", "x-forwarded-proto": "https"}, "add": {"x-add": "proxy"}, "remove": ["x-secret"]}"#,
        "{}",
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"example.test": {{"backends": {}, "filters": [{filter}]}}}}}}"#,
        addrs(&[&b])
    ))
    .await;
    let http = client();
    let (_, lines) = exchange(
        &http,
        &proxy,
        "example.test",
        &[
            ("x-set", "client"),
            ("x-add", "client"),
            ("x-secret", "s3cret"),
            ("x-kept", "yes"),
        ],
    )
    .await;
    assert_eq!(seen(&lines, "x-set"), ["proxy"], "{lines:?}");
    assert_eq!(seen(&lines, "x-add"), ["client", "proxy"], "{lines:?}");
    assert!(seen(&lines, "x-secret").is_empty(), "{lines:?}");
    assert_eq!(seen(&lines, "x-kept"), ["yes"], "{lines:?}");
    // The filters run after the proxy's own forwarding headers.
    assert_eq!(seen(&lines, "x-forwarded-proto"), ["https"], "{lines:?}");
    assert_eq!(seen(&lines, "host"), ["example.test"], "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_edits_reach_the_client_for_backend_responses_only() {
    let b = Backend::start("b").await;
    let filter = headers_filter(
        "{}",
        r#"{"set": {"strict-transport-security": "max-age=63072000"}, "add": {"x-backend": "proxy"}, "remove": ["server"]}"#,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"example.test": {{"backends": {}, "filters": [{filter}],
                "routes": [{{"match": {{"path": "/down"}}, "respond": {{"status": 503, "body": "down"}}}}]}},
              "plain.test": {}}}}}"#,
        addrs(&[&b]),
        addrs(&[&b])
    ))
    .await;
    let http = client();
    let (headers, _) = exchange(&http, &proxy, "example.test", &[]).await;
    assert!(headers.get("server").is_none(), "{headers:?}");
    assert_eq!(
        got(&headers, "strict-transport-security"),
        ["max-age=63072000"]
    );
    assert_eq!(got(&headers, "x-backend"), ["b", "proxy"]);
    // Another domain's responses are its own.
    let (headers, _) = exchange(&http, &proxy, "plain.test", &[]).await;
    assert_eq!(got(&headers, "server"), ["backend b"]);
    assert!(headers.get("strict-transport-security").is_none());
    // The proxy's own answers are not filtered.
    let (status, headers, _) = send(&http, &proxy, "GET", "/down", "example.test", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.get("strict-transport-security").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_domain_and_route_chains_run_in_order() {
    let b = Backend::start("b").await;
    // Each level sets `x-level` to its name and adds it to `x-trail`, in
    // both directions.
    let level = |name: &str| {
        let edits =
            format!(r#"{{"set": {{"x-level": "{name}"}}, "add": {{"x-trail": "{name}"}}}}"#);
        format!("[{}]", headers_filter(&edits, &edits))
    };
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "plugins": {{"filters": {}}},
            "domains": {{
              "example.test": {{"backends": {b}, "filters": {},
                "routes": [
                  {{"match": {{"header": {{"x-filtered-route": true}}}}, "upstream": "example.test", "filters": {}}},
                  {{"match": {{"header": {{"x-plain-route": true}}}}, "upstream": "other.test"}}
                ]}},
              "other.test": {b}
            }}}}"#,
        level("global"),
        level("domain"),
        level("route"),
        b = addrs(&[&b])
    ))
    .await;
    let http = client();
    // The route's filters run last on the request and first on the
    // response: the route wins upstream, the global chain downstream.
    let (headers, lines) =
        exchange(&http, &proxy, "example.test", &[("x-filtered-route", "1")]).await;
    assert_eq!(seen(&lines, "x-level"), ["route"], "{lines:?}");
    assert_eq!(seen(&lines, "x-trail"), ["global", "domain", "route"]);
    assert_eq!(got(&headers, "x-level"), ["global"]);
    assert_eq!(got(&headers, "x-trail"), ["route", "domain", "global"]);
    // A route without filters, and the domain's own backends: the global
    // chain then the domain's (a route to another domain still runs the
    // chain of the domain it belongs to).
    for route in [&[("x-plain-route", "1")][..], &[]] {
        let (headers, lines) = exchange(&http, &proxy, "example.test", route).await;
        assert_eq!(seen(&lines, "x-trail"), ["global", "domain"], "{route:?}");
        assert_eq!(seen(&lines, "x-level"), ["domain"], "{route:?}");
        assert_eq!(got(&headers, "x-trail"), ["domain", "global"], "{route:?}");
    }
    // A domain without filters: the global chain only.
    let (headers, lines) = exchange(&http, &proxy, "other.test", &[]).await;
    assert_eq!(seen(&lines, "x-trail"), ["global"]);
    assert_eq!(got(&headers, "x-level"), ["global"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_a_filter_takes_effect() {
    let b = Backend::start("b").await;
    let config = |version: &str| {
        let filter = headers_filter(
            &format!(r#"{{"set": {{"x-version": "{version}"}}}}"#),
            &format!(r#"{{"set": {{"x-version": "{version}"}}}}"#),
        );
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"example.test": {{"backends": {}, "filters": [{filter}]}}}}}}"#,
            addrs(&[&b])
        )
    };
    let proxy = Proxy::start(&config("1")).await;
    let http = client();
    let (headers, lines) = exchange(&http, &proxy, "example.test", &[]).await;
    assert_eq!(seen(&lines, "x-version"), ["1"]);
    assert_eq!(got(&headers, "x-version"), ["1"]);
    std::fs::write(proxy.dir.path().join("config.json"), config("2")).unwrap();
    wait_for(Duration::from_secs(10), "the reloaded filter", || async {
        let (headers, _) = exchange(&http, &proxy, "example.test", &[]).await;
        got(&headers, "x-version") == ["2"]
    })
    .await;
    assert_eq!(proxy.generation().id, 2);
    let (_, lines) = exchange(&http, &proxy, "example.test", &[]).await;
    assert_eq!(seen(&lines, "x-version"), ["2"]);
}

#[test]
fn check_names_the_key_of_a_refused_header() {
    let config = |global: &str, domain: &str| {
        format!(
            r#"{{"plugins": {{"filters": {global}}},
                "domains": {{"example.com": {{"backends": ["127.0.0.1:8080"], "filters": {domain},
                    "routes": [{{"match": {{"path_prefix": "/api"}}, "upstream": "example.com",
                                 "filters": [{}]}}]}}}}}}"#,
            headers_filter(r#"{"set": {"x-api": "1"}}"#, "{}")
        )
    };
    let cases = [
        (
            config(
                "[]",
                &format!(
                    "[{}]",
                    headers_filter(r#"{"set": {"Content-Length": "0"}}"#, "{}")
                ),
            ),
            "domains.example.com.filters[0].config.request.set.Content-Length: a filter cannot change content-length (",
        ),
        (
            config(
                &format!(
                    "[{}]",
                    headers_filter("{}", r#"{"remove": ["transfer-encoding"]}"#)
                ),
                "[]",
            ),
            "plugins.filters[0].config.response.remove[0]: a filter cannot change transfer-encoding (",
        ),
        (
            config(
                "[]",
                &format!(
                    "[{}]",
                    headers_filter(r#"{"add": {"host": "evil.test"}}"#, "{}")
                ),
            ),
            "domains.example.com.filters[0].config.request.add.host: a filter cannot change host (",
        ),
        (
            config("[]", r#"[{"path": "filter.wasm", "on_fault": "skip"}]"#),
            "domains.example.com.filters[0].on_fault: expected \"fail-open\" or \"fail-closed\"",
        ),
    ];
    for (text, needle) in cases {
        let (ok, _, stderr) = crate::cli::check(&text);
        assert!(!ok, "{text} passed check");
        crate::cli::assert_clean_error(&stderr, &[needle]);
    }
    let good = config(
        &format!("[{}]", headers_filter("{}", r#"{"remove": ["server"]}"#)),
        "[]",
    );
    let (ok, stdout, stderr) = crate::cli::check(&good);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("OK: 1 domain(s), 1 backend(s), 0 pool(s), 1 route(s), 2 filter(s);"),
        "{stdout}"
    );
}
