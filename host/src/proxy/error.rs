//! The one error of the request path. Every way a request can end without
//! a backend's response is a [`ProxyError`]: it says where the fault lies
//! ([`Side`]: the client, the upstream, a plugin role, the proxy itself) and
//! whether another attempt may follow, and [`ProxyError::into_response`] is
//! the one place that turns it into a status, a body, a log line and a
//! metric label.

use http::{HeaderValue, Method, Response, StatusCode, header};

use super::ProxyBody;
use super::head_checks::Rejection;
use crate::plugin::Fault;
use crate::telemetry::names;
use crate::upstream::backend_queue::Refused;
use crate::upstream::exchange::UpstreamError;
use crate::upstream::request_body::BodyFault;

/// A plugin role, for errors that come from a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `route`.
    Router,
    /// `pick`.
    Balancer,
    /// `on-outcome`.
    Breaker,
    /// `on-request` or `on-response`.
    Filter,
}

impl Role {
    /// The role's name, as in the config (`plugins.<role>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Balancer => "balancer",
            Role::Breaker => "breaker",
            Role::Filter => "filter",
        }
    }
}

/// Where the fault lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client's request (its head or its body).
    Client,
    /// A backend, or the upstream as a whole (no backend available).
    Upstream,
    /// A plugin of this role faulted and its policy is fail-closed.
    Plugin(Role),
    /// The proxy itself: a broken invariant.
    Internal,
}

impl Side {
    /// The `side` label of `bbproxy_request_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
            Side::Plugin(role) => role.as_str(),
            Side::Internal => "internal",
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// The request head broke a limit or is ambiguous (400, 413, 414, 431),
    /// before anything was routed or read.
    #[error("{}", .0.reason)]
    Rejected(Rejection),
    /// The client's request body failed while it was forwarded.
    #[error("{0}")]
    ClientBody(BodyFault),
    /// The request could not be expressed as an upstream request.
    #[error("cannot forward request: {0}")]
    Unforwardable(String),
    /// An upgrade (WebSocket) to a domain that speaks HTTP/2 to its backends.
    #[error(
        "upgrades (WebSocket) need an \"http1\" domain; this one speaks HTTP/2 to its backends"
    )]
    UpgradeUnsupported,
    /// A plugin faulted and its policy is fail-closed (or it has no
    /// fallback).
    #[error("{} plugin fault ({})", .role.as_str(), .fault.kind())]
    Plugin {
        /// The plugin's role.
        role: Role,
        /// What it did.
        fault: Fault,
    },
    /// No backend of the upstream can take the request now; `why` names
    /// each excluded backend and its reason (none: the upstream has no
    /// backend left to try).
    #[error("{}", match .why { Some(w) => format!("no backend of {} is available ({w})", .upstream), None => "no backend available".to_owned() })]
    NoBackend {
        /// The upstream's name.
        upstream: String,
        /// Each excluded backend and why.
        why: Option<String>,
    },
    /// The backend is at `max_connections_per_backend` and its queue is full
    /// or the wait ran out.
    #[error("backend {backend} is at its connection limit: {refused}")]
    Overloaded {
        /// `host:port`.
        backend: String,
        /// Why the request got no slot.
        refused: Refused,
    },
    /// The backend could not be used, was too slow or broke the exchange.
    #[error(transparent)]
    Upstream(UpstreamError),
    /// The backend answered an HTTP/2 extended CONNECT with a 2xx instead
    /// of switching protocols.
    #[error("{0}")]
    UpgradeRefused(String),
    /// A state the request path never reaches.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// A request that ends without a backend's response.
#[derive(Debug, thiserror::Error)]
#[error("{kind}")]
pub struct ProxyError {
    kind: ErrorKind,
    retry: bool,
}

impl From<ErrorKind> for ProxyError {
    /// An error no other backend can fix.
    fn from(kind: ErrorKind) -> Self {
        Self { kind, retry: false }
    }
}

impl From<Rejection> for ProxyError {
    fn from(r: Rejection) -> Self {
        ErrorKind::Rejected(r).into()
    }
}

impl ProxyError {
    /// A plugin of `role` faulted.
    pub fn plugin(role: Role, fault: Fault) -> Self {
        ErrorKind::Plugin { role, fault }.into()
    }

    /// A failed exchange with a backend for a `method` request. May another
    /// backend take it?
    ///
    /// - Connect failures (refused, unreachable, connect timeout): nothing
    ///   was sent, so any request may go to another backend.
    /// - A reset before response headers: only idempotent methods (RFC 9110
    ///   section 9.2.2); that no byte of the body was taken is the caller's
    ///   check (the body streams from the client and cannot be replayed).
    /// - A response-header timeout never: the backend may still be working
    ///   on it.
    pub fn upstream(e: UpstreamError, method: &Method) -> Self {
        let retry = match &e {
            UpstreamError::Connect { .. } => true,
            UpstreamError::Reset { .. } => is_idempotent(method),
            UpstreamError::Timeout { .. }
            | UpstreamError::BadRequest(_)
            | UpstreamError::Body(_) => false,
        };
        let kind = match e {
            UpstreamError::Body(fault) => ErrorKind::ClientBody(fault),
            UpstreamError::BadRequest(why) => ErrorKind::Unforwardable(why),
            other => ErrorKind::Upstream(other),
        };
        Self { kind, retry }
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// Whether the failure allows another attempt on another backend,
    /// before looking at the body, the attempts left or the budget.
    pub fn retryable(&self) -> bool {
        self.retry
    }

    /// Where the fault lies.
    pub fn side(&self) -> Side {
        match &self.kind {
            ErrorKind::Rejected(_)
            | ErrorKind::ClientBody(_)
            | ErrorKind::Unforwardable(_)
            | ErrorKind::UpgradeUnsupported => Side::Client,
            ErrorKind::Plugin { role, .. } => Side::Plugin(*role),
            ErrorKind::NoBackend { .. }
            | ErrorKind::Overloaded { .. }
            | ErrorKind::Upstream(_)
            | ErrorKind::UpgradeRefused(_) => Side::Upstream,
            ErrorKind::Internal(_) => Side::Internal,
        }
    }

    /// The `kind` label of `bbproxy_request_errors_total`.
    pub fn label(&self) -> &'static str {
        match &self.kind {
            ErrorKind::Rejected(_) => "rejected",
            ErrorKind::ClientBody(BodyFault::Idle(_)) => "body_timeout",
            ErrorKind::ClientBody(BodyFault::TooLarge(_)) => "body_too_large",
            ErrorKind::ClientBody(BodyFault::Client) => "body_failed",
            ErrorKind::Unforwardable(_) => "unforwardable",
            ErrorKind::UpgradeUnsupported => "upgrade_unsupported",
            ErrorKind::Plugin { .. } => "plugin_fault",
            ErrorKind::NoBackend { .. } => "no_backend",
            ErrorKind::Overloaded { .. } => "overloaded",
            ErrorKind::Upstream(UpstreamError::Connect {
                timed_out: true, ..
            }) => "connect_timeout",
            ErrorKind::Upstream(UpstreamError::Connect { .. }) => "connect_error",
            ErrorKind::Upstream(UpstreamError::Timeout { .. }) => "timeout",
            ErrorKind::Upstream(_) => "reset",
            ErrorKind::UpgradeRefused(_) => "upgrade_refused",
            ErrorKind::Internal(_) => "internal",
        }
    }

    /// The status the client gets: the head's own for a rejection; 408,
    /// 413 or 400 for the client's body; 501 for an upgrade the domain
    /// cannot carry; 503 when no backend can take it, a backend is at its
    /// connection limit or a plugin failed closed; 504 when the backend was
    /// too slow (connect timeout included); 502 when it could not be used or
    /// broke the exchange; 500 for the proxy's own bugs.
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            ErrorKind::Rejected(r) => r.status,
            ErrorKind::ClientBody(BodyFault::Idle(_)) => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::ClientBody(BodyFault::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::ClientBody(BodyFault::Client) | ErrorKind::Unforwardable(_) => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::UpgradeUnsupported => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::Plugin { .. }
            | ErrorKind::NoBackend { .. }
            | ErrorKind::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Upstream(
                UpstreamError::Connect {
                    timed_out: true, ..
                }
                | UpstreamError::Timeout { .. },
            ) => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Upstream(_) | ErrorKind::UpgradeRefused(_) => StatusCode::BAD_GATEWAY,
            ErrorKind::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the connection must close after the answer: the rest of a
    /// refused or failed request body may still be on the wire and must not
    /// be read as the next request.
    fn closes(&self) -> bool {
        matches!(self.kind, ErrorKind::Rejected(_) | ErrorKind::ClientBody(_))
    }

    /// The answer to the client, and the request's one log line and metric
    /// for its failure. `upstream` is the routed domain, if any.
    pub fn into_response(self, upstream: Option<&str>) -> Response<ProxyBody> {
        let status = self.status();
        let upstream = upstream.unwrap_or("");
        metrics::counter!(
            names::REQUEST_ERRORS,
            "side" => self.side().as_str(),
            "kind" => self.label(),
        )
        .increment(1);
        match &self.kind {
            ErrorKind::Rejected(r) => {
                metrics::counter!(names::REQUESTS_REJECTED, "status" => r.status.as_str().to_owned())
                    .increment(1);
                tracing::debug!("request refused: {}", r.reason);
            }
            // The plugin logged its fault (and stays quiet while suspended,
            // which a line per request here would undo).
            ErrorKind::Plugin { .. } => {}
            ErrorKind::NoBackend { why: Some(why), .. } => {
                tracing::warn!(upstream, "no backend available: {why}");
            }
            ErrorKind::UpgradeRefused(why) => {
                tracing::warn!(upstream, "extended CONNECT failed: {why}");
            }
            ErrorKind::Internal(what) => tracing::error!(upstream, "internal error: {what}"),
            _ => tracing::warn!(upstream, "request failed: {self}"),
        }
        let closes = self.closes();
        let mut resp = text(status, format!("bbproxy: {self}\n"));
        if closes {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A short plain-text response written by the proxy.
pub fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn reset() -> UpstreamError {
        UpstreamError::Reset {
            backend: "b".into(),
            reason: "reset".into(),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn only_safe_failures_retry() {
        assert!(ProxyError::upstream(reset(), &Method::GET).retryable());
        assert!(!ProxyError::upstream(reset(), &Method::POST).retryable());
        let connect = UpstreamError::Connect {
            backend: "b".into(),
            reason: "refused".into(),
            latency: Duration::ZERO,
            timed_out: false,
        };
        assert!(ProxyError::upstream(connect, &Method::POST).retryable());
        let timeout = UpstreamError::Timeout {
            backend: "b".into(),
            limit: Duration::from_secs(1),
        };
        assert!(!ProxyError::upstream(timeout, &Method::GET).retryable());
        assert!(!ProxyError::from(ErrorKind::Internal("x")).retryable());
    }

    /// Each kind has its status, side and label, and the body repeats the
    /// message the log line has.
    #[test]
    fn each_kind_maps_to_one_answer() {
        let cases: Vec<(ProxyError, StatusCode, &str, &str)> = vec![
            (
                ProxyError::upstream(reset(), &Method::GET),
                StatusCode::BAD_GATEWAY,
                "upstream",
                "reset",
            ),
            (
                ProxyError::upstream(
                    UpstreamError::Connect {
                        backend: "b".into(),
                        reason: "timed out".into(),
                        latency: Duration::ZERO,
                        timed_out: true,
                    },
                    &Method::GET,
                ),
                StatusCode::GATEWAY_TIMEOUT,
                "upstream",
                "connect_timeout",
            ),
            (
                ProxyError::upstream(UpstreamError::Body(BodyFault::TooLarge(10)), &Method::POST),
                StatusCode::PAYLOAD_TOO_LARGE,
                "client",
                "body_too_large",
            ),
            (
                ProxyError::plugin(Role::Balancer, Fault::Suspended { remaining_ms: 5 }),
                StatusCode::SERVICE_UNAVAILABLE,
                "balancer",
                "plugin_fault",
            ),
            (
                ErrorKind::UpgradeUnsupported.into(),
                StatusCode::NOT_IMPLEMENTED,
                "client",
                "upgrade_unsupported",
            ),
            (
                ErrorKind::Internal("x").into(),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal",
            ),
        ];
        for (e, status, side, label) in cases {
            assert_eq!(
                (e.status(), e.side().as_str(), e.label()),
                (status, side, label),
                "{e}"
            );
        }
        let e = ProxyError::plugin(Role::Router, Fault::Suspended { remaining_ms: 5 });
        assert_eq!(e.to_string(), "router plugin fault (suspended)");
    }
}
