//! Sending a request to one backend over its upstream's keep-alive pool,
//! with streaming bodies both ways, and classifying what went wrong.

use std::error::Error as _;
use std::time::{Duration, Instant};

use bbproxy_config::UpstreamTimeouts;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::request_body::{BodyFault, BodySlot, RequestBody};
use super::{headers, upgrade};
use crate::plugin::{Fault, OutcomeKind, RequestView};
use crate::upstream::BackendState;
use crate::upstream::limiter::Refused;
use crate::upstream::pool::UpstreamClient;

/// Why forwarding to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made; nothing was sent.
    #[error("cannot connect to backend {backend}: {reason}")]
    Connect {
        /// `host:port`.
        backend: String,
        /// The cause, as the OS or resolver said it.
        reason: String,
        /// Time spent trying.
        latency: Duration,
        /// Whether it was the connect timeout.
        timed_out: bool,
    },
    /// No response headers within the timeout.
    #[error("backend {backend} did not answer within {limit:?}")]
    Timeout {
        /// `host:port`.
        backend: String,
        /// The timeout that expired.
        limit: Duration,
    },
    /// The exchange failed after the request was sent.
    #[error("backend {backend} failed: {reason}")]
    Reset {
        /// `host:port`.
        backend: String,
        /// What hyper reported.
        reason: String,
        /// Time until the failure.
        latency: Duration,
    },
    /// The request could not be turned into a valid upstream request.
    #[error("cannot forward request: {0}")]
    BadRequest(String),
    /// The client's request body failed (not the backend's fault).
    #[error("{0}")]
    Body(BodyFault),
    /// The backend is at `max_connections_per_backend` and its queue is full
    /// or the wait ran out.
    #[error("backend {backend} is at its connection limit: {refused}")]
    Overloaded {
        /// `host:port`.
        backend: String,
        /// Why the request got no slot.
        refused: Refused,
    },
    /// The breaker plugin faulted on this attempt's outcome and its policy
    /// is fail-closed.
    #[error("breaker plugin fault ({})", .0.kind())]
    BreakerFault(Fault),
}

impl UpstreamError {
    /// The outcome the breaker plugin sees, or `None` when the failure says
    /// nothing about the backend's health (a client's slow body, a full
    /// queue, a request the proxy could not express).
    pub fn outcome_kind(&self) -> Option<OutcomeKind> {
        match self {
            UpstreamError::Connect {
                timed_out: true, ..
            } => Some(OutcomeKind::Timeout),
            UpstreamError::Connect { .. } => Some(OutcomeKind::ConnectError),
            UpstreamError::Timeout { .. } => Some(OutcomeKind::Timeout),
            UpstreamError::Reset { .. } => Some(OutcomeKind::Reset),
            UpstreamError::BadRequest(_)
            | UpstreamError::Body(_)
            | UpstreamError::Overloaded { .. }
            | UpstreamError::BreakerFault(_) => None,
        }
    }

    /// Time from sending to the failure.
    pub fn latency(&self) -> Duration {
        match self {
            UpstreamError::Connect { latency, .. } | UpstreamError::Reset { latency, .. } => {
                *latency
            }
            UpstreamError::Timeout { limit, .. } => *limit,
            _ => Duration::ZERO,
        }
    }

    /// The status the client gets: 502 when the backend could not be used,
    /// 504 when it was too slow (connect timeout included), 503 when it is at
    /// its connection limit or the breaker failed closed, 408/413/400 for the
    /// client's own body.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Body(BodyFault::Idle(_)) => StatusCode::REQUEST_TIMEOUT,
            UpstreamError::Body(BodyFault::TooLarge(_)) => StatusCode::PAYLOAD_TOO_LARGE,
            UpstreamError::Body(BodyFault::Client) | UpstreamError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            UpstreamError::Overloaded { .. } | UpstreamError::BreakerFault(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamError::Connect {
                timed_out: true, ..
            }
            | UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Connect { .. } | UpstreamError::Reset { .. } => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The upstream request head, built once and reused by every attempt.
#[derive(Debug)]
pub struct Head {
    /// Method.
    pub method: Method,
    /// Path and query, appended to the backend's base URL.
    pub path: PathAndQuery,
    /// Headers after hop-by-hop stripping and `X-Forwarded-*`.
    pub headers: HeaderMap,
}

/// Builds the upstream head from the client's request. `upgrade` puts back
/// the `Connection: upgrade` / `Upgrade` pair that hop-by-hop stripping
/// removes (and turns an HTTP/2 extended CONNECT into an HTTP/1.1 upgrade).
pub fn prepare(
    view: RequestView,
    proto: &'static str,
    upgrade: Option<&upgrade::Requested>,
) -> Head {
    let RequestView {
        mut parts, client, ..
    } = view;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // HTTP/2 clients send the host only as :authority; backends speaking
    // HTTP/1.1 need it as Host.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = upgrade {
        upgrade.apply(&mut parts.method, &mut parts.headers);
    }
    let host = parts.headers.get(header::HOST).cloned();
    headers::add_forwarded(&mut parts.headers, client.ip(), proto, host.as_ref());
    Head {
        method: parts.method,
        path,
        headers: parts.headers,
    }
}

/// One attempt: sends `head` (with `headers`, its own or a copy) and `body`
/// to `backend` through `client`;
/// returns the response (headers received, body still streaming) and the
/// time to headers.
pub async fn send(
    client: &UpstreamClient,
    backend: &BackendState,
    head: &Head,
    headers: HeaderMap,
    slot: &BodySlot,
    body: RequestBody,
    timeouts: &UpstreamTimeouts,
) -> Result<(Response<Incoming>, Duration), UpstreamError> {
    let uri = upstream_uri(backend, &head.path)?;
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;

    let start = Instant::now();
    let sent = client.request(req);
    let mut sent = std::pin::pin!(sent);
    // The response-header clock starts when the request body is done, not
    // when the request starts: uploads are bounded by the body idle timeout.
    let limit = timeouts.response_headers;
    let result = loop {
        let deadline = slot.last_progress().max(start) + limit;
        tokio::select! {
            r = sent.as_mut() => break Some(r),
            _ = tokio::time::sleep_until(deadline.into()), if !limit.is_zero() => {
                if slot.last_progress().max(start) + limit <= Instant::now() {
                    break None;
                }
            }
        }
    };
    let latency = start.elapsed();
    match result {
        Some(Ok(resp)) => Ok((resp, latency)),
        Some(Err(e)) => {
            if let Some(fault) = slot.fault() {
                return Err(UpstreamError::Body(fault));
            }
            if e.is_connect() {
                Err(UpstreamError::Connect {
                    backend: backend.authority.clone(),
                    timed_out: is_timeout(&e),
                    reason: root_cause(&e),
                    latency,
                })
            } else {
                Err(UpstreamError::Reset {
                    backend: backend.authority.clone(),
                    reason: root_cause(&e),
                    latency,
                })
            }
        }
        None => Err(UpstreamError::Timeout {
            backend: backend.authority.clone(),
            limit,
        }),
    }
}

/// The backend's base URL with the request's path and query.
fn upstream_uri(backend: &BackendState, path: &PathAndQuery) -> Result<Uri, UpstreamError> {
    let bad = |e: &dyn std::fmt::Display| UpstreamError::BadRequest(e.to_string());
    match &backend.origin {
        Some((scheme, authority)) => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).map_err(|e| bad(&e))
        }
        // Not reached with a validated config; kept as the general way.
        None => format!("{}{}", backend.base, path)
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e)),
    }
}

fn is_timeout(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            return true;
        }
        if s.to_string().contains("timed out") {
            return true;
        }
        source = s.source();
    }
    false
}

/// The innermost error message: "connection refused", not "client error".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        last = s.to_string();
        source = s.source();
    }
    last
}
