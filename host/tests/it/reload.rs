//! Hot reload of config.json and the plugins it names: broken files change
//! nothing that serves; in-flight requests finish on their generation;
//! backend state carries over. (Reloads under load: `reload_load.rs`.)

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::raw::Recorder;
use common::{Backend, Proxy, client, dead_addr, example_plugin, get, wait_for};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config_for(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "plugins": {{"balancer": {{"path": "balancer.wasm"}}}},
            "domains": {{"app.test": [{}]}}}}"#,
        list.join(", ")
    )
}

// `bbproxy_reloads_total` is process-wide, and any test's reload may fail
// (a watcher can read a file half-written): the test that counts failures
// exactly runs in a process of its own (`in_own_process!`).

async fn status(proxy: &Proxy) -> serde_json::Value {
    let admin = proxy.running.as_ref().unwrap().admin.unwrap();
    let (_, body) = get(&client(), &format!("http://{admin}/status"), "admin").await;
    serde_json::from_str(&body).unwrap()
}

async fn reload_errors(proxy: &Proxy) -> f64 {
    let admin = proxy.running.as_ref().unwrap().admin.unwrap();
    let (_, body) = get(&client(), &format!("http://{admin}/metrics"), "admin").await;
    body.lines()
        .find(|l| l.starts_with("bbproxy_reloads_total{result=\"error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_files_keep_the_last_good_generation_until_fixed() {
    let a = Backend::start("a").await;
    let good_wasm = std::fs::read(example_plugin("rust_last_backend.wasm")).unwrap();
    let good = config_for(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("balancer.wasm"), &good_wasm).unwrap();
    let proxy = Proxy::start_in(dir, &good).await;
    let path = proxy.dir.path().to_path_buf();
    let http = client();

    let canary = std::fs::read(example_plugin("rust_canary_router.wasm")).unwrap();
    let hostile = std::fs::read(common::fixture("hostile_balancer.wasm")).unwrap();
    type Breaker = Box<dyn Fn(&Path)>;
    // (case, how to break it, the reason, the file the error must name)
    let cases: Vec<(&str, Breaker, &str, &str)> = vec![
        (
            "json syntax",
            Box::new(|p: &Path| std::fs::write(p.join("config.json"), "{\"domains\": ").unwrap()),
            "syntax error",
            "config.json",
        ),
        (
            "unknown key",
            Box::new(|p: &Path| {
                std::fs::write(
                    p.join("config.json"),
                    r#"{"domains": {"app.test": ["127.0.0.1:1"]}, "bogus": 1}"#,
                )
                .unwrap()
            }),
            "unknown key `bogus`",
            "config.json",
        ),
        (
            "missing wasm",
            Box::new(|p: &Path| std::fs::remove_file(p.join("balancer.wasm")).unwrap()),
            "cannot read plugin file",
            "balancer.wasm",
        ),
        (
            "corrupt wasm",
            Box::new(|p: &Path| std::fs::write(p.join("balancer.wasm"), b"\0asm garbage").unwrap()),
            "not a valid WebAssembly component",
            "balancer.wasm",
        ),
        (
            "wrong world",
            Box::new(move |p: &Path| std::fs::write(p.join("balancer.wasm"), &canary).unwrap()),
            "does not implement the bbproxy:plugin/balancer world",
            "balancer.wasm",
        ),
        (
            "init rejects its config",
            Box::new({
                let bad = good.replace(
                    r#"{"path": "balancer.wasm"}"#,
                    r#"{"config": {"no_such_option": 1}}"#,
                );
                move |p: &Path| std::fs::write(p.join("config.json"), &bad).unwrap()
            }),
            "init failed",
            "config.json",
        ),
        (
            "trap in init",
            Box::new({
                let bad = good.replace(
                    r#"{"path": "balancer.wasm"}"#,
                    r#"{"path": "balancer.wasm", "config": {"mode": "init-trap"}}"#,
                );
                move |p: &Path| {
                    std::fs::write(p.join("balancer.wasm"), &hostile).unwrap();
                    std::fs::write(p.join("config.json"), &bad).unwrap();
                }
            }),
            "init failed",
            "balancer.wasm",
        ),
    ];
    for (name, break_it, expected, file) in cases {
        let generation = proxy.generation().id;
        let errors = reload_errors(&proxy).await;
        break_it(&path);
        wait_for(
            Duration::from_secs(5),
            &format!("{name}: the error in /status"),
            || async {
                status(&proxy).await["last_reload_error"]["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(expected))
            },
        )
        .await;
        let error = status(&proxy).await["last_reload_error"]["error"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            error.contains(&path.join(file).display().to_string()),
            "{name}: the error names {file}: {error}"
        );
        assert!(
            reload_errors(&proxy).await > errors,
            "{name}: error counted"
        );
        assert_eq!(proxy.generation().id, generation, "{name}: nothing swapped");
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await,
            (StatusCode::OK, "backend a".into()),
            "{name}"
        );

        // Fix both files: a new generation, the error cleared.
        std::fs::write(path.join("balancer.wasm"), &good_wasm).unwrap();
        std::fs::write(
            path.join("config.json"),
            good.replace("\"admin\"", " \"admin\""),
        )
        .unwrap();
        wait_for(
            Duration::from_secs(5),
            &format!("{name}: recovery"),
            || async {
                let s = status(&proxy).await;
                s["last_reload_error"].is_null() && s["generation"].as_u64().unwrap() > generation
            },
        )
        .await;
        // The next case starts from a config that differs from this one.
        std::fs::write(path.join("config.json"), &good).unwrap();
        wait_for(
            Duration::from_secs(5),
            &format!("{name}: settle"),
            || async { proxy.generation().id > generation + 1 },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_finishes_on_the_generation_it_started_on() {
    let slow = Backend::start_with_delay("slow", Duration::from_secs(4)).await;
    let fast = Backend::start("fast").await;
    let list = |b: &Backend| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "domains": {{"app.test": ["{}"]}}}}"#,
            b.addr
        )
    };
    let proxy = Proxy::start(&list(&slow)).await;
    let url = proxy.url("/");
    let pending = tokio::spawn(async move { get(&client(), &url, "app.test").await });
    wait_for(
        Duration::from_secs(5),
        "the slow request to reach its backend",
        || async { slow.hits() == 1 },
    )
    .await;
    std::fs::write(proxy.dir.path().join("config.json"), list(&fast)).unwrap();
    // Poll the generation, not requests: a request on the old generation
    // would itself wait for the slow backend.
    wait_for(Duration::from_secs(3), "the reload", || async {
        proxy.generation().id == 2
    })
    .await;
    assert!(
        !pending.is_finished(),
        "the slow request was still running during the swap"
    );
    assert_eq!(
        get(&client(), &proxy.url("/"), "app.test").await.1,
        "backend fast"
    );
    assert_eq!(
        pending.await.unwrap(),
        (StatusCode::OK, "backend slow".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_state_survives_a_reload_that_adds_a_domain() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await;
    let before = format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "1m",
            "domains": {{"app.test": ["{}", "{dead}"]}}}}"#,
        a.addr
    );
    let proxy = Proxy::start(&before).await;
    let http = client();
    for _ in 0..4 {
        get(&http, &proxy.url("/"), "app.test").await;
    }
    let s = status(&proxy).await;
    assert_eq!(s["domains"][0]["backends"][1]["address"], dead.to_string());
    assert_eq!(s["domains"][0]["backends"][1]["breaker"], "open");
    let after = before.replace(
        r#""domains": {"#,
        &format!(r#""domains": {{"other.test": ["{}"], "#, a.addr),
    );
    std::fs::write(proxy.dir.path().join("config.json"), after).unwrap();
    wait_for(Duration::from_secs(5), "the reload", || async {
        proxy.generation().id == 2
    })
    .await;
    let s = status(&proxy).await;
    assert_eq!(s["domains"].as_array().unwrap().len(), 2);
    let app = s["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "app.test")
        .unwrap();
    assert_eq!(app["backends"][1]["breaker"], "open", "{s}");
    assert_eq!(app["backends"][1]["address"], dead.to_string());
    // Still open: no request is even sent to the dead backend (a retry to
    // the live one would hide a failed attempt from the client, so count
    // the attempts themselves).
    let generation = proxy.generation();
    let app = generation.upstream_index("app.test").unwrap() as usize;
    let dead_state = &generation.upstreams[app].backends[1].state;
    assert!(
        dead_state.requests() > 0,
        "the dead backend was tried before"
    );
    let attempts = dead_state.requests();
    for _ in 0..6 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(
        dead_state.requests(),
        attempts,
        "requests were sent to a backend whose breaker is open"
    );
}

async fn last_error(proxy: &Proxy) -> Option<String> {
    status(proxy).await["last_reload_error"]["error"]
        .as_str()
        .map(str::to_owned)
}

async fn wait_for_error(proxy: &Proxy, what: &str, needle: &str) {
    wait_for(Duration::from_secs(5), what, || async {
        last_error(proxy).await.is_some_and(|e| e.contains(needle))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_leaves_the_serving_backends_state_alone() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await;
    let before = format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "1m",
            "domains": {{"app.test": ["{}", "{dead}"]}}}}"#,
        a.addr
    );
    let proxy = Proxy::start(&before).await;
    let http = client();
    for _ in 0..4 {
        get(&http, &proxy.url("/"), "app.test").await;
    }
    assert_eq!(
        status(&proxy).await["domains"][0]["backends"][1]["breaker"],
        "open"
    );
    // Drops the dead backend, and fails late: on a `backend_ca` that is not
    // PEM, after the backends were resolved.
    std::fs::write(proxy.dir.path().join("bad-ca.pem"), "not a certificate").unwrap();
    let broken = format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "1m",
            "domains": {{"app.test": {{"backends": ["{}"], "backend_ca": "bad-ca.pem"}}}}}}"#,
        a.addr
    );
    std::fs::write(proxy.dir.path().join("config.json"), broken).unwrap();
    wait_for_error(&proxy, "the backend_ca error", "bad-ca.pem").await;
    assert_eq!(proxy.generation().id, 1);
    std::fs::write(proxy.dir.path().join("config.json"), &before).unwrap();
    wait_for(Duration::from_secs(5), "the revert", || async {
        proxy.generation().id > 1
    })
    .await;
    let s = status(&proxy).await;
    assert_eq!(s["domains"][0]["backends"][1]["address"], dead.to_string());
    assert_eq!(
        s["domains"][0]["backends"][1]["breaker"], "open",
        "the failed reload made the registry forget the open breaker: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_in_a_directory_not_watched_yet_is_picked_up_after_a_failed_reload() {
    let a = Backend::start("a").await;
    let wasm = std::fs::read(example_plugin("rust_last_backend.wasm")).unwrap();
    let good = config_for(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("balancer.wasm"), &wasm).unwrap();
    // A directory that exists but no config named before.
    std::fs::create_dir(dir.path().join("later")).unwrap();
    let proxy = Proxy::start_in(dir, &good).await;
    let path = proxy.dir.path().to_path_buf();

    std::fs::write(
        path.join("config.json"),
        good.replace("\"balancer.wasm\"", "\"later/balancer.wasm\""),
    )
    .unwrap();
    wait_for_error(&proxy, "the missing plugin", "later/balancer.wasm").await;
    // Let any reload still pending from that write run first, so only a
    // watch on later/ can see the plugin appear.
    let until = std::time::Instant::now() + Duration::from_millis(400);
    while std::time::Instant::now() < until {
        assert_eq!(proxy.generation().id, 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::write(path.join("later/balancer.wasm"), &wasm).unwrap();
    wait_for(
        Duration::from_secs(5),
        "the plugin in later/ to be picked up",
        || async { proxy.generation().id > 1 },
    )
    .await;
    let generation = proxy.generation().id;

    // A directory that does not exist yet.
    std::fs::write(
        path.join("config.json"),
        good.replace("\"balancer.wasm\"", "\"new/deeper/balancer.wasm\""),
    )
    .unwrap();
    wait_for_error(&proxy, "the missing plugin", "new/deeper/balancer.wasm").await;
    std::fs::create_dir_all(path.join("new/deeper")).unwrap();
    std::fs::write(path.join("new/deeper/balancer.wasm"), &wasm).unwrap();
    wait_for(
        Duration::from_secs(5),
        "the plugin in new/deeper/ to be picked up",
        || async { proxy.generation().id > generation },
    )
    .await;
    assert!(last_error(&proxy).await.is_none());
}

/// A domain's own `.wasm` is watched and hot-reloaded like `plugins.<role>`:
/// rebuilding it (in a directory nothing else in the config names, so only
/// a watch on that directory sees it) swaps in a generation with the new
/// component, while the other domain keeps the built-in balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domains_own_plugin_is_hot_reloaded_when_rebuilt() {
    let (a1, a2) = (Backend::start("a1").await, Backend::start("a2").await);
    let (b1, b2) = (Backend::start("b1").await, Backend::start("b2").await);
    // Always the last candidate, then the default bundle's balancer
    // (round-robin): both take no configuration.
    let last = std::fs::read(example_plugin("rust_last_backend.wasm")).unwrap();
    let round_robin = bbproxy::plugin::bundle::BALANCER;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("own")).unwrap();
    std::fs::write(dir.path().join("own/lb.wasm"), &last).unwrap();
    let proxy = Proxy::start_in(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
                "domains": {{
                  "a.test": {{"backends": ["{}", "{}"], "balancer": {{"path": "own/lb.wasm"}}}},
                  "b.test": ["{}", "{}"]
                }}}}"#,
            a1.addr, a2.addr, b1.addr, b2.addr
        ),
    )
    .await;
    let http = client();
    for _ in 0..2 {
        assert_eq!(get(&http, &proxy.url("/"), "a.test").await.1, "backend a2");
    }

    // Rebuilt in one step (as `cp` to a temp name and `mv` would).
    let own = proxy.dir.path().join("own");
    std::fs::write(own.join("lb.wasm.tmp"), round_robin).unwrap();
    std::fs::rename(own.join("lb.wasm.tmp"), own.join("lb.wasm")).unwrap();
    wait_for(
        Duration::from_secs(10),
        "the rebuilt plugin's reload",
        || async { proxy.generation().id > 1 },
    )
    .await;
    let s = status(&proxy).await;
    assert_eq!(
        s["domains"][0]["plugins"][0]["sha256"],
        common::sha256_hex(round_robin),
        "{s}"
    );
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(get(&http, &proxy.url("/"), "a.test").await.1);
    }
    seen.sort();
    assert_eq!(seen, ["backend a1", "backend a2"], "round-robin now");
    // b.test: the built-in round-robin throughout.
    for _ in 0..2 {
        get(&http, &proxy.url("/"), "b.test").await;
    }
    assert_eq!((a1.hits(), a2.hits(), b1.hits(), b2.hits()), (1, 3, 1, 1));
    assert!(last_error(&proxy).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixing_only_the_backend_ca_file_retries_the_failed_reload() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "domains": {{"app.test": ["{}"]}}}}"#,
        a.addr
    ))
    .await;
    let path = proxy.dir.path().to_path_buf();
    std::fs::create_dir(path.join("ca")).unwrap();
    std::fs::write(path.join("ca/ca.pem"), "not yet a certificate").unwrap();
    std::fs::write(
        path.join("config.json"),
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
                "domains": {{"app.test": {{"backends": ["{}"], "backend_ca": "ca/ca.pem"}}}}}}"#,
            a.addr
        ),
    )
    .unwrap();
    wait_for_error(&proxy, "the backend_ca error", "ca/ca.pem").await;
    // Only the CA file changes; config.json stays as it is.
    std::fs::write(path.join("ca/ca.pem"), common::tls::TestCa::new().pem()).unwrap();
    wait_for(
        Duration::from_secs(5),
        "the reload to be retried with the fixed CA",
        || async { proxy.generation().id > 1 },
    )
    .await;
    assert!(last_error(&proxy).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_do_not_recompile_unchanged_components() {
    let a = Backend::start("a").await;
    let wasm = std::fs::read(example_plugin("rust_last_backend.wasm")).unwrap();
    let good = config_for(&[&a]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("balancer.wasm"), &wasm).unwrap();
    let proxy = Proxy::start_in(dir, &good).await;
    let runtime = proxy.running.as_ref().unwrap().runtime.clone();
    let compiles = runtime.compiles();
    assert!(compiles > 0);

    // Config only.
    std::fs::write(
        proxy.dir.path().join("config.json"),
        good.replace(
            r#""domains": {"#,
            r#""domains": {"other.test": ["127.0.0.1:1"], "#,
        ),
    )
    .unwrap();
    wait_for(Duration::from_secs(5), "the config reload", || async {
        proxy.generation().id == 2
    })
    .await;
    assert_eq!(
        runtime.compiles(),
        compiles,
        "a config-only reload compiled"
    );

    // The same bytes under another name.
    std::fs::write(proxy.dir.path().join("copy.wasm"), &wasm).unwrap();
    std::fs::write(
        proxy.dir.path().join("config.json"),
        good.replace("\"balancer.wasm\"", "\"copy.wasm\""),
    )
    .unwrap();
    wait_for(Duration::from_secs(5), "the plugin reload", || async {
        proxy.generation().id == 3
    })
    .await;
    assert_eq!(
        runtime.compiles(),
        compiles,
        "identical bytes compiled again"
    );
    assert!(
        proxy
            .generation()
            .balancer
            .primary
            .name()
            .ends_with("copy.wasm")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_to_a_surviving_backend_are_reused_across_a_reload() {
    let kept = Recorder::start().await;
    let other = Backend::start("other").await;
    let config = |extra: &str| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{{extra}"app.test": ["{}"]}}}}"#,
            kept.addr
        )
    };
    // One worker: backend pools are per worker, and the client may open a
    // second connection (its own pool races the next request), which on a
    // second worker would dial the backend again, reload or not.
    let one_worker = bbproxy::app::Options {
        workers: Some(1),
        ..Default::default()
    };
    let proxy = Proxy::start_with(&config(""), one_worker).await;
    let http = client();
    for _ in 0..3 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(kept.connections(), 1);
    std::fs::write(
        proxy.dir.path().join("config.json"),
        config(&format!(r#""other.test": ["{}"], "#, other.addr)),
    )
    .unwrap();
    wait_for(Duration::from_secs(5), "the reload", || async {
        proxy.generation().id == 2
    })
    .await;
    for _ in 0..3 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.0,
            StatusCode::OK
        );
    }
    assert_eq!(kept.requests(), 6);
    assert_eq!(
        kept.connections(),
        1,
        "the reload opened a new connection to an unchanged backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_to_a_removed_backend_close_after_the_idle_timeout() {
    let removed = Recorder::start().await;
    let kept = Backend::start("kept").await;
    let config = |backends: &str| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"app.test": {{"backends": [{backends}],
                    "pool": {{"idle_timeout": "300ms"}}}}}}}}"#
        )
    };
    let proxy = Proxy::start(&config(&format!(r#""{}", "{}""#, removed.addr, kept.addr))).await;
    let http = client();
    for _ in 0..4 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.0,
            StatusCode::OK
        );
    }
    assert!(removed.requests() > 0);
    std::fs::write(
        proxy.dir.path().join("config.json"),
        config(&format!(r#""{}""#, kept.addr)),
    )
    .unwrap();
    wait_for(Duration::from_secs(5), "the reload", || async {
        proxy.generation().id == 2
    })
    .await;
    let requests = removed.requests();
    for _ in 0..4 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await,
            (StatusCode::OK, "backend kept".into())
        );
    }
    assert_eq!(removed.requests(), requests);
    wait_for(
        Duration::from_secs(5),
        "the removed backend's connections to close",
        || async { removed.open() == 0 },
    )
    .await;
}

/// Reads one HTTP/1.1 response with a `content-length` body from `conn`.
async fn read_response(conn: &mut tokio::net::TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk))
            .await
            .expect("the response within 5 s")
            .unwrap();
        assert!(n > 0, "the proxy closed the connection: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_keep_alive_connection_survives_a_reload() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = |backend: &Backend| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"app.test": ["{}"]}}}}"#,
            backend.addr
        )
    };
    let proxy = Proxy::start(&config(&a)).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";
    conn.write_all(request).await.unwrap();
    let first = read_response(&mut conn).await;
    assert!(
        first.starts_with("HTTP/1.1 200") && first.ends_with("backend a"),
        "{first}"
    );
    std::fs::write(proxy.dir.path().join("config.json"), config(&b)).unwrap();
    wait_for(Duration::from_secs(5), "the reload", || async {
        proxy.generation().id == 2
    })
    .await;
    // Same socket, new generation.
    conn.write_all(request).await.unwrap();
    let second = read_response(&mut conn).await;
    assert!(
        second.starts_with("HTTP/1.1 200") && second.ends_with("backend b"),
        "{second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_before_the_watcher_starts_is_not_lost() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let config = |backend: &Backend| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"app.test": ["{}"]}}}}"#,
            backend.addr
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config(&a)).unwrap();
    let loaded = bbproxy_config::load(&path).unwrap();
    // Saved after the config was read, before anything watches it.
    std::fs::write(&path, config(&b)).unwrap();
    let running = bbproxy::app::start(loaded, bbproxy::app::Options::default())
        .await
        .unwrap();
    let proxy = Proxy {
        addr: running.http.unwrap(),
        running: Some(running),
        dir,
    };
    let http = client();
    wait_for(
        Duration::from_secs(5),
        "the saved config to serve",
        || async { get(&http, &proxy.url("/"), "app.test").await.1 == "backend b" },
    )
    .await;
}

/// Replaces `path` in one step, so the watcher never reads it half-written.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Research case 24, what `broken_files_keep_the_last_good_generation_until_fixed`
/// leaves out: an invalid backend URL, a certificate file that does not
/// exist, and a key that does not fit its certificate, each in one write of
/// config.json. Each is rejected with its reason in `/status`, counted as
/// exactly one failed reload; the last good generation keeps serving; the
/// next valid write applies (and is not counted as a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_backend_url_or_certificate_file_fails_one_reload_and_the_next_good_write_applies() {
    common::alone::in_own_process!();
    let a = Backend::start("a").await;
    let ca = common::tls::TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.write_leaf(dir.path(), "app.test");
    ca.write_leaf(dir.path(), "other.test");
    let config = |backend: &str, tls: &str, pad: usize| {
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0", "https": "127.0.0.1:0"}},{} "admin": "127.0.0.1:0",
                "domains": {{"app.test": {{"backends": ["{backend}"], "tls": {tls}}}}}}}"#,
            " ".repeat(pad)
        )
    };
    let backend = a.addr.to_string();
    let tls = r#"{"cert": "app.test.pem", "key": "app.test.key"}"#;
    let proxy = Proxy::start_in(dir, &config(&backend, tls, 0)).await;
    let path = proxy.dir.path().to_path_buf();
    let http = client();
    // (case, the broken config, the reason, the file the error must name)
    let cases = [
        (
            "invalid backend URL",
            config("ftp://127.0.0.1:1", tls, 0),
            "unsupported scheme \"ftp\"",
            "config.json",
        ),
        (
            "missing certificate file",
            config(
                &backend,
                r#"{"cert": "missing.pem", "key": "app.test.key"}"#,
                0,
            ),
            "cannot read",
            "missing.pem",
        ),
        (
            "key that does not fit the certificate",
            config(
                &backend,
                r#"{"cert": "app.test.pem", "key": "other.test.key"}"#,
                0,
            ),
            "does not fit",
            "other.test.key",
        ),
    ];
    for (i, (name, broken, reason, file)) in cases.into_iter().enumerate() {
        let generation = proxy.generation().id;
        let errors = reload_errors(&proxy).await;
        write_atomically(&path.join("config.json"), &broken);
        wait_for_error(&proxy, name, reason).await;
        let error = last_error(&proxy).await.unwrap();
        assert!(
            error.contains(&path.join(file).display().to_string()),
            "{name}: the error names {file}: {error}"
        );
        assert_eq!(
            reload_errors(&proxy).await - errors,
            1.0,
            "{name}: one write, one failure"
        );
        assert_eq!(proxy.generation().id, generation, "{name}: nothing swapped");
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await,
            (StatusCode::OK, "backend a".into()),
            "{name}: the last good config serves"
        );

        // The next valid write (padded, so it differs from every earlier
        // one) applies and clears the error.
        write_atomically(&path.join("config.json"), &config(&backend, tls, i + 1));
        wait_for(
            Duration::from_secs(5),
            &format!("{name}: the next good write to apply"),
            || async {
                let s = status(&proxy).await;
                s["last_reload_error"].is_null() && proxy.generation().id > generation
            },
        )
        .await;
        assert_eq!(
            reload_errors(&proxy).await - errors,
            1.0,
            "{name}: the good write is no failure"
        );
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await,
            (StatusCode::OK, "backend a".into()),
            "{name}: after the fix"
        );
    }
}

/// `bbproxy_reloads_total{result=...}` from one scrape.
async fn reloads(proxy: &Proxy, result: &str) -> f64 {
    let (metrics, _) = common::prom::scrape(proxy).await;
    let key = format!("bbproxy_reloads_total{{result=\"{result}\"}}");
    metrics.get(&key).copied().unwrap_or(0.0)
}

/// A log written next to config.json wakes no check: for a second of
/// appends (a check would come within 350 ms: 50 ms of quiet, or 300 ms of
/// a burst) the checks stay at the start-up one. A save of config.json
/// with the same text wakes one, counted as `unchanged`, not as a reload.
/// Metrics are process-wide: a process of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbours_writes_wake_no_check_and_an_unchanged_save_is_counted() {
    common::alone::in_own_process!();
    let a = Backend::start("a").await;
    let text = format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "domains": {{"app.test": ["{}"]}}}}"#,
        a.addr
    );
    let proxy = Proxy::start(&text).await;
    wait_for(Duration::from_secs(10), "the start-up check", || {
        let proxy = &proxy;
        async move { reloads(proxy, "unchanged").await == 1.0 }
    })
    .await;

    let log = proxy.dir.path().join("access.log");
    let mut file = std::fs::File::create(&log).unwrap();
    let window = std::time::Instant::now();
    let mut writes = 0;
    while window.elapsed() < Duration::from_secs(1) && writes < 100_000 {
        use std::io::Write as _;
        writeln!(file, "GET / 200 line {writes}").unwrap();
        file.flush().unwrap();
        writes += 1;
        if writes % 50 == 0 {
            assert_eq!(
                reloads(&proxy, "unchanged").await,
                1.0,
                "a check after {writes} writes to access.log"
            );
        }
    }
    assert!(writes >= 100, "only {writes} writes in the window");

    write_atomically(&proxy.dir.path().join("config.json"), &text);
    wait_for(Duration::from_secs(10), "the save's check", || {
        let proxy = &proxy;
        async move { reloads(proxy, "unchanged").await >= 2.0 }
    })
    .await;
    assert_eq!(reloads(&proxy, "unchanged").await, 2.0);
    assert_eq!(reloads(&proxy, "ok").await, 0.0);
    assert_eq!(reloads(&proxy, "error").await, 0.0);
}
