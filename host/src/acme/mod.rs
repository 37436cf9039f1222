//! Automatic certificates by ACME (RFC 8555) with instant-acme: the
//! [`CertManager`] lives as long as the process (not a generation), keeps
//! the [`CertStore`] the TLS listener reads, and runs one background task
//! per ACME domain that orders, stores, renews at 2/3 of the lifetime, and
//! backs off after failures while the current certificate keeps serving.
//! A reload hands it the new domain set with [`CertManager::update_domains`].

mod ari;
mod cache;
mod challenge;
mod client;
mod order;
mod renew;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bbproxy_config::{Challenge, Config, Domain, TlsSource};
use rustls::sign::CertifiedKey;
use tokio::task::JoinHandle;

pub use cache::Cache;
pub use challenge::Http01Tokens;

use crate::tls::{CertStore, TlsError, files};

/// Why certificates could not be set up or obtained.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// A static certificate or key file, or an issued chain, is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `cert_cache_dir` cannot be used.
    #[error("cert_cache_dir {path}: {reason}")]
    Cache {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `acme.ca_root` cannot be used.
    #[error("acme.ca_root {path}: {reason}")]
    CaRoot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client for the ACME server could not be built.
    #[error("ACME client: {0}")]
    Client(String),
    /// The ACME server refused or could not be reached.
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// The server offers no challenge this configuration can answer.
    #[error("ACME offers no usable challenge for {name} (allowed: {allowed})")]
    NoChallenge {
        /// The domain.
        name: String,
        /// `acme.challenges` after removing what has no listener.
        allowed: String,
    },
    /// An authorization or order ended in a state other than valid.
    #[error("ACME {what} for {name} is {status}{detail}")]
    Failed {
        /// `authorization` or `order`.
        what: &'static str,
        /// The domain.
        name: String,
        /// The final status.
        status: String,
        /// The server's explanation, if any.
        detail: String,
    },
}

impl AcmeError {
    /// Whether the server no longer knows the account.
    fn account_gone(&self) -> bool {
        matches!(
            self,
            AcmeError::Protocol(instant_acme::Error::Api(problem))
                if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist")
        )
    }
}

/// Timing knobs that are not in config.json (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Fraction of a certificate's lifetime after which it is renewed.
    pub renew_at: f64,
    /// Wait after the first failure; doubles with each further one.
    pub retry_initial: Duration,
    /// Longest wait between attempts.
    pub retry_max: Duration,
    /// How long one order may take to validate and be issued.
    pub order_timeout: Duration,
    /// Shortest wait before asking the CA's renewal information again,
    /// whatever its `Retry-After` says.
    pub ari_recheck_min: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            renew_at: 2.0 / 3.0,
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(24 * 3600),
            order_timeout: Duration::from_secs(120),
            ari_recheck_min: Duration::from_secs(60),
        }
    }
}

/// Counters, also exported as `bbproxy_acme_orders_total{result}`, and
/// the renewal schedule (`bbproxy_cert_renewal_timestamp_seconds`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Orders that produced a certificate.
    pub orders_ok: AtomicU64,
    /// Orders that failed.
    pub orders_failed: AtomicU64,
    renewals: Mutex<HashMap<String, SystemTime>>,
    /// The last failed order of each name, until one succeeds.
    errors: Mutex<HashMap<String, (SystemTime, String)>>,
}

impl Stats {
    fn record(&self, ok: bool) {
        let (counter, result) = if ok {
            (&self.orders_ok, "ok")
        } else {
            (&self.orders_failed, "error")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("bbproxy_acme_orders_total", "result" => result).increment(1);
    }

    /// Orders that produced a certificate so far.
    pub fn ok(&self) -> u64 {
        self.orders_ok.load(Ordering::Relaxed)
    }

    /// Orders that failed so far.
    pub fn failed(&self) -> u64 {
        self.orders_failed.load(Ordering::Relaxed)
    }

    /// When the certificate of `name` is next due for renewal, once its
    /// task has decided.
    pub fn renewal_at(&self, name: &str) -> Option<SystemTime> {
        let renewals = self.renewals.lock().unwrap_or_else(PoisonError::into_inner);
        renewals.get(name).copied()
    }

    /// The last failed order of `name` (when, why) since its last success.
    pub fn last_error(&self, name: &str) -> Option<(SystemTime, String)> {
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.get(name).cloned()
    }

    fn set_error(&self, name: &str, error: Option<String>) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        match error {
            Some(e) => errors.insert(name.to_owned(), (SystemTime::now(), e)),
            None => errors.remove(name),
        };
    }

    fn schedule(&self, name: &str, at: SystemTime) {
        let mut renewals = self.renewals.lock().unwrap_or_else(PoisonError::into_inner);
        renewals.insert(name.to_owned(), at);
        metrics::gauge!("bbproxy_cert_renewal_timestamp_seconds", "domain" => name.to_owned())
            .set(unix_seconds(at));
    }
}

/// One certificate as `/status` shows it.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The name it is served for (`*.example.com` for a wildcard).
    pub name: String,
    /// Ordered through ACME (else a file of the config).
    pub acme: bool,
    /// The leaf's issuer; `None` while an ACME name has no certificate yet.
    pub issuer: Option<String>,
    /// notAfter of the leaf.
    pub not_after: Option<SystemTime>,
    /// When an ACME certificate is due for renewal.
    pub renewal_at: Option<SystemTime>,
    /// The last failed ACME order since the last good one: when and why.
    pub last_error: Option<(SystemTime, String)>,
}

/// The ACME side of the config; a change restarts every ACME task.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    directory: String,
    email: Option<String>,
    ca_root: Option<PathBuf>,
    /// In preference order, without those that have no listener.
    challenges: Vec<Challenge>,
    cache: Cache,
}

/// What the per-domain tasks share.
struct Ctx {
    settings: Settings,
    tuning: Tuning,
    store: Arc<CertStore>,
    http01: Arc<Http01Tokens>,
    stats: Arc<Stats>,
    retry_after: Arc<client::RetryAfter>,
    account: tokio::sync::Mutex<Option<instant_acme::Account>>,
}

#[derive(Default)]
struct State {
    ctx: Option<Arc<Ctx>>,
    tasks: HashMap<String, JoinHandle<()>>,
    /// Names whose certificate in the store comes from ACME.
    acme: HashSet<String>,
}

impl Drop for State {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
    }
}

/// Process-lifetime owner of certificates: static files and ACME.
pub struct CertManager {
    store: Arc<CertStore>,
    http01: Arc<Http01Tokens>,
    stats: Arc<Stats>,
    tuning: Tuning,
    state: Mutex<State>,
}

impl std::fmt::Debug for CertManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertManager")
            .field("names", &self.store.names())
            .finish_non_exhaustive()
    }
}

impl CertManager {
    /// A manager with no certificates.
    pub fn new(tuning: Tuning) -> Arc<Self> {
        crate::tls::install_default_provider();
        Arc::new(Self {
            store: CertStore::new(),
            http01: Arc::new(Http01Tokens::default()),
            stats: Arc::new(Stats::default()),
            tuning,
            state: Mutex::new(State::default()),
        })
    }

    /// The certificates the TLS listener serves.
    pub fn store(&self) -> Arc<CertStore> {
        self.store.clone()
    }

    /// HTTP-01 answers for the plain HTTP listener.
    pub fn http01(&self) -> Arc<Http01Tokens> {
        self.http01.clone()
    }

    /// Order counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Names with an ACME task running.
    pub fn acme_names(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.tasks.keys().cloned().collect()
    }

    /// Every certificate served, and every ACME name still waiting for its
    /// first one, sorted by name.
    pub fn certificates(&self) -> Vec<CertInfo> {
        let acme: HashSet<String> = {
            let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.tasks.keys().cloned().collect()
        };
        let mut names: Vec<String> = self.store.names();
        names.extend(
            acme.iter()
                .filter(|n| !names.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        names.sort();
        names
            .into_iter()
            .map(|name| {
                let key = self.store.exact(&name);
                let validity = key.as_ref().and_then(|k| files::validity(k).ok());
                let is_acme = acme.contains(&name);
                CertInfo {
                    issuer: key.as_ref().and_then(|k| files::issuer(k)),
                    not_after: validity.map(|v| v.not_after),
                    renewal_at: if is_acme {
                        self.stats.renewal_at(&name)
                    } else {
                        None
                    },
                    last_error: self.stats.last_error(&name),
                    acme: is_acme,
                    name,
                }
            })
            .collect()
    }

    /// Makes the served certificates match `config`: static files are
    /// (re)read, ACME domains get a task (loading a valid cached certificate
    /// first), removed domains are dropped. On error nothing changes, so a
    /// failed reload keeps the old certificates. Must run inside the tokio
    /// runtime (it spawns the ACME tasks).
    pub fn update_domains(&self, config: &Config) -> Result<(), AcmeError> {
        let mut statics = Vec::new();
        let mut acme = Vec::new();
        for domain in &config.domains {
            match source(domain, config) {
                TlsSource::Off => {}
                TlsSource::Files { cert, key } => {
                    statics.push((domain.name.clone(), files::load(&cert, &key)?));
                }
                TlsSource::Acme => acme.push(domain.name.clone()),
            }
        }
        let settings = if acme.is_empty() {
            None
        } else {
            Some(Settings {
                directory: config.acme.directory.clone(),
                email: config.acme.email.clone(),
                ca_root: config.acme.ca_root.clone(),
                challenges: config
                    .acme
                    .challenges
                    .iter()
                    .copied()
                    .filter(|c| *c != Challenge::Http01 || config.listen.http.is_some())
                    .collect(),
                cache: Cache::open(config.cert_cache_dir.as_deref())?,
            })
        };

        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let restart = match (&state.ctx, &settings) {
            (Some(ctx), Some(new)) => ctx.settings != *new,
            (None, None) => false,
            _ => true,
        };
        if restart {
            for (_, task) in state.tasks.drain() {
                task.abort();
            }
            state.ctx = settings.map(|settings| {
                Arc::new(Ctx {
                    settings,
                    tuning: self.tuning,
                    store: self.store.clone(),
                    http01: self.http01.clone(),
                    stats: self.stats.clone(),
                    retry_after: Arc::default(),
                    account: tokio::sync::Mutex::new(None),
                })
            });
        }
        let wanted: HashSet<&str> = acme.iter().map(String::as_str).collect();
        state.tasks.retain(|name, task| {
            let keep = wanted.contains(name.as_str());
            if !keep {
                task.abort();
            }
            keep
        });

        // ACME names keep the certificate they have; new ones start from
        // the cache when it holds a certificate that has not expired.
        let mut add = statics;
        if let Some(ctx) = &state.ctx {
            for name in &acme {
                let has_acme_cert = state.acme.contains(name) && self.store.exact(name).is_some();
                if !has_acme_cert && let Some(key) = cached(&ctx.settings.cache, name) {
                    add.push((name.clone(), key));
                }
            }
        }
        let default = config.default_domain.clone().filter(|d| {
            config
                .domain(d)
                .is_some_and(|d| source(d, config) != TlsSource::Off)
        });
        // A name that was not ACME before drops its old (static) certificate,
        // so its task orders at once instead of waiting for that one to age.
        let previous = std::mem::take(&mut state.acme);
        self.store.replace(
            |name| wanted.contains(name) && previous.contains(name),
            &add,
            default,
        );
        state.acme = acme.iter().cloned().collect();
        for (name, key) in &add {
            export_expiry(name, key);
        }

        if let Some(ctx) = state.ctx.clone() {
            for name in acme {
                if let std::collections::hash_map::Entry::Vacant(slot) = state.tasks.entry(name) {
                    let name = slot.key().clone();
                    slot.insert(tokio::spawn(renew::run(ctx.clone(), name)));
                }
            }
        }
        Ok(())
    }
}

/// The TLS source a domain really gets: `listen.https` unset means none;
/// unset `tls` means ACME, except for IPs, localhost and wildcards, which
/// no public CA issues for.
pub fn source(domain: &Domain, config: &Config) -> TlsSource {
    if config.listen.https.is_none() {
        return TlsSource::Off;
    }
    match &domain.tls {
        Some(tls) => tls.clone(),
        None if acme_eligible(&domain.name) => TlsSource::Acme,
        None => TlsSource::Off,
    }
}

fn acme_eligible(name: &str) -> bool {
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    !(bare.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || name.starts_with("*."))
}

fn cached(cache: &Cache, name: &str) -> Option<Arc<CertifiedKey>> {
    let (chain, key) = cache.certificate(name)?;
    match files::from_pem(name, &chain, &key) {
        Ok(key) => {
            let validity = files::validity(&key).ok()?;
            if validity.not_after <= SystemTime::now() {
                tracing::info!(
                    domain = name,
                    "cached certificate has expired; ordering a new one"
                );
                return None;
            }
            tracing::info!(domain = name, "using the cached certificate");
            Some(key)
        }
        Err(e) => {
            tracing::warn!(domain = name, "ignoring the cached certificate: {e}");
            None
        }
    }
}

fn export_expiry(name: &str, key: &CertifiedKey) {
    if let Ok(validity) = files::validity(key) {
        metrics::gauge!("bbproxy_cert_expiry_timestamp_seconds", "domain" => name.to_owned())
            .set(unix_seconds(validity.not_after));
    }
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::acme_eligible;

    #[test]
    fn ips_localhost_and_wildcards_get_no_acme_by_default() {
        for name in [
            "127.0.0.1",
            "[::1]",
            "localhost",
            "a.localhost",
            "*.example.com",
        ] {
            assert!(!acme_eligible(name), "{name}");
        }
        assert!(acme_eligible("example.com"));
    }
}
