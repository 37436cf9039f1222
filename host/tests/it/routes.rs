//! config.json's `upstreams` and per-domain `routes`, through the real
//! proxy: matchers send requests to named pools or other domains, redirect
//! and respond routes answer, `strip_prefix` and per-route timeouts and
//! retries apply, and `bbproxy check` names a bad route's key.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};

use crate::common;
use common::{Backend, HttpClient, Proxy, addrs, client, dead_addr, get, wait_for};

/// Status, headers and body of `method target` with `Host: host` and
/// `headers` (the filter tests use it too).
pub(crate) async fn send(
    http: &HttpClient,
    proxy: &Proxy,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(proxy.url(target))
        .header(hyper::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = http
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The body of `method target` on `host`, which must answer 200.
async fn answer(
    http: &HttpClient,
    proxy: &Proxy,
    method: &str,
    target: &str,
    host: &str,
) -> String {
    let (status, _, body) = send(http, proxy, method, target, host, &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{method} {target} on {host}: {body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_list_and_objects_without_routes_are_unchanged() {
    let (a, b, p) = (
        Backend::start_reporting("a").await,
        Backend::start_reporting("b").await,
        Backend::start_reporting("p").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "upstreams": {{"pool": {}}},
            "domains": {{"a.test": {}, "b.test": {{"backends": {}}}}}}}"#,
        addrs(&[&p]),
        addrs(&[&a]),
        addrs(&[&b])
    ))
    .await;
    let http = client();
    assert_eq!(
        answer(&http, &proxy, "GET", "/x?y=1", "a.test").await,
        "backend a GET /x?y=1"
    );
    assert_eq!(
        answer(&http, &proxy, "POST", "/api/z", "b.test").await,
        "backend b POST /api/z"
    );
    // A pool is an upstream, not a host.
    let (status, body) = get(&http, &proxy.url("/"), "pool").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{body}");
    assert_eq!(p.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matchers_send_requests_to_pools_and_other_domains() {
    let (web, api, canary, other) = (
        Backend::start_reporting("web").await,
        Backend::start_reporting("api").await,
        Backend::start_reporting("canary").await,
        Backend::start_reporting("other").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "upstreams": {{"api": {{"backends": {}, "balancer": "least-request"}}, "canary": {}}},
            "domains": {{
              "example.test": {{"backends": {}, "routes": [
                {{"match": {{"path_prefix": "/api/", "method": ["POST", "PUT"]}}, "upstream": "api"}},
                {{"match": {{"header": {{"X-Env": "canary"}}}}, "upstream": "canary"}},
                {{"match": {{"header": {{"x-debug": true}}, "path": "/dbg"}}, "upstream": "canary"}},
                {{"match": {{"query": {{"beta": "1"}}}}, "upstream": "canary"}},
                {{"match": {{"client_ip": ["10.0.0.0/8", "2001:db8::/32"]}}, "upstream": "api"}},
                {{"match": {{"path": "/local", "client_ip": ["127.0.0.0/8"]}}, "upstream": "api"}},
                {{"match": {{"path_regex": "^/v[0-9]+/"}}, "upstream": "other.test"}}
              ]}},
              "other.test": {}
            }}}}"#,
        addrs(&[&api]),
        addrs(&[&canary]),
        addrs(&[&web]),
        addrs(&[&other])
    ))
    .await;
    let http = client();
    let on = |method, target| answer(&http, &proxy, method, target, "example.test");
    assert_eq!(
        on("POST", "/api/items").await,
        "backend api POST /api/items"
    );
    assert_eq!(on("PUT", "/api").await, "backend api PUT /api");
    // Wrong method, or not the /api segment: the domain's backends.
    assert_eq!(on("GET", "/api/items").await, "backend web GET /api/items");
    assert_eq!(on("POST", "/apix").await, "backend web POST /apix");
    assert_eq!(on("GET", "/?beta=1").await, "backend canary GET /?beta=1");
    assert_eq!(on("GET", "/?beta=2").await, "backend web GET /?beta=2");
    assert_eq!(on("GET", "/local").await, "backend api GET /local");
    assert_eq!(on("GET", "/v2/x").await, "backend other GET /v2/x");
    assert_eq!(on("GET", "/nothing").await, "backend web GET /nothing");
    let with = |headers: &'static [(&'static str, &'static str)], target| {
        let (http, proxy) = (&http, &proxy);
        async move {
            send(http, proxy, "GET", target, "example.test", headers)
                .await
                .2
        }
    };
    assert_eq!(
        with(&[("x-env", "canary")], "/a").await,
        "backend canary GET /a"
    );
    assert_eq!(
        with(&[("x-env", "stable")], "/a").await,
        "backend web GET /a"
    );
    assert_eq!(
        with(&[("x-debug", "")], "/dbg").await,
        "backend canary GET /dbg"
    );
    assert_eq!(with(&[], "/dbg").await, "backend web GET /dbg");
    // The other domain itself is unchanged.
    assert_eq!(
        answer(&http, &proxy, "GET", "/v2/x", "other.test").await,
        "backend other GET /v2/x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_and_respond_routes_answer_without_a_backend() {
    let web = Backend::start_reporting("web").await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"example.test": {{"backends": {}, "routes": [
                {{"match": {{"path": "/old"}}, "redirect": {{"location": "/new"}}}},
                {{"match": {{"path": "/moved"}}, "redirect": {{"status": 301, "location": "https://elsewhere.test/"}}}},
                {{"match": {{"path_prefix": "/internal"}}, "respond": {{"status": 404, "body": "not found"}}}},
                {{"match": {{"path": "/empty"}}, "respond": {{"status": 204}}}}
            ]}}}}}}"#,
        addrs(&[&web])
    ))
    .await;
    let http = client();
    let (status, headers, _) = send(&http, &proxy, "GET", "/old?x=1", "example.test", &[]).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "/new");
    let (status, headers, _) = send(&http, &proxy, "POST", "/moved", "example.test", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "https://elsewhere.test/");
    let (status, _, body) = send(&http, &proxy, "GET", "/internal/x", "example.test", &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::NOT_FOUND, "not found")
    );
    let (status, _, body) = send(&http, &proxy, "GET", "/empty", "example.test", &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(web.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strip_prefix_sends_the_rest_of_the_path_with_the_query() {
    let api = Backend::start_reporting("api").await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "upstreams": {{"api": {}}},
            "domains": {{"example.test": {{"routes": [
                {{"match": {{"path_prefix": "/api/"}}, "upstream": "api", "strip_prefix": "/api"}}
            ]}}}}}}"#,
        addrs(&[&api])
    ))
    .await;
    let http = client();
    let on = |target| answer(&http, &proxy, "GET", target, "example.test");
    assert_eq!(
        on("/api/users/7?page=2&q").await,
        "backend api GET /users/7?page=2&q"
    );
    assert_eq!(on("/api").await, "backend api GET /");
    assert_eq!(on("/api/?x=1").await, "backend api GET /?x=1");
    // No route matches and the domain has no backends: 404.
    let (status, _, _) = send(&http, &proxy, "GET", "/apix", "example.test", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(api.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_response_headers_timeout_overrides_the_domains() {
    // Headers after 600 ms: within the domain's 10 s, past the route's 100 ms.
    let slow = Backend::start_with_delay("slow", Duration::from_millis(600)).await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"slow.test": {{"backends": {}, "timeouts": {{"upstream_response_headers": "10s"}},
                "retries": {{"attempts": 1}},
                "routes": [{{"match": {{"path_prefix": "/fast"}}, "upstream": "slow.test",
                             "timeouts": {{"upstream_response_headers": "100ms"}}}}]}}}}}}"#,
        addrs(&[&slow])
    ))
    .await;
    let http = client();
    let (status, body) = get(&http, &proxy.url("/fast/x"), "slow.test").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(
        get(&http, &proxy.url("/other"), "slow.test").await,
        (StatusCode::OK, "backend slow".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_route_retries_apply() {
    let live = Backend::start_reporting("live").await;
    let dead = dead_addr().await;
    // `first` always tries the dead backend first (its breaker needs five
    // failures to open, more than this test makes).
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "upstreams": {{"flaky": {{"backends": ["{dead}", "{}"], "balancer": "first", "retries": {{"attempts": 2}}}}}},
            "domains": {{"example.test": {{"routes": [
                {{"match": {{"path": "/once"}}, "upstream": "flaky", "retries": {{"attempts": 1}}}},
                {{"match": {{"path": "/twice"}}, "upstream": "flaky"}}
            ]}}}}}}"#,
        live.addr
    ))
    .await;
    let http = client();
    let (status, body) = get(&http, &proxy.url("/once"), "example.test").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(live.hits(), 0);
    assert_eq!(
        get(&http, &proxy.url("/twice"), "example.test").await,
        (StatusCode::OK, "backend live GET /twice".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_changes_routes_takes_effect() {
    let (a, b) = (
        Backend::start_reporting("a").await,
        Backend::start_reporting("b").await,
    );
    let config = |pool: &str| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "upstreams": {{"a": {}, "b": {}}},
                "domains": {{"example.test": {{"routes": [{{"match": {{"path_prefix": "/x"}}, "upstream": "{pool}"}}]}}}}}}"#,
            addrs(&[&a]),
            addrs(&[&b])
        )
    };
    let proxy = Proxy::start(&config("a")).await;
    let http = client();
    assert_eq!(
        answer(&http, &proxy, "GET", "/x", "example.test").await,
        "backend a GET /x"
    );
    std::fs::write(proxy.dir.path().join("config.json"), config("b")).unwrap();
    wait_for(Duration::from_secs(10), "the reload", || async {
        proxy.generation().id == 2
    })
    .await;
    assert_eq!(
        answer(&http, &proxy, "GET", "/x", "example.test").await,
        "backend b GET /x"
    );
}

#[test]
fn check_names_the_key_of_a_bad_route() {
    let routes = |r: &str| {
        format!(
            r#"{{"upstreams": {{"api": ["127.0.0.1:9001"]}},
                "domains": {{"example.com": {{"backends": ["127.0.0.1:8080"], "routes": [
                    {{"match": {{"path_prefix": "/api/"}}, "upstream": "api"}}, {r}]}}}}}}"#
        )
    };
    let cases = [
        (
            r#"{"upstream": "nope"}"#,
            "domains.example.com.routes[1].upstream: unknown upstream \"nope\"",
        ),
        (
            r#"{"match": {"path_regex": "(x"}, "upstream": "api"}"#,
            "domains.example.com.routes[1].match.path_regex: invalid regular expression",
        ),
        (
            r#"{"match": {"path_prefix": "/api"}, "respond": {"status": 404}}"#,
            "domains.example.com.routes[1]: can never match: its match is the same as that of the earlier route domains.example.com.routes[0]",
        ),
    ];
    for (route, needle) in cases {
        let (ok, _, stderr) = crate::cli::check(&routes(route));
        assert!(!ok, "{route} passed check");
        crate::cli::assert_clean_error(&stderr, &[needle]);
    }
    let (ok, stdout, stderr) = crate::cli::check(&routes(
        r#"{"match": {"path": "/old"}, "redirect": {"location": "/new"}}"#,
    ));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("OK: 1 domain(s), 2 backend(s), 1 pool(s), 2 route(s)"),
        "{stdout}"
    );
    assert!(stdout.contains("example.com (2 routes)"), "{stdout}");
    assert!(stdout.contains("api (pool)"), "{stdout}");
}
