//! Metrics, admin endpoints and logs, checked against real traffic (the
//! exact totals of known traffic are in `metrics.rs`, a process of its own):
//! plugin faults, breaker series across reloads, `/status` with an open breaker,
//! `/readyz` before and after the listeners bind, the periodic summary and
//! JSON logs from the real binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::prom::{admin_get, parse_metrics, series};
use common::{Backend, Proxy, client, dead_addr, get};
use hyper::StatusCode;

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

/// The real binary, with stderr lines delivered through a channel.
struct Binary {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn start(config: &str, args: &[&str]) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_bbproxy"))
            .args(args)
            .arg("--config")
            .arg(dir.path().join("config.json"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Binary {
            child,
            lines,
            _dir: dir,
        }
    }

    /// Waits for a line that satisfies `pred`; returns it.
    fn wait_line(
        &self,
        deadline: Duration,
        what: &str,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {what} within {deadline:?}"),
            }
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
