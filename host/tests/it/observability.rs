//! Metrics, admin endpoints and logs, checked against real traffic (the
//! exact totals of known traffic are in `metrics.rs`, a process of its own):
//! plugin faults, breaker series across reloads, `/status` with an open breaker,
//! `/readyz` before and after the listeners bind, the periodic summary and
//! JSON logs from the real binary.

use crate::common;

use std::time::Duration;

use common::binary::Binary;
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

/// In a process of its own: the sandbox tests also fail requests to
/// `bad.test`, whose request count this asserts exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_trap_is_counted_exactly() {
    common::alone::in_own_process!();
    // The hostile fixture balancer traps on every 10th call for upstream 1
    // (bad.test) and picks the first backend for upstream 0.
    let (good, bad) = (Backend::start("good").await, Backend::start("bad").await);
    let plugin = common::fixture("hostile_balancer.wasm");
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
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["ready"], true);
    assert_eq!(
        doc["config"],
        proxy.dir.path().join("config.json").display().to_string()
    );
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
    // Live stats of the backend that answered: a b a b (then dead is out).
    let live = by_addr(&a.addr.to_string());
    assert_eq!(live["breaker"], "closed");
    assert_eq!(live["requests"], a.hits());
    assert_eq!(live["in_flight"], 0);
    assert!(live["latency_ewma_us"].as_u64().unwrap() > 0, "{live}");
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
        // Plugins are loaded with their generation.
        assert_eq!(p["loaded_at"], doc["loaded_at"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_plugin_loaded_by_path_and_a_half_open_breaker() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await.to_string();
    let plugin = common::example_plugin("rust_last_backend.wasm");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The last backend is the dead one: it fails once (threshold 1), opens,
    // and turns half-open 300 ms later.
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "300ms",
            "retries": {{"attempts": 1}},
            "plugins": {{"balancer": {{"path": "{}", "timeout": "1s"}}}},
            "domains": {{"path.test": ["{}", "{dead}"]}}}}"#,
        plugin.display(),
        a.addr
    ))
    .await;
    let http = client();
    assert_eq!(
        get(&http, &proxy.url("/"), "path.test").await.0,
        StatusCode::BAD_GATEWAY
    );
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let status = || async {
        let (_, body) = admin_get(&proxy, "/status").await;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let breaker_of_dead = |doc: &serde_json::Value| {
        doc["domains"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["address"] == dead.as_str())
            .unwrap()["breaker"]
            .clone()
    };
    common::wait_for(Duration::from_secs(10), "the breaker half-open", || async {
        breaker_of_dead(&status().await) == "half_open"
    })
    .await;
    let doc = status().await;
    let balancer = &doc["plugins"][1];
    assert_eq!(balancer["role"], "balancer");
    assert_eq!(balancer["source"], plugin.display().to_string());
    assert_eq!(balancer["fallback"], serde_json::Value::Null);
    let sha = common::sha256_hex(&std::fs::read(&plugin).unwrap());
    assert_eq!(balancer["sha256"], sha);
    let loaded_at = balancer["loaded_at"].as_f64().unwrap();
    assert!(
        before - 1.0 <= loaded_at && loaded_at <= after + 1.0,
        "{before} <= {loaded_at} <= {after}"
    );
    assert_eq!(doc["plugins"][0]["source"], "builtin");
    let dead_doc = doc["domains"][0]["backends"][1].clone();
    assert_eq!(dead_doc["address"], dead.as_str());
    assert_eq!(dead_doc["requests"], 1, "{dead_doc}");
    assert_eq!(dead_doc["consecutive_failures"], 1, "{dead_doc}");
    assert_eq!(a.hits(), 0);
}

/// Reloads now, off the async threads (it compiles Wasm).
async fn reload(reloader: &std::sync::Arc<bbproxy::reload::Reloader>) {
    let r = reloader.clone();
    tokio::task::spawn_blocking(move || r.reload_blocking(true))
        .await
        .unwrap()
        .unwrap();
}

/// Breaker and pool series follow the serving generation: a backend a
/// reload removes disappears from them, and one added back counts its new
/// transitions on top of the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_series_follow_reloads() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await.to_string();
    let domain = "reload-series.test";
    let write = |backend: &str| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
                "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "1m",
                "domains": {{"{domain}": ["{backend}"]}}}}"#
        )
    };
    let proxy = Proxy::start(&write(&dead)).await;
    let path = proxy.dir.path().join("config.json");
    let reloader = proxy.running.as_ref().unwrap().reloader.clone();
    let http = client();
    let state = series(
        "bbproxy_breaker_state",
        &[("domain", domain), ("backend", &dead)],
    );
    let opened = series(
        "bbproxy_breaker_transitions_total",
        &[("domain", domain), ("backend", &dead), ("to", "open")],
    );
    let pool = series("bbproxy_pool_connections_open", &[("backend", &dead)]);
    let trip = || async {
        assert_eq!(
            get(&client(), &proxy.url("/"), domain).await.0,
            StatusCode::BAD_GATEWAY
        );
    };
    trip().await;
    let (_, text) = admin_get(&proxy, "/metrics").await;
    let m = parse_metrics(&text);
    assert_eq!(m.get(&state), Some(&2.0), "{text}");
    assert_eq!(m.get(&opened), Some(&1.0), "{text}");
    assert_eq!(m.get(&pool), Some(&0.0), "{text}");

    std::fs::write(&path, write(&a.addr.to_string())).unwrap();
    reload(&reloader).await;
    assert_eq!(get(&http, &proxy.url("/"), domain).await.0, StatusCode::OK);
    let (_, text) = admin_get(&proxy, "/metrics").await;
    let m = parse_metrics(&text);
    assert_eq!(m.get(&state), None, "removed backend still listed:\n{text}");
    assert_eq!(m.get(&pool), None, "removed backend still listed:\n{text}");
    let live = series(
        "bbproxy_breaker_state",
        &[("domain", domain), ("backend", &a.addr.to_string())],
    );
    assert_eq!(m.get(&live), Some(&0.0), "{text}");

    std::fs::write(&path, write(&dead)).unwrap();
    reload(&reloader).await;
    let (_, text) = admin_get(&proxy, "/metrics").await;
    let m = parse_metrics(&text);
    // Back with fresh state: closed.
    assert_eq!(m.get(&state), Some(&0.0), "{text}");
    trip().await;
    let (_, text) = admin_get(&proxy, "/metrics").await;
    let m = parse_metrics(&text);
    assert_eq!(m.get(&state), Some(&2.0), "{text}");
    assert_eq!(m.get(&opened), Some(&2.0), "{text}");
}

/// The 308 to HTTPS is answered before routing, and still counted. In a
/// process of its own: other tests' redirects move the same series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_to_https_are_counted() {
    common::alone::in_own_process!();
    let ca = common::tls::TestCa::new();
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    ca.write_leaf(dir.path(), "redirect.test");
    let proxy = Proxy::start_in(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0", "https": "127.0.0.1:0", "redirect_http": true}},
               "admin": "127.0.0.1:0", {},
               "domains": {{"redirect.test": {{"backends": ["{}"], "tls": {{"cert": "redirect.test.pem", "key": "redirect.test.key"}}}}}}}}"#,
            common::tls::PLUGIN_SLACK,
            a.addr
        ),
    )
    .await;
    let key = series(
        "bbproxy_requests_total",
        &[("domain", ""), ("backend", ""), ("class", "3xx")],
    );
    let (_, text) = admin_get(&proxy, "/metrics").await;
    let before = parse_metrics(&text).get(&key).copied().unwrap_or(0.0);
    let http = client();
    for _ in 0..2 {
        assert_eq!(
            get(&http, &proxy.url("/x"), "redirect.test").await.0,
            StatusCode::PERMANENT_REDIRECT
        );
    }
    let (_, text) = admin_get(&proxy, "/metrics").await;
    assert_eq!(
        parse_metrics(&text).get(&key),
        Some(&(before + 2.0)),
        "{text}"
    );
    assert_eq!(a.hits(), 0);
}

/// A client that connects to the admin listener and stalls is cut off after
/// `timeouts.client_header`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_admin_connection_is_closed() {
    use tokio::io::AsyncWriteExt;
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "timeouts": {{"client_header": "300ms"}},
            "domains": {{"admin-timeout.test": ["{}"]}}}}"#,
        a.addr
    ))
    .await;
    let admin = proxy.running.as_ref().unwrap().admin.unwrap();
    for partial in [&b""[..], b"GET /metrics HTTP/1.1\r\nHost: adm"] {
        let mut conn = tokio::net::TcpStream::connect(admin).await.unwrap();
        conn.write_all(partial).await.unwrap();
        let seen = common::raw::read_until_close(&mut conn, Duration::from_secs(10)).await;
        assert!(seen.closed, "still open after 10 s: {:?}", seen.text());
        assert!(
            seen.elapsed >= Duration::from_millis(250),
            "closed too early: {:?}",
            seen.elapsed
        );
    }
    // A complete request is still answered.
    assert_eq!(admin_get(&proxy, "/healthz").await.0, StatusCode::OK);
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

/// The access log's JSON field names are a contract (log pipelines index
/// them): exactly these, documented in the README. `log_format` in the
/// config gives JSON without the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_access_log_has_the_documented_fields_and_config_sets_the_format() {
    let a = Backend::start("a").await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "log_format": "json",
                "domains": {{"fields.test": ["{}"]}}}}"#,
            a.addr
        ),
        &[],
    );
    let addr = listen_addr(&bin);
    let (status, _) = get(&client(), &format!("http://{addr}/p"), "fields.test").await;
    assert_eq!(status, StatusCode::OK);
    let access = bin.wait_line(Duration::from_secs(10), "the access log line", |l| {
        l.contains("bbproxy::access")
    });
    let doc = json(&access);
    let mut keys: Vec<&str> = doc
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "backend",
            "bytes",
            "duration_ms",
            "generation",
            "header_ms",
            "host",
            "level",
            "message",
            "method",
            "path",
            "status",
            "target",
            "timestamp"
        ],
        "{access}"
    );
    assert_eq!(doc["message"], "request");
    assert_eq!(doc["level"], "INFO");
}

/// A log that is not a terminal (here a pipe) gets no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piped_log_has_no_escape_codes() {
    let a = Backend::start("a").await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
                "domains": {{"plain.test": ["{}"]}}}}"#,
            a.addr
        ),
        &[],
    );
    let addr = listen_addr(&bin);
    get(&client(), &format!("http://{addr}/"), "plain.test").await;
    bin.wait_line(Duration::from_secs(10), "the access log line", |l| {
        l.contains("bbproxy::access")
    });
    assert_eq!(bin.escaped_lines(), 0, "escape codes in a piped log");
}

/// The address the binary serves HTTP on, from its "serving HTTP on" line
/// (human or JSON format).
fn listen_addr(bin: &Binary) -> std::net::SocketAddr {
    let line = bin.wait_line(Duration::from_secs(30), "the listen address", |l| {
        l.contains("serving HTTP on")
    });
    let tail = line.rsplit("serving HTTP on ").next().unwrap();
    tail.trim_end_matches(['"', '}', ' ', '\n'])
        .split('"')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// A JSON log line, parsed.
fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// One HTTP/1.1 connection to `addr`, for requests that must be handled in
/// order.
async fn one_connection(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn send_on(
    send: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    host: &str,
) -> StatusCode {
    use http_body_util::BodyExt;
    let req = hyper::Request::get("/")
        .header(hyper::header::HOST, host)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    // The previous response ending does not make the connection ready at
    // once: wait for it, or hyper refuses the request.
    send.ready().await.unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    resp.into_body().collect().await.unwrap();
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_false_writes_no_access_line() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "access_log": false,
                "domains": {{"quiet.test": ["{}"], "marker.test": ["{dead}"]}}}}"#,
            a.addr
        ),
        &["--log-format", "json"],
    );
    let addr = listen_addr(&bin);
    // On one connection, the first response is finished (and would have
    // been logged) before the second request is read; the second one's
    // failure is logged: a marker that comes after any access line of the
    // first.
    let mut conn = one_connection(addr).await;
    assert_eq!(send_on(&mut conn, "quiet.test").await, StatusCode::OK);
    assert_eq!(
        send_on(&mut conn, "marker.test").await,
        StatusCode::BAD_GATEWAY
    );
    let mut seen = Vec::new();
    bin.wait_line(Duration::from_secs(10), "the marker.test failure", |l| {
        seen.push(l.to_owned());
        l.contains("request failed")
    });
    for l in &seen {
        assert_ne!(json(l)["target"], "bbproxy::access", "{l}");
    }
    assert_eq!(a.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_leaves_is_access_logged_as_499() {
    let slow = Backend::start_with_delay("slow", Duration::from_secs(60)).await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"leaving.test": ["{}"]}}}}"#,
            slow.addr
        ),
        &["--log-format", "json"],
    );
    let addr = listen_addr(&bin);
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut conn,
        b"GET /gone?token=1 HTTP/1.1\r\nHost: leaving.test\r\n\r\n",
    )
    .await
    .unwrap();
    common::wait_for(
        Duration::from_secs(10),
        "the request at the backend",
        || async { slow.hits() == 1 },
    )
    .await;
    drop(conn);
    let line = bin.wait_line(Duration::from_secs(10), "the access line", |l| {
        l.contains("bbproxy::access")
    });
    let doc = json(&line);
    assert_eq!(doc["status"], 499, "{line}");
    assert_eq!(doc["path"], "/gone");
    assert_eq!(doc["host"], "leaving.test");
    assert_eq!(doc["backend"], slow.addr.to_string());
    assert_eq!(doc["bytes"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_admin_listener_is_a_warning() {
    let a = Backend::start("a").await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}},
                "admin": {{"address": "0.0.0.0:0", "allow_non_loopback": true}},
                "domains": {{"open.test": ["{}"]}}}}"#,
            a.addr
        ),
        &["--log-format", "json"],
    );
    let line = bin.wait_line(Duration::from_secs(30), "the admin warning", |l| {
        l.contains("reachable from other machines")
    });
    let doc = json(&line);
    assert_eq!(doc["level"], "WARN", "{line}");
    assert!(
        doc["message"].as_str().unwrap().contains("0.0.0.0"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_line_gives_latency_errors_and_open_breakers() {
    let a = Backend::start_with_delay("a", Duration::from_millis(5)).await;
    let dead = dead_addr().await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "metrics": {{"log_interval": "300ms"}},
                "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "1m",
                "domains": {{"fine.test": ["{}"], "broken.test": ["{dead}"]}}}}"#,
            a.addr
        ),
        &["--log-format", "json"],
    );
    let addr = listen_addr(&bin);
    let http = client();
    for _ in 0..3 {
        assert_eq!(
            get(&http, &format!("http://{addr}/"), "fine.test").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        get(&http, &format!("http://{addr}/"), "broken.test")
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );
    // The four requests may fall into more than one interval: add up the
    // summaries until all four are counted.
    let (mut requests, mut errors) = (0, 0);
    let mut with_error = None;
    let mut last = String::new();
    // Whatever the split, some interval holds more `fine.test` requests
    // (5 ms each) than failed ones.
    let mut max_p50: f64 = 0.0;
    while requests < 4 {
        last = bin.wait_line(Duration::from_secs(10), "the summaries", |l| {
            l.contains("bbproxy::summary")
        });
        let doc = json(&last);
        let n = doc["requests"].as_u64().unwrap();
        requests += n;
        errors += doc["errors"].as_u64().unwrap();
        if n > 0 {
            let p50 = doc["p50_ms"].as_f64().unwrap();
            assert!(p50 > 0.0, "{last}");
            assert!(
                doc["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("p50 {p50:.3} ms")),
                "{last}"
            );
            max_p50 = max_p50.max(p50);
        }
        if doc["errors"].as_u64().unwrap() > 0 {
            with_error = Some(doc);
        }
    }
    assert_eq!((requests, errors), (4, 1), "{last}");
    assert!(max_p50 >= 5.0, "p50 {max_p50} ms");
    let doc = with_error.unwrap();
    let rate = doc["error_rate_percent"].as_f64().unwrap();
    let n = doc["requests"].as_f64().unwrap();
    assert!((rate - 100.0 / n).abs() < 1e-9, "{doc}");
    let message = doc["message"].as_str().unwrap();
    assert!(message.contains(&format!("{rate:.2}% errors")), "{message}");
    assert!(
        message.contains(&format!("breakers not closed: broken.test/{dead}")),
        "{message}"
    );
    assert_eq!(doc["open_breakers"], 1);
}

/// Replicas compare policies by one digest: config.json's text plus every
/// plugin's bytes, in `/status` and as the only `bbproxy_config_info`
/// series. Two proxies from the same files agree; new bytes in the
/// balancer's `.wasm` or in a domain's own `.wasm` (config.json untouched)
/// change it, and the old digest leaves the metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_digest_names_config_text_and_plugins() {
    let a = Backend::start("a").await;
    let text = format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "plugins": {{"balancer": {{"path": "balancer.wasm"}}}},
            "domains": {{"digest.test": ["{0}"],
                         "own.test": {{"backends": ["{0}"], "balancer": {{"path": "own.wasm"}}}}}}}}"#,
        a.addr
    );
    let start = |plugin: &str| {
        let wasm = common::example_plugin(plugin);
        let dir = common::dir_with(&[(&wasm, "balancer.wasm"), (&wasm, "own.wasm")]);
        Proxy::start_in(dir, &text)
    };
    let one = start("rust_last_backend.wasm").await;
    let two = start("rust_last_backend.wasm").await;
    let digest = |proxy: &common::Proxy| {
        let admin = proxy.running.as_ref().unwrap().admin.unwrap();
        async move {
            let (_, body) = get(&client(), &format!("http://{admin}/status"), "admin").await;
            let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
            doc["config_sha256"].as_str().unwrap().to_owned()
        }
    };
    let first = digest(&one).await;
    assert_eq!(first.len(), 64, "{first}");
    assert_eq!(digest(&two).await, first);
    let info = |text: &str| -> Vec<String> {
        parse_metrics(text)
            .into_keys()
            .filter(|k| k.starts_with("bbproxy_config_info{"))
            .collect()
    };
    let (_, metrics) = admin_get(&one, "/metrics").await;
    assert_eq!(
        info(&metrics),
        [series("bbproxy_config_info", &[("sha256", &first)])]
    );

    // Another balancer's bytes under the same name: config.json is the same.
    let wasm = one.dir.path().join("balancer.wasm");
    std::fs::copy(common::example_plugin("rust_latency_balancer.wasm"), &wasm).unwrap();
    reload(&one.running.as_ref().unwrap().reloader).await;
    let second = digest(&one).await;
    assert_ne!(second, first);
    let (_, metrics) = admin_get(&one, "/metrics").await;
    assert_eq!(
        info(&metrics),
        [series("bbproxy_config_info", &[("sha256", &second)])]
    );
    // The first bytes back: the same digest as the other replica again.
    std::fs::copy(common::example_plugin("rust_last_backend.wasm"), &wasm).unwrap();
    reload(&one.running.as_ref().unwrap().reloader).await;
    assert_eq!(digest(&one).await, digest(&two).await);
    // A domain's own plugin counts too.
    let own = one.dir.path().join("own.wasm");
    std::fs::copy(common::example_plugin("rust_latency_balancer.wasm"), &own).unwrap();
    reload(&one.running.as_ref().unwrap().reloader).await;
    let third = digest(&one).await;
    assert_ne!(third, first);
    assert_ne!(third, second);
}
