//! `listen` and `admin`, through the public API: what operators write, and
//! the exact lines they get back when it is wrong.

use crate::tests::{err, ok, sock, with};
use crate::*;

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
            tls_session_resumption: true,
        }
    );
    let c = ok(&with(
        r#""listen": {"https": ":8443", "tls_session_resumption": false}"#,
    ));
    assert!(!c.listen.tls_session_resumption);
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
    assert_eq!(
        err(&with(
            r#""listen": {"https": ":8443", "tls_session_resumption": "yes"}"#
        )),
        "config.json: listen.tls_session_resumption: expected true or false, got \"yes\""
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
fn admin_token_enables_actions_and_is_never_shown() {
    let token = "0123456789abcdef-token";
    let c = ok(&with(&format!(
        r#""admin": {{"address": "127.0.0.1:9901", "token": "{token}"}}"#
    )));
    assert!(c.admin_token.as_ref().unwrap().matches(token.as_bytes()));
    assert!(!format!("{c:?}").contains(token));
    assert_eq!(ok(&with(r#""admin": "127.0.0.1:9000""#)).admin_token, None);
    let e = err(&with(r#""admin": {"token": "hunter2"}"#));
    assert!(e.contains("admin.token: too short (7 characters)"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
