//! The validated configuration. Every value here has passed validation, so
//! the host can use it without re-checking; defaults are already filled in.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::storage::Storage;

mod filters;
mod forwarding;
mod routes;

pub use filters::*;
pub use forwarding::*;
pub use routes::*;

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
pub use bbproxy_plugin_contract::balancers::{
    BUILTIN_BALANCERS, CONSISTENT_HASH, HashOn, STICKY_COOKIE,
};
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
    /// `upstreams`: named backend pools that routes forward to, in file
    /// order. A pool is a [`Domain`] without `tls`, `router` and `routes`;
    /// its name is no domain's, non-empty and without `#`.
    pub pools: Vec<Domain>,
    /// Always the name of one of `domains`.
    pub default_domain: Option<String>,
    pub breaker: BreakerSettings,
    /// SHA-256 of the parsed file with its secrets blanked: with the
    /// plugins' digests it names the serving generation, so replicas can be
    /// compared.
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
    /// Every upstream of a generation in its order: the domains, then the
    /// pools (so adding a pool never renumbers a domain).
    pub fn upstreams(&self) -> impl Iterator<Item = &Domain> {
        self.domains.iter().chain(&self.pools)
    }

    /// Every filter entry: `plugins.filters`, then each domain's chain and
    /// its routes' chains.
    pub fn filters(&self) -> impl Iterator<Item = &Filter> {
        let domains = self.domains.iter().flat_map(|d| {
            d.filters
                .iter()
                .chain(d.routes.iter().flat_map(|r| &r.filters))
        });
        self.plugins.filters.iter().chain(domains)
    }

    /// The component files of [`Config::filters`], in that order.
    pub fn filter_paths(&self) -> impl Iterator<Item = &std::path::Path> {
        self.filters().filter_map(Filter::path)
    }

    /// Every set of upstream timeouts a request may be forwarded under:
    /// each upstream's, then each forwarding route's.
    pub fn upstream_timeouts(&self) -> impl Iterator<Item = &UpstreamTimeouts> {
        let routes = self.domains.iter().flat_map(|d| &d.routes);
        self.upstreams()
            .map(|u| &u.upstream.timeouts)
            .chain(routes.filter_map(|r| match &r.action {
                Action::Forward(f) => Some(&f.timeouts),
                _ => None,
            }))
    }

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
    /// TLS session resumption on the HTTPS listener: session tickets and
    /// the server's session cache, so a returning client skips the
    /// certificate signature. Off only for benchmarks that want every
    /// connection to be a full handshake.
    pub tls_session_resumption: bool,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            http: Some(DEFAULT_HTTP),
            https: Some(DEFAULT_HTTPS),
            redirect_http: false,
            tls_session_resumption: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// Lower case; `*.example.com` for wildcards; IPv6 literals in brackets.
    pub name: String,
    /// No duplicates; empty only when `routes` is not (a request no route
    /// matches is then answered 404).
    pub backends: Vec<Backend>,
    /// One of [`BUILTIN_BALANCERS`], or a custom balancer plugin's name.
    pub balancer: String,
    /// What `consistent-hash` hashes (`"hash_on"`, default `client_ip`);
    /// `Some` exactly when `balancer` is `consistent-hash`.
    pub hash_on: Option<HashOn>,
    /// The cookie `sticky-cookie` keeps a client on its backend with
    /// (`"cookie"`, a valid cookie name); `Some` exactly when `balancer` is
    /// `sticky-cookie`.
    pub sticky_cookie: Option<String>,
    /// `None` leaves the choice to the TLS layer.
    pub tls: Option<TlsSource>,
    /// Timeouts, limits, retries, health checks, protocol, pool.
    pub upstream: UpstreamSettings,
    /// Extra PEM roots trusted for this domain's `https://` backends (on top
    /// of the webpki roots); resolved against the config file's directory.
    pub backend_ca: Option<PathBuf>,
    /// The domain's own plugins; `None` uses `plugins.<role>`.
    pub plugins: DomainPlugins,
    /// `routes`, in file order: the first that matches a request decides;
    /// when none does, `backends` serve it. Always empty for a pool and
    /// for a domain whose router is a plugin of the user's.
    pub routes: Vec<Route>,
    /// `filters`: the chain for requests to this host, after
    /// `plugins.filters` and before a route's. Always empty for a pool.
    pub filters: Vec<Filter>,
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
    /// `plugins.filters`: the chain every domain's requests go through
    /// first.
    pub filters: Vec<Filter>,
    /// `plugins.cache_dir`: where compiled plugins are kept across restarts
    /// (none: every start compiles every plugin). Read at start only.
    pub cache_dir: Option<PathBuf>,
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
