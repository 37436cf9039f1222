//! `domains` and `default_domain` (backends, weights, certificate
//! sources), through the public API: what operators write, and the exact
//! lines they get back when it is wrong.

use serde_json::json;
use std::time::Duration;

use crate::tests::{backend, err, ok, with};
use crate::*;

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
    }, "plugins": {"balancer": {"path": "lb.wasm"}}}"#);
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

/// A domain's own plugins: `"balancer": {"path": ...}` (with `kind`, the
/// name it and its fallback see), `"router"` and `"breaker"` objects, each
/// a full plugin entry; the string form and `{"kind"}` keep plugins.balancer.
#[test]
fn domain_plugin_forms() {
    let c = ok(r#"{"domains": {
        "a.test": {"backends": ["127.0.0.1:1"], "balancer": "least-request"},
        "b.test": {"backends": ["127.0.0.1:2"], "balancer": {"kind": "weighted-round-robin"}},
        "c.test": {"backends": ["127.0.0.1:3"],
                   "balancer": {"path": "lb.wasm", "kind": "sticky", "timeout": "3ms", "on_fault": "fail-open",
                                "fault_backoff": {"after": 2}},
                   "router": {"path": "r.wasm", "config": {"x": 1}},
                   "breaker": {"path": "b.wasm", "memory_limit": "1MiB"}}
    }}"#);
    let [a, b, cc] = &c.domains[..] else { panic!() };
    assert_eq!(
        (a.balancer.as_str(), &a.plugins),
        ("least-request", &DomainPlugins::default())
    );
    assert_eq!(
        (b.balancer.as_str(), &b.plugins),
        ("weighted-round-robin", &DomainPlugins::default())
    );
    assert_eq!(cc.balancer, "sticky");
    let lb = cc.plugins.balancer.as_ref().unwrap();
    assert_eq!(lb.source, PluginSource::Path("/etc/bbproxy/lb.wasm".into()));
    assert_eq!(
        (lb.timeout, lb.on_fault, lb.fault_backoff.after),
        (Duration::from_millis(3), OnFault::FailOpen, 2)
    );
    let r = cc.plugins.router.as_ref().unwrap();
    assert_eq!(
        (r.config.clone(), r.on_fault),
        (json!({"x": 1}), OnFault::FailClosed)
    );
    let br = cc.plugins.breaker.as_ref().unwrap();
    assert_eq!(
        (br.memory_limit, br.timeout),
        (1 << 20, DEFAULT_PLUGIN_TIMEOUT)
    );
    // Without a kind the plugin sees round-robin.
    let c = ok(
        r#"{"domains": {"a.test": {"backends": ["127.0.0.1:1"], "balancer": {"path": "lb.wasm"}}}}"#,
    );
    assert_eq!(c.domains[0].balancer, "round-robin");
}

#[test]
fn domain_plugin_errors() {
    let domain = |extra: &str| {
        err(&format!(
            r#"{{"domains": {{"a.test": {{"backends": ["127.0.0.1:1"], {extra}}}}}}}"#
        ))
    };
    let e = domain(r#""balancer": {"path": "lb.wasm", "timout": "1s"}"#);
    assert!(
        e.contains("unknown key `domains.a.test.balancer.timout`"),
        "{e}"
    );
    assert!(e.contains("kind, path, config, timeout"), "{e}");
    let e = domain(r#""balancer": {"kind": "least-request", "timeout": "1s"}"#);
    assert!(e.contains("domains.a.test.balancer.timeout: applies to the domain's own balancer plugin: add \"path\""), "{e}");
    let e = domain(r#""balancer": {"kind": ""}"#);
    assert!(
        e.contains("domains.a.test.balancer.kind: expected a balancer name"),
        "{e}"
    );
    let e = domain(r#""router": {"config": {}}"#);
    assert!(
        e.contains("domains.a.test.router.path: required: the domain's own router plugin"),
        "{e}"
    );
    let e = domain(r#""breaker": "b.wasm""#);
    assert!(
        e.contains("domains.a.test.breaker: expected an object like {\"path\""),
        "{e}"
    );
    let e = domain(r#""breaker": {"path": "b.wasm", "kind": "x"}"#);
    assert!(
        e.contains("unknown key `domains.a.test.breaker.kind`"),
        "{e}"
    );
    let e = domain(r#""router": {"path": "r.wasm", "on_fault": "maybe"}"#);
    assert!(
        e.contains("domains.a.test.router.on_fault: expected \"fail-open\" or \"fail-closed\""),
        "{e}"
    );
}

/// The built-in balancer kinds: `consistent-hash` with what it hashes
/// (client_ip by default), `random` and `first`; each name the built-in
/// balancer would refuse is caught with its key path.
#[test]
fn builtin_balancer_kinds_and_hash_on() {
    let c = ok(r#"{"domains": {
        "a.test": {"backends": ["127.0.0.1:1"], "balancer": {"kind": "consistent-hash", "hash_on": "header:X-User"}},
        "b.test": {"backends": ["127.0.0.1:2"], "balancer": "consistent-hash"},
        "c.test": {"backends": ["127.0.0.1:3"], "balancer": {"kind": "consistent-hash", "hash_on": "cookie:session"}},
        "d.test": {"backends": ["127.0.0.1:4"], "balancer": {"kind": "consistent-hash", "hash_on": "query:key"}},
        "e.test": {"backends": ["127.0.0.1:5"], "balancer": {"kind": "consistent-hash", "hash_on": "path"}},
        "f.test": {"backends": ["127.0.0.1:6"], "balancer": "random"},
        "g.test": {"backends": ["127.0.0.1:7"], "balancer": {"kind": "first"}},
        "h.test": ["127.0.0.1:8"]
    }}"#);
    let got: Vec<(&str, Option<String>)> = c
        .domains
        .iter()
        .map(|d| {
            (
                d.balancer.as_str(),
                d.hash_on.as_ref().map(|h| h.to_string()),
            )
        })
        .collect();
    let hashed = |on: &str| ("consistent-hash", Some(on.to_owned()));
    assert_eq!(
        got,
        [
            hashed("header:x-user"),
            hashed("client_ip"),
            hashed("cookie:session"),
            hashed("query:key"),
            hashed("path"),
            ("random", None),
            ("first", None),
            ("round-robin", None),
        ]
    );
    // A domain's own plugin with a built-in kind: its fail-open fallback
    // hashes as told.
    let c = ok(r#"{"domains": {"a.test": {"backends": ["127.0.0.1:1"],
        "balancer": {"path": "lb.wasm", "kind": "consistent-hash", "hash_on": "client_ip"}}}}"#);
    assert_eq!(c.domains[0].hash_on, Some(HashOn::ClientIp));

    let domain = |balancer: &str| {
        err(&format!(
            r#"{{"domains": {{"a.test": {{"backends": ["127.0.0.1:1"], "balancer": {balancer}}}}}}}"#
        ))
    };
    for (balancer, want) in [
        (
            r#"{"kind": "consistent-hash", "hash_on": "header:"}"#,
            "config.json: domains.a.test.balancer.hash_on: expected \"header:<name>\", \"cookie:<name>\", \"query:<key>\", \"client_ip\" or \"path\", got \"header:\"",
        ),
        (
            r#"{"kind": "consistent-hash", "hash_on": "ip"}"#,
            "domains.a.test.balancer.hash_on: expected \"header:<name>\"",
        ),
        (
            r#"{"kind": "consistent-hash", "hash_on": 3}"#,
            "domains.a.test.balancer.hash_on: expected \"header:<name>\", \"cookie:<name>\", \"query:<key>\", \"client_ip\" or \"path\", got 3",
        ),
        (
            r#"{"kind": "consistent-hash", "hash_on": "header:x user"}"#,
            "domains.a.test.balancer.hash_on: \"x user\" is not a valid header name",
        ),
        (
            r#"{"kind": "consistent-hash", "hash_on": "cookie:a=b"}"#,
            "domains.a.test.balancer.hash_on: \"a=b\" is not a valid cookie name",
        ),
        (
            r#"{"kind": "round-robin", "hash_on": "path"}"#,
            "domains.a.test.balancer.hash_on: applies to \"kind\": \"consistent-hash\" only (this balancer is \"round-robin\")",
        ),
        (
            r#"{"hash_on": "path"}"#,
            "domains.a.test.balancer.hash_on: applies to \"kind\": \"consistent-hash\" only",
        ),
        (
            r#"{"kind": "consistant-hash", "hash_on": "path"}"#,
            "domains.a.test.balancer.hash_on: applies to \"kind\": \"consistent-hash\" only (this balancer is \"consistant-hash\")",
        ),
        (
            r#"{"kind": "rnadom"}"#,
            "config.json: domains.a.test.balancer: unknown balancer \"rnadom\" (built-in: round-robin, weighted-round-robin, least-request, consistent-hash, random, first, sticky-cookie); a custom balancer's name needs a balancer plugin",
        ),
        (
            r#""sticky""#,
            "domains.a.test.balancer: unknown balancer \"sticky\"",
        ),
    ] {
        let e = domain(balancer);
        assert!(e.contains(want), "{balancer}: {e}");
    }
    // A custom name is fine where a plugin balances the domain.
    let c = ok(
        r#"{"domains": {"a.test": {"backends": ["127.0.0.1:1"], "balancer": "sticky"}},
        "plugins": {"balancer": {"path": "lb.wasm"}}}"#,
    );
    assert_eq!(c.domains[0].balancer, "sticky");
}

/// `sticky-cookie` on a domain and on a pool, with its cookie's name; a
/// missing, misplaced or invalid `cookie`, the bare name (which has no
/// cookie) and an unknown key are each named by their key path.
#[test]
fn sticky_cookie_needs_a_valid_cookie_name() {
    let c = ok(r#"{"domains": {
        "a.test": {"backends": ["127.0.0.1:1", "127.0.0.1:2"], "balancer": {"kind": "sticky-cookie", "cookie": "bb_srv"}},
        "b.test": ["127.0.0.1:3"]},
        "upstreams": {"api": {"backends": ["127.0.0.1:4"], "balancer": {"kind": "sticky-cookie", "cookie": "API-srv.1"}}}}"#);
    let got: Vec<(&str, &str, Option<&str>)> = c
        .upstreams()
        .map(|d| {
            (
                d.name.as_str(),
                d.balancer.as_str(),
                d.sticky_cookie.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("a.test", "sticky-cookie", Some("bb_srv")),
            ("b.test", "round-robin", None),
            ("api", "sticky-cookie", Some("API-srv.1")),
        ]
    );
    assert_eq!(c.domains[0].hash_on, None);
    // A domain's own plugin with the kind: its fail-open fallback keeps
    // the cookie.
    let c = ok(r#"{"domains": {"a.test": {"backends": ["127.0.0.1:1"],
        "balancer": {"path": "lb.wasm", "kind": "sticky-cookie", "cookie": "s"}}}}"#);
    assert_eq!(c.domains[0].sticky_cookie.as_deref(), Some("s"));
    assert!(c.domains[0].plugins.balancer.is_some());

    let domain = |balancer: &str| {
        err(&format!(
            r#"{{"domains": {{"a.test": {{"backends": ["127.0.0.1:1"], "balancer": {balancer}}}}}}}"#
        ))
    };
    for (balancer, want) in [
        (
            r#"{"kind": "sticky-cookie"}"#,
            "config.json: domains.a.test.balancer.cookie: required with \"kind\": \"sticky-cookie\": the name of the cookie that keeps a client on its backend, like \"bb_srv\"",
        ),
        (
            r#""sticky-cookie""#,
            "config.json: domains.a.test.balancer: \"sticky-cookie\" needs the name of its cookie: {\"kind\": \"sticky-cookie\", \"cookie\": \"bb_srv\"}",
        ),
        (
            r#"{"kind": "sticky-cookie", "cookie": "a=b"}"#,
            "config.json: domains.a.test.balancer.cookie: \"a=b\" is not a valid cookie name",
        ),
        (
            r#"{"kind": "sticky-cookie", "cookie": "bb srv"}"#,
            "domains.a.test.balancer.cookie: \"bb srv\" is not a valid cookie name",
        ),
        (
            r#"{"kind": "sticky-cookie", "cookie": "a;b"}"#,
            "domains.a.test.balancer.cookie: \"a;b\" is not a valid cookie name",
        ),
        (
            r#"{"kind": "sticky-cookie", "cookie": ""}"#,
            "domains.a.test.balancer.cookie: \"\" is not a valid cookie name",
        ),
        (
            r#"{"kind": "sticky-cookie", "cookie": 7}"#,
            "domains.a.test.balancer.cookie: expected a cookie name like \"bb_srv\", got 7",
        ),
        (
            r#"{"kind": "round-robin", "cookie": "bb_srv"}"#,
            "config.json: domains.a.test.balancer.cookie: applies to \"kind\": \"sticky-cookie\" only (this balancer is \"round-robin\")",
        ),
        (
            r#"{"cookie": "bb_srv"}"#,
            "domains.a.test.balancer.cookie: applies to \"kind\": \"sticky-cookie\" only",
        ),
        (
            r#"{"kind": "sticky-cookie", "cookie": "s", "hash_on": "path"}"#,
            "domains.a.test.balancer.hash_on: applies to \"kind\": \"consistent-hash\" only (this balancer is \"sticky-cookie\")",
        ),
        (
            r#"{"kind": "sticky-cookie", "cookie": "s", "cookie_path": "/"}"#,
            "unknown key `domains.a.test.balancer.cookie_path`",
        ),
    ] {
        let e = domain(balancer);
        assert!(e.contains(want), "{balancer}: {e}");
    }
    let e = err(r#"{"domains": {"a.test": ["127.0.0.1:1"]},
        "upstreams": {"api": {"backends": ["127.0.0.1:4"], "balancer": {"kind": "sticky-cookie"}}}}"#);
    assert!(
        e.contains("config.json: upstreams.api.balancer.cookie: required with"),
        "{e}"
    );
}
