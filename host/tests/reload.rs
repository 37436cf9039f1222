//! Hot reload of config.json and the plugins it names: broken files change
//! nothing that serves; in-flight requests finish on their generation;
//! backend state carries over. (Reloads under load: `reload_load.rs`.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Backend, Proxy, client, dead_addr, example_plugin, get, wait_for};
use hyper::StatusCode;

fn config_for(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "plugins": {{"balancer": {{"path": "balancer.wasm"}}}},
            "domains": {{"app.test": [{}]}}}}"#,
        list.join(", ")
    )
}

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
    type Breaker = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "json syntax",
            Box::new(|p: &Path| std::fs::write(p.join("config.json"), "{\"domains\": ").unwrap()),
            "syntax error",
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
        ),
        (
            "missing wasm",
            Box::new(|p: &Path| std::fs::remove_file(p.join("balancer.wasm")).unwrap()),
            "cannot read plugin file",
        ),
        (
            "corrupt wasm",
            Box::new(|p: &Path| std::fs::write(p.join("balancer.wasm"), b"\0asm garbage").unwrap()),
            "not a valid WebAssembly component",
        ),
        (
            "wrong world",
            Box::new(move |p: &Path| std::fs::write(p.join("balancer.wasm"), &canary).unwrap()),
            "does not implement the bbproxy:plugin/balancer world",
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
        ),
    ];
    for (name, break_it, expected) in cases {
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
    // Still open: no request reaches the dead backend.
    for _ in 0..6 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.0,
            StatusCode::OK
        );
    }
}
