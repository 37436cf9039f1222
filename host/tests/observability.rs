//! Metrics, admin endpoints and logs, checked against real traffic: exact
//! counter values after known requests, `/status` with an open breaker,
//! `/readyz` before and after the listeners bind, the periodic summary and
//! JSON logs from the real binary.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::binary::Binary;
use common::{Backend, Proxy, client, dead_addr, get};
use hyper::StatusCode;

/// Parses Prometheus text into `name{sorted labels}` → value.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.trim_end_matches('}');
                let mut pairs: Vec<&str> = split_labels(labels);
                pairs.sort();
                format!("{name}{{{}}}", pairs.join(","))
            }
            None => series.to_owned(),
        };
        out.insert(key, value);
    }
    out
}

/// Splits `a="x",b="y,z"` at commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

/// The key of series `name` with `labels` (any order).
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    pairs.sort();
    format!("{name}{{{}}}", pairs.join(","))
}

async fn admin_get(proxy: &Proxy, path: &str) -> (StatusCode, String) {
    let admin = proxy.running.as_ref().unwrap().admin.unwrap();
    get(&client(), &format!("http://{admin}{path}"), "admin").await
}

fn config(domain: &str, backends: &[String]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 2, "circuit_breaker_timeout": "1m",
            "retries": {{"attempts": 1}},
            "domains": {{"{domain}": [{}]}}}}"#,
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_exactly() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dead = dead_addr().await.to_string();
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let proxy = Proxy::start(&config(
        "metrics.test",
        &[a_addr.clone(), b_addr.clone(), dead.clone()],
    ))
    .await;
    let http = client();
    // Round-robin: a b dead a b dead (breaker opens at 2 failures), then a b a.
    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(get(&http, &proxy.url("/"), "metrics.test").await.0.as_u16());
    }
    assert_eq!(statuses, [200, 200, 502, 200, 200, 502, 200, 200, 200]);
    // An unknown host: answered by the router, no domain.
    assert_eq!(
        get(&http, &proxy.url("/"), "nowhere.test").await.0,
        StatusCode::MISDIRECTED_REQUEST
    );

    let (status, text) = admin_get(&proxy, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let m = parse_metrics(&text);
    let value = |name: &str, labels: &[(&str, &str)]| {
        let key = series(name, labels);
        *m.get(&key)
            .unwrap_or_else(|| panic!("{key} missing from:\n{text}"))
    };
    let req = "bbproxy_requests_total";
    assert_eq!(
        value(
            req,
            &[
                ("domain", "metrics.test"),
                ("backend", &a_addr),
                ("class", "2xx")
            ]
        ),
        4.0
    );
    assert_eq!(
        value(
            req,
            &[
                ("domain", "metrics.test"),
                ("backend", &b_addr),
                ("class", "2xx")
            ]
        ),
        3.0
    );
    assert_eq!(
        value(
            req,
            &[
                ("domain", "metrics.test"),
                ("backend", &dead),
                ("class", "5xx")
            ]
        ),
        2.0
    );
    assert_eq!(
        value(
            req,
            &[
                ("domain", "metrics.test"),
                ("backend", &dead),
                ("class", "2xx")
            ]
        ),
        0.0
    );
    assert!(value(req, &[("domain", ""), ("backend", ""), ("class", "4xx")]) >= 1.0);
    assert_eq!(
        value(
            "bbproxy_upstream_connect_errors_total",
            &[("backend", &dead)]
        ),
        2.0
    );
    assert_eq!(
        value(
            "bbproxy_breaker_state",
            &[("domain", "metrics.test"), ("backend", &dead)]
        ),
        2.0
    );
    assert_eq!(
        value(
            "bbproxy_breaker_state",
            &[("domain", "metrics.test"), ("backend", &a_addr)]
        ),
        0.0
    );
    assert_eq!(
        value(
            "bbproxy_breaker_transitions_total",
            &[
                ("domain", "metrics.test"),
                ("backend", &dead),
                ("to", "open")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            "bbproxy_request_duration_seconds_count",
            &[("domain", "metrics.test")]
        ),
        9.0
    );
    // One pooled connection to each live backend (sequential requests).
    assert_eq!(
        value("bbproxy_pool_connections_open", &[("backend", &a_addr)]),
        1.0
    );
    assert_eq!(
        value("bbproxy_pool_connections_idle", &[("backend", &a_addr)]),
        1.0
    );
    // Router + balancer + breaker calls: 10 routes, 9 picks, 9 outcomes.
    assert!(
        value(
            "bbproxy_plugin_calls_total",
            &[("plugin", "builtin"), ("role", "router")]
        ) >= 10.0
    );
    assert!(text.contains("bbproxy_generation"), "{text}");
    assert!(text.contains("# HELP bbproxy_requests_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_trap_is_counted_exactly() {
    // The hostile fixture balancer traps on every 10th call for upstream 1
    // (bad.test) and picks the first backend for upstream 0.
    let (good, bad) = (Backend::start("good").await, Backend::start("bad").await);
    let plugin =
        std::path::Path::new(bbproxy::plugin::bundle::FIXTURES_DIR).join("hostile_balancer.wasm");
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "plugins": {{"balancer": {{"path": "{}", "config": {{"mode": "every-10th"}}, "timeout": "1s"}}}},
            "domains": {{"good.test": ["{}"], "bad.test": ["{}"]}}}}"#,
        plugin.display(),
        good.addr,
        bad.addr
    ))
    .await;
    let http = client();
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&http, &proxy.url("/"), "bad.test").await.0.as_u16());
    }
    // Calls 10 and 20 trap: fail-closed (the default for a plugin loaded by
    // path) answers 503 without reaching the backend.
    assert_eq!(
        statuses.iter().filter(|s| **s == 503).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!((statuses[9], statuses[19]), (503, 503));
    assert_eq!(bad.hits(), 18);
    assert_eq!(
        get(&http, &proxy.url("/"), "good.test").await.0,
        StatusCode::OK
    );

    let (_, text) = admin_get(&proxy, "/metrics").await;
    let m = parse_metrics(&text);
    let name = plugin.display().to_string();
    let key = series(
        "bbproxy_plugin_faults_total",
        &[("plugin", &name), ("role", "balancer"), ("kind", "trap")],
    );
    assert_eq!(m.get(&key), Some(&2.0), "{key} in:\n{text}");
    let key = series(
        "bbproxy_plugin_calls_total",
        &[("plugin", &name), ("role", "balancer")],
    );
    assert_eq!(m.get(&key), Some(&21.0), "{key}");
    let key = series(
        "bbproxy_requests_total",
        &[("domain", "bad.test"), ("backend", ""), ("class", "5xx")],
    );
    assert_eq!(m.get(&key), Some(&2.0), "{key}");
    let key = series(
        "bbproxy_requests_total",
        &[
            ("domain", "bad.test"),
            ("backend", &bad.addr.to_string()),
            ("class", "2xx"),
        ],
    );
    assert_eq!(m.get(&key), Some(&18.0), "{key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_an_open_breaker_and_the_plugins() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await.to_string();
    let proxy = Proxy::start(&config("status.test", &[a.addr.to_string(), dead.clone()])).await;
    let http = client();
    for _ in 0..6 {
        get(&http, &proxy.url("/"), "status.test").await;
    }
    let (status, body) = admin_get(&proxy, "/status").await;
    assert_eq!(status, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["ready"], true);
    assert!(doc["last_reload_error"].is_null());
    let backends = doc["domains"][0]["backends"].as_array().unwrap();
    let by_addr = |addr: &str| {
        backends
            .iter()
            .find(|b| b["address"] == addr)
            .unwrap()
            .clone()
    };
    assert_eq!(by_addr(&dead)["breaker"], "open");
    assert_eq!(by_addr(&dead)["consecutive_failures"], 2);
    assert_eq!(by_addr(&a.addr.to_string())["breaker"], "closed");
    let roles: Vec<&str> = doc["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["router", "balancer", "breaker"]);
    for p in doc["plugins"].as_array().unwrap() {
        assert_eq!(p["source"], "builtin");
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_ready_only_once_listeners_are_bound() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config("ready.test", &[a.addr.to_string()])).unwrap();
    let cfg = bbproxy_config::load(&path).unwrap();
    let prepared = bbproxy::app::prepare(cfg, bbproxy::app::Options::default())
        .await
        .unwrap();
    let admin = prepared.admin.unwrap();
    let http = client();
    let (status, body) = get(&http, &format!("http://{admin}/readyz"), "admin").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        get(&http, &format!("http://{admin}/healthz"), "admin")
            .await
            .0,
        StatusCode::OK
    );
    let running = prepared.serve().await.unwrap();
    assert_eq!(
        get(&http, &format!("http://{admin}/readyz"), "admin")
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        get(&http, &format!("http://{admin}/nope"), "admin").await.0,
        StatusCode::NOT_FOUND
    );
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_line_appears_every_interval() {
    let a = Backend::start("a").await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "metrics": {{"log_interval": "200ms"}},
                "domains": {{"sum.test": ["{}"]}}}}"#,
            a.addr
        ),
        &[],
    );
    let line = bin.wait_line(Duration::from_secs(30), "the listen address", |l| {
        l.contains("serving HTTP on")
    });
    let addr = line
        .rsplit("serving HTTP on ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let http = client();
    for _ in 0..3 {
        assert_eq!(
            get(&http, &format!("http://{addr}/"), "sum.test").await.0,
            StatusCode::OK
        );
    }
    let summary = bin.wait_line(
        Duration::from_secs(10),
        "a summary counting 3 requests",
        |l| l.contains("3 requests"),
    );
    assert!(summary.contains("0.00% errors"), "{summary}");
    assert!(summary.contains("p99"), "{summary}");
    bin.wait_line(Duration::from_secs(10), "a second, empty summary", |l| {
        l.contains("0 requests")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_parse_line_by_line_and_include_the_access_log() {
    let a = Backend::start("a").await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"json.test": ["{}"]}}}}"#,
            a.addr
        ),
        &["--log-format", "json"],
    );
    let mut seen = Vec::new();
    let line = bin.wait_line(Duration::from_secs(30), "the listen address", |l| {
        seen.push(l.to_owned());
        l.contains("serving HTTP on")
    });
    let doc: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = doc["message"]
        .as_str()
        .unwrap()
        .rsplit("serving HTTP on ")
        .next()
        .unwrap()
        .to_owned();
    let (status, _) = get(
        &client(),
        &format!("http://{addr}/some/path?secret=1"),
        "json.test",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let access = bin.wait_line(Duration::from_secs(10), "the access log line", |l| {
        seen.push(l.to_owned());
        l.contains("bbproxy::access")
    });
    for l in &seen {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    let a_doc: serde_json::Value = serde_json::from_str(&access).unwrap();
    assert_eq!(a_doc["method"], "GET");
    assert_eq!(a_doc["host"], "json.test");
    assert_eq!(a_doc["path"], "/some/path");
    assert_eq!(a_doc["status"], 200);
    assert_eq!(a_doc["backend"], a.addr.to_string());
    assert_eq!(a_doc["bytes"], "backend a".len());
    assert_eq!(a_doc["generation"], 1);
    assert!(a_doc["duration_ms"].as_f64().unwrap() > 0.0);
}
