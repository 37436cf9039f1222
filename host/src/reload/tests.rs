//! The settings read once at start ([`super::Fixed`]): a reload that
//! changes one is named in the restart warning.

use super::Fixed;

fn config(tracing: &str) -> bbproxy_config::Config {
    bbproxy_config::parse(
        &format!(r#"{{{tracing} "domains": {{"a.test": ["127.0.0.1:1"]}}}}"#),
        std::path::Path::new("config.json"),
    )
    .unwrap()
}

/// The exporter is built once at start: a reload that turns tracing on
/// or off, or changes any of its keys, is named in the restart warning.
#[test]
fn a_changed_tracing_key_needs_a_restart() {
    let off = Fixed::of(&config(""));
    let on = Fixed::of(&config(
        r#""tracing": {"otlp_endpoint": "http://127.0.0.1:4318"},"#,
    ));
    let smaller = Fixed::of(&config(
        r#""tracing": {"otlp_endpoint": "http://127.0.0.1:4318", "queue_size": 8},"#,
    ));
    assert_eq!(off.changed(&on), ["tracing"]);
    assert_eq!(on.changed(&smaller), ["tracing"]);
    assert!(on.changed(&on).is_empty());
}

/// The engine's disk cache is set up once, at start.
#[test]
fn a_changed_plugin_cache_dir_needs_a_restart() {
    let off = Fixed::of(&config(""));
    let on = Fixed::of(&config(
        r#""plugins": {"cache_dir": "/var/cache/bbproxy"},"#,
    ));
    assert_eq!(off.changed(&on), ["plugins.cache_dir"]);
    assert!(on.changed(&on).is_empty());
}

#[test]
fn turning_tls_session_resumption_off_needs_a_restart() {
    let on = Fixed::of(&config(r#""listen": {"https": ":8443"},"#));
    let off = Fixed::of(&config(
        r#""listen": {"https": ":8443", "tls_session_resumption": false},"#,
    ));
    assert_eq!(on.changed(&off), ["listen.tls_session_resumption"]);
    assert!(off.changed(&off).is_empty());
}
