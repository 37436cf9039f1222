//! Exact metric values, in a process of its own: the recorder and the
//! in-flight gauge are process-wide, so traffic of other tests would blur
//! them. The tests here run one at a time (see [`EXCLUSIVE`]). Also: the
//! README's metric table names every metric the host emits.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::prom::{scrape, series};
use common::{Backend, Proxy, client, dead_addr, get, h2c_client_to, wait_for};
use http_body_util::Full;
use hyper::{Request, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

/// Held by each test that reads process-wide values.
static EXCLUSIVE: Mutex<()> = Mutex::const_new(());

const IN_FLIGHT: &str = "bbproxy_requests_in_flight";

fn value(m: &BTreeMap<String, f64>, text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        series(name, labels)
    };
    *m.get(&key)
        .unwrap_or_else(|| panic!("{key} missing from:\n{text}"))
}

async fn in_flight(proxy: &Proxy) -> f64 {
    let (m, _) = scrape(proxy).await;
    m.get(IN_FLIGHT).copied().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_gives_exact_totals() {
    let _only = EXCLUSIVE.lock().await;
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dead = dead_addr().await.to_string();
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 2, "circuit_breaker_timeout": "1m",
            "retries": {{"attempts": 1}},
            "domains": {{"metrics.test": ["{a_addr}", "{b_addr}", "{dead}"]}}}}"#
    ))
    .await;
    // The builtin plugins' series are shared by every proxy of the process
    // (the other test here may have run first): count from here.
    let (before, _) = scrape(&proxy).await;
    let calls_before = |name: &str, role: &str| {
        let key = series(name, &[("plugin", "builtin"), ("role", role)]);
        before.get(&key).copied().unwrap_or(0.0)
    };
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
    // A response is done for the proxy a moment after the client has it.
    wait_for(Duration::from_secs(10), "no request in flight", || async {
        in_flight(&proxy).await == 0.0
    })
    .await;

    let (m, text) = scrape(&proxy).await;
    let v = |name: &str, labels: &[(&str, &str)]| value(&m, &text, name, labels);
    let req = "bbproxy_requests_total";
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    for (backend, expected) in [
        (a_addr.as_str(), [0.0, 4.0, 0.0, 0.0, 0.0]),
        (b_addr.as_str(), [0.0, 3.0, 0.0, 0.0, 0.0]),
        (dead.as_str(), [0.0, 0.0, 0.0, 0.0, 2.0]),
        // Answers the proxy gave itself for the domain: none.
        ("", [0.0; 5]),
    ] {
        for (class, n) in classes.iter().zip(expected) {
            let labels = [
                ("domain", "metrics.test"),
                ("backend", backend),
                ("class", class),
            ];
            assert_eq!(v(req, &labels), n, "{labels:?}");
        }
    }
    assert_eq!(
        v(req, &[("domain", ""), ("backend", ""), ("class", "4xx")]),
        1.0
    );
    let total: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with("bbproxy_requests_total{")
                && (k.contains("domain=\"metrics.test\"") || k.contains("domain=\"\""))
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(total, 10.0, "every request counted once:\n{text}");
    assert_eq!(
        v(
            "bbproxy_request_duration_seconds_count",
            &[("domain", "metrics.test")]
        ),
        9.0
    );
    assert_eq!(v(IN_FLIGHT, &[]), 0.0);
    assert_eq!(v("bbproxy_generation", &[]), 1.0);

    for (backend, errors) in [(&a_addr, 0.0), (&b_addr, 0.0), (&dead, 2.0)] {
        let labels = [("backend", backend.as_str())];
        assert_eq!(
            v("bbproxy_upstream_connect_errors_total", &labels),
            errors,
            "{backend}"
        );
        assert_eq!(v("bbproxy_upstream_timeouts_total", &labels), 0.0);
    }
    for (backend, state, opened) in [(&a_addr, 0.0, 0.0), (&b_addr, 0.0, 0.0), (&dead, 2.0, 1.0)] {
        let labels = [("domain", "metrics.test"), ("backend", backend.as_str())];
        assert_eq!(v("bbproxy_breaker_state", &labels), state, "{backend}");
        for (to, n) in [("open", opened), ("half_open", 0.0), ("closed", 0.0)] {
            let mut l = labels.to_vec();
            l.push(("to", to));
            assert_eq!(
                v("bbproxy_breaker_transitions_total", &l),
                n,
                "{backend} to {to}"
            );
        }
    }
    // One pooled connection to each live backend (sequential requests).
    for (backend, open) in [(&a_addr, 1.0), (&b_addr, 1.0), (&dead, 0.0)] {
        let labels = [("backend", backend.as_str())];
        assert_eq!(v("bbproxy_pool_connections_open", &labels), open);
        assert_eq!(v("bbproxy_pool_connections_idle", &labels), open);
    }
    // 10 routes, 9 picks, 9 outcomes: all builtin, no fault.
    for (role, calls) in [("router", 10.0), ("balancer", 9.0), ("breaker", 9.0)] {
        let labels = [("plugin", "builtin"), ("role", role)];
        for name in [
            "bbproxy_plugin_calls_total",
            "bbproxy_plugin_call_duration_seconds_count",
        ] {
            assert_eq!(
                v(name, &labels) - calls_before(name, role),
                calls,
                "{name} {role}"
            );
        }
    }
    for absent in ["bbproxy_plugin_faults_total", "bbproxy_reloads_total"] {
        assert!(
            !m.keys().any(|k| k.starts_with(absent)),
            "{absent} in:\n{text}"
        );
    }
    assert!(
        !m.keys()
            .any(|k| k.starts_with("bbproxy_requests_client_closed_total")
                && k.contains("metrics.test")),
        "{text}"
    );
    assert!(text.contains("# HELP bbproxy_requests_total"), "{text}");
    assert!(
        text.contains("# TYPE bbproxy_breaker_state gauge"),
        "{text}"
    );
}

/// A request whose client goes away while the backend is still thinking
/// must not stay "in flight" forever: the handler future is dropped, and
/// dropping it accounts for the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_before_its_response_is_no_longer_in_flight() {
    let _only = EXCLUSIVE.lock().await;
    let slow = Backend::start_with_delay("slow", Duration::from_secs(60)).await;
    let backend = slow.addr.to_string();
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "domains": {{"slow.test": ["{backend}"]}}}}"#
    ))
    .await;
    let closed = series(
        "bbproxy_requests_client_closed_total",
        &[("domain", "slow.test"), ("backend", &backend)],
    );
    let base = in_flight(&proxy).await;
    assert_eq!(base, 0.0);

    // HTTP/2: the client resets the stream.
    let h2 = h2c_client_to(proxy.addr);
    let req = Request::get("http://slow.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let pending = tokio::spawn(async move { h2.request(req).await });
    wait_for(
        Duration::from_secs(10),
        "the h2 request at the backend",
        || async { slow.hits() == 1 && in_flight(&proxy).await == 1.0 },
    )
    .await;
    pending.abort();
    wait_for(
        Duration::from_secs(10),
        "in-flight back to 0 after the reset",
        || async { in_flight(&proxy).await == 0.0 },
    )
    .await;
    let (m, text) = scrape(&proxy).await;
    assert_eq!(m.get(&closed), Some(&1.0), "{closed} in:\n{text}");

    // HTTP/1.1: the client closes its connection.
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the HTTP/1.1 request at the backend",
        || async { slow.hits() == 2 && in_flight(&proxy).await == 1.0 },
    )
    .await;
    drop(conn);
    wait_for(
        Duration::from_secs(10),
        "in-flight back to 0 after the close",
        || async { in_flight(&proxy).await == 0.0 },
    )
    .await;
    let (m, text) = scrape(&proxy).await;
    assert_eq!(m.get(&closed), Some(&2.0), "{closed} in:\n{text}");
    // Not answered: not in the answered requests.
    let answered = series(
        "bbproxy_requests_total",
        &[
            ("domain", "slow.test"),
            ("backend", &backend),
            ("class", "5xx"),
        ],
    );
    assert_eq!(m.get(&answered), Some(&0.0), "{text}");
}

/// Every `bbproxy_*` name in the host's source must have a row in the
/// README's metrics table, so the table cannot drift from the code.
#[test]
fn every_metric_the_host_emits_is_in_the_readme_table() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let documented: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `bbproxy_"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert!(documented.len() > 20, "table not found: {documented:?}");
    let mut emitted = std::collections::BTreeSet::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                emitted.extend(metric_names(&text));
            }
        }
    }
    assert!(emitted.contains("requests_total"), "{emitted:?}");
    // The Prometheus suffixes of a histogram are not names of their own.
    let missing: Vec<&String> = emitted
        .iter()
        .filter(|n| {
            let base = ["_count", "_sum", "_bucket"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            !documented.contains(&n.as_str()) && !documented.contains(&base)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "metrics emitted in host/src but missing from the README table: {missing:?}"
    );
}

/// The `bbproxy_[a-z_]+` names quoted in `text`, without the prefix
/// (quoted: crate paths such as `bbproxy_config::` are not metrics).
fn metric_names(text: &str) -> Vec<String> {
    text.match_indices("\"bbproxy_")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_'))?;
            (rest[end..].starts_with('"') || rest[end..].starts_with('{'))
                .then(|| rest[..end].to_owned())
        })
        .collect()
}
