//! The keys about what an operator sees: `admin.token`, `log_format` and
//! `tracing`.

use serde_json::Value;

use super::walk::{Fields, R, count, object, set, show};
use crate::error::Fault;
use crate::model::{
    DEFAULT_TRACE_QUEUE_SIZE, DEFAULT_TRACE_SAMPLE_RATIO, DEFAULT_TRACE_SERVICE_NAME, LogFormat,
    Secret, TracingSettings,
};

/// The shortest `admin.token` accepted: a guessable token would hand the
/// admin actions to anyone who can reach the listener.
const MIN_TOKEN_LEN: usize = 16;

/// `admin.token`. The error never shows the value: it is a secret, and
/// errors end up in logs and in `/status`.
pub(crate) fn token(v: &Value) -> R<Secret> {
    let Value::String(s) = v else {
        return Err(Fault::invalid(
            "admin.token",
            "expected a string (sent by clients as `Authorization: Bearer <token>`)",
        ));
    };
    if s.chars().count() < MIN_TOKEN_LEN {
        return Err(Fault::invalid(
            "admin.token",
            format!(
                "too short ({} characters); use at least {MIN_TOKEN_LEN}, e.g. the output of `openssl rand -hex 16`",
                s.chars().count()
            ),
        ));
    }
    // It travels in a header: visible ASCII only, no spaces.
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Fault::invalid(
            "admin.token",
            "may hold only visible ASCII characters without spaces (it is sent in a header)",
        ));
    }
    Ok(Secret::new(s.clone()))
}

/// `log_format`: `"human"` or `"json"`.
pub(crate) fn log_format(v: &Value) -> R<LogFormat> {
    match v.as_str() {
        Some("human") => Ok(LogFormat::Human),
        Some("json") => Ok(LogFormat::Json),
        _ => Err(Fault::invalid(
            "log_format",
            format!("expected \"human\" or \"json\", got {}", show(v)),
        )),
    }
}

/// `tracing`: `{"otlp_endpoint": "http://127.0.0.1:4318", "sample_ratio":
/// 0.1, "service_name": "bbproxy"}`.
pub(crate) fn tracing(v: &Value) -> R<TracingSettings> {
    let map = object(
        v,
        "tracing",
        r#"{"otlp_endpoint": "http://127.0.0.1:4318", "sample_ratio": 0.1}"#,
    )?;
    let mut traces_url = None;
    let mut sample_ratio = DEFAULT_TRACE_SAMPLE_RATIO;
    let mut service_name = DEFAULT_TRACE_SERVICE_NAME.to_owned();
    let mut queue_size = DEFAULT_TRACE_QUEUE_SIZE;
    Fields::new(map, "tracing")
        .key("otlp_endpoint", |v, _| {
            set(&mut traces_url, self::traces_url(v).map(Some))
        })
        .key("sample_ratio", |v, p| set(&mut sample_ratio, ratio(v, p)))
        .key("service_name", |v, p| match v {
            Value::String(s) if !s.is_empty() => set(&mut service_name, Ok(s.clone())),
            _ => Err(Fault::invalid(
                p,
                format!("expected a non-empty string, got {}", show(v)),
            )),
        })
        .key("queue_size", |v, p| set(&mut queue_size, count(v, p, 1)))
        .read()?;
    let Some(traces_url) = traces_url else {
        return Err(Fault::invalid(
            "tracing.otlp_endpoint",
            "missing: the OTLP/HTTP collector's base URL, e.g. \"http://127.0.0.1:4318\" (remove `tracing` to export no traces)",
        ));
    };
    Ok(TracingSettings {
        traces_url,
        sample_ratio,
        service_name,
        queue_size,
    })
}

/// The share of new traces recorded, 0 to 1.
fn ratio(v: &Value, path: &str) -> R<f64> {
    v.as_f64()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "expected a number from 0 to 1 (the share of new traces recorded), got {}",
                    show(v)
                ),
            )
        })
}

/// The collector's base URL with `/v1/traces` appended (the OTLP spec's
/// rule for `OTEL_EXPORTER_OTLP_ENDPOINT`).
fn traces_url(v: &Value) -> R<String> {
    let bad = |why: &str| {
        Fault::invalid(
            "tracing.otlp_endpoint",
            format!(
                "{why}: expected the collector's OTLP/HTTP base URL like \"http://127.0.0.1:4318\" (`/v1/traces` is appended), got {}",
                show(v)
            ),
        )
    };
    let Value::String(s) = v else {
        return Err(bad("not a string"));
    };
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| bad("the scheme must be http or https"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return Err(bad("no host (or credentials in it)"));
    }
    if rest.contains(['?', '#', ' ']) {
        return Err(bad("no query, fragment or space allowed"));
    }
    Ok(format!("{}/v1/traces", s.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tokens_are_checked_and_never_shown() {
        let secret = "s3cret-token-0123456789";
        let t = token(&json!(secret)).unwrap();
        assert!(t.matches(secret.as_bytes()));
        assert!(!t.matches(b"s3cret-token-012345678"));
        assert!(!t.matches(b"s3cret-token-01234567890"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "Secret(***)");
        for bad in [json!("short"), json!("has a space in it ok"), json!(12)] {
            let e = format!("{:?}", token(&bad).unwrap_err());
            assert!(e.contains("admin.token"), "{e}");
            assert!(!e.contains("short\"") && !e.contains("has a space"), "{e}");
        }
    }

    #[test]
    fn tracing_settings() {
        let t = tracing(&json!({"otlp_endpoint": "http://127.0.0.1:4318/"})).unwrap();
        assert_eq!(t.traces_url, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(t.sample_ratio, 1.0);
        assert_eq!(t.service_name, "bbproxy");
        assert_eq!(t.queue_size, 2048);
        let t = tracing(&json!({"otlp_endpoint": "https://c.example/otel", "sample_ratio": 0.1, "service_name": "edge", "queue_size": 64})).unwrap();
        assert_eq!(t.traces_url, "https://c.example/otel/v1/traces");
        assert_eq!((t.sample_ratio, t.service_name.as_str()), (0.1, "edge"));
        assert_eq!(t.queue_size, 64);
        for (bad, says) in [
            (json!({}), "missing: the OTLP/HTTP collector"),
            (json!({"otlp_endpoint": "127.0.0.1:4318"}), "scheme"),
            (json!({"otlp_endpoint": "http://"}), "no host"),
            (
                json!({"otlp_endpoint": "http://h", "sample_ratio": 1.5}),
                "tracing.sample_ratio",
            ),
            (
                json!({"otlp_endpoint": "http://h", "service_name": ""}),
                "tracing.service_name",
            ),
            (json!({"otlp_endpoint": "http://h", "ratio": 1}), "ratio"),
            (
                json!({"otlp_endpoint": "http://h", "queue_size": 0}),
                "tracing.queue_size",
            ),
        ] {
            let e = format!("{:?}", tracing(&bad).unwrap_err());
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    mod through_the_api {
        use crate::LogFormat;
        use crate::tests::{err, ok, with};

        #[test]
        fn tracing_is_off_unless_configured() {
            assert_eq!(ok(&with(r#""access_log": true"#)).tracing, None);
            let t = ok(&with(
                r#""tracing": {"otlp_endpoint": "http://127.0.0.1:4318"}"#,
            ));
            assert_eq!(
                t.tracing.map(|t| t.traces_url).as_deref(),
                Some("http://127.0.0.1:4318/v1/traces")
            );
        }

        #[test]
        fn log_format_key() {
            assert_eq!(
                ok(&with(r#""log_format": "json""#)).log_format,
                Some(LogFormat::Json)
            );
            assert_eq!(
                ok(&with(r#""log_format": "human""#)).log_format,
                Some(LogFormat::Human)
            );
            assert!(
                err(&with(r#""log_format": "xml""#))
                    .contains("log_format: expected \"human\" or \"json\"")
            );
        }
    }
}
