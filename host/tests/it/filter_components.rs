//! Filter components (the `filter` world) through the real proxy: their
//! request and response edits in chain order with the built-in filter,
//! path rewrites, answers instead of forwarding, faults under both
//! policies, refused headers, `/status`, `bbproxy check` and a reload of
//! the file; and a plugin built against contract 0.1.0 still serving.
//! The filter is `host/tests/fixtures/test-filter`: its config's `mode`
//! picks what it does, its `name` marks its edits.

use std::path::PathBuf;

use hyper::{HeaderMap, StatusCode};

use crate::common::{self, Backend, HttpClient, Proxy, addrs, client};
use crate::routes::send;

/// The fixture filter, copied next to the config as `test_filter.wasm`.
fn with_filter() -> tempfile::TempDir {
    common::dir_with(&[(common::fixture("test_filter.wasm"), "test_filter.wasm")])
}

/// A chain entry running the fixture in `mode`, named `name`.
fn entry(mode: &str, name: &str, on_fault: &str) -> String {
    format!(
        r#"{{"path": "test_filter.wasm", "config": {{"mode": "{mode}", "name": "{name}"}}, "on_fault": "{on_fault}"}}"#
    )
}

/// A proxy whose domain `example.test` forwards to `b` through `chain`.
async fn proxy_with(chain: &str, b: &Backend) -> Proxy {
    Proxy::start_in(
        with_filter(),
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"example.test": {{"backends": {}, "filters": [{chain}]}}}}}}"#,
            addrs(&[b])
        ),
    )
    .await
}

fn all<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// The values of `name` in a `/headers` echo.
fn seen<'a>(body: &'a str, name: &str) -> Vec<&'a str> {
    body.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
        .collect()
}

async fn get(
    http: &HttpClient,
    proxy: &Proxy,
    target: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    send(http, proxy, "GET", target, "example.test", headers).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_edit_both_ways_in_chain_order_with_the_builtin_filter() {
    let b = Backend::start("b").await;
    let global = r#"{"builtin": "headers", "config": {"request": {"add": {"x-trail": "global"}}, "response": {"add": {"x-trail": "global"}}}}"#;
    let proxy = Proxy::start_in(
        with_filter(),
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "plugins": {{"filters": [{global}]}},
                "domains": {{"example.test": {{"backends": {}, "filters": [{}],
                    "routes": [{{"match": {{"path_prefix": "/r/"}}, "upstream": "example.test", "strip_prefix": "/r",
                                 "filters": [{}]}}]}}}}}}"#,
            addrs(&[&b]),
            entry("edit", "domain", "fail-closed"),
            entry("edit", "route", "fail-closed"),
        ),
    )
    .await;
    let http = client();

    // The domain's chain: global, then the component.
    let (status, headers, body) = get(&http, &proxy, "/headers", &[("x-secret", "s3cret")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(seen(&body, "x-trail"), ["global", "domain"], "{body}");
    assert_eq!(seen(&body, "x-filter"), ["domain"], "{body}");
    assert!(seen(&body, "x-secret").is_empty(), "{body}");
    // On the response the component runs first, the global filter last.
    assert_eq!(all(&headers, "x-trail"), ["domain", "global"]);
    assert_eq!(all(&headers, "x-filter"), ["domain"]);
    // What it saw: the backend's status, the backend, its upstream, and
    // the request as sent (its host, and its own request edit included).
    assert_eq!(
        all(&headers, "x-seen"),
        [format!("200 {} 0 example.test /headers domain", b.addr).as_str()]
    );

    // A route's chain: the domain's, then the route's; the route's edit is
    // the one the backend sees, the domain's the one the client gets.
    let (status, headers, body) = get(&http, &proxy, "/r/headers", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        seen(&body, "x-trail"),
        ["global", "domain", "route"],
        "{body}"
    );
    assert_eq!(seen(&body, "x-filter"), ["route"], "{body}");
    assert_eq!(all(&headers, "x-trail"), ["route", "domain", "global"]);
    assert_eq!(all(&headers, "x-filter"), ["domain"]);
    // The filters saw the path after the route's strip_prefix.
    assert!(
        all(&headers, "x-seen")[0].ends_with(" /headers route"),
        "{headers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_rewrites_the_path_and_query() {
    let b = Backend::start_reporting("b").await;
    let proxy = proxy_with(&entry("edit", "f", "fail-closed"), &b).await;
    let http = client();
    let (status, _, body) = get(&http, &proxy, "/rewrite/x?old=1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "backend b GET /rewritten?by=f");
    // Other paths pass unchanged.
    let (_, _, body) = get(&http, &proxy, "/keep?q=1", &[]).await;
    assert_eq!(body, "backend b GET /keep?q=1");
    // A rewrite outside the contract is the filter's fault.
    let bad = proxy_with(&entry("bad-path", "f", "fail-closed"), &b).await;
    let (status, _, body) = get(&http, &bad, "/x", &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(faults(&bad, "bad-answer"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_answers_instead_of_forwarding() {
    let b = Backend::start("b").await;
    let proxy = proxy_with(&entry("deny", "auth", "fail-closed"), &b).await;
    let http = client();
    let (status, headers, body) = get(&http, &proxy, "/headers", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, "no key\n");
    assert_eq!(all(&headers, "www-authenticate"), ["Key"]);
    // Its content-type replaces the proxy's own, not added to it.
    assert_eq!(all(&headers, "content-type"), ["text/plain"]);
    // The answer is the filter's: no response filter ran on it.
    assert!(headers.get("x-filter").is_none(), "{headers:?}");
    assert_eq!(b.hits(), 0, "the backend saw a denied request");

    let (status, headers, body) = get(&http, &proxy, "/headers", &[("x-key", "good")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(all(&headers, "x-filter"), ["auth"]);
    assert_eq!(b.hits(), 1);
}

/// Faults of kind `kind` of the proxy's one filter component.
fn faults(proxy: &Proxy, kind: &str) -> u64 {
    let g = proxy.generation();
    let filters: Vec<_> = g.filter_components().collect();
    assert_eq!(filters.len(), 1);
    filters[0]
        .faults_by_kind()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, n)| n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulting_component_is_skipped_when_it_fails_open_and_answers_503_when_closed() {
    let b = Backend::start("b").await;
    let http = client();
    for (mode, kind) in [
        ("trap-request", "trap"),
        ("loop-request", "timeout"),
        ("trap-response", "trap"),
    ] {
        let open = proxy_with(&entry(mode, "f", "fail-open"), &b).await;
        let (status, headers, body) = get(&http, &open, "/headers", &[]).await;
        assert_eq!(status, StatusCode::OK, "{mode}: {body}");
        // Skipped: its edits on the faulting side are not there.
        if mode == "trap-response" {
            assert!(headers.get("x-filter").is_none(), "{mode}: {headers:?}");
            assert_eq!(seen(&body, "x-filter"), ["f"], "{mode}: {body}");
        } else {
            assert!(seen(&body, "x-filter").is_empty(), "{mode}: {body}");
        }
        assert_eq!(faults(&open, kind), 1, "{mode}");

        let hits = b.hits();
        let closed = proxy_with(&entry(mode, "f", "fail-closed"), &b).await;
        let (status, _, body) = get(&http, &closed, "/headers", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode}: {body}");
        assert!(body.contains("filter plugin fault"), "{mode}: {body}");
        assert_eq!(faults(&closed, kind), 1, "{mode}");
        // A request-side fault stops the request before any backend.
        let reached = if mode == "trap-response" { 1 } else { 0 };
        assert_eq!(b.hits() - hits, reached, "{mode}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_a_filter_may_not_change_are_faults() {
    let b = Backend::start("b").await;
    let http = client();
    for mode in ["refused-request", "refused-response"] {
        let hits = b.hits();
        let proxy = proxy_with(&entry(mode, "f", "fail-closed"), &b).await;
        let (status, _, body) = get(&http, &proxy, "/headers", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{mode}: {body}");
        assert_eq!(faults(&proxy, "bad-answer"), 1, "{mode}");
        let reached = if mode == "refused-response" { 1 } else { 0 };
        assert_eq!(b.hits() - hits, reached, "{mode}");

        // Failing open, the request goes on without any of its edits.
        let proxy = proxy_with(&entry(mode, "f", "fail-open"), &b).await;
        let (status, headers, body) = get(&http, &proxy, "/headers", &[]).await;
        assert_eq!(status, StatusCode::OK, "{mode}: {body}");
        assert!(headers.get("transfer-encoding").is_none() || mode != "refused-response");
        if mode == "refused-request" {
            assert!(seen(&body, "x-filter").is_empty(), "{body}");
        } else {
            assert!(headers.get("x-filter").is_none(), "{headers:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_filter_components_and_a_reload_swaps_the_file() {
    let b = Backend::start("b").await;
    // The Rust example API-key filter first.
    let dir = common::dir_with(&[(
        common::wasm::example_plugin("rust_api_key_filter.wasm"),
        "filter.wasm",
    )]);
    let config = format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "domains": {{"example.test": {{"backends": {},
                "filters": [{{"path": "filter.wasm", "config": {{"keys": ["k-1"]}}}}]}}}}}}"#,
        addrs(&[&b]),
    );
    let proxy = Proxy::start_in(dir, &config).await;
    let http = client();
    let (status, _, body) = get(&http, &proxy, "/headers", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = get(&http, &proxy, "/headers", &[("x-api-key", "k-1")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The key is the proxy's business: the backend never sees it.
    assert!(seen(&body, "x-api-key").is_empty(), "{body}");
    assert_eq!(b.hits(), 1);

    let (code, text) = common::prom::admin_get(&proxy, "/status").await;
    assert_eq!(code, StatusCode::OK);
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    let filters: Vec<&serde_json::Value> = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["role"] == "filter")
        .collect();
    assert_eq!(filters.len(), 1, "{text}");
    assert!(
        filters[0]["source"]
            .as_str()
            .unwrap()
            .ends_with("filter.wasm"),
        "{text}"
    );
    // The two requests' on-request; no on-response: the filter (contract
    // 0.2.0) said at init it edits no response.
    assert_eq!(filters[0]["calls"], 2, "{text}");
    assert_eq!(filters[0]["contract"], "bbproxy:plugin@0.2.0", "{text}");

    // The file is watched: replacing it with the fixture (which ignores
    // `keys` and marks its edits) reloads the generation.
    let before = proxy.generation().id;
    let path: PathBuf = proxy.dir.path().join("filter.wasm");
    let replacement = proxy.dir.path().join("next.wasm");
    std::fs::copy(common::fixture("test_filter.wasm"), &replacement).unwrap();
    std::fs::rename(&replacement, &path).unwrap();
    common::wait_for(
        std::time::Duration::from_secs(30),
        "the replaced filter to load",
        || async { proxy.generation().id > before },
    )
    .await;
    let (status, headers, body) = get(&http, &proxy, "/headers", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(all(&headers, "x-filter"), ["f"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_entry_of_a_filter_that_cannot_load() {
    let router = common::wasm::example_plugin("rust_canary_router.wasm");
    let cases = [
        (
            r#"{"path": "missing.wasm"}"#.to_owned(),
            "domains.example.com.filters[0]: ",
        ),
        (
            format!(r#"{{"path": {:?}}}"#, router.display().to_string()),
            "domains.example.com.filters[0]: ",
        ),
        (
            format!(r#"{{"path": {:?}}}"#, router.display().to_string()),
            "does not implement",
        ),
    ];
    for (filter, needle) in cases {
        let text = format!(
            r#"{{"domains": {{"example.com": {{"backends": ["127.0.0.1:8080"], "filters": [{filter}]}}}}}}"#
        );
        let (ok, _, stderr) = crate::cli::check(&text);
        assert!(!ok, "{text} passed check");
        assert!(stderr.contains(needle), "{stderr}");
    }
}

/// A balancer built against contract 0.1.0 (the C example as it was built
/// at b40cc0c, kept as a binary) loads into this 0.1.1 host, balances,
/// and is reported as speaking 0.1.0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_against_contract_0_1_0_keeps_working() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/c-hash-balancer-contract-0.1.0.wasm");
    let dir = common::dir_with(&[(&fixture, "old.wasm")]);
    let (b1, b2) = (Backend::start("b1").await, Backend::start("b2").await);
    let proxy = Proxy::start_in(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "plugins": {{"balancer": {{"path": "old.wasm", "on_fault": "fail-closed"}}}},
                "domains": {{"example.test": {}}}}}"#,
            addrs(&[&b1, &b2])
        ),
    )
    .await;
    let g = proxy.generation();
    assert_eq!(g.balancer.primary.contract(), "0.1.0");
    let http = client();
    for _ in 0..10 {
        let (status, _, body) = get(&http, &proxy, "/", &[("x-user", "alice")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(b1.hits() + b2.hits(), 10);
    assert_eq!(g.balancer.primary.faults(), 0);
    assert!(g.balancer.primary.calls() >= 10);
}

/// The C example filter (built by its `build.sh`; skipped, as the other C
/// example, when its toolchain is missing) sets its security headers on a
/// backend's response and removes the ones that name the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_c_security_headers_example_edits_responses() {
    let Some(plugin) = crate::polyglot::build(
        "c-security-headers-filter",
        "c_security_headers_filter.wasm",
    ) else {
        return;
    };
    let b = Backend::start("b").await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "plugins": {{"filters": [{{"path": {:?}, "config": {{"x-frame-options": "SAMEORIGIN"}}}}]}},
            "domains": {{"example.test": {}}}}}"#,
        plugin.display().to_string(),
        addrs(&[&b])
    ))
    .await;
    let (status, headers, body) = get(&client(), &proxy, "/headers", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers.get("server").is_none(), "{headers:?}");
    assert_eq!(all(&headers, "x-content-type-options"), ["nosniff"]);
    assert_eq!(all(&headers, "x-frame-options"), ["SAMEORIGIN"]);
    assert_eq!(
        all(&headers, "strict-transport-security"),
        ["max-age=63072000; includeSubDomains"]
    );
    // The backend's own headers that are not the filter's business stay.
    assert_eq!(all(&headers, "x-backend"), ["b"]);
}

/// The proxy keeps a copy of the request's head for the response side only
/// when a component of the chain sees responses: the API-key example (a
/// 0.2.0 filter that said at `init` it edits no response) costs no copy,
/// the 0.1.x fixture (every response) does; both still serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_component_that_sees_responses_keeps_the_request_for_them() {
    let b = Backend::start("b").await;
    let dir = with_filter();
    std::fs::copy(
        common::wasm::example_plugin("rust_api_key_filter.wasm"),
        dir.path().join("api_key.wasm"),
    )
    .unwrap();
    let proxy = Proxy::start_in(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{
                    "key.test": {{"backends": {b}, "filters": [{{"path": "api_key.wasm", "config": {{"keys": ["k-1"]}}}}]}},
                    "both.test": {{"backends": {b}, "filters": [{{"path": "api_key.wasm", "config": {{"keys": ["k-1"]}}}}, {fixture}]}}}}}}"#,
            b = addrs(&[&b]),
            fixture = entry("edit", "f1", "fail-closed"),
        ),
    )
    .await;
    let generation = proxy.running.as_ref().unwrap().generation.load();
    let sees = |host: &str| {
        generation
            .filters_for(generation.tenant_of(host))
            .components_on_response()
    };
    assert!(!sees("key.test"), "a request-only component");
    assert!(sees("both.test"), "with a component that edits responses");
    let http = client();
    for host in ["key.test", "both.test"] {
        let (status, _, body) = send(
            &http,
            &proxy,
            "GET",
            "/headers",
            host,
            &[("x-api-key", "k-1")],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
    }
    assert_eq!(b.hits(), 2);
}
