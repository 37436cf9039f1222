//! The admin listener beyond scraping: draining backends (and the token
//! rules of that action), the per-backend activity `/status` keeps for the
//! dashboard, and the dashboard's first view as served without JavaScript.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::prom::{admin_get, parse_metrics, series};
use common::{Backend, Proxy, client, dead_addr, get, wait_for};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";

/// POSTs `body` to `path` on the admin listener with `Authorization: Bearer
/// token` when given; status and parsed JSON answer.
async fn post(proxy: &Proxy, path: &str, token: Option<&str>, body: &str) -> (StatusCode, Value) {
    let admin = proxy.running.as_ref().unwrap().admin.unwrap();
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{admin}{path}"))
        .header("content-type", "application/json");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client()
        .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let doc = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    (status, doc)
}

async fn status(proxy: &Proxy) -> Value {
    let (code, body) = admin_get(proxy, "/status").await;
    assert_eq!(code, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

fn backend<'a>(doc: &'a Value, domain: &str, address: &str) -> &'a Value {
    doc["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == domain)
        .and_then(|d| {
            d["backends"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["address"] == address)
        })
        .unwrap_or_else(|| panic!("no backend {address} of {domain} in {doc}"))
}

fn config(domain: &str, backends: &[&Backend], token: bool) -> String {
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}},
            "admin": {{"address": "127.0.0.1:0"{}}},
            "retries": {{"attempts": 1}},
            "domains": {{"{domain}": {}}}}}"#,
        if token {
            format!(r#", "token": "{TOKEN}""#)
        } else {
            String::new()
        },
        common::addrs(backends)
    )
}

/// Reloads now, off the async threads (it compiles Wasm).
async fn reload(proxy: &Proxy) {
    let r = proxy.running.as_ref().unwrap().reloader.clone();
    tokio::task::spawn_blocking(move || r.reload_blocking(true))
        .await
        .unwrap()
        .unwrap();
}

/// Starts GETs of `domain` one at a time until one is in flight on `slow`
/// (it counts a request when it arrives, then waits); returns that request.
async fn in_flight_on(
    proxy: &Proxy,
    domain: &'static str,
    slow: &Backend,
) -> tokio::task::JoinHandle<(StatusCode, String)> {
    for _ in 0..10 {
        let url = proxy.url("/");
        let request = tokio::spawn(async move { get(&client(), &url, domain).await });
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < end && !request.is_finished() && slow.hits() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if slow.hits() == 1 {
            return request;
        }
        request.await.unwrap();
    }
    panic!("no request reached {} in 10 tries", slow.addr);
}

/// A drained backend gets no new request while one it already has
/// finishes; it stays drained across a reload that keeps it, and takes
/// traffic again once undrained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backend_gets_no_new_requests_while_one_in_flight_completes() {
    let slow = Backend::start_with_delay("slow", Duration::from_millis(1500)).await;
    let fast = Backend::start("fast").await;
    let domain = "drain.test";
    let proxy = Proxy::start(&config(domain, &[&slow, &fast], true)).await;
    let target = format!(r#"{{"domain": "{domain}", "backend": "{}"}}"#, slow.addr);

    let pending = in_flight_on(&proxy, domain, &slow).await;
    let (code, answer) = post(&proxy, "/backends/drain", Some(TOKEN), &target).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert_eq!(answer["drained"], true);
    assert_eq!(answer["changed"], true);
    assert_eq!(answer["in_flight"], 1);

    let http = client();
    for _ in 0..20 {
        let (code, body) = get(&http, &proxy.url("/"), domain).await;
        assert_eq!((code, body.as_str()), (StatusCode::OK, "backend fast"));
    }
    assert_eq!(slow.hits(), 1, "a drained backend got a new request");
    let (code, body) = pending.await.unwrap();
    assert_eq!(
        (code, body.as_str()),
        (StatusCode::OK, "backend slow"),
        "the request in flight on the drained backend did not finish"
    );

    let doc = status(&proxy).await;
    assert_eq!(
        backend(&doc, domain, &slow.addr.to_string())["drained"],
        true
    );
    assert_eq!(
        backend(&doc, domain, &fast.addr.to_string())["drained"],
        false
    );
    let (_, text) = admin_get(&proxy, "/metrics").await;
    let m = parse_metrics(&text);
    let slow_addr = slow.addr.to_string();
    let gauge = |addr: &str| {
        m.get(&series(
            "bbproxy_backend_drained",
            &[("domain", domain), ("backend", addr)],
        ))
        .copied()
    };
    assert_eq!(gauge(&slow_addr), Some(1.0), "{text}");
    assert_eq!(gauge(&fast.addr.to_string()), Some(0.0), "{text}");

    // A reload that keeps the backend keeps it drained.
    let third = Backend::start("third").await;
    let path = proxy.dir.path().join("config.json");
    std::fs::write(&path, config(domain, &[&slow, &fast, &third], true)).unwrap();
    reload(&proxy).await;
    let doc = status(&proxy).await;
    assert_eq!(doc["generation"], 2);
    assert_eq!(backend(&doc, domain, &slow_addr)["drained"], true, "{doc}");
    assert_eq!(doc["reloads"][0]["result"], "ok");
    assert_eq!(doc["reloads"][0]["generation"], 2);
    for _ in 0..10 {
        assert_ne!(get(&http, &proxy.url("/"), domain).await.1, "backend slow");
    }

    let (code, answer) = post(&proxy, "/backends/undrain", Some(TOKEN), &target).await;
    assert_eq!(
        (code, &answer["drained"]),
        (StatusCode::OK, &Value::Bool(false))
    );
    let mut bodies = Vec::new();
    for _ in 0..6 {
        bodies.push(get(&http, &proxy.url("/"), domain).await.1);
    }
    assert!(
        bodies.iter().any(|b| b == "backend slow"),
        "undrained backend got nothing: {bodies:?}"
    );
}

/// Every backend drained: the domain answers 503 naming each and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_whose_backends_are_all_drained_answers_503() {
    let only = Backend::start("only").await;
    let proxy = Proxy::start(&config("all.test", &[&only], true)).await;
    let target = format!(r#"{{"domain": "all.test", "backend": "{}"}}"#, only.addr);
    assert_eq!(
        post(&proxy, "/backends/drain", Some(TOKEN), &target)
            .await
            .0,
        StatusCode::OK
    );
    let (code, body) = get(&client(), &proxy.url("/"), "all.test").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains(&format!("{} drained", only.addr)), "{body}");
    assert_eq!(only.hits(), 0);
}

/// No token configured: 403 saying how to enable actions. A token
/// configured: none or a wrong one is 401 and counted, the right one works;
/// the token never shows in `/status` or the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_need_the_configured_token() {
    let a = Backend::start("a").await;
    let target = format!(r#"{{"domain": "token.test", "backend": "{}"}}"#, a.addr);

    let closed = Proxy::start(&config("token.test", &[&a], false)).await;
    let (code, answer) = post(&closed, "/backends/drain", Some(TOKEN), &target).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert!(
        answer["error"].as_str().unwrap().contains("\"token\""),
        "403 does not say how to enable actions: {answer}"
    );
    assert_eq!(status(&closed).await["admin_actions"], false);

    let proxy = Proxy::start(&config("token.test", &[&a], true)).await;
    assert_eq!(status(&proxy).await["admin_actions"], true);
    let refused = || common::counter("bbproxy_admin_unauthorized_total", &[]);
    let before = refused();
    assert_eq!(
        post(&proxy, "/backends/drain", None, &target).await.0,
        StatusCode::UNAUTHORIZED
    );
    let wrong = format!("{TOKEN}x");
    assert_eq!(
        post(&proxy, "/backends/drain", Some(&wrong), &target)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(
            &proxy,
            "/backends/drain",
            Some(&TOKEN[..TOKEN.len() - 1]),
            &target
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(refused() - before, 3);
    assert_eq!(a.hits(), 0);
    assert_eq!(
        get(&client(), &proxy.url("/"), "token.test").await.1,
        "backend a"
    );
    assert_eq!(
        status(&proxy).await["domains"][0]["backends"][0]["drained"],
        false
    );

    let (code, answer) = post(
        &proxy,
        "/backends/drain",
        Some(TOKEN),
        r#"{"domain": "token.test", "backend": "10.9.9.9:1"}"#,
    )
    .await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains(&a.addr.to_string())
    );
    let (code, _) = post(&proxy, "/backends/drain", Some(TOKEN), r#"{"domain": 1}"#).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, answer) = post(&proxy, "/backends/drain", Some(TOKEN), &target).await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    assert_eq!(refused() - before, 3, "a right token was counted as wrong");
    assert_eq!(
        get(
            &client(),
            &format!(
                "http://{}/backends/drain",
                proxy.running.as_ref().unwrap().admin.unwrap()
            ),
            "admin"
        )
        .await
        .0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    for path in ["/status", "/", "/metrics"] {
        let (_, body) = admin_get(&proxy, path).await;
        assert!(!body.contains(TOKEN), "{path} shows the token");
    }
}

/// `/status` keeps what the dashboard draws: rates, error share,
/// percentiles and the last minutes per backend, when and why a breaker
/// last changed, certificates and reloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_has_rates_percentiles_sparklines_and_breaker_history() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await.to_string();
    let domain = "activity.test";
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "1m",
            "retries": {{"attempts": 1}},
            "domains": {{"{domain}": ["{}", "{dead}"]}}}}"#,
        a.addr
    ))
    .await;
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(get(&http, &proxy.url("/"), domain).await.0);
    }
    let errors = statuses.iter().filter(|s| s.is_server_error()).count();
    assert_eq!(errors, 1, "the dead backend should fail once and open");
    // Rates count full seconds: wait until this one is over.
    let doc = Arc::new(tokio::sync::Mutex::new(Value::Null));
    wait_for(Duration::from_secs(5), "the requests in the rate", || {
        let doc = doc.clone();
        let proxy = &proxy;
        async move {
            let d = status(proxy).await;
            let done = backend(&d, domain, &a.addr.to_string())["rps"].as_f64() == Some(3.9);
            *doc.lock().await = d;
            done
        }
    })
    .await;
    let doc = doc.lock().await.clone();
    let live = backend(&doc, domain, &a.addr.to_string());
    assert_eq!(live["error_rate"], 0.0);
    let p50 = live["p50_ms"].as_f64().unwrap();
    let p99 = live["p99_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 < 5000.0, "{live}");
    let spark: u64 = live["spark_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(spark, 39, "{live}");
    assert_eq!(live["spark_requests"].as_array().unwrap().len(), 36);
    assert_eq!(live["breaker_since"], Value::Null, "never changed: {live}");
    assert_eq!(live["health"], "unchecked");

    let down = backend(&doc, domain, &dead);
    assert_eq!(down["breaker"], "open");
    assert_eq!(down["error_rate"], 1.0, "{down}");
    assert_eq!(down["last_failure"]["reason"], "connect error", "{down}");
    let since = down["breaker_since"].as_f64().unwrap();
    let now = doc["now"].as_f64().unwrap();
    assert!(now - 10.0 < since && since <= now, "{since} vs {now}");
    assert_eq!(doc["breakers_not_closed"], 1);
    assert_eq!(doc["certificates"], serde_json::json!([]));
    assert_eq!(doc["reloads"], serde_json::json!([]));
    for p in doc["plugins"].as_array().unwrap() {
        assert_eq!(p["contract"], "bbproxy:plugin@0.2.0");
        assert_eq!(p["suspended"], serde_json::json!([]));
    }
    // 40 requests were routed and picked; the built-in router said at
    // init that this domain (it has no routes) goes to its own upstream,
    // so the host routed them without a call, and the built-in balancer
    // that its upstream is round-robin over its counter, so the host took
    // the turns. Of their outcomes the breaker (contract 0.2.0) is called
    // for the one error only, the host counts the 39 responses of a
    // closed backend itself.
    assert_eq!(plugin_calls(&doc, "router"), 0);
    assert_eq!(plugin_calls(&doc, "balancer"), 0);
    assert_eq!(plugin_calls(&doc, "breaker"), 1);
}

/// The calls `/status` counts for the plugin of `role`.
fn plugin_calls(doc: &Value, role: &str) -> Value {
    let plugins = doc["plugins"].as_array().unwrap();
    let p = plugins.iter().find(|p| p["role"] == role).unwrap();
    p["calls"].clone()
}

/// The built-in router is called only for the domains that have routes:
/// a domain without any goes to its own upstream, which the router says
/// at init, and the host answers its requests without entering it. The
/// built-in balancer likewise only for upstreams that are not
/// round-robin: it says at init which are, with the counter the host
/// then takes turns of (the backends still alternate). A reload that
/// gives the other domain routes and `least-request` makes its requests
/// calls of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_and_the_balancer_are_called_only_where_they_decide() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (a2, b2) = (Backend::start("a2").await, Backend::start("b2").await);
    let config = |b_policy: &str| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
                "domains": {{"a.test": {{"backends": ["{}", "{}"],
                               "routes": [{{"match": {{"path": "/x"}}, "respond": {{"status": 204}}}}]}},
                             "b.test": {{"backends": ["{}", "{}"]{b_policy}}}}}}}"#,
            a.addr, a2.addr, b.addr, b2.addr
        )
    };
    let proxy = Proxy::start(&config("")).await;
    let http = client();
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(get(&http, &proxy.url("/"), "a.test").await.1);
        assert_eq!(
            get(&http, &proxy.url("/x"), "a.test").await.0,
            StatusCode::NO_CONTENT
        );
        answers.push(get(&http, &proxy.url("/"), "b.test").await.1);
    }
    answers.sort();
    assert_eq!(
        answers,
        ["backend a", "backend a2", "backend b", "backend b2"]
    );
    assert_eq!(plugin_calls(&status(&proxy).await, "router"), 4);
    assert_eq!(plugin_calls(&status(&proxy).await, "balancer"), 0);

    let decided = config(
        r#", "balancer": "least-request",
            "routes": [{"match": {"path": "/y"}, "respond": {"status": 204}}]"#,
    );
    std::fs::write(proxy.dir.path().join("config.json"), decided).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the reload with b.test's routes",
        || {
            let (http, proxy) = (&http, &proxy);
            async move { get(http, &proxy.url("/y"), "b.test").await.0 == StatusCode::NO_CONTENT }
        },
    )
    .await;
    let before = status(&proxy).await;
    let body = get(&http, &proxy.url("/"), "b.test").await.1;
    assert!(body == "backend b" || body == "backend b2", "{body}");
    let after = status(&proxy).await;
    for role in ["router", "balancer"] {
        assert_eq!(
            plugin_calls(&after, role),
            plugin_calls(&before, role).as_u64().unwrap() + 1,
            "{role}"
        );
    }
}

/// The first view needs no script: every backend has its row with its
/// state, and nothing is loaded from anywhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_first_view_is_rendered_by_the_server() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await.to_string();
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 1, "retries": {{"attempts": 1}},
            "domains": {{"page.test": ["{}", "{dead}"], "other.test": ["{}"]}}}}"#,
        a.addr, a.addr
    ))
    .await;
    let http = client();
    for _ in 0..4 {
        get(&http, &proxy.url("/"), "page.test").await;
    }
    let admin = proxy.running.as_ref().unwrap().admin.unwrap();
    let resp = http
        .request(
            Request::get(format!("http://{admin}/"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    let html = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let row = |domain: &str, addr: &str| {
        let key = format!(r#"data-key="{domain} {addr}""#);
        let start = html.find(&key).unwrap_or_else(|| panic!("no row {key}"));
        html[start..start + html[start..].find("</tr>").unwrap()].to_owned()
    };
    assert!(row("page.test", &dead).contains(r#"data-breaker="open""#));
    assert!(row("page.test", &dead).contains("last failure connect error"));
    assert!(row("page.test", &a.addr.to_string()).contains(r#"data-breaker="closed""#));
    assert!(row("other.test", &a.addr.to_string()).contains("<svg"));
    // Embedded CSS and JS; no URL is fetched except /status.
    assert!(html.contains("<style>") && html.contains("fetch(\"/status?compact\""));
    for external in ["src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(external),
            "the page loads something: {external}"
        );
    }
    // No token: the drain buttons stay hidden.
    assert!(html.contains(r#"data-action="drain" hidden"#));
}
