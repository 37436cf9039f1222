//! Admin actions: `POST /backends/drain` and `/backends/undrain` with
//! `{"domain": "...", "backend": "host:port"}`. They exist only when the
//! config sets `admin.token`, and each request must send it as
//! `Authorization: Bearer <token>`: a token-less listener answers 403 (with
//! how to enable them), a missing or wrong token 401 (counted in
//! `bbproxy_admin_unauthorized_total`).
//!
//! Draining is runtime state of the backend (see
//! [`crate::upstream::BackendState::set_drained`]): a reload keeps it for a
//! backend that remains, a restart clears it.

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::generation::{BackendSlot, Generation, UpstreamSlot};
use crate::proxy::ProxyBody;
use crate::state::Shared;
use crate::telemetry::names::ADMIN_UNAUTHORIZED;

/// The largest action body read: two names.
const MAX_BODY: usize = 4096;

const HOW_TO_ENABLE: &str = "admin actions are disabled: set \"admin\": {\"address\": \"...\", \"token\": \"<at least 16 characters>\"} in the config and send the token as Authorization: Bearer <token>";

/// Drains (`drain`) or undrains the backend the body names.
pub(super) async fn drain(
    shared: &Shared,
    req: Request<Incoming>,
    drain: bool,
) -> Response<ProxyBody> {
    // The token of the serving generation: a reload can set or rotate it.
    let generation = shared.generation.load_full();
    if let Some(refused) = refuse(&req, &generation) {
        return refused;
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
            );
        }
    };
    let (domain, backend) = match target(&body) {
        Ok(t) => t,
        Err(why) => return error(StatusCode::BAD_REQUEST, &why),
    };
    let (up, b) = match find(&generation, &domain, &backend) {
        Ok(found) => found,
        Err(not_found) => return not_found,
    };
    let changed = b.state.set_drained(drain);
    if changed {
        tracing::info!(
            domain = %up.name,
            backend = %b.state.authority,
            "backend {} by an admin request{}",
            if drain { "drained" } else { "undrained" },
            if drain { ": no new requests, those in flight finish" } else { "" }
        );
    }
    json_response(
        StatusCode::OK,
        &json!({
            "domain": up.name,
            "backend": b.state.authority,
            "drained": drain,
            "changed": changed,
            "in_flight": b.state.in_flight(),
        }),
    )
}

/// The answer to a request that may not act: not a POST, actions
/// disabled (no `admin.token`), or a missing or wrong token.
fn refuse(req: &Request<Incoming>, generation: &Generation) -> Option<Response<ProxyBody>> {
    if req.method() != Method::POST {
        let mut resp = error(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        resp.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("POST"));
        return Some(resp);
    }
    let Some(token) = &generation.config.admin_token else {
        return Some(error(StatusCode::FORBIDDEN, HOW_TO_ENABLE));
    };
    if bearer(req.headers()).is_some_and(|given| token.matches(given)) {
        return None;
    }
    metrics::counter!(ADMIN_UNAUTHORIZED).increment(1);
    tracing::warn!(
        path = req.uri().path(),
        "admin action refused: missing or wrong bearer token"
    );
    let mut resp = error(
        StatusCode::UNAUTHORIZED,
        "missing or wrong token: send Authorization: Bearer <admin.token>",
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer realm=\"bbproxy admin\""),
    );
    Some(resp)
}

/// The domain and backend a body names in `generation` (the backend by
/// `host:port` or by its URL base), or the 404 that says what exists.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response to send, built once per admin request"
)]
fn find<'g>(
    generation: &'g Generation,
    domain: &str,
    backend: &str,
) -> Result<(&'g UpstreamSlot, &'g BackendSlot), Response<ProxyBody>> {
    let Some(up) = generation
        .upstreams
        .iter()
        .find(|u| u.name.eq_ignore_ascii_case(domain))
    else {
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!("no domain {domain:?} in the serving configuration"),
        ));
    };
    let Some(b) = up
        .backends
        .iter()
        .find(|b| b.state.authority == backend || b.state.base == backend)
    else {
        let known: Vec<&str> = up
            .backends
            .iter()
            .map(|b| b.state.authority.as_str())
            .collect();
        return Err(error(
            StatusCode::NOT_FOUND,
            &format!(
                "domain {} has no backend {backend:?} (it has: {})",
                up.name,
                known.join(", ")
            ),
        ));
    };
    Ok((up, b))
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// The domain and backend a body names.
fn target(body: &[u8]) -> Result<(String, String), String> {
    const FORM: &str =
        "expected a JSON body like {\"domain\": \"example.com\", \"backend\": \"10.0.0.1:8080\"}";
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("{FORM}: {e}"))?;
    let field = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{FORM}; \"{name}\" is missing or not a string"))
    };
    Ok((field("domain")?, field("backend")?))
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json_response(status, &json!({ "error": message }))
}

fn json_response(status: StatusCode, v: &Value) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(format!("{v}\n")));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively_by_scheme() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }

    #[test]
    fn bodies_name_a_domain_and_a_backend() {
        assert_eq!(
            target(br#"{"domain": "a.test", "backend": "127.0.0.1:1"}"#),
            Ok(("a.test".into(), "127.0.0.1:1".into()))
        );
        for bad in [
            &b"{}"[..],
            b"[1]",
            b"nope",
            br#"{"domain": "a", "backend": 1}"#,
        ] {
            assert!(target(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
