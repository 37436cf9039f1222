//! `bbproxy plugin check`: run the binary on real components (the example
//! plugins and the default bundle) and read what it reports.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bbproxy");

fn example(file: &str) -> PathBuf {
    crate::common::example_plugin(file)
}

/// Runs `bbproxy plugin check ARGS` with a deadline: (success, stdout, stderr).
fn plugin_check(args: &[&str]) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(["plugin", "check"])
        .args(args)
        // A generous deadline: the machine may be loaded, and instantiating
        // under the default 10 ms is the proxy's concern, not this test's.
        .args(["--timeout", "5s"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            child.kill().unwrap();
            panic!("plugin check {args:?} did not exit within 120s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stderr.contains("panicked"),
        "plugin check panicked: {stderr}"
    );
    (out.status.success(), stdout, stderr)
}

fn line<'a>(text: &'a str, start: &str) -> &'a str {
    text.lines()
        .find(|l| l.trim_start().starts_with(start))
        .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{text}"))
}

#[test]
fn a_balancer_is_recognised_initialised_and_asked_to_pick() {
    let path = example("rust_latency_balancer.wasm");
    let (ok, out, err) = plugin_check(&[path.to_str().unwrap(), "--calls", "200"]);
    assert!(ok, "{err}");
    assert_eq!(
        line(&out, "worlds:"),
        "  worlds: bbproxy:plugin/balancer@0.1.1"
    );
    assert_eq!(line(&out, "exports:"), "  exports: init, pick");
    assert!(line(&out, "init({}): ok").contains("ok"), "{out}");
    // Sample backends: #0 slow (20 ms), #1 fast (2 ms), #2 unmeasured. The
    // latency balancer compares two and never chooses #0.
    let picks = line(&out, "8 picks:");
    assert_eq!(picks.matches('#').count(), 8, "{picks}");
    assert!(!picks.contains("#0"), "{picks}");
    assert!(
        line(&out, "cost:").contains("per pick (3 candidates) call"),
        "{out}"
    );
}

#[test]
fn a_router_gets_its_config_and_upstreams_and_answers_samples() {
    let path = example("rust_canary_router.wasm");
    let (ok, out, err) = plugin_check(&[
        path.to_str().unwrap(),
        "--role",
        "router",
        "--plugin-config",
        r#"{"primary": "app.test", "canary": "canary.test", "percent": 0}"#,
        "--upstream",
        "app.test",
        "--upstream",
        "canary.test",
        "--calls",
        "0",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        line(&out, "worlds:"),
        "  worlds: bbproxy:plugin/router@0.1.1"
    );
    assert_eq!(line(&out, "exports:"), "  exports: init, route");
    assert!(line(&out, "route GET app.test/ ").ends_with("-> upstream \"app.test\""));
    assert!(
        line(&out, "route GET app.test/api/items?page=2 (x-canary: 1)")
            .ends_with("-> upstream \"canary.test\"")
    );
    assert!(
        line(&out, "route GET app.test/ (cookie: canary=1)")
            .ends_with("-> upstream \"canary.test\"")
    );
    assert!(!out.contains("cost:"), "--calls 0 measures nothing: {out}");
    // A 0.1.1 router reads what it needs through the proxy, one call each.
    assert!(
        line(&out, "request reads through the proxy:")
            .ends_with("(contract 0.2.0 sends declared facts with each call instead)"),
        "{out}"
    );
    assert!(!out.contains("request facts sent"), "{out}");
}

#[test]
fn a_rejected_config_is_reported_with_the_plugins_own_words() {
    let path = example("rust_canary_router.wasm");
    let (ok, _, err) = plugin_check(&[
        path.to_str().unwrap(),
        "--plugin-config",
        r#"{"primary": "x"}"#,
    ]);
    assert!(!ok);
    assert!(
        err.contains("(router): init failed: plugin rejected its config: invalid canary config: missing field `canary`"),
        "{err}"
    );
}

#[test]
fn the_wrong_world_lists_the_missing_exports() {
    let path = example("rust_last_backend.wasm");
    let (ok, _, err) = plugin_check(&[path.to_str().unwrap(), "--role", "router"]);
    assert!(!ok);
    assert!(
        err.contains("does not implement the bbproxy:plugin/router world"),
        "{err}"
    );
    assert!(err.contains("router: missing export(s) route"), "{err}");
    assert!(err.contains("the component exports: init, pick"), "{err}");
}

#[test]
fn a_component_of_no_plugin_world_lists_every_role() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.wat");
    std::fs::write(&path, "(component)").unwrap();
    let (ok, _, err) = plugin_check(&[path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("implements none of the bbproxy:plugin worlds"),
        "{err}"
    );
    assert!(
        err.contains("router: missing export(s) init, route"),
        "{err}"
    );
    assert!(
        err.contains("balancer: missing export(s) init, pick"),
        "{err}"
    );
    assert!(
        err.contains("breaker: missing export(s) init, on-outcome"),
        "{err}"
    );
    assert!(err.contains("the component exports: (none)"), "{err}");
}

#[test]
fn a_file_that_is_not_a_component_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.wasm");
    std::fs::write(&path, b"\0asm junk").unwrap();
    let (ok, _, err) = plugin_check(&[path.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
    let (ok, _, err) = plugin_check(&["no-such-file.wasm"]);
    assert!(!ok);
    assert!(
        err.contains("no-such-file.wasm: cannot read plugin file: no such file"),
        "{err}"
    );
    assert!(!err.contains("os error"), "said once, plainly: {err}");
}

/// A file that is not WebAssembly at all is named as such, before any
/// parser detail (the text format's "expected '('" for a text file).
#[test]
fn what_a_file_is_not_comes_before_any_parser_detail() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("bad.wasm");
    std::fs::write(&text, "hi\n").unwrap();
    let (ok, _, err) = plugin_check(&[text.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bad.wasm: not a WebAssembly binary: it does not start with \\0asm"),
        "{err}"
    );
    assert!(!err.contains("expected '('"), "{err}");
    let empty = dir.path().join("empty.wasm");
    std::fs::write(&empty, "").unwrap();
    let (ok, _, err) = plugin_check(&[empty.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("empty.wasm: empty file"), "{err}");
    assert!(!err.contains("module field"), "{err}");
}

#[test]
fn the_default_breaker_opens_after_five_failures() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breaker.wasm");
    std::fs::write(&path, bbproxy::plugin::bundle::BREAKER).unwrap();
    let (ok, out, err) = plugin_check(&[
        path.to_str().unwrap(),
        "--plugin-config",
        r#"{"threshold": 5, "timeout_ms": 30000}"#,
        "--calls",
        "10",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        line(&out, "worlds:"),
        "  worlds: bbproxy:plugin/breaker@0.2.0"
    );
    let verdicts: Vec<&str> = out.lines().filter(|l| l.contains(" -> failure ")).collect();
    assert_eq!(verdicts.len(), 9, "{out}");
    assert!(verdicts[3].starts_with("    connect-error "), "{out}");
    assert!(verdicts[0].contains("response 200") && verdicts[0].contains("state closed"));
    // A 0.2.0 breaker: the proxy counts the responses itself.
    assert!(
        out.contains("left to the proxy: responses below 600 of a closed backend"),
        "{out}"
    );
    assert!(
        verdicts[0].ends_with("(the proxy's count, no call)"),
        "{out}"
    );
    assert!(!verdicts[3].contains("no call"), "{out}");
    // Three responses, then connect errors: the fifth error opens it.
    assert!(
        verdicts[6].contains("failure true") && verdicts[6].contains("state closed"),
        "{out}"
    );
    assert!(verdicts[7].contains("state open for 30000 ms"), "{out}");
}

/// A bundled plugin's bytes written to a file `name` of a temporary
/// directory (kept while the first value lives), for `plugin check`.
fn bundled(bytes: &[u8], name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

/// The default router says at init which domains go to their own
/// upstream (those without routes): the check lists them, marks their
/// samples as the proxy's answers, and measures no call for them.
#[test]
fn the_default_router_shows_the_domains_it_is_not_called_for() {
    let (_dir, path) = bundled(bbproxy::plugin::bundle::ROUTER, "router.wasm");
    let (ok, out, err) = plugin_check(&[
        path.to_str().unwrap(),
        "--plugin-config",
        r#"{"routes": {"b.test": [{"match": {"path": "/never"}}]}}"#,
        "--upstream",
        "a.test",
        "--upstream",
        "b.test",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        line(&out, "routed to their own upstream without a call:"),
        "  routed to their own upstream without a call: a.test"
    );
    assert!(
        line(&out, "route GET a.test/ ")
            .ends_with("-> upstream \"a.test\" (the proxy's answer, no call)"),
        "{out}"
    );
    assert!(!line(&out, "route POST unknown.example/upload").contains("no call"));
    assert_eq!(
        line(&out, "cost:"),
        "  cost: not measured, a.test's requests make no call"
    );
}

/// The default balancer says at init which upstreams it picks
/// round-robin over a shared counter (every upstream plugin check gives):
/// the check lists them, marks the picks as the proxy's turns (in turn
/// order), and measures no call for them.
#[test]
fn the_default_balancer_shows_the_upstreams_it_is_not_called_for() {
    let (_dir, path) = bundled(bbproxy::plugin::bundle::BALANCER, "balancer.wasm");
    let (ok, out, err) = plugin_check(&[path.to_str().unwrap(), "--upstream", "a.test"]);
    assert!(ok, "{err}");
    assert_eq!(
        line(&out, "picked round-robin by the proxy without a call:"),
        "  picked round-robin by the proxy without a call: a.test"
    );
    assert_eq!(
        line(&out, "8 picks:"),
        "  8 picks: #0 #1 #2 #0 #1 #2 #0 #1 (the proxy's round-robin turns, no call)"
    );
    assert_eq!(
        line(&out, "cost:"),
        "  cost: not measured, upstream 0's picks make no call"
    );
}

#[test]
fn plugin_config_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("canary.json");
    std::fs::write(
        &config,
        r#"{"primary": "a.test", "canary": "b.test", "percent": 100}"#,
    )
    .unwrap();
    let path = example("rust_canary_router.wasm");
    let arg = format!("@{}", config.display());
    let (ok, out, err) = plugin_check(&[
        path.to_str().unwrap(),
        "--plugin-config",
        &arg,
        "--upstream",
        "a.test",
        "--upstream",
        "b.test",
        "--calls",
        "0",
    ]);
    assert!(ok, "{err}");
    assert!(line(&out, "route POST unknown.example/upload").ends_with("-> upstream \"b.test\""));
}

#[test]
fn the_config_file_flag_is_refused_with_a_pointer_to_plugin_config() {
    let path = example("rust_canary_router.wasm");
    for flag in ["--config", "-config"] {
        let (ok, out, err) = plugin_check(&[
            path.to_str().unwrap(),
            flag,
            r#"{"primary": "app.test", "canary": "canary.test"}"#,
        ]);
        assert!(!ok, "{flag} was accepted: {out}");
        assert!(
            err.contains("`plugin check` reads no config.json, so --config does not apply")
                && err.contains("--plugin-config JSON"),
            "{err}"
        );
        assert!(out.is_empty(), "nothing is checked: {out}");
    }
}

#[test]
fn an_invalid_json_plugin_config_is_refused_before_init() {
    let path = example("rust_canary_router.wasm");
    let (ok, out, err) = plugin_check(&[
        path.to_str().unwrap(),
        "--plugin-config",
        r#"{"primary": "app.test",}"#,
    ]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("plugin config is not valid JSON: trailing comma"),
        "{err}"
    );
    assert!(!err.contains("init failed"), "{err}");
}

fn fixture(file: &str) -> PathBuf {
    crate::common::fixture(file)
}

/// The sample decisions can be made for a request of the user's choice, so
/// a plugin that decides by header or host can be tried: the hostile
/// balancer traps only when a request has `x-hostile`, the hostile router
/// only for host `bad.test`.
#[test]
fn samples_take_the_host_path_and_headers_given() {
    let balancer = fixture("hostile_balancer.wasm");
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            balancer.to_str().unwrap().to_owned(),
            "--plugin-config".into(),
            r#"{"mode": "header-trap"}"#.into(),
            "--calls".into(),
            "0".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |a: Vec<String>| plugin_check(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let (ok, out, err) = run(args(&[]));
    assert!(ok, "{err}");
    assert!(
        line(&out, "request:").ends_with("GET example.com/"),
        "{out}"
    );
    let (ok, out, err) = run(args(&["--header", "x-hostile:1", "--path", "/a?b=c"]));
    assert!(!ok, "the header reached the plugin: {out}");
    assert!(err.contains("sample call `pick` faulted: trap"), "{err}");

    let router = fixture("hostile_router.wasm");
    let route = |host: &str| {
        plugin_check(&[
            router.to_str().unwrap(),
            "--plugin-config",
            r#"{"mode": "unknown"}"#,
            "--upstream",
            "good.test",
            "--upstream",
            "bad.test",
            "--host",
            host,
            "--calls",
            "0",
        ])
    };
    let (ok, out, err) = route("good.test");
    assert!(ok, "{err}");
    let routes: Vec<&str> = out.lines().filter(|l| l.contains("route GET")).collect();
    assert_eq!(routes.len(), 1, "only the request asked for: {out}");
    assert!(routes[0].ends_with("-> upstream \"good.test\""), "{out}");
    let (ok, _, err) = route("bad.test");
    assert!(!ok);
    assert!(
        err.contains("GET bad.test/") && err.contains("invalid answer"),
        "{err}"
    );
}

#[test]
fn plugin_check_help_offers_no_config_file() {
    let out = Command::new(BIN)
        .args(["plugin", "check", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(!help.contains("--config"), "{help}");
    assert!(help.contains("--header <NAME:VALUE>"), "{help}");
    // The main help still offers it.
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
}

#[test]
fn a_filter_is_recognised_and_shown_what_it_does_both_ways() {
    let path = example("rust_api_key_filter.wasm");
    let (ok, out, err) = plugin_check(&[
        path.to_str().unwrap(),
        "--plugin-config",
        r#"{"keys": ["k-1"]}"#,
        "--calls",
        "50",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        line(&out, "worlds:"),
        "  worlds: bbproxy:plugin/filter@0.2.0"
    );
    assert_eq!(
        line(&out, "exports:"),
        "  exports: init, on-request, on-response"
    );
    // No key in the sample request: the filter's own answer.
    assert!(line(&out, "on-request").contains("-> respond 401"), "{out}");
    // A 0.2.0 filter that edits no response is not called for one.
    assert_eq!(
        line(&out, "on-response"),
        "  on-response: not called (the filter said at init it edits no response)"
    );
    assert!(line(&out, "cost:").contains("per on-request call"), "{out}");
    // Its key header is a declared fact: sent with each call, never read
    // back through the proxy.
    assert_eq!(
        line(&out, "request facts"),
        "  request facts sent with each call: header x-api-key"
    );
    assert!(!out.contains("request reads through the proxy"), "{out}");

    // With the key: forwarded, the key header removed.
    let (ok, out, err) = plugin_check(&[
        path.to_str().unwrap(),
        "--plugin-config",
        r#"{"keys": ["k-1"]}"#,
        "--header",
        "x-api-key: k-1",
    ]);
    assert!(ok, "{err}");
    assert!(
        line(&out, "on-request").contains("-> forward with remove x-api-key"),
        "{out}"
    );

    // Asked for as another role: what is missing is named.
    let (ok, _, err) = plugin_check(&[path.to_str().unwrap(), "--role", "router"]);
    assert!(!ok);
    assert!(err.contains("missing export(s) route"), "{err}");
}
