//! Sending a request to one backend over the shared keep-alive pool, with
//! streaming bodies both ways, and classifying what went wrong.

use std::error::Error as _;
use std::time::{Duration, Instant};

use crate::tls::backend::{self, UpstreamClient};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::Timeouts;
use super::headers;
use crate::plugin::{OutcomeKind, RequestView};
use crate::upstream::BackendState;

/// Why forwarding to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection could be made.
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
}

impl UpstreamError {
    /// The outcome the breaker plugin sees.
    pub fn outcome_kind(&self) -> OutcomeKind {
        match self {
            UpstreamError::Connect {
                timed_out: true, ..
            } => OutcomeKind::Timeout,
            UpstreamError::Connect { .. } => OutcomeKind::ConnectError,
            UpstreamError::Timeout { .. } => OutcomeKind::Timeout,
            UpstreamError::Reset { .. } | UpstreamError::BadRequest(_) => OutcomeKind::Reset,
        }
    }

    /// Time from sending to the failure.
    pub fn latency(&self) -> Duration {
        match self {
            UpstreamError::Connect { latency, .. } | UpstreamError::Reset { latency, .. } => {
                *latency
            }
            UpstreamError::Timeout { limit, .. } => *limit,
            UpstreamError::BadRequest(_) => Duration::ZERO,
        }
    }

    /// The status the client gets: 502 when the backend could not be used,
    /// 504 when it was too slow.
    pub fn status(&self) -> StatusCode {
        match self.outcome_kind() {
            OutcomeKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The client side of the proxy: one keep-alive pool shared by all backends
/// and all generations (pools are keyed by backend address).
#[derive(Debug)]
pub struct Forwarder {
    client: UpstreamClient,
    timeouts: Timeouts,
}

impl Forwarder {
    /// A forwarder with the given timeouts.
    pub fn new(timeouts: Timeouts) -> Self {
        // Only the built-in roots: a domain with `backend_ca` brings its
        // own pool (see `BackendSlot::client`).
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let client = backend::client(roots, timeouts.connect);
        Self { client, timeouts }
    }

    /// The connect timeout, for pools built elsewhere.
    pub fn connect_timeout(&self) -> Duration {
        self.timeouts.connect
    }

    /// Forwards `view` (with `body`) to `backend`; returns the response
    /// (headers received, body still streaming) and the time to headers.
    pub async fn send(
        &self,
        backend: &BackendState,
        pool: Option<&UpstreamClient>,
        view: RequestView,
        body: Incoming,
        proto: &'static str,
    ) -> Result<(Response<Incoming>, Duration), UpstreamError> {
        let RequestView {
            mut parts, client, ..
        } = view;
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri: Uri = format!("{}{}", backend.base, path)
            .parse()
            .map_err(|e| UpstreamError::BadRequest(format!("{e}")))?;
        // HTTP/2 clients send the host only as :authority; backends speak
        // HTTP/1.1 and need it as Host.
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        let host = parts.headers.get(header::HOST).cloned();
        headers::add_forwarded(&mut parts.headers, client.ip(), proto, host.as_ref());
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let req = Request::from_parts(parts, body);

        let start = Instant::now();
        let sent = tokio::time::timeout(
            self.timeouts.response_headers,
            pool.unwrap_or(&self.client).request(req),
        )
        .await;
        let latency = start.elapsed();
        match sent {
            Ok(Ok(resp)) => Ok((resp, latency)),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect {
                backend: backend.authority.clone(),
                timed_out: is_timeout(&e),
                reason: root_cause(&e),
                latency,
            }),
            Ok(Err(e)) => Err(UpstreamError::Reset {
                backend: backend.authority.clone(),
                reason: root_cause(&e),
                latency,
            }),
            Err(_) => Err(UpstreamError::Timeout {
                backend: backend.authority.clone(),
                limit: self.timeouts.response_headers,
            }),
        }
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
