//! One exchange with one backend: the request (head built once by the
//! proxy, streamed body) sent over its upstream's keep-alive pool, the
//! response head awaited under `timeouts.upstream_response_headers`, and
//! what went wrong classified for the caller's retry and breaker decisions.

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bbproxy_config::UpstreamTimeouts;
use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use tokio::time::Instant;

use super::BackendState;
use super::h1::{self, Failed, H1Pool, UpstreamBody};
use super::head_timer::HeadTimer;
use super::pool::Upstream;
use super::request_body::{BodyFault, BodySlot, RequestBody};
use crate::splice::SpliceTarget;

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
}

impl UpstreamError {
    /// Time from sending to the failure.
    pub fn latency(&self) -> Duration {
        match self {
            UpstreamError::Connect { latency, .. } | UpstreamError::Reset { latency, .. } => {
                *latency
            }
            UpstreamError::Timeout { limit, .. } => *limit,
            UpstreamError::BadRequest(_) | UpstreamError::Body(_) => Duration::ZERO,
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

/// A response head's arrival: when, and how long after the request
/// started going out.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The clock's reading when the head was in.
    pub at: Instant,
    /// From the exchange's start to `at`.
    pub latency: Duration,
}

/// Which client an attempt goes through.
enum Via<'a> {
    /// The proxy's own HTTP/1.1 path, on this pool.
    Own(&'a Arc<H1Pool>),
    /// hyper-util's client (HTTP/2 backends, upgrades), to this URI.
    Client(Uri),
}

/// One attempt: sends `head` (with `headers`, its own or a copy) and `body`
/// to `backend` through `upstream`, under `timeouts`; returns the response
/// (headers received, body still streaming) and when its head came in. An
/// HTTP/1.1 backend's body may be spliced to `splice` (see `crate::splice`).
pub async fn send(
    upstream: &Upstream,
    backend: &Arc<BackendState>,
    head: &Head,
    headers: HeaderMap,
    slot: &BodySlot,
    body: RequestBody,
    (timeouts, splice): (&UpstreamTimeouts, Option<&SpliceTarget>),
) -> Result<(Response<UpstreamBody>, Arrival), UpstreamError> {
    // An upgrade's connection becomes a tunnel: hyper-util's client hands
    // it over on a 101, the proxy's own HTTP/1.1 path does not.
    let via = match &upstream.h1 {
        Some(pool) if !headers.contains_key(header::UPGRADE) => Via::Own(pool),
        _ => Via::Client(upstream_uri(backend, &head.path)?),
    };
    let start = Instant::now();
    let sent = async {
        match via {
            Via::Own(pool) => {
                let to = (&head.method, &head.path);
                h1::send(pool, backend, start, to, headers, body, splice).await
            }
            Via::Client(uri) => {
                let mut req = Request::new(body);
                *req.method_mut() = head.method.clone();
                *req.version_mut() = Version::HTTP_11;
                *req.uri_mut() = uri;
                *req.headers_mut() = headers;
                match upstream.client.request(req).await {
                    Ok(resp) => Ok(resp.map(UpstreamBody::driven_elsewhere)),
                    Err(e) => Err(Failed {
                        connect: e.is_connect(),
                        error: e.into(),
                    }),
                }
            }
        }
    };
    let mut sent = std::pin::pin!(sent);
    // The response-header clock starts when the request body is done, not
    // when the request starts: uploads are bounded by the body idle timeout.
    let limit = timeouts.response_headers;
    let deadline = || slot.last_progress().max(start) + limit;
    let mut timer = (!limit.is_zero()).then(|| HeadTimer::new(deadline()));
    let result = poll_fn(|cx| {
        // The exchange first: the timer matters only when it is pending.
        if let Poll::Ready(r) = sent.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        let Some(timer) = timer.as_mut() else {
            return Poll::Pending;
        };
        loop {
            let at = deadline();
            ready!(timer.poll_until(at, cx));
            // Unless the body made progress since, the time is up.
            if deadline() <= at {
                return Poll::Ready(None);
            }
        }
    })
    .await;
    drop(timer);
    // One reading for the latency and for the caller's judgement of the
    // breaker (`proxy::attempt`) and the request's duration.
    let at = Instant::now();
    let latency = at.saturating_duration_since(start);
    match result {
        Some(Ok(resp)) => Ok((resp, Arrival { at, latency })),
        Some(Err(failed)) => Err(classify(failed, slot, backend, latency)),
        None => Err(UpstreamError::Timeout {
            backend: backend.authority.clone(),
            limit,
        }),
    }
}

/// What a failed exchange means: the client's body failing, no connection,
/// or a failure after the request went out.
fn classify(
    failed: Failed,
    slot: &BodySlot,
    backend: &BackendState,
    latency: Duration,
) -> UpstreamError {
    if let Some(fault) = slot.fault() {
        return UpstreamError::Body(fault);
    }
    let e = &*failed.error;
    if failed.connect {
        UpstreamError::Connect {
            backend: backend.authority.clone(),
            timed_out: is_timeout(e),
            reason: root_cause(e),
            latency,
        }
    } else {
        UpstreamError::Reset {
            backend: backend.authority.clone(),
            reason: root_cause(e),
            latency,
        }
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

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
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
