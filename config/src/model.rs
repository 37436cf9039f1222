//! The validated configuration. Every value here has passed validation, so
//! the host can use it without re-checking; defaults are already filled in.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::storage::Storage;

/// Where the original BBProxy listened; used when `listen` is absent.
pub const DEFAULT_HTTP: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 80);
pub const DEFAULT_HTTPS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED), 443);
/// Loopback only: the admin endpoints are unauthenticated.
pub const DEFAULT_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);
pub const DEFAULT_BALANCER: &str = "round-robin";
// The built-in balancer's names and hash keys are the plugin's contract:
// one definition, shared with the balancer plugin.
pub use bbproxy_plugin_contract::balancers::{BUILTIN_BALANCERS, CONSISTENT_HASH, HashOn};
pub const DEFAULT_BREAKER_THRESHOLD: u32 = 5;
pub const DEFAULT_BREAKER_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_millis(10);
pub const DEFAULT_PLUGIN_MEMORY: u64 = 16 << 20;
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The config file path as given (not canonicalised), for messages.
    pub origin: PathBuf,
    pub listen: Listen,
    /// `None` disables the admin listener.
    pub admin: Option<SocketAddr>,
    /// `admin.token`: enables the admin actions (drain, undrain) for
    /// requests that send it as `Authorization: Bearer …`.
    pub admin_token: Option<Secret>,
    /// In file order, which is also the order operators expect in `/status`.
    pub domains: Vec<Domain>,
    /// Always the name of one of `domains`.
    pub default_domain: Option<String>,
    pub breaker: BreakerSettings,
    /// SHA-256 of the file's text: with the plugins' digests it names the
    /// serving generation, so replicas can be compared.
    pub sha256: [u8; 32],
    /// Resolved against the config file's directory.
    pub cert_cache_dir: Option<PathBuf>,
    /// Shared storage for ACME state (replicas); never set together with
    /// `cert_cache_dir`.
    pub storage: Option<Storage>,
    pub plugins: Plugins,
    pub acme: Acme,
    pub metrics: MetricsSettings,
    pub access_log: bool,
    /// `log_format`; `None` leaves it to the command line (human by
    /// default).
    pub log_format: Option<LogFormat>,
    /// `tracing`: OpenTelemetry traces; `None` (the default) exports none
    /// and leaves `traceparent`/`tracestate` untouched.
    pub tracing: Option<TracingSettings>,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub retries: Retries,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Config {
    /// Looks a domain up by its normalised name (exact match, no wildcard
    /// expansion: that is the router's job).
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
    }
}

/// At least one of `http` and `https` is `Some`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    /// Redirect plain HTTP to HTTPS (ACME HTTP-01 challenges still answered).
    pub redirect_http: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: Some(DEFAULT_HTTP),
            https: Some(DEFAULT_HTTPS),
            redirect_http: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Lower case; `*.example.com` for wildcards; IPv6 literals in brackets.
    pub name: String,
    /// Never empty, no duplicates.
    pub backends: Vec<Backend>,
    /// One of [`BUILTIN_BALANCERS`], or a custom balancer plugin's name.
    pub balancer: String,
    /// What `consistent-hash` hashes (`"hash_on"`, default `client_ip`);
    /// `Some` exactly when `balancer` is `consistent-hash`.
    pub hash_on: Option<HashOn>,
    /// `None` leaves the choice to the TLS layer.
    pub tls: Option<TlsSource>,
    /// Timeouts, limits, retries, health checks, protocol, pool.
    pub upstream: UpstreamSettings,
    /// Extra PEM roots trusted for this domain's `https://` backends (on top
    /// of the webpki roots); resolved against the config file's directory.
    pub backend_ca: Option<PathBuf>,
    /// The domain's own plugins; `None` uses `plugins.<role>`.
    pub plugins: DomainPlugins,
}

/// Plugins a domain names for itself (`"balancer": {"path": ...}`,
/// `"breaker"`, `"router"`), each with its own limits and `on_fault`; every
/// `path` is set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DomainPlugins {
    /// Routes the requests whose host matches the domain.
    pub router: Option<PluginSpec>,
    /// Picks among the domain's backends.
    pub balancer: Option<PluginSpec>,
    /// Judges the outcomes of the domain's requests.
    pub breaker: Option<PluginSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub scheme: Scheme,
    /// Lower-case name or IP literal; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// 1..=1000.
    pub weight: u32,
}

impl Backend {
    /// `host:port`, with IPv6 hosts bracketed, as used in a URI authority.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `http://host:port` (or `https://`), without a trailing slash.
    pub fn url_base(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.authority())
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url_base())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    Acme,
    Off,
    /// Paths resolved against the config file's directory; not yet read.
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker; at least 1.
    pub threshold: u32,
    /// How long it stays open; greater than zero.
    pub timeout: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            threshold: DEFAULT_BREAKER_THRESHOLD,
            timeout: DEFAULT_BREAKER_TIMEOUT,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plugins {
    pub router: PluginSpec,
    pub balancer: PluginSpec,
    pub breaker: PluginSpec,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    pub source: PluginSource,
    /// Passed verbatim to the plugin's init; `{}` when not given.
    pub config: serde_json::Value,
    /// Per-call deadline; greater than zero.
    pub timeout: Duration,
    /// Linear-memory cap in bytes.
    pub memory_limit: u64,
    pub on_fault: OnFault,
    /// Suspension of the plugin after repeated faults.
    pub fault_backoff: FaultBackoff,
}

impl PluginSpec {
    /// The embedded default plugin with default limits.
    pub fn builtin() -> Self {
        PluginSpec {
            source: PluginSource::Builtin,
            config: serde_json::Value::Object(serde_json::Map::new()),
            timeout: DEFAULT_PLUGIN_TIMEOUT,
            memory_limit: DEFAULT_PLUGIN_MEMORY,
            on_fault: OnFault::FailOpen,
            fault_backoff: FaultBackoff::default(),
        }
    }
}

impl Default for PluginSpec {
    fn default() -> Self {
        PluginSpec::builtin()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PluginSource {
    Builtin,
    /// Resolved against the config file's directory; not yet read.
    Path(PathBuf),
}

/// When and for how long a plugin that keeps faulting is not called: after
/// `after` consecutive faults with no successful call in between, for
/// `initial`, then twice as long after each retry that faults, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultBackoff {
    /// At least 1.
    pub after: u32,
    /// Greater than zero, at most `max`.
    pub initial: Duration,
    pub max: Duration,
}

impl Default for FaultBackoff {
    fn default() -> Self {
        FaultBackoff {
            after: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        }
    }
}

/// What a request gets when its plugin traps, times out or runs out of
/// memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OnFault {
    /// Carry on as if the plugin had made the default decision.
    FailOpen,
    /// Answer with an error.
    FailClosed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// An `http://` or `https://` URL.
    pub directory: String,
    pub email: Option<String>,
    /// Extra root to trust for the directory (e.g. Pebble's), resolved
    /// against the config file's directory.
    pub ca_root: Option<PathBuf>,
    /// Non-empty, no duplicates, in the operator's order of preference.
    pub challenges: Vec<Challenge>,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            directory: LETS_ENCRYPT_PRODUCTION.to_owned(),
            email: None,
            ca_root: None,
            challenges: vec![Challenge::Http01, Challenge::TlsAlpn01],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Challenge {
    Http01,
    TlsAlpn01,
}

impl Challenge {
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsSettings {
    /// How often a metrics summary is logged; greater than zero.
    pub log_interval: Duration,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            log_interval: DEFAULT_METRICS_INTERVAL,
        }
    }
}

/// A secret from the config (`admin.token`): it can be compared, never
/// shown, so a `{:?}` of the config in a log or an error cannot leak it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }

    /// Whether `given` is the secret, in time that does not depend on where
    /// they first differ (a timing side channel would let a client guess the
    /// token byte by byte).
    pub fn matches(&self, given: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        let mut diff = secret.len() ^ given.len();
        for (i, s) in secret.iter().enumerate() {
            diff |= usize::from(s ^ given.get(i).copied().unwrap_or(!s));
        }
        diff == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `log_format`: how log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `tracing`: where and how many traces are exported (OTLP over HTTP,
/// protobuf).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The collector's traces URL: `otlp_endpoint` with `/v1/traces`
    /// appended, as the OTLP spec does with `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub traces_url: String,
    /// Share of new traces recorded, 0 to 1. A request that arrives with a
    /// sampled `traceparent` is recorded whatever this says (parent-based).
    pub sample_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Ended spans held for export at most (waiting in the queue or in the
    /// batch being sent); a span that ends while it is full is dropped and
    /// counted, never waited for.
    pub queue_size: u32,
}

// `sample_ratio` is validated to lie in 0..=1, so it is never NaN and
// equality is total.
impl Eq for TracingSettings {}

pub const DEFAULT_TRACE_SAMPLE_RATIO: f64 = 1.0;
pub const DEFAULT_TRACE_SERVICE_NAME: &str = "bbproxy";
/// The OpenTelemetry SDK's default queue (`OTEL_BSP_MAX_QUEUE_SIZE`).
pub const DEFAULT_TRACE_QUEUE_SIZE: u32 = 2048;

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
