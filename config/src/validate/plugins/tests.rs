//! `plugins`, through the public API: what operators write, and the exact
//! lines they get back when it is wrong.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::tests::{err, ok, with};
use crate::*;

#[test]
fn plugin_forms() {
    let c = ok(&with(
        r#""plugins": {
            "router": "builtin",
            "balancer": {"path": "plugins/lb.wasm", "config": {"sticky": true}, "timeout": "2ms", "memory_limit": "32MiB"},
            "breaker": {"config": {"threshold": 3}, "memory_limit": 1048576, "on_fault": "fail-closed"}
        }"#,
    ));
    assert_eq!(c.plugins.router, PluginSpec::builtin());
    assert_eq!(
        c.plugins.balancer,
        PluginSpec {
            source: PluginSource::Path("/etc/bbproxy/plugins/lb.wasm".into()),
            config: json!({"sticky": true}),
            timeout: Duration::from_millis(2),
            memory_limit: 32 << 20,
            on_fault: OnFault::FailClosed,
            fault_backoff: FaultBackoff::default(),
        }
    );
    assert_eq!(
        c.plugins.breaker,
        PluginSpec {
            source: PluginSource::Builtin,
            config: json!({"threshold": 3}),
            timeout: Duration::from_millis(10),
            memory_limit: 1 << 20,
            on_fault: OnFault::FailClosed,
            fault_backoff: FaultBackoff::default(),
        }
    );

    let c = ok(&with(r#""plugins": {"router": {"config": {"x": 1}}}"#));
    assert_eq!(c.plugins.router.source, PluginSource::Builtin);
    assert_eq!(c.plugins.router.on_fault, OnFault::FailOpen);
}

#[test]
fn plugin_fault_backoff() {
    let c = ok(&with(
        r#""plugins": {
            "balancer": {"path": "lb.wasm", "fault_backoff": {"after": 1, "initial": "100ms", "max": "2s"}},
            "breaker": {"fault_backoff": {"initial": "1m30s", "max": "5m"}},
            "router": {"fault_backoff": null}
        }"#,
    ));
    assert_eq!(
        c.plugins.balancer.fault_backoff,
        FaultBackoff {
            after: 1,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    );
    assert_eq!(
        c.plugins.breaker.fault_backoff,
        FaultBackoff {
            after: 5,
            initial: Duration::from_secs(90),
            max: Duration::from_secs(300),
        }
    );
    assert_eq!(c.plugins.router.fault_backoff, FaultBackoff::default());
    assert_eq!(
        FaultBackoff::default(),
        FaultBackoff {
            after: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    );
    // Equal bounds: a fixed suspension.
    let c = ok(&with(
        r#""plugins": {"router": {"fault_backoff": {"initial": "5s", "max": "5s"}}}"#,
    ));
    assert_eq!(
        c.plugins.router.fault_backoff.initial,
        Duration::from_secs(5)
    );
}

#[test]
fn plugin_fault_backoff_errors() {
    let e = |backoff: &str| {
        err(&with(&format!(
            r#""plugins": {{"balancer": {{"fault_backoff": {backoff}}}}}"#
        )))
    };
    assert_eq!(
        e(r#"{"after": 0}"#),
        "config.json: plugins.balancer.fault_backoff.after: expected a whole number of consecutive faults, at least 1, got 0"
    );
    for bad in [r#""5""#, "-1", "1.5", "4294967296"] {
        assert!(
            e(&format!(r#"{{"after": {bad}}}"#))
                .contains("fault_backoff.after: expected a whole number"),
            "{bad}"
        );
    }
    assert!(
        e(r#"{"initial": "0s"}"#)
            .contains("plugins.balancer.fault_backoff.initial: must be greater than zero")
    );
    assert!(
        e(r#"{"max": "0"}"#)
            .contains("plugins.balancer.fault_backoff.max: must be greater than zero")
    );
    assert!(
        e(r#"{"initial": 1000}"#)
            .contains("plugins.balancer.fault_backoff.initial: expected a duration like")
    );
    assert!(
        e(r#"{"max": "1 minute"}"#)
            .contains("plugins.balancer.fault_backoff.max: invalid duration")
    );
    assert_eq!(
        e(r#"{"initial": "10s", "max": "5s"}"#),
        "config.json: plugins.balancer.fault_backoff: initial \"10s\" is longer than max \"5s\"; the suspension starts at initial and doubles up to max"
    );
    assert_eq!(
        e(r#"{"initial": "2m"}"#),
        "config.json: plugins.balancer.fault_backoff: initial \"2m\" is longer than max 60s (the default); the suspension starts at initial and doubles up to max"
    );
    assert!(
        e(r#"{"max": "500ms"}"#).contains("initial 1s (the default) is longer than max \"500ms\"")
    );
    assert!(
        e(r#"{"inital": "1s"}"#).contains("unknown key `plugins.balancer.fault_backoff.inital`")
    );
    assert!(e(r#""1s""#).contains(
        "plugins.balancer.fault_backoff: expected an object like {\"after\": 5, \"initial\": \"1s\", \"max\": \"60s\"}, got \"1s\""
    ));
}

#[test]
fn plugin_path_is_relative_to_the_config_file() {
    let text = with(r#""plugins": {"router": {"path": "r.wasm"}}"#);
    let c = parse(&text, Path::new("config.json")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.plugins.router.source, PluginSource::Path("r.wasm".into()));
    let c = parse(&text, Path::new("conf/x.json")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.plugins.router.source,
        PluginSource::Path("conf/r.wasm".into())
    );
}

#[test]
fn plugin_errors() {
    assert_eq!(
        err(&with(r#""plugins": {"router": "r.wasm"}"#)),
        "config.json: plugins.router: expected \"builtin\" or an object like {\"path\": \"plugin.wasm\", \"config\": {}}, got \"r.wasm\""
    );
    assert!(
        err(&with(r#""plugins": {"router": {"path": ""}}"#))
            .contains("plugins.router.path: expected a file path, got \"\"")
    );
    assert!(
        err(&with(r#""plugins": {"router": {"timeout": "0s"}}"#))
            .contains("plugins.router.timeout: must be greater than zero")
    );
    assert!(
        err(&with(r#""plugins": {"router": {"timeout": 5}}"#))
            .contains("plugins.router.timeout: expected a duration like")
    );
    assert_eq!(
        err(&with(r#""plugins": {"router": {"memory_limit": "16M"}}"#)),
        "config.json: plugins.router.memory_limit: invalid size \"16M\": unknown unit \"M\" (valid units: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
    );
    assert!(err(&with(r#""plugins": {"router": {"memory_limit": 100}}"#)).contains("out of range"));
    assert!(
        err(&with(r#""plugins": {"router": {"memory_limit": "8GiB"}}"#)).contains("out of range")
    );
    assert!(
        err(&with(r#""plugins": {"router": {"on_fault": "ignore"}}"#))
            .contains("expected \"fail-open\" or \"fail-closed\", got \"ignore\"")
    );
    assert!(err(&with(r#""plugins": {"routr": "builtin"}"#)).contains("unknown key `plugins.routr` (expected one of: router, balancer, breaker, filters, cache_dir); did you mean `router`?"));
}

/// `plugins.filters` was refused while there was no filter; it is now
/// the chain every domain starts with (`validate/filters/tests.rs` has the
/// entries' forms). A Wasm filter entry is still refused, not ignored.
#[test]
fn plugin_filters_are_a_chain_of_builtin_and_wasm_entries() {
    let c = ok(&with(
        r#""plugins": {"filters": [{"builtin": "headers", "config": {"response": {"remove": ["server"]}}}]}"#,
    ));
    assert_eq!(c.plugins.filters.len(), 1);
    assert!(
        ok(&with(r#""plugins": {"filters": []}"#))
            .plugins
            .filters
            .is_empty()
    );
    let c = ok(&with(
        r#""plugins": {"filters": [{"path": "/opt/f.wasm", "on_fault": "fail-open"}]}"#,
    ));
    assert!(
        matches!(&c.plugins.filters[..], [Filter::Wasm(spec)] if spec.on_fault == OnFault::FailOpen),
        "{:?}",
        c.plugins.filters
    );
    let e = err(&with(r#""plugins": {"filters": {}}"#));
    assert!(
        e.contains("plugins.filters: expected a list of filters like"),
        "{e}"
    );
}

#[test]
fn the_plugin_cache_dir_is_resolved_against_the_config_and_must_name_a_directory() {
    assert_eq!(ok(&with(r#""plugins": {}"#)).plugins.cache_dir, None);
    let c = ok(&with(r#""plugins": {"cache_dir": "cache/plugins"}"#));
    assert_eq!(
        c.plugins.cache_dir.as_deref(),
        Some(Path::new("/etc/bbproxy/cache/plugins"))
    );
    let c = ok(&with(r#""plugins": {"cache_dir": "/var/cache/bbproxy"}"#));
    assert_eq!(
        c.plugins.cache_dir.as_deref(),
        Some(Path::new("/var/cache/bbproxy"))
    );
    assert_eq!(
        err(&with(r#""plugins": {"cache_dir": ""}"#)),
        "config.json: plugins.cache_dir: expected a directory path, got \"\""
    );
    assert_eq!(
        err(&with(r#""plugins": {"cache_dir": 3}"#)),
        "config.json: plugins.cache_dir: expected a directory path, got 3"
    );
}
