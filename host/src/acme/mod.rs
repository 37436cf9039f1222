//! Automatic certificates by ACME (RFC 8555) with instant-acme: the
//! [`CertManager`] lives as long as the process (not a generation), keeps
//! the [`CertStore`] the TLS listener reads, and runs one background task
//! per ACME domain that orders, stores, renews at 2/3 of the lifetime, and
//! backs off after failures while the current certificate keeps serving.
//! A reload hands it the new domain set with [`CertManager::update_domains`].
//!
//! ACME state lives in a [`Storage`]: `cert_cache_dir` files for one node,
//! or Redis shared by replicas. With a shared storage a name is ordered
//! only by the replica holding its lock, challenge answers are published
//! for every replica to serve, and certificates another replica stores are
//! loaded by [`sync`] within seconds.

mod ari;
mod challenge;
mod client;
mod error;
mod lease;
mod order;
mod renew;
mod stats;
mod sync;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bbproxy_config::{Challenge, Config, Domain, TlsSource};
use rustls::sign::CertifiedKey;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

pub use challenge::{AlpnFromStorage, Http01Tokens, Remote};
pub use error::AcmeError;
pub use stats::{CertInfo, Stats};

use crate::storage::{self, Storage, StoredCert};
use crate::telemetry::names;
use crate::tls::{CertStore, TlsError, files};

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
    /// How often a shared storage is compared with what is served (the
    /// fallback when an announcement of a new certificate is missed): at
    /// half of the 10 s in which every replica must serve a certificate
    /// another one stored, so a missed announcement still makes it.
    pub storage_poll: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            renew_at: 2.0 / 3.0,
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(24 * 3600),
            order_timeout: Duration::from_secs(120),
            ari_recheck_min: Duration::from_secs(60),
            storage_poll: Duration::from_secs(5),
        }
    }
}

/// The ACME side of the config; a change restarts every ACME task.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    directory: String,
    email: Option<String>,
    ca_root: Option<PathBuf>,
    /// In preference order, without those that have no listener.
    challenges: Vec<Challenge>,
    cert_cache_dir: Option<PathBuf>,
    storage: Option<bbproxy_config::Storage>,
}

/// What the per-domain tasks share.
struct Ctx {
    settings: Settings,
    tuning: Tuning,
    storage: Arc<dyn Storage>,
    /// Lifetime of a name's lock.
    lease: Duration,
    store: Arc<CertStore>,
    http01: Arc<Http01Tokens>,
    stats: Arc<Stats>,
    retry_after: Arc<client::RetryAfter>,
    account: tokio::sync::Mutex<Option<instant_acme::Account>>,
    /// Names a certificate was just installed for from the storage: their
    /// tasks plan again.
    changed: broadcast::Sender<String>,
    /// The version (see [`storage::version_of`]) of the stored certificate
    /// each name serves, so the periodic check loads only what changed.
    loaded: Mutex<HashMap<String, String>>,
    /// The ACME names of the current config.
    names: Mutex<HashSet<String>>,
}

impl Ctx {
    /// Serves `cert` (from the storage or a new order) for `name` if it is
    /// not older than what is served; returns whether it did.
    fn install(&self, name: &str, cert: &StoredCert, from_storage: bool) -> Result<bool, TlsError> {
        let key = files::from_pem(name, cert.chain.as_bytes(), cert.key.as_bytes())?;
        let validity = files::validity(&key).map_err(|reason| TlsError::Generated {
            name: name.to_owned(),
            reason,
        })?;
        let version = storage::version_of(&cert.chain);
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(current) = self.store.exact(name)
            && let Ok(current_validity) = files::validity(&current)
        {
            let same = current.cert.first() == key.cert.first();
            if same || current_validity.not_after > validity.not_after {
                loaded.insert(name.to_owned(), version);
                return Ok(false);
            }
        }
        loaded.insert(name.to_owned(), version);
        // Served before the lock is released: otherwise two installs racing
        // (the name's task and the sync task, with different versions) can
        // leave the older certificate served while `loaded` names the newer
        // one, which the periodic check would then never correct.
        self.store.insert(name, key.clone());
        drop(loaded);
        export_expiry(name, &key);
        self.stats.clear_error(name);
        if from_storage {
            tracing::info!(
                domain = name,
                expires = %httpdate::fmt_http_date(validity.not_after),
                "certificate loaded from the storage"
            );
            let _ = self.changed.send(name.to_owned());
        }
        Ok(true)
    }

    fn is_wanted(&self, name: &str) -> bool {
        self.names
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }
}

#[derive(Default)]
struct State {
    ctx: Option<Arc<Ctx>>,
    tasks: HashMap<String, JoinHandle<()>>,
    /// Follows a shared storage (announcements and the periodic check).
    sync: Option<JoinHandle<()>>,
    /// Names whose certificate in the store comes from ACME.
    acme: HashSet<String>,
}

impl Drop for State {
    fn drop(&mut self) {
        for task in self.tasks.values() {
            task.abort();
        }
        if let Some(sync) = &self.sync {
            sync.abort();
        }
    }
}

/// Process-lifetime owner of certificates: static files and ACME.
pub struct CertManager {
    store: Arc<CertStore>,
    http01: Arc<Http01Tokens>,
    remote: Arc<Remote>,
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
        let remote = Arc::new(Remote::default());
        Arc::new(Self {
            store: CertStore::new(),
            http01: Arc::new(Http01Tokens::new(remote.clone())),
            remote,
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

    /// TLS-ALPN-01 answers published by other replicas.
    pub fn alpn_from_storage(&self) -> Arc<AlpnFromStorage> {
        Arc::new(AlpnFromStorage::new(self.remote.clone()))
    }

    /// Order counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The storage in use and its state (`None` before any ACME name).
    pub fn storage(&self) -> Option<storage::health::Snapshot> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Some(state.ctx.as_ref()?.storage.health().snapshot())
    }

    /// ACME names without a certificate on a replica that has not reached
    /// its shared storage since it started (it began during an outage):
    /// the others may well have them, so this one is not ready. A replica
    /// that has reached it stays ready through an outage, even for a name
    /// added meanwhile (no replica can have that one).
    pub fn waiting_on_storage(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(ctx) = &state.ctx else {
            return Vec::new();
        };
        let health = ctx.storage.health();
        if !ctx.storage.shared() || health.is_up() || health.reached() {
            return Vec::new();
        }
        let mut names: Vec<String> = state
            .acme
            .iter()
            .filter(|n| self.store.exact(n).is_none())
            .cloned()
            .collect();
        names.sort();
        names
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
        let (statics, acme) = sources(config)?;
        // With a shared storage the ACME side runs even without ACME names:
        // this replica still answers the others' challenges.
        let settings = if acme.is_empty() && config.storage.is_none() {
            None
        } else {
            Some(settings(config))
        };

        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let restart = match (&state.ctx, &settings) {
            (Some(ctx), Some(new)) => ctx.settings != *new,
            (None, None) => false,
            _ => true,
        };
        // The storage opens before anything is torn down: an unusable
        // cert_cache_dir fails the start or reload and changes nothing.
        let opened = match (&settings, restart) {
            (Some(_), true) => Some(storage::open(config)?),
            _ => None,
        };
        if restart {
            self.restart(&mut state, settings.zip(opened), config);
        }
        if let Some(ctx) = &state.ctx {
            *ctx.names.lock().unwrap_or_else(PoisonError::into_inner) =
                acme.iter().cloned().collect();
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
                if !has_acme_cert && let Some(key) = cached(ctx, name) {
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

    /// Stops every ACME task and starts over with `acme` (the settings and
    /// the storage opened for them; `None`: no ACME side).
    fn restart(
        &self,
        state: &mut State,
        acme: Option<(Settings, Arc<dyn Storage>)>,
        config: &Config,
    ) {
        for (_, task) in state.tasks.drain() {
            task.abort();
        }
        if let Some(sync) = state.sync.take() {
            sync.abort();
        }
        state.ctx = acme.map(|(settings, storage)| {
            Arc::new(Ctx {
                settings,
                tuning: self.tuning,
                lease: storage::lock_lease(config),
                storage,
                store: self.store.clone(),
                http01: self.http01.clone(),
                stats: self.stats.clone(),
                retry_after: Arc::default(),
                account: tokio::sync::Mutex::new(None),
                changed: broadcast::channel(64).0,
                loaded: Mutex::default(),
                names: Mutex::default(),
            })
        });
        let shared = state
            .ctx
            .as_ref()
            .filter(|ctx| ctx.storage.shared())
            .map(|ctx| ctx.storage.clone());
        self.remote.set(shared);
        if let Some(ctx) = state.ctx.clone().filter(|ctx| ctx.storage.shared()) {
            state.sync = Some(tokio::spawn(sync::run(ctx)));
        }
    }
}

/// The static certificates `config` names (read now, so a bad file fails
/// the update) and the domains whose certificates come from ACME.
#[allow(
    clippy::type_complexity,
    reason = "a pair of local lists, named by the doc"
)]
fn sources(config: &Config) -> Result<(Vec<(String, Arc<CertifiedKey>)>, Vec<String>), AcmeError> {
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
    Ok((statics, acme))
}

/// The ACME settings of `config`; HTTP-01 only with a plain HTTP listener.
fn settings(config: &Config) -> Settings {
    Settings {
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
        cert_cache_dir: config.cert_cache_dir.clone(),
        storage: config.storage.clone(),
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

/// A certificate the storage has at hand without waiting (files), unless
/// it has expired.
fn cached(ctx: &Ctx, name: &str) -> Option<Arc<CertifiedKey>> {
    let stored = ctx.storage.certificate_now(name)?;
    match files::from_pem(name, stored.chain.as_bytes(), stored.key.as_bytes()) {
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
        metrics::gauge!(names::CERT_EXPIRY, "domain" => name.to_owned())
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
