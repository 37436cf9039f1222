//! The keys about what an operator sees: `admin.token` and `log_format`.

use serde_json::Value;

use super::walk::{R, show};
use crate::error::Fault;
use crate::model::{LogFormat, Secret};

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

    mod through_the_api {
        use crate::LogFormat;
        use crate::tests::{err, ok, with};

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
