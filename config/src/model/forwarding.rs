//! The forwarding settings: timeouts, limits, retries, health checks, the
//! backend protocol and pool knobs, top level and per domain.

use std::time::Duration;

pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// `timeouts`. A zero duration (`"0"`) disables that timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From the first byte of a request head to its end (slowloris): 408.
    pub client_header: Duration,
    /// An idle connection between requests is closed after this.
    pub keep_alive: Duration,
    /// Longest time a write to the client may make no progress (a client
    /// that stops reading its response): the connection is reset.
    pub client_write: Duration,
    /// Defaults for every domain. Its `keep_alive` and `client_write` are
    /// the two above; these two stay the connection's own values, used
    /// until a request is routed (and after local answers).
    pub upstream: UpstreamTimeouts,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            client_header: Duration::from_secs(10),
            keep_alive: Duration::from_secs(60),
            client_write: Duration::from_secs(60),
            upstream: UpstreamTimeouts::default(),
        }
    }
}

/// Timeouts that a domain can override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Longest pause between two pieces of a request body: 408.
    pub client_body: Duration,
    /// Connecting to a backend: 504, a breaker failure.
    pub connect: Duration,
    /// From the request sent to the backend's response head: 504.
    pub response_headers: Duration,
    /// Longest pause between two pieces of a response body: the response is cut.
    pub idle: Duration,
    /// Idle after a response of this domain until the connection's next
    /// request head.
    pub keep_alive: Duration,
    /// Longest time writes of this domain's responses to the client may
    /// make no progress.
    pub client_write: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            client_body: Duration::from_secs(30),
            connect: Duration::from_secs(5),
            response_headers: Duration::from_secs(60),
            idle: Duration::from_secs(60),
            keep_alive: Duration::from_secs(60),
            client_write: Duration::from_secs(60),
        }
    }
}

/// `limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, in bytes: 431. At least 8 KiB.
    pub max_header_bytes: u64,
    /// Header fields per request: 431.
    pub max_headers: u32,
    /// Bytes of the request target: 414.
    pub max_uri_length: u64,
    /// Open client connections; more are refused at once.
    pub max_connections: u32,
    /// Defaults for every domain.
    pub upstream: UpstreamLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_uri_length: 8 << 10,
            max_connections: 10_000,
            upstream: UpstreamLimits::default(),
        }
    }
}

/// Limits that a domain can override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamLimits {
    /// Request body bytes: 413. 0 means no limit.
    pub max_body_size: u64,
    /// Requests in flight to one backend at once. 0 means no limit.
    pub max_connections_per_backend: u32,
    /// Requests that may wait for a backend at its limit; more get 503.
    pub backend_queue: u32,
    /// How long a queued request waits before 503.
    pub backend_queue_timeout: Duration,
}

impl Default for UpstreamLimits {
    fn default() -> Self {
        UpstreamLimits {
            max_body_size: 100 << 20,
            max_connections_per_backend: 0,
            backend_queue: 100,
            backend_queue_timeout: Duration::from_secs(5),
        }
    }
}

/// `retries`: attempts per request (1 = no retry) and a budget that keeps
/// retries to a share of traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// Tries per request, the first included; 1..=10.
    pub attempts: u32,
    /// Each request earns this many hundredths of a retry.
    pub budget_percent: u32,
    /// Retries always available on top of the earned ones (a bucket size).
    pub budget_min: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 2,
            budget_percent: 20,
            budget_min: 10,
        }
    }
}

/// `domains.X.health_check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Requested with GET; a 2xx or 3xx answer is healthy.
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy backend back.
    pub healthy_threshold: u32,
    /// Consecutive failures that take a backend out.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: "/healthz".to_owned(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// How the proxy talks to a domain's backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge over plain TCP.
    H2c,
    /// HTTP/2 over TLS, negotiated with ALPN `h2` (`https://` backends).
    H2,
}

/// `domains.X.pool`: idle keep-alive connections kept per backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PoolSettings {
    pub max_idle: u32,
    /// 0 keeps idle connections until the backend closes them.
    pub idle_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_idle: 256,
            idle_timeout: Duration::from_secs(90),
        }
    }
}

/// Everything about forwarding to one domain's backends, with the top-level
/// defaults already applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamSettings {
    pub timeouts: UpstreamTimeouts,
    pub limits: UpstreamLimits,
    pub retries: Retries,
    pub health_check: Option<HealthCheck>,
    pub protocol: UpstreamProtocol,
    pub pool: PoolSettings,
}
