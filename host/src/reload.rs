//! Hot reload: config.json and every `.wasm` it names form one generation.
//! A change to any of them (in-place write, write-then-rename, a Kubernetes
//! `..data` symlink swap) or SIGHUP builds a new generation off the request
//! path and swaps it in only if every step passed. A failed reload changes
//! nothing that serves; it is logged, counted and shown in `/status` until the
//! next good one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bbproxy_config::{Config, PluginSource, TlsSource};
use sha2::{Digest, Sha256};
use std::sync::Mutex;

use crate::generation::Generation;
use crate::state::{ReloadFailure, ReloadRecord, Shared};
use crate::telemetry::names;

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Generation `n` now serves.
    Swapped(u64),
    /// The files are the ones already loaded (or already tried): nothing to do.
    Unchanged,
}

/// Settings read once at start-up: a reload that changes them logs that a
/// restart is needed instead of silently ignoring them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fixed {
    listen: (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>),
    redirect_http: bool,
    tls_session_resumption: bool,
    admin: Option<std::net::SocketAddr>,
    log_interval: Duration,
    shutdown_grace: Duration,
    log_format: Option<bbproxy_config::LogFormat>,
    tracing: Option<bbproxy_config::TracingSettings>,
    plugin_cache_dir: Option<std::path::PathBuf>,
}

impl Fixed {
    fn of(config: &Config) -> Self {
        Self {
            listen: (config.listen.http, config.listen.https),
            redirect_http: config.listen.redirect_http,
            tls_session_resumption: config.listen.tls_session_resumption,
            admin: config.admin,
            log_interval: config.metrics.log_interval,
            shutdown_grace: config.shutdown_grace,
            log_format: config.log_format,
            tracing: config.tracing.clone(),
            plugin_cache_dir: config.plugins.cache_dir.clone(),
        }
    }

    /// The config keys whose value differs from `self`.
    fn changed(&self, other: &Fixed) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.listen != other.listen {
            out.push("listen");
        }
        if self.redirect_http != other.redirect_http {
            out.push("listen.redirect_http");
        }
        if self.tls_session_resumption != other.tls_session_resumption {
            out.push("listen.tls_session_resumption");
        }
        if self.admin != other.admin {
            out.push("admin");
        }
        if self.log_interval != other.log_interval {
            out.push("metrics.log_interval");
        }
        if self.shutdown_grace != other.shutdown_grace {
            out.push("shutdown_grace");
        }
        if self.log_format != other.log_format {
            out.push("log_format");
        }
        if self.tracing != other.tracing {
            out.push("tracing");
        }
        if self.plugin_cache_dir != other.plugin_cache_dir {
            out.push("plugins.cache_dir");
        }
        out
    }
}

/// Serialises reloads and remembers what was last tried.
#[derive(Debug)]
pub struct Reloader {
    shared: Arc<Shared>,
    /// Fingerprint of the files last tried, successfully or not (`None`:
    /// unknown, so the next check reloads).
    last_tried: Mutex<Option<[u8; 32]>>,
    /// The files the last config that parsed names (whether or not its
    /// reload succeeded): their directories are watched too, so fixing a
    /// file a failed reload missed is seen.
    attempted: Mutex<Vec<PathBuf>>,
    /// What the process started with and cannot change without a restart.
    fixed: Fixed,
}

impl Reloader {
    /// A reloader for the proxy in `shared`, first loaded from `config`.
    /// `fingerprint` is what [`fingerprint_before_build`] returned before
    /// that load was built.
    pub fn new(shared: Arc<Shared>, config: &Config, fingerprint: Option<[u8; 32]>) -> Self {
        Self {
            shared,
            last_tried: Mutex::new(fingerprint),
            attempted: Mutex::new(watched_files(config)),
            fixed: Fixed::of(config),
        }
    }

    /// Reloads if the config or a file it names changed since the last
    /// attempt (`force`: even if not). Blocking: it compiles Wasm, so call
    /// it from a thread that may block. Returns the error text of a failed
    /// reload.
    pub fn reload_blocking(&self, force: bool) -> Result<Outcome, String> {
        let mut last = self.last_tried.lock().unwrap_or_else(|p| p.into_inner());
        let path = &self.shared.config_path;
        let config = match bbproxy_config::load(path) {
            Ok(c) => c,
            Err(e) => {
                // Fingerprint the raw file so an unchanged broken file is not
                // retried (and re-logged) on every unrelated event.
                let raw = std::fs::read(path).unwrap_or_default();
                let fp: [u8; 32] = Sha256::digest(&raw).into();
                if !force && *last == Some(fp) {
                    return Ok(unchanged());
                }
                *last = Some(fp);
                self.shared.reload_attempts.fetch_add(1, Ordering::Relaxed);
                return Err(self.fail(e.to_string()));
            }
        };
        *self.attempted.lock().unwrap_or_else(|p| p.into_inner()) = watched_files(&config);
        let fp = fingerprint(&config);
        if !force && *last == Some(fp) {
            return Ok(unchanged());
        }
        *last = Some(fp);
        for key in self.fixed.changed(&Fixed::of(&config)) {
            tracing::warn!(
                "{}: `{key}` changed; it takes effect only on restart",
                path.display()
            );
        }
        let started = tokio::time::Instant::now();
        self.shared.reload_attempts.fetch_add(1, Ordering::Relaxed);
        // Only a generation that is swapped in takes a number, so `/status`
        // readers see 1, 2, 3... however many reloads failed in between.
        // Reloads run one at a time (under `last_tried`), so nothing else
        // swaps between this read and the store below.
        let id = self.shared.generation.load().id + 1;
        let config = Arc::new(config);
        let built = Generation::build(id, config, &self.shared.runtime, &self.shared.registry);
        // Certificates follow the new domains; a bad cert file fails the
        // reload before anything is swapped.
        let built = built.map_err(|e| e.to_string()).and_then(|g| {
            self.shared
                .certs
                .update_domains(&g.config)
                .map(|()| g)
                .map_err(|e| e.to_string())
        });
        match built {
            Ok(generation) => Ok(self.swap_in(generation, started)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Makes a built `generation` the serving one, with everything that
    /// follows it (registry, access log, compile cache, the reload record).
    fn swap_in(&self, generation: Generation, started: tokio::time::Instant) -> Outcome {
        let id = generation.id;
        // The registry follows only a generation that serves, so a failed
        // reload never makes it forget the serving one's backends (and
        // their breaker state).
        generation.commit_registry(&self.shared.registry);
        self.shared
            .observer
            .set_access_log(generation.config.access_log);
        let live = generation.component_digests();
        // Cleared first: whoever sees the new generation must not see the
        // error of the reload it replaced.
        *self
            .shared
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        self.shared.record_reload(ReloadRecord {
            at: SystemTime::now(),
            generation: Some(id),
            error: None,
        });
        self.shared.generation.store(Arc::new(generation));
        self.shared.runtime.evict_unused(&live);
        metrics::counter!(names::RELOADS, "result" => "ok").increment(1);
        metrics::gauge!(names::GENERATION).set(id as f64);
        tracing::info!(
            generation = id,
            build_ms = started.elapsed().as_secs_f64() * 1000.0,
            "reloaded {}",
            self.shared.config_path.display()
        );
        Outcome::Swapped(id)
    }

    fn fail(&self, message: String) -> String {
        // Every error should name the file at fault; one that names none
        // (a built-in plugin rejecting its settings) is about config.json.
        let config = self.shared.config_path.display().to_string();
        let names_a_file = message.contains(&config)
            || self
                .attempted
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|f| message.contains(&f.display().to_string()));
        let message = if names_a_file {
            message
        } else {
            format!("{config}: {message}")
        };
        tracing::error!(
            "reload of {config} failed, still serving generation {}: {message}",
            self.shared.generation.load().id
        );
        metrics::counter!(names::RELOADS, "result" => "error").increment(1);
        self.shared.record_reload(ReloadRecord {
            at: SystemTime::now(),
            generation: None,
            error: Some(message.clone()),
        });
        *self
            .shared
            .last_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(ReloadFailure {
            at: SystemTime::now(),
            message: message.clone(),
        });
        message
    }

    /// The directories to watch: the config file's, and those of every file
    /// the serving config and the last attempted one name. A directory that
    /// does not exist yet is stood in for by its nearest existing ancestor,
    /// whose events (the directory being created) lead to a rewatch.
    fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        self.watched_now()
            .iter()
            .map(|f| existing(parent(f)))
            .collect()
    }

    /// The config file, and every file the serving config and the last
    /// attempted one name.
    fn watched_now(&self) -> Vec<PathBuf> {
        let generation = self.shared.generation.load();
        let attempted = self
            .attempted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        std::iter::once(self.shared.config_path.clone())
            .chain(watched_files(&generation.config))
            .chain(attempted)
            .collect()
    }
}

/// A check that found the files as last tried: counted, so an operator
/// sees how often the watcher wakes for nothing.
fn unchanged() -> Outcome {
    metrics::counter!(names::RELOADS, "result" => "unchanged").increment(1);
    Outcome::Unchanged
}

/// Registers the SIGHUP handler: do it before the first (slow) build, since
/// SIGHUP's default action ends the process. `None` if it cannot be
/// registered (then SIGHUP keeps its default). Needs a Tokio runtime.
pub fn hangup() -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP: {e}");
            None
        }
    }
}

/// The fingerprint of the files `config` was read from, taken before the
/// first generation is built from it: a file saved after this point (even
/// before the watcher starts) then differs from it and is reloaded.
/// `None` when config.json no longer parses to `config` (it was saved
/// between being read and now), so the first check reloads.
pub fn fingerprint_before_build(config: &Config) -> Option<[u8; 32]> {
    let fp = fingerprint(config);
    match bbproxy_config::load(&config.origin) {
        Ok(now) if now == *config => Some(fp),
        _ => None,
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `dir`, or its nearest ancestor that exists.
fn existing(dir: PathBuf) -> PathBuf {
    let mut d = dir.as_path();
    loop {
        if d.is_dir() {
            return d.to_path_buf();
        }
        match d.parent() {
            Some(p) if !p.as_os_str().is_empty() => d = p,
            _ => return dir,
        }
    }
}

/// Every `.wasm` the config names: `plugins.<role>` and each domain's (and
/// pool's) own.
fn plugin_paths(config: &Config) -> Vec<PathBuf> {
    let p = &config.plugins;
    let own = config.upstreams().flat_map(|d| {
        let o = &d.plugins;
        [&o.router, &o.balancer, &o.breaker].into_iter().flatten()
    });
    [&p.router, &p.balancer, &p.breaker]
        .into_iter()
        .chain(own)
        .filter_map(|spec| match &spec.source {
            PluginSource::Path(path) => Some(path.clone()),
            PluginSource::Builtin => None,
        })
        .chain(config.filter_paths().map(Path::to_path_buf))
        .collect()
}

/// Every file a generation is built from: config.json, the plugins, each
/// domain's `backend_ca` and certificate and key files.
fn watched_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.origin.clone()];
    files.extend(plugin_paths(config));
    files.extend(config.upstreams().filter_map(|u| u.backend_ca.clone()));
    for d in &config.domains {
        if let TlsSource::Files { cert, key } = crate::acme::source(d, config) {
            files.extend([cert, key]);
        }
    }
    files
}

/// Hash of every file a generation is built from, read through their paths
/// (so a swapped symlink counts as a change).
fn fingerprint(config: &Config) -> [u8; 32] {
    let mut h = Sha256::new();
    for path in watched_files(config) {
        h.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(&path) {
            Ok(bytes) => h.update(Sha256::digest(&bytes)),
            Err(e) => h.update(e.to_string().as_bytes()),
        }
    }
    h.finalize().into()
}

mod watch;
pub use watch::Watch;

#[cfg(test)]
mod tests;
