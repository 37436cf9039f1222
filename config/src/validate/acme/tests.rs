//! `acme` and `cert_cache_dir`, through the public API: what operators
//! write, and the exact lines they get back when it is wrong.

use std::path::PathBuf;

use crate::tests::{err, ok, with};
use crate::*;

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
