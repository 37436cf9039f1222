//! `storage`, through the public API: what operators write, and the lines
//! they get back when it is wrong (never with the password).

use std::path::PathBuf;
use std::time::Duration;

use crate::tests::{err, ok, with};
use crate::*;

#[test]
fn redis_storage_with_defaults() {
    let c = ok(&with(
        r#""storage": {"redis": {"url": "redis://127.0.0.1:6379/0"}}"#,
    ));
    let Some(Storage::Redis(r)) = c.storage else {
        panic!("no storage: {c:?}");
    };
    assert_eq!(r.url.expose(), "redis://127.0.0.1:6379/0");
    assert_eq!(r.prefix, "bbproxy:");
    assert_eq!(r.lock_lease, Duration::from_secs(60));
    assert_eq!(r.password, None);
    let c = ok(&with(
        r#""storage": {"redis": {"url": "rediss://r.internal:6380", "prefix": "edge:", "ca": "redis-ca.pem", "lock_lease": "10s"}}"#,
    ));
    let Some(Storage::Redis(r)) = c.storage else {
        panic!("no storage");
    };
    assert_eq!(r.ca, Some(PathBuf::from("/etc/bbproxy/redis-ca.pem")));
    assert_eq!(
        (r.prefix.as_str(), r.lock_lease),
        ("edge:", Duration::from_secs(10))
    );
}

#[test]
fn storage_and_cert_cache_dir_together_is_an_error_naming_both() {
    for key in ["cert_cache_dir", "cert_cache_path"] {
        let e = err(&with(&format!(
            r#""{key}": "certs", "storage": {{"redis": {{"url": "redis://127.0.0.1:6379"}}}}"#
        )));
        assert!(e.contains("storage") && e.contains(key), "{e}");
    }
}

#[test]
fn a_redis_url_password_never_appears_in_an_error() {
    for url in [
        "http://:hunter2@127.0.0.1:6379",
        "redis://:hunter2@127.0.0.1:notaport",
        "redis://:hunter2@127.0.0.1:6379/zero",
        "redis://:hunter2@",
    ] {
        let e = err(&with(&format!(
            r#""storage": {{"redis": {{"url": "{url}"}}}}"#
        )));
        assert!(e.contains("storage.redis.url"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
    let c = ok(&with(
        r#""storage": {"redis": {"url": "redis://:hunter2@127.0.0.1:6379/0"}}"#,
    ));
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn storage_mistakes_name_the_key() {
    let cases = [
        (r#"{"redis": {}}"#, "storage.redis.url: is required"),
        (
            r#"{"redis": {"url": "redis://h", "lease": "1s"}}"#,
            "unknown key `storage.redis.lease`",
        ),
        (r#"{"etcd": {}}"#, "unknown key `storage.etcd`"),
        (r#"{}"#, "storage: name a backend"),
        (
            r#"{"redis": {"url": "redis://h", "lock_lease": "1s"}}"#,
            "storage.redis.lock_lease",
        ),
        (
            r#"{"redis": {"url": "redis://h", "ca": "ca.pem"}}"#,
            "storage.redis.ca: only applies to a rediss://",
        ),
        (
            r#"{"redis": {"url": "redis://h", "password_env": "BBPROXY_TEST_SURELY_UNSET_VAR"}}"#,
            "storage.redis.password_env: the environment variable BBPROXY_TEST_SURELY_UNSET_VAR is not set",
        ),
        (
            r#"{"redis": {"url": "redis://:pw@h", "password_env": "PATH"}}"#,
            "storage.redis.password_env: storage.redis.url already has a password",
        ),
    ];
    for (storage, expected) in cases {
        let e = err(&with(&format!(r#""storage": {storage}"#)));
        assert!(e.contains(expected), "{storage}: {e}");
    }
}

#[test]
fn the_password_comes_from_the_named_environment_variable() {
    // PATH is set in every test environment; its value stands in for a
    // password here.
    let c = ok(&with(
        r#""storage": {"redis": {"url": "redis://127.0.0.1", "password_env": "PATH"}}"#,
    ));
    let Some(Storage::Redis(r)) = c.storage else {
        panic!("no storage");
    };
    assert_eq!(
        r.password.as_ref().map(Secret::expose),
        std::env::var("PATH").ok().as_deref()
    );
}
