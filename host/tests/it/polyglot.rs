//! The example plugins of `examples/plugins/`, loaded by path into a running
//! proxy, decide real requests: the Rust latency balancer, and the C, Python
//! and JavaScript plugins built by their own build scripts.
//!
//! The non-Rust toolchains are heavy, so a test whose toolchain is missing
//! skips with a loud message — unless `BBPROXY_REQUIRE_POLYGLOT=1` is set, as
//! `.ci/run` does after installing them, which turns the skip into a failure.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{Backend, Proxy, addrs, client_to, example_plugin};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};

/// Limits for plugins in these tests: the debug build of the proxy on a
/// shared machine is slow, and the interpreted guests (Python, JavaScript)
/// start with about 12 MiB of linear memory.
const LIMITS: &str = r#""timeout": "2s", "memory_limit": "64MiB""#;

/// The `plugins` object: `role` loaded from `path` with `config`, the other
/// roles built in, every one with the generous [`LIMITS`].
fn plugins(role: &str, path: &Path, config: &str) -> String {
    let entry = |r: &str| {
        if r == role {
            format!(
                r#""{r}": {{"path": {:?}, {LIMITS}, "config": {config}}}"#,
                path.display().to_string()
            )
        } else {
            format!(r#""{r}": {{{LIMITS}}}"#)
        }
    };
    format!(
        "{{{}}}",
        ["router", "balancer", "breaker"].map(entry).join(", ")
    )
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Newest modification time of `path` (recursing into directories, skipping
/// `node_modules` and `target`).
fn newest(path: &Path) -> SystemTime {
    let meta = std::fs::metadata(path).unwrap();
    let mut t = meta.modified().unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            let p = entry.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy();
            if name == "node_modules" || name == "target" || name == "__pycache__" {
                continue;
            }
            t = t.max(newest(&p));
        }
    }
    t
}

/// Builds `examples/plugins/<example>` with its `build.sh` into a directory
/// of cargo's test scratch space, unless the component there is newer than
/// the sources and the WIT. `None` (after a loud message) when the build
/// script reports its toolchain missing (exit 127).
pub(crate) fn build(example: &str, file: &str) -> Option<PathBuf> {
    // Tests run in parallel; two of them must not build the same example
    // into the same directory at once.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let dir = workspace().join("examples/plugins").join(example);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("polyglot")
        .join(example);
    let wasm = out.join(file);
    let sources = newest(&dir).max(newest(&workspace().join("wit")));
    if std::fs::metadata(&wasm)
        .and_then(|m| m.modified())
        .is_ok_and(|built| built > sources)
    {
        return Some(wasm);
    }
    let started = Instant::now();
    // The C build needs the WASI preview1 reactor adapter; the crate that
    // ships it is a dev-dependency, so hand its bytes over.
    std::fs::create_dir_all(&out).unwrap();
    let adapter = out.join("wasi_snapshot_preview1.reactor.wasm");
    std::fs::write(
        &adapter,
        wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
    )
    .unwrap();
    let output = Command::new("bash")
        .arg(dir.join("build.sh"))
        .arg(&out)
        .env("ADAPTER", &adapter)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.code() == Some(127) {
        let message = format!(
            "\n!!!!! SKIPPED: the {example} plugin was not built: its toolchain is missing !!!!!\n{stderr}\n"
        );
        if std::env::var_os("BBPROXY_REQUIRE_POLYGLOT").is_some_and(|v| v == "1") {
            panic!("{message}BBPROXY_REQUIRE_POLYGLOT=1: the toolchains must be installed");
        }
        skipped(&message);
        return None;
    }
    assert!(
        output.status.success(),
        "{example}/build.sh failed ({}):\n{}\n{stderr}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    eprintln!(
        "built {} ({} bytes) in {:.1?}",
        wasm.display(),
        std::fs::metadata(&wasm).unwrap().len(),
        started.elapsed()
    );
    Some(wasm)
}

/// Reports a skipped test where a plain `cargo test` shows it: the harness
/// captures `eprintln!` and drops a passing test's capture, but a write to
/// the stderr handle itself bypasses the capture.
fn skipped(message: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "{message}(set BBPROXY_REQUIRE_POLYGLOT=1 to make a skip a failure)\n"
    );
}

/// GET `path` on the proxy for `host`, with extra `headers`: status and body.
async fn get(
    proxy: &Proxy,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let client = client_to(proxy.addr);
    let mut req = Request::get(format!("http://{host}{path}"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = client
        .request(req.body(Full::new(bytes::Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_latency_balancer_sends_traffic_to_the_faster_backend() {
    let slow = Backend::start_with_delay("slow", Duration::from_millis(50)).await;
    let fast = Backend::start("fast").await;
    let plugin = example_plugin("rust_latency_balancer.wasm");
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {}}},
            "plugins": {}}}"#,
        addrs(&[&slow, &fast]),
        plugins("balancer", &plugin, "{}")
    ))
    .await;
    // Sequential requests: each one's latency is recorded before the next is
    // decided. At most the first two find a backend unmeasured; after that
    // the slow one loses every comparison.
    for _ in 0..30 {
        let (status, body) = get(&proxy, "app.test", "/", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(slow.hits() + fast.hits(), 30);
    assert!(slow.hits() <= 2, "slow got {} of 30", slow.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_canary_router_sends_opted_in_clients_and_an_exact_share_to_the_canary() {
    let (app, canary) = (Backend::start("app").await, Backend::start("canary").await);
    let plugin = example_plugin("rust_canary_router.wasm");
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {}, "canary.test": {}}},
            "plugins": {}}}"#,
        addrs(&[&app]),
        addrs(&[&canary]),
        plugins(
            "router",
            &plugin,
            r#"{"primary": "app.test", "canary": "canary.test", "percent": 25}"#
        )
    ))
    .await;
    // Opting in, by header or by cookie, always reaches the canary and does
    // not use up the percentage share.
    for _ in 0..3 {
        let by_header = get(&proxy, "app.test", "/", &[("x-canary", "1")]).await;
        assert_eq!(by_header, (StatusCode::OK, "backend canary".to_owned()));
        let by_cookie = get(
            &proxy,
            "app.test",
            "/",
            &[("cookie", "theme=dark; canary=1")],
        )
        .await;
        assert_eq!(by_cookie, (StatusCode::OK, "backend canary".to_owned()));
    }
    assert_eq!((app.hits(), canary.hits()), (0, 6));
    // Plain requests: the n-th (from a counter shared by every instance, 0 on
    // a fresh proxy) goes to the canary when n mod 100 < 25. Of 120: n in
    // 0..25 and 100..120, 45 in all; the host of the request plays no part.
    for i in 0..120 {
        let host = if i % 2 == 0 { "app.test" } else { "other.test" };
        let (status, body) = get(&proxy, host, "/", &[("x-canary", "0")]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!((app.hits(), canary.hits() - 6), (75, 45));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_path_router_routes_by_prefix() {
    let Some(plugin) = build("python-path-router", "python_path_router.wasm") else {
        return;
    };
    let (web, api, assets) = (
        Backend::start("web").await,
        Backend::start("api").await,
        Backend::start("assets").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"web.test": {}, "api.test": {}, "assets.test": {}}},
            "plugins": {}}}"#,
        addrs(&[&web]),
        addrs(&[&api]),
        addrs(&[&assets]),
        plugins(
            "router",
            &plugin,
            r#"{"routes": {"/api/": "api.test", "/api/assets/": "assets.test"}, "default": "web.test"}"#
        )
    ))
    .await;
    // The host plays no part: only the path decides.
    assert_eq!(
        get(&proxy, "any.test", "/api/users", &[]).await.1,
        "backend api"
    );
    assert_eq!(
        get(&proxy, "web.test", "/api/assets/x.png", &[]).await.1,
        "backend assets"
    );
    assert_eq!(get(&proxy, "api.test", "/", &[]).await.1, "backend web");
    assert_eq!(get(&proxy, "x.test", "/apix", &[]).await.1, "backend web");
    assert_eq!((web.hits(), api.hits(), assets.hits()), (2, 1, 1));
}

/// `plugins` (an object's text) with the suite's `cache_dir` added, for
/// configs that go through `bbproxy check`, which takes no options.
fn with_cache_dir(plugins: String) -> String {
    let mut v: serde_json::Value = serde_json::from_str(&plugins).unwrap();
    v["cache_dir"] = common::Proxy::plugin_cache_dir()
        .display()
        .to_string()
        .into();
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_path_router_rejects_an_unknown_upstream_at_load() {
    let Some(plugin) = build("python-path-router", "python_path_router.wasm") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"web.test": ["127.0.0.1:9"]}},
                "plugins": {}}}"#,
            with_cache_dir(plugins(
                "router",
                &plugin,
                r#"{"routes": {"/api/": "nope.test"}}"#
            ))
        ),
    )
    .unwrap();
    let config = bbproxy_config::load(&path).unwrap();
    let err = bbproxy::app::check(config).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("'nope.test' is not a configured upstream (configured: web.test)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_pinned_balancer_pins_by_header_then_evens_out() {
    let Some(plugin) = build("js-pinned-balancer", "js_pinned_balancer.wasm") else {
        return;
    };
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {}}},
            "plugins": {}}}"#,
        addrs(&[&a, &b, &c]),
        plugins("balancer", &plugin, r#"{"header": "x-pin"}"#)
    ))
    .await;
    for _ in 0..5 {
        assert_eq!(
            get(&proxy, "app.test", "/", &[("x-pin", "1")]).await.1,
            "backend b"
        );
    }
    // Unpinned: fewest requests so far, ties to the lower id: a c a c a c.
    let mut order = Vec::new();
    for _ in 0..6 {
        order.push(get(&proxy, "app.test", "/", &[]).await.1);
    }
    assert_eq!(
        order,
        [
            "backend a",
            "backend c",
            "backend a",
            "backend c",
            "backend a",
            "backend c"
        ]
    );
    // A pin to a backend that does not exist is ignored.
    assert_eq!(
        get(&proxy, "app.test", "/", &[("x-pin", "7")]).await.0,
        StatusCode::OK
    );
    assert_eq!((a.hits(), b.hits(), c.hits()), (4, 5, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_hash_balancer_keeps_each_user_on_one_backend() {
    let Some(plugin) = build("c-hash-balancer", "c_hash_balancer.wasm") else {
        return;
    };
    let backends = [
        Backend::start("0").await,
        Backend::start("1").await,
        Backend::start("2").await,
    ];
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {}}},
            "plugins": {}}}"#,
        addrs(&backends.iter().collect::<Vec<_>>()),
        plugins("balancer", &plugin, "{}")
    ))
    .await;
    // Each user lands, every time, on the backend rendezvous hashing gives.
    let users = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    let mut seen = [false; 3];
    for user in users {
        let want = rendezvous(user, 3);
        seen[want] = true;
        for _ in 0..3 {
            let (status, body) = get(&proxy, "app.test", "/", &[("x-user", user)]).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, format!("backend {want}"), "user {user}");
        }
    }
    assert_eq!(
        seen, [true; 3],
        "the sample users should cover every backend"
    );
    // Without the header: the first candidate.
    assert_eq!(get(&proxy, "app.test", "/", &[]).await.1, "backend 0");
}

/// 32-bit FNV-1a continued from `hash`, as the C plugin computes it.
fn fnv1a(hash: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u32::from(b)).wrapping_mul(16_777_619))
}

/// The backend id (of `0..n`) with the highest weight for `user`; the first
/// one on a tie.
fn rendezvous(user: &str, n: u32) -> usize {
    let key = fnv1a(2_166_136_261, user.as_bytes());
    let mut best = (0, fnv1a(key, &0u32.to_le_bytes()));
    for id in 1..n {
        let w = fnv1a(key, &id.to_le_bytes());
        if w > best.1 {
            best = (id as usize, w);
        }
    }
    best.0
}

/// The component each example's config.json loads: the Rust ones as the
/// host's build script built them (what their `build.sh` builds), the others
/// built by their `build.sh`. `None` when a toolchain is missing.
fn example_component(example: &str) -> Option<PathBuf> {
    match example {
        "rust-canary-router" => Some(example_plugin("rust_canary_router.wasm")),
        "rust-last-backend" => Some(example_plugin("rust_last_backend.wasm")),
        "rust-latency-balancer" => Some(example_plugin("rust_latency_balancer.wasm")),
        "rust-api-key-filter" => Some(example_plugin("rust_api_key_filter.wasm")),
        "c-hash-balancer" => build(example, "c_hash_balancer.wasm"),
        "c-security-headers-filter" => build(example, "c_security_headers_filter.wasm"),
        "python-path-router" => build(example, "python_path_router.wasm"),
        "js-pinned-balancer" => build(example, "js_pinned_balancer.wasm"),
        other => panic!("no component known for example {other}"),
    }
}

/// Every `"path"` of `v` that names a component (`*.wasm`): a plugin
/// role's or a filter entry's, wherever it is (a route's `"path"` matcher
/// is no file).
fn component_paths<'a>(v: &'a mut serde_json::Value, out: &mut Vec<&'a mut serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "path" && value.as_str().is_some_and(|s| s.ends_with(".wasm")) {
                    out.push(value);
                } else {
                    component_paths(value, out);
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                component_paths(item, out);
            }
        }
        _ => {}
    }
}

/// Every example's config.json, as shipped (limits and plugin config
/// included) but with its plugin path pointed at the built component, passes
/// `bbproxy check`'s path: the generation is built, the plugin compiled,
/// instantiated and its `init` run under the configured limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_config_passes_the_check_with_its_built_plugin() {
    let examples = workspace().join("examples/plugins");
    let dir = tempfile::tempdir().unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| examples.join(name).join("config.json").exists())
        .collect();
    names.sort();
    assert_eq!(names.len(), 8, "one config.json per example: {names:?}");
    let mut checked = Vec::new();
    for name in &names {
        let text = std::fs::read_to_string(examples.join(name).join("config.json")).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut by_path = Vec::new();
        component_paths(&mut json, &mut by_path);
        assert_eq!(by_path.len(), 1, "{name} should load one plugin by path");
        let Some(component) = example_component(name) else {
            continue;
        };
        *by_path.into_iter().next().unwrap() =
            serde_json::Value::String(component.display().to_string());
        // The suite's compiled plugins, as `Proxy::start` uses them.
        let plugins = json
            .as_object_mut()
            .unwrap()
            .entry("plugins")
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .unwrap();
        plugins.insert(
            "cache_dir".into(),
            common::Proxy::plugin_cache_dir()
                .display()
                .to_string()
                .into(),
        );
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, json.to_string()).unwrap();
        let config = bbproxy_config::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let summary = bbproxy::app::check(config)
            .unwrap_or_else(|e| panic!("{name}: bbproxy check failed: {e:#}"));
        assert!(summary.contains(": OK: "), "{name}: {summary}");
        assert!(
            summary.contains(&component.display().to_string()),
            "{name}: the plugin by path should be named: {summary}"
        );
        checked.push(name.as_str());
    }
    // The Rust examples need no extra toolchain: always checked.
    for rust in [
        "rust-api-key-filter",
        "rust-canary-router",
        "rust-last-backend",
        "rust-latency-balancer",
    ] {
        assert!(checked.contains(&rust), "{rust} not checked: {checked:?}");
    }
}

#[test]
fn c_hash_balancer_passes_plugin_check() {
    let Some(plugin) = build("c-hash-balancer", "c_hash_balancer.wasm") else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_bbproxy"))
        .args(["plugin", "check"])
        .arg(&plugin)
        .args(["--timeout", "5s", "--calls", "100"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            child.kill().unwrap();
            panic!("plugin check did not exit within 120s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{stdout}"))
            .trim()
            .to_owned()
    };
    assert_eq!(line("worlds:"), "worlds: bbproxy:plugin/balancer@0.1.1");
    assert_eq!(line("exports:"), "exports: init, pick");
    assert!(line("init(").contains("): ok ("), "{stdout}");
    assert_eq!(line("8 picks:").matches('#').count(), 8, "{stdout}");
    assert!(
        line("cost:").contains("per pick (3 candidates) call"),
        "{stdout}"
    );
}
