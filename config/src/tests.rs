//! Whole-file tests through the public API: what operators write, and the
//! exact lines they get back when it is wrong. Here: the file as a whole
//! and the top-level keys; each section's tests sit next to it
//! (`validate/<section>/tests.rs`) and share the helpers below.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use super::*;

pub(crate) const ORIGINAL: &str = r#"{
  "domains": { "example.com": ["localhost:8080", "localhost:8081"] },
  "circuit_breaker_threshold": 5,
  "circuit_breaker_timeout": "30s",
  "cert_cache_dir": "/var/lib/bbproxy/certs"
}"#;

pub(crate) fn ok(text: &str) -> Config {
    parse(text, Path::new("/etc/bbproxy/config.json")).unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) fn err(text: &str) -> String {
    match parse(text, Path::new("config.json")) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// A minimal valid document with `extra` merged in at the top level.
pub(crate) fn with(extra: &str) -> String {
    format!(r#"{{"domains": {{"example.com": ["localhost:8080"]}}, {extra}}}"#)
}

pub(crate) fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub(crate) fn backend(host: &str, port: u16) -> Backend {
    Backend {
        scheme: Scheme::Http,
        host: host.into(),
        port,
        weight: 1,
    }
}

#[test]
fn original_file_loads_unchanged() {
    let c = ok(ORIGINAL);
    assert_eq!(
        c,
        Config {
            origin: "/etc/bbproxy/config.json".into(),
            // The document in compact JSON, keys in file order.
            sha256: sha2::Sha256::digest(
                br#"{"domains":{"example.com":["localhost:8080","localhost:8081"]},"circuit_breaker_threshold":5,"circuit_breaker_timeout":"30s","cert_cache_dir":"/var/lib/bbproxy/certs"}"#,
            )
            .into(),
            listen: Listen {
                http: Some(sock("0.0.0.0:80")),
                https: Some(sock("0.0.0.0:443")),
                redirect_http: false,
                tls_session_resumption: true,
            },
            admin: Some(sock("127.0.0.1:9901")),
            admin_token: None,
            domains: vec![Domain {
                name: "example.com".into(),
                backends: vec![backend("localhost", 8080), backend("localhost", 8081)],
                balancer: "round-robin".into(),
                hash_on: None,
                sticky_cookie: None,
                tls: None,
                upstream: UpstreamSettings::default(),
                backend_ca: None,
                plugins: DomainPlugins::default(),
                routes: Vec::new(),
                filters: Vec::new(),
            }],
            pools: Vec::new(),
            default_domain: None,
            breaker: BreakerSettings {
                threshold: 5,
                timeout: Duration::from_secs(30),
            },
            cert_cache_dir: Some("/var/lib/bbproxy/certs".into()),
            storage: None,
            plugins: Plugins::default(),
            acme: Acme {
                directory: "https://acme-v02.api.letsencrypt.org/directory".into(),
                email: None,
                ca_root: None,
                challenges: vec![Challenge::Http01, Challenge::TlsAlpn01],
            },
            metrics: MetricsSettings {
                log_interval: Duration::from_secs(60),
            },
            access_log: true,
            log_format: None,
            tracing: None,
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            retries: Retries::default(),
            shutdown_grace: Duration::from_secs(30),
        }
    );
    assert_eq!(c.domains[0].backends[0].authority(), "localhost:8080");
    assert_eq!(c.domains[0].backends[1].url_base(), "http://localhost:8081");
    assert_eq!(c.plugins.router, PluginSpec::builtin());
}

#[test]
fn minimal_file_gets_defaults() {
    let c = ok(r#"{"domains": {"a.test": ["10.0.0.1:80"]}}"#);
    assert_eq!(c.breaker, BreakerSettings::default());
    assert_eq!(c.cert_cache_dir, None);
    assert_eq!(c.listen, Listen::default());
    assert_eq!(c.timeouts.client_write, Duration::from_secs(60));
}

#[test]
fn control_characters_in_keys_keep_errors_on_one_line() {
    // Found by fuzz/fuzz_targets/config_parse.rs.
    let e = err(r#"{"domains": {"a\nb.com": ["127.0.0.1:1"]}}"#);
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.starts_with("config.json: domains.a\\nb.com: invalid domain name"),
        "{e}"
    );
    let e = err(r#"{"domains": {"a.com": ["127.0.0.1:1"]}, "x\ty": 1}"#);
    assert!(e.contains("unknown key `x\\ty`"), "{e}");
}

#[test]
fn metrics_and_access_log() {
    let c = ok(&with(
        r#""metrics": {"log_interval": "5m"}, "access_log": false"#,
    ));
    assert_eq!(c.metrics.log_interval, Duration::from_secs(300));
    assert!(!c.access_log);
    assert!(
        err(&with(r#""access_log": "yes""#))
            .contains("access_log: expected true or false, got \"yes\"")
    );
    assert!(
        err(&with(r#""metrics": {"log_interval": "0s"}"#))
            .contains("metrics.log_interval: must be greater than zero")
    );
}

#[test]
fn syntax_errors_have_line_and_column() {
    assert_eq!(
        err("{\n  \"domains\": {}\n  \"listen\": {}\n}"),
        "config.json:3:3: syntax error: expected `,` or `}`"
    );
    assert_eq!(
        err("{\"domains\": {\"a.test\": [\"a:1\"],}}"),
        "config.json:1:32: syntax error: trailing comma"
    );
    assert_eq!(
        err("{\"domains\": "),
        "config.json:1:12: syntax error: EOF while parsing a value"
    );
    assert_eq!(
        err("  \n"),
        "config.json: the file is empty; expected a JSON object like {\"domains\": {...}}"
    );
    assert_eq!(
        err("[1]"),
        "config.json: the top level must be a JSON object like {\"domains\": {...}}, got [1]"
    );
}

#[test]
fn duplicate_json_keys_are_errors() {
    assert_eq!(
        err("{\"domains\": {\n  \"a.test\": [\"a:1\"],\n  \"a.test\": [\"b:1\"]\n}}"),
        "config.json:3:10: duplicate key \"a.test\" (each key may appear once per object)"
    );
    assert_eq!(
        err(r#"{"domains": {"a.test": ["a:1"], "A.TEST": ["b:1"]}}"#),
        "config.json: domains.A.TEST: \"A.TEST\" is the same domain as \"a.test\", listed earlier"
    );
}

#[test]
fn unknown_keys_name_their_path() {
    assert_eq!(
        err(&with(r#""listn": {}"#)),
        "config.json: unknown key `listn` (expected one of: domains, upstreams, default_domain, listen, admin, circuit_breaker_threshold, circuit_breaker_timeout, cert_cache_dir, cert_cache_path, plugins, acme, metrics, access_log, log_format, tracing, timeouts, limits, retries, shutdown_grace, storage); did you mean `listen`?"
    );
    assert_eq!(
        err(r#"{"domains": {"example.com": {"backends": ["a:1"], "balancr": "x"}}}"#),
        "config.json: unknown key `domains.example.com.balancr` (expected one of: backends, balancer, tls, timeouts, limits, retries, health_check, protocol, pool, backend_ca, router, breaker, routes, filters); did you mean `balancer`?"
    );
    assert_eq!(
        err(r#"{"domains": {"example.com": {"backends": [{"address": "a:1", "wieght": 2}]}}}"#),
        "config.json: unknown key `domains.example.com.backends[0].wieght` (expected one of: address, weight); did you mean `weight`?"
    );
    assert!(
        err(&with(r#""metrics": {"interval": "1s"}"#))
            .contains("unknown key `metrics.interval` (expected one of: log_interval)")
    );
    match parse(&with(r#""zzz": 1"#), Path::new("c.json")) {
        Err(e) => assert_eq!(e.key(), Some("zzz")),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn breaker_settings() {
    let c = ok(&with(
        r#""circuit_breaker_threshold": 1, "circuit_breaker_timeout": "1m30s""#,
    ));
    assert_eq!(
        c.breaker,
        BreakerSettings {
            threshold: 1,
            timeout: Duration::from_secs(90),
        }
    );
    assert_eq!(
        err(&with(r#""circuit_breaker_threshold": 0"#)),
        "config.json: circuit_breaker_threshold: expected a whole number of failures, at least 1, got 0"
    );
    assert!(err(&with(r#""circuit_breaker_threshold": "5""#)).contains("got \"5\""));
}

#[test]
fn bad_durations() {
    let timeout = |v: &str| err(&with(&format!(r#""circuit_breaker_timeout": {v}"#)));
    assert_eq!(
        timeout("30"),
        "config.json: circuit_breaker_timeout: expected a duration like \"30s\", \"500ms\" or \"1m\", got 30"
    );
    assert_eq!(
        timeout("\"30\""),
        "config.json: circuit_breaker_timeout: invalid duration \"30\": missing unit after \"30\" (like \"30s\", \"500ms\" or \"1m\")"
    );
    assert_eq!(
        timeout("\"30x\""),
        "config.json: circuit_breaker_timeout: invalid duration \"30x\": unknown unit \"x\" (valid units: ns, us, µs, ms, s, m, h)"
    );
    assert_eq!(
        timeout("\"-5s\""),
        "config.json: circuit_breaker_timeout: invalid duration \"-5s\": durations cannot be negative"
    );
    assert_eq!(
        timeout("\"\""),
        "config.json: circuit_breaker_timeout: invalid duration \"\": empty; expected a duration like \"30s\", \"500ms\" or \"1m\""
    );
    assert_eq!(
        timeout("\"0s\""),
        "config.json: circuit_breaker_timeout: must be greater than zero, got \"0s\""
    );
}

#[test]
fn null_means_default() {
    let c = ok(
        r#"{"domains": {"a.test": ["a:1"]}, "listen": null, "circuit_breaker_timeout": null,
        "plugins": {"router": null}, "acme": null, "metrics": null, "access_log": null}"#,
    );
    assert_eq!(c.listen, Listen::default());
    assert_eq!(c.plugins, Plugins::default());
    assert!(c.access_log);
}

#[test]
fn long_values_are_shortened_in_messages() {
    let long = "x".repeat(200);
    let e = err(&with(&format!(r#""access_log": "{long}""#)));
    assert!(e.ends_with("…"), "{e}");
    assert!(e.len() < 120, "{e}");
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("config.json");
    std::fs::write(&path, ORIGINAL).unwrap_or_else(|e| panic!("{e}"));
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.origin, path);
    assert_eq!(c.domains.len(), 1);
}

#[test]
fn load_resolves_paths_against_the_file_directory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        with(r#""cert_cache_dir": "certs", "plugins": {"router": {"path": "r.wasm"}}"#),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.cert_cache_dir, Some(dir.path().join("certs")));
    assert_eq!(
        c.plugins.router.source,
        PluginSource::Path(dir.path().join("r.wasm"))
    );
}

#[test]
fn missing_file_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("nope.json");
    let e = load(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        e,
        format!(
            "config file {0} not found (looked in {0}); pass one with --config FILE",
            path.display()
        )
    );

    let e = load(Path::new("./surely-missing-config.json"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let cwd = std::env::current_dir().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        e.starts_with("config file ./surely-missing-config.json not found (looked in /"),
        "{e}"
    );
    assert!(e.contains(&cwd.display().to_string()), "{e}");
    assert!(e.ends_with("; pass one with --config FILE"), "{e}");
}

#[test]
fn unreadable_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let e = load(dir.path())
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        e.starts_with(&format!(
            "config file {}: cannot read: ",
            dir.path().display()
        )),
        "{e}"
    );
}

#[test]
fn syntax_error_in_a_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("config.json");
    std::fs::write(&path, "{\n  \"domains\": {\n    \"a\": [\"a:1\"]\n  ]\n}")
        .unwrap_or_else(|e| panic!("{e}"));
    let e = load(&path).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        e.starts_with(&format!("{}:4:3: syntax error: ", path.display())),
        "{e}"
    );
}

#[test]
fn the_digest_names_the_policy_not_its_layout() {
    let a = ok(&with(r#""access_log": true"#));
    let b = ok(&with(r#""access_log":   true"#));
    let c = ok(&with(r#""access_log": false"#));
    assert_eq!(a.sha256, b.sha256);
    assert_ne!(a.sha256, c.sha256);
}

/// The digest is public (`/status`, `bbproxy_config_info`): a weak Redis
/// password or admin token must not be guessable offline from it, and
/// replicas that differ only in those secrets run the same policy.
#[test]
fn the_digest_does_not_depend_on_secrets() {
    let redis = |url: &str| {
        ok(&with(&format!(
            r#""storage": {{"redis": {{"url": "{url}"}}}}"#
        )))
        .sha256
    };
    let one = redis("redis://:hunter2@10.0.0.5:6379/0");
    assert_eq!(one, redis("redis://:correct-horse@10.0.0.5:6379/0"));
    // Everything else in the URL is policy.
    assert_ne!(one, redis("redis://:hunter2@10.0.0.6:6379/0"));
    assert_ne!(one, redis("redis://app:hunter2@10.0.0.5:6379/0"));
    let admin = |token: &str| {
        ok(&with(&format!(
            r#""admin": {{"address": "127.0.0.1:9901", "token": "{token}"}}"#
        )))
        .sha256
    };
    assert_eq!(
        admin("0123456789abcdef-first"),
        admin("0123456789abcdef-second")
    );
}
