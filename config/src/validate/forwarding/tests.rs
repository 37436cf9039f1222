//! Timeouts, limits, retries, health checks, protocol and pool, top level
//! and per domain, through the public API: what operators write, and the
//! exact lines they get back when it is wrong.

use std::time::Duration;

use crate::tests::{err, ok, with};
use crate::*;

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
