//! Whole-file tests through the public API: what operators write, and the
//! exact lines they get back when it is wrong.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::*;

const ORIGINAL: &str = r#"{
  "domains": { "example.com": ["localhost:8080", "localhost:8081"] },
  "circuit_breaker_threshold": 5,
  "circuit_breaker_timeout": "30s",
  "cert_cache_dir": "/var/lib/bbproxy/certs"
}"#;

fn ok(text: &str) -> Config {
    parse(text, Path::new("/etc/bbproxy/config.json")).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match parse(text, Path::new("config.json")) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// A minimal valid document with `extra` merged in at the top level.
fn with(extra: &str) -> String {
    format!(r#"{{"domains": {{"example.com": ["localhost:8080"]}}, {extra}}}"#)
}

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn backend(host: &str, port: u16) -> Backend {
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
            listen: Listen {
                http: Some(sock("0.0.0.0:80")),
                https: Some(sock("0.0.0.0:443")),
                redirect_http: false,
            },
            admin: Some(sock("127.0.0.1:9901")),
            domains: vec![Domain {
                name: "example.com".into(),
                backends: vec![backend("localhost", 8080), backend("localhost", 8081)],
                balancer: "round-robin".into(),
                tls: None,
                upstream: UpstreamSettings::default(),
                backend_ca: None,
            }],
            default_domain: None,
            breaker: BreakerSettings {
                threshold: 5,
                timeout: Duration::from_secs(30),
            },
            cert_cache_dir: Some("/var/lib/bbproxy/certs".into()),
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
fn cert_cache_path_is_an_alias() {
    let c = ok(&with(r#""cert_cache_path": "certs""#));
    assert_eq!(c.cert_cache_dir, Some(PathBuf::from("/etc/bbproxy/certs")));
    let c = ok(&with(r#""cert_cache_dir": """#));
    assert_eq!(c.cert_cache_dir, None);
}

#[test]
fn cert_cache_dir_and_path_together_is_an_error() {
    assert_eq!(
        err(&with(r#""cert_cache_dir": "a", "cert_cache_path": "b""#)),
        "config.json: cert_cache_path: is an alias of cert_cache_dir; give only one of them"
    );
}

#[test]
fn domains_keep_file_order_and_are_normalised() {
    let c = ok(r#"{"domains": {
        "Zeta.Example.COM.": ["z:1"],
        "*.example.com": ["w:1"],
        "alpha.example.com": ["a:1"],
        "::1": ["b:2"]
    }}"#);
    let names: Vec<_> = c.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "zeta.example.com",
            "*.example.com",
            "alpha.example.com",
            "[::1]"
        ]
    );
    assert!(c.domain("ZETA.example.com").is_some());
    assert!(c.domain("other.example.com").is_none());
}

#[test]
fn extended_domain_form() {
    let c = ok(r#"{"domains": {
        "example.com": {
            "backends": [
                {"address": "localhost:8080", "weight": 3},
                "https://api.internal",
                {"address": "http://[::1]:9000"}
            ],
            "balancer": "weighted-round-robin",
            "tls": {"cert": "certs/a.pem", "key": "/keys/a.key"}
        },
        "b.example.com": {"backends": ["b:1"], "balancer": "least-request", "tls": "acme"},
        "c.example.com": {"backends": ["c:1"], "balancer": "my-plugin", "tls": "off"},
        "d.example.com": {"backends": ["d:1"]}
    }}"#);
    let a = &c.domains[0];
    assert_eq!(a.balancer, "weighted-round-robin");
    assert_eq!(
        a.backends,
        [
            Backend {
                weight: 3,
                ..backend("localhost", 8080)
            },
            Backend {
                scheme: Scheme::Https,
                ..backend("api.internal", 443)
            },
            backend("::1", 9000),
        ]
    );
    assert_eq!(a.backends[1].url_base(), "https://api.internal:443");
    assert_eq!(a.backends[2].authority(), "[::1]:9000");
    assert_eq!(
        a.tls,
        Some(TlsSource::Files {
            cert: "/etc/bbproxy/certs/a.pem".into(),
            key: "/keys/a.key".into(),
        })
    );
    assert_eq!(c.domains[1].balancer, "least-request");
    assert_eq!(c.domains[1].tls, Some(TlsSource::Acme));
    assert_eq!(c.domains[2].balancer, "my-plugin");
    assert_eq!(c.domains[2].tls, Some(TlsSource::Off));
    assert_eq!(c.domains[3].balancer, "round-robin");
    assert_eq!(c.domains[3].tls, None);
}

#[test]
fn listen_forms() {
    let c = ok(&with(
        r#""listen": {"http": "127.0.0.1:8080", "https": ":8443", "redirect_http": true}"#,
    ));
    assert_eq!(
        c.listen,
        Listen {
            http: Some(sock("127.0.0.1:8080")),
            https: Some(sock("0.0.0.0:8443")),
            redirect_http: true,
        }
    );
    let c = ok(&with(r#""listen": {"http": "[::1]:0", "https": null}"#));
    assert_eq!(c.listen.http, Some(sock("[::1]:0")));
    assert_eq!(c.listen.https, None);
    let c = ok(&with(r#""listen": {"https": "localhost:8443"}"#));
    assert_eq!(c.listen.http, None);
    assert_eq!(c.listen.https, Some(sock("127.0.0.1:8443")));
}

#[test]
fn listen_errors() {
    assert_eq!(
        err(&with(r#""listen": {"http": "localhost:99999"}"#)),
        "config.json: listen.http: invalid address \"localhost:99999\": port must be 1-65535 (or 0 for any free port)"
    );
    assert_eq!(
        err(&with(r#""listen": {"http": "127.0.0.1"}"#)),
        "config.json: listen.http: invalid address \"127.0.0.1\": missing port; expected \"host:port\", \":port\" or \"[::1]:port\""
    );
    assert!(
        err(&with(r#""listen": {"https": "example.com:443"}"#))
            .contains("listen.https: invalid address \"example.com:443\": host \"example.com\" must be an IP address or localhost")
    );
    assert_eq!(
        err(&with(r#""listen": {"http": 8080}"#)),
        "config.json: listen.http: expected an address like \"127.0.0.1:8080\" or \":8080\", got 8080"
    );
    assert!(err(&with(r#""listen": {}"#)).starts_with("config.json: listen: no listener left"));
    assert!(err(&with(r#""listen": {"http": null, "https": null}"#)).contains("no listener left"));
    assert_eq!(
        err(&with(
            r#""listen": {"http": ":8080", "redirect_http": true}"#
        )),
        "config.json: listen.redirect_http: true needs listen.https to redirect to"
    );
    assert_eq!(
        err(&with(
            r#""listen": {"http": ":8080", "https": "127.0.0.1:8080"}"#
        )),
        "config.json: listen.https: 127.0.0.1:8080 clashes with listen.http 0.0.0.0:8080"
    );
}

#[test]
fn admin_forms() {
    assert_eq!(ok(&with(r#""admin": null"#)).admin, None);
    assert_eq!(ok(&with(r#""admin": "off""#)).admin, None);
    assert_eq!(
        ok(&with(r#""admin": "127.0.0.1:9000""#)).admin,
        Some(sock("127.0.0.1:9000"))
    );
    assert_eq!(
        ok(&with(r#""admin": "[::1]:0""#)).admin,
        Some(sock("[::1]:0"))
    );
    assert_eq!(
        ok(&with(
            r#""admin": {"address": "0.0.0.0:9901", "allow_non_loopback": true}"#
        ))
        .admin,
        Some(sock("0.0.0.0:9901"))
    );
    assert_eq!(
        ok(&with(r#""admin": {"address": "localhost:9902"}"#)).admin,
        Some(sock("127.0.0.1:9902"))
    );
}

#[test]
fn admin_non_loopback_needs_the_flag() {
    assert_eq!(
        err(&with(r#""admin": ":9901""#)),
        "config.json: admin: 0.0.0.0:9901 is not a loopback address, and the admin endpoints (/metrics, /status, /healthz) have no authentication; to expose them anyway write \"admin\": {\"address\": \"0.0.0.0:9901\", \"allow_non_loopback\": true}"
    );
    assert!(
        err(&with(
            r#""admin": {"address": "10.1.2.3:9901", "allow_non_loopback": false}"#
        ))
        .contains("allow_non_loopback")
    );
}

#[test]
fn admin_errors() {
    assert!(
        err(&with(r#""admin": 9901"#))
            .starts_with("config.json: admin: expected \"127.0.0.1:9901\", \"off\"")
    );
    assert!(
        err(&with(r#""admin": "127.0.0.1""#))
            .contains("admin: invalid address \"127.0.0.1\": missing port")
    );
    assert_eq!(
        err(&with(
            r#""admin": "127.0.0.1:8080", "listen": {"http": "127.0.0.1:8080"}"#
        )),
        "config.json: admin: 127.0.0.1:8080 clashes with listen.http 127.0.0.1:8080"
    );
    assert!(
        err(&with(r#""admin": {"adress": "127.0.0.1:1"}"#)).contains("unknown key `admin.adress`")
    );
}

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
    assert!(err(&with(r#""plugins": {"routr": "builtin"}"#)).contains("unknown key `plugins.routr` (expected one of: router, balancer, breaker); did you mean `router`?"));
}

#[test]
fn plugin_filters_are_rejected_not_ignored() {
    for filters in [
        r#"[{"path": "/opt/f.wasm", "on_fault": "fail-open"}]"#,
        "[]",
        "{}",
    ] {
        let e = err(&with(&format!(r#""plugins": {{"filters": {filters}}}"#)));
        assert!(
            e.contains("plugins.filters: not supported yet;"),
            "{filters}: {e}"
        );
        assert!(e.contains("remove the key"), "{e}");
    }
}

#[test]
fn acme_settings() {
    let c = ok(&with(
        r#""acme": {"directory": "https://localhost:14000/dir", "email": "mailto:ops@example.com", "ca_root": "pebble.pem", "challenges": ["tls-alpn-01"]}"#,
    ));
    assert_eq!(
        c.acme,
        Acme {
            directory: "https://localhost:14000/dir".into(),
            email: Some("ops@example.com".into()),
            ca_root: Some("/etc/bbproxy/pebble.pem".into()),
            challenges: vec![Challenge::TlsAlpn01],
        }
    );
}

#[test]
fn acme_errors() {
    assert!(
        err(&with(r#""acme": {"directory": "ftp://x"}"#))
            .contains("acme.directory: expected an http(s) URL")
    );
    assert!(
        err(&with(r#""acme": {"directory": "https://"}"#))
            .contains("acme.directory: expected an http(s) URL")
    );
    assert!(
        err(&with(r#""acme": {"email": "nobody"}"#))
            .contains("acme.email: expected an email address")
    );
    assert!(err(&with(r#""acme": {"challenges": []}"#)).contains("acme.challenges: empty"));
    assert_eq!(
        err(&with(r#""acme": {"challenges": ["dns-01"]}"#)),
        "config.json: acme.challenges[0]: expected \"http-01\" or \"tls-alpn-01\" (dns-01 is not supported), got \"dns-01\""
    );
    assert!(
        err(&with(r#""acme": {"challenges": ["http-01", "http-01"]}"#))
            .contains("acme.challenges[1]: \"http-01\" is listed twice")
    );
}

#[test]
fn tls_needs_a_listener_and_a_usable_challenge() {
    assert_eq!(
        err(
            r#"{"domains": {"a.test": {"backends": ["a:1"], "tls": "acme"}}, "listen": {"http": ":80"}}"#
        ),
        "config.json: domains.a.test.tls: a certificate needs an HTTPS listener; set listen.https or use \"off\""
    );
    assert!(
        err(r#"{"domains": {"a.test": {"backends": ["a:1"], "tls": "acme"}}, "listen": {"https": ":443"}, "acme": {"challenges": ["http-01"]}}"#)
            .contains("domains.a.test.tls: ACME has no usable challenge")
    );
    assert!(
        err(r#"{"domains": {"*.a.test": {"backends": ["a:1"], "tls": "acme"}}}"#)
            .contains("domains.*.a.test.tls: ACME cannot issue a wildcard certificate")
    );
    ok(
        r#"{"domains": {"a.test": {"backends": ["a:1"], "tls": "off"}}, "listen": {"http": ":80"}}"#,
    );
}

#[test]
fn tls_errors() {
    assert!(err(r#"{"domains": {"a.test": {"backends": ["a:1"], "tls": "on"}}}"#).contains(
        "domains.a.test.tls: expected \"acme\", \"off\" or {\"cert\": \"cert.pem\", \"key\": \"key.pem\"}, got \"on\""
    ));
    assert!(
        err(r#"{"domains": {"a.test": {"backends": ["a:1"], "tls": {"cert": "c.pem"}}}}"#)
            .contains("domains.a.test.tls.key: required")
    );
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
fn default_domain_must_be_a_key_of_domains() {
    let c = ok(&with(r#""default_domain": "Example.com""#));
    assert_eq!(c.default_domain.as_deref(), Some("example.com"));
    assert_eq!(
        err(&with(r#""default_domain": "other.com""#)),
        "config.json: default_domain: \"other.com\" is not a key of domains (they are: example.com)"
    );
    assert!(
        err(&with(r#""default_domain": 1"#))
            .contains("default_domain: expected one of the keys of domains, got 1")
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
        "config.json: unknown key `listn` (expected one of: domains, default_domain, listen, admin, circuit_breaker_threshold, circuit_breaker_timeout, cert_cache_dir, cert_cache_path, plugins, acme, metrics, access_log, timeouts, limits, retries, shutdown_grace); did you mean `listen`?"
    );
    assert_eq!(
        err(r#"{"domains": {"example.com": {"backends": ["a:1"], "balancr": "x"}}}"#),
        "config.json: unknown key `domains.example.com.balancr` (expected one of: backends, balancer, tls, timeouts, limits, retries, health_check, protocol, pool, backend_ca); did you mean `balancer`?"
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
fn backend_address_errors() {
    let domain = |backends: &str| err(&format!(r#"{{"domains": {{"example.com": {backends}}}}}"#));
    assert_eq!(
        domain(r#"["localhost:99999"]"#),
        "config.json: domains.example.com[0]: invalid address \"localhost:99999\": port must be 1-65535"
    );
    assert_eq!(
        domain(r#"["localhost:8080", "localhost"]"#),
        "config.json: domains.example.com[1]: invalid address \"localhost\": missing port (write \"host:8080\", or give a scheme as in \"http://host\")"
    );
    assert_eq!(
        domain(r#"["bad host!:80"]"#),
        "config.json: domains.example.com[0]: invalid address \"bad host!:80\": invalid character ' ' (letters, digits, '-', '_' and '.' only)"
    );
    assert!(domain(r#"{"backends": [{"address": "ftp://x:1"}]}"#)
        .contains("domains.example.com.backends[0].address: invalid address \"ftp://x:1\": unsupported scheme"));
    assert!(domain(r#"[8080]"#).contains("domains.example.com[0]: expected an address like"));
    assert!(
        domain(r#""localhost:8080""#).contains("domains.example.com: expected a list of backends")
    );
    assert!(domain(r#"{"backends": [{"weight": 2}]}"#).contains("backends[0].address: required"));
    assert!(domain(r#"{"balancer": "x"}"#).contains("domains.example.com.backends: required"));
    assert!(
        domain(r#"{"backends": ["a:1"], "balancer": ""}"#)
            .contains("domains.example.com.balancer: expected a balancer name")
    );
}

#[test]
fn bad_weights() {
    let domain = |weight: &str| {
        err(&format!(
            r#"{{"domains": {{"example.com": {{"backends": [{{"address": "a:1", "weight": {weight}}}]}}}}}}"#
        ))
    };
    assert_eq!(
        domain("0"),
        "config.json: domains.example.com.backends[0].weight: weight must be a whole number from 1 to 1000, got 0"
    );
    assert!(domain("1001").contains("got 1001"));
    assert!(domain("-1").contains("got -1"));
    assert!(domain("1.5").contains("got 1.5"));
    assert!(domain("\"2\"").contains("got \"2\""));
}

#[test]
fn empty_and_duplicate_backends() {
    assert_eq!(
        err(r#"{"domains": {"example.com": []}}"#),
        "config.json: domains.example.com: empty backend list; list at least one backend, like [\"localhost:8080\"]"
    );
    assert!(
        err(r#"{"domains": {"example.com": {"backends": []}}}"#)
            .contains("domains.example.com.backends: empty backend list")
    );
    assert_eq!(
        err(r#"{"domains": {"example.com": ["localhost:8080", "http://LOCALHOST:8080/"]}}"#),
        "config.json: domains.example.com[1]: duplicate backend http://localhost:8080 (already listed as domains.example.com[0]); to send it more traffic, give it a weight"
    );
    // Different schemes are different backends.
    ok(r#"{"domains": {"example.com": ["http://a:8443", "https://a:8443"]}}"#);
}

#[test]
fn domains_are_required() {
    assert_eq!(
        err("{}"),
        "config.json: domains: at least one domain is required, e.g. \"domains\": {\"example.com\": [\"localhost:8080\"]}"
    );
    assert!(
        err(r#"{"domains": {}}"#)
            .starts_with("config.json: domains: at least one domain is required")
    );
    assert!(err(r#"{"domains": ["a"]}"#).contains("domains: expected an object like"));
    assert!(err(r#"{"domains": {"exa mple.com": ["a:1"]}}"#).contains(
        "domains.exa mple.com: invalid domain name \"exa mple.com\": invalid character ' '"
    ));
    assert!(
        err(r#"{"domains": {"a.*.com": ["a:1"]}}"#)
            .contains("wildcard must be the whole first label")
    );
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
fn forwarding_settings_have_defaults_and_domain_overrides() {
    let c = ok(r#"{
        "timeouts": {"client_header": "5s", "keep_alive": "0", "client_write": "1500ms",
                     "upstream_connect": "1s"},
        "limits": {"max_header_bytes": "32KiB", "max_headers": 50, "max_uri_length": 4096,
                   "max_body_size": "1MiB", "max_connections": 10,
                   "max_connections_per_backend": 4, "backend_queue": 2},
        "retries": {"attempts": 3},
        "shutdown_grace": "2s",
        "domains": {
            "a.test": ["10.0.0.1:80"],
            "b.test": {"backends": ["10.0.0.2:80"],
                       "timeouts": {"upstream_connect": "250ms", "client_body": "3s"},
                       "limits": {"max_body_size": 0},
                       "retries": {"attempts": 1},
                       "health_check": {"path": "/up", "interval": "1s", "unhealthy_threshold": 1},
                       "protocol": "h2c",
                       "pool": {"max_idle": 0, "idle_timeout": "5s"}}
        }
    }"#);
    assert_eq!(c.timeouts.client_header, Duration::from_secs(5));
    assert_eq!(c.timeouts.keep_alive, Duration::ZERO);
    assert_eq!(c.timeouts.client_write, Duration::from_millis(1500));
    assert_eq!(c.limits.max_header_bytes, 32 << 10);
    assert_eq!(c.limits.max_connections, 10);
    assert_eq!(c.shutdown_grace, Duration::from_secs(2));
    let a = &c.domains[0].upstream;
    assert_eq!(a.timeouts.connect, Duration::from_secs(1));
    assert_eq!(a.timeouts.client_body, Duration::from_secs(30));
    assert_eq!(a.limits.max_body_size, 1 << 20);
    assert_eq!(a.limits.max_connections_per_backend, 4);
    assert_eq!(a.retries.attempts, 3);
    assert_eq!(a.protocol, UpstreamProtocol::Http1);
    assert_eq!(a.health_check, None);
    let b = &c.domains[1].upstream;
    assert_eq!(b.timeouts.connect, Duration::from_millis(250));
    assert_eq!(b.timeouts.client_body, Duration::from_secs(3));
    assert_eq!(b.limits.max_body_size, 0);
    assert_eq!(b.limits.backend_queue, 2);
    assert_eq!(b.retries.attempts, 1);
    assert_eq!(b.protocol, UpstreamProtocol::H2c);
    assert_eq!(b.pool.max_idle, 0);
    let h = b.health_check.as_ref().unwrap();
    assert_eq!(
        (
            h.path.as_str(),
            h.interval,
            h.unhealthy_threshold,
            h.healthy_threshold
        ),
        ("/up", Duration::from_secs(1), 1, 2)
    );
}

#[test]
fn forwarding_settings_errors_name_the_key() {
    assert!(
        err(&with(r#""timeouts": {"client_headers": "5s"}"#))
            .contains("unknown key `timeouts.client_headers`")
    );
    assert!(
        err(&with(r#""timeouts": {"upstream_connect": "5"}"#))
            .contains("timeouts.upstream_connect: invalid duration")
    );
    assert!(err(&with(r#""timeouts": {"client_write": 60}"#)).contains("timeouts.client_write: "));
    assert!(
        err(&with(r#""limits": {"max_header_bytes": 100}"#))
            .contains("limits.max_header_bytes: 100 is too small")
    );
    assert!(
        err(&with(r#""retries": {"attempts": 0}"#))
            .contains("retries.attempts: expected a whole number of at least 1")
    );
    let domain = |extra: &str| {
        err(&format!(
            r#"{{"domains": {{"a.test": {{"backends": ["x:1"], {extra}}}}}}}"#
        ))
    };
    let header = domain(r#""timeouts": {"client_header": "1s"}"#);
    assert!(
        header.contains("domains.a.test.timeouts.client_header: only a top-level setting (timeouts.client_header)"),
        "{header}"
    );
    assert!(
        domain(r#""timeouts": {"keep_alive": "1"}"#)
            .contains("domains.a.test.timeouts.keep_alive: invalid duration")
    );
    assert!(
        domain(r#""timeouts": {"client_write": -1}"#)
            .contains("domains.a.test.timeouts.client_write: ")
    );
    assert!(
        domain(r#""protocol": "spdy""#)
            .contains("domains.a.test.protocol: expected \"http1\", \"h2c\" or \"h2\"")
    );
    assert!(
        domain(r#""health_check": {"path": "healthz"}"#)
            .contains("domains.a.test.health_check.path: expected an absolute request path")
    );
    assert!(domain(r#""pool": {"max_idle": -1}"#).contains("domains.a.test.pool.max_idle"));
}

#[test]
fn keep_alive_and_client_write_are_inherited_or_overridden_per_domain() {
    let c = ok(r#"{
        "timeouts": {"keep_alive": "10s", "client_write": "1500ms"},
        "domains": {
            "inherit.test": ["10.0.0.1:80"],
            "short.test": {"backends": ["10.0.0.2:80"],
                           "timeouts": {"keep_alive": "400ms", "client_write": "500ms"}},
            "off.test": {"backends": ["10.0.0.3:80"],
                         "timeouts": {"keep_alive": "0", "client_write": "0"}}
        }
    }"#);
    // The connection's own values stay the top-level ones.
    assert_eq!(c.timeouts.keep_alive, Duration::from_secs(10));
    assert_eq!(c.timeouts.client_write, Duration::from_millis(1500));
    let t = |i: usize| {
        let t = &c.domains[i].upstream.timeouts;
        (t.keep_alive, t.client_write)
    };
    assert_eq!(t(0), (Duration::from_secs(10), Duration::from_millis(1500)));
    assert_eq!(
        t(1),
        (Duration::from_millis(400), Duration::from_millis(500))
    );
    assert_eq!(t(2), (Duration::ZERO, Duration::ZERO));
    // Without a top-level `timeouts`, domains inherit the defaults.
    let d = ok(r#"{"domains": {"a.test": ["10.0.0.1:80"]}}"#);
    let a = &d.domains[0].upstream.timeouts;
    assert_eq!(
        (a.keep_alive, a.client_write),
        (d.timeouts.keep_alive, d.timeouts.client_write)
    );
}

#[test]
fn h2_needs_https_backends_and_h2c_plain_ones() {
    let c =
        ok(r#"{"domains": {"a.test": {"backends": ["https://10.0.0.1:8443"], "protocol": "h2"}}}"#);
    assert_eq!(c.domains[0].upstream.protocol, UpstreamProtocol::H2);
    let mixed = err(
        r#"{"domains": {"a.test": {"backends": ["https://10.0.0.1", "10.0.0.2:8443"], "protocol": "h2"}}}"#,
    );
    assert!(
        mixed.contains("domains.a.test.protocol: \"h2\" is HTTP/2 over TLS (ALPN), but backend http://10.0.0.2:8443 is plain HTTP; write it as https://10.0.0.2:8443"),
        "{mixed}"
    );
    let h2c =
        err(r#"{"domains": {"a.test": {"backends": ["https://10.0.0.1"], "protocol": "h2c"}}}"#);
    assert!(
        h2c.contains("domains.a.test.protocol: \"h2c\" is HTTP/2 over plain TCP, but backend https://10.0.0.1:443 uses TLS"),
        "{h2c}"
    );
}
