//! Hot reload: config.json and every `.wasm` it names form one generation.
//! A change to any of them (in-place write, write-then-rename, a Kubernetes
//! `..data` symlink swap) or SIGHUP builds a new generation off the request
//! path and swaps it in only if every step passed. A failed reload changes
//! nothing that serves; it is logged, counted and shown in `/status` until the
//! next good one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bbproxy_config::{Config, PluginSource};
use notify::{RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use std::sync::Mutex;
use std::sync::mpsc;
use tokio::sync::watch;

use crate::app::{ReloadFailure, Shared};
use crate::generation::Generation;
use crate::telemetry::names;

/// Quiet time after the last file event before reloading: editors and
/// `kubectl` touch several files per save.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// Longest a burst of events can postpone a reload.
const DEBOUNCE_MAX: Duration = Duration::from_millis(300);

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Generation `n` now serves.
    Swapped(u64),
    /// The files are the ones already loaded (or already tried): nothing to do.
    Unchanged,
}

/// Serialises reloads and remembers what was last tried.
#[derive(Debug)]
pub struct Reloader {
    shared: Arc<Shared>,
    /// Fingerprint of the files last tried, successfully or not.
    last_tried: Mutex<Option<[u8; 32]>>,
    /// Listen addresses of the running process: changing them needs a restart.
    listen: (Option<std::net::SocketAddr>, Option<std::net::SocketAddr>),
}

impl Reloader {
    /// A reloader for the proxy in `shared`, first loaded from `config`.
    pub fn new(shared: Arc<Shared>, config: &Config) -> Self {
        let fingerprint = fingerprint(config);
        Self {
            shared,
            last_tried: Mutex::new(Some(fingerprint)),
            listen: (config.listen.http, config.listen.https),
        }
    }

    /// Reloads if the config or a plugin changed since the last attempt
    /// (`force`: even if not), off the async worker threads. Returns the
    /// error text of a failed reload.
    pub async fn reload(self: &Arc<Self>, force: bool) -> Result<Outcome, String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.reload_blocking(force))
            .await
            .unwrap_or_else(|e| Err(format!("reload panicked: {e}")))
    }

    /// [`Reloader::reload`] on the calling thread (it compiles Wasm: call it
    /// from a thread that may block).
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
                    return Ok(Outcome::Unchanged);
                }
                *last = Some(fp);
                return Err(self.fail(e.to_string()));
            }
        };
        let fp = fingerprint(&config);
        if !force && *last == Some(fp) {
            return Ok(Outcome::Unchanged);
        }
        *last = Some(fp);
        if (config.listen.http, config.listen.https) != self.listen {
            tracing::warn!(
                "{}: listen addresses changed; they take effect only on restart",
                path.display()
            );
        }
        let started = std::time::Instant::now();
        let id = self.shared.next_generation_id();
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
            Ok(generation) => {
                self.shared.generation.store(Arc::new(generation));
                *self
                    .shared
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = None;
                metrics::counter!(names::RELOADS, "result" => "ok").increment(1);
                metrics::gauge!(names::GENERATION).set(id as f64);
                tracing::info!(
                    generation = id,
                    build_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "reloaded {}",
                    path.display()
                );
                Ok(Outcome::Swapped(id))
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn fail(&self, message: String) -> String {
        tracing::error!(
            "reload of {} failed, still serving generation {}: {message}",
            self.shared.config_path.display(),
            self.shared.generation.load().id
        );
        metrics::counter!(names::RELOADS, "result" => "error").increment(1);
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

    /// The directories to watch: the config file's and every plugin's.
    fn watch_dirs(&self) -> BTreeSet<PathBuf> {
        let mut dirs = BTreeSet::new();
        dirs.insert(parent(&self.shared.config_path));
        let generation = self.shared.generation.load();
        for p in plugin_paths(&generation.config) {
            dirs.insert(parent(&p));
        }
        dirs
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn plugin_paths(config: &Config) -> Vec<PathBuf> {
    let p = &config.plugins;
    [&p.router, &p.balancer, &p.breaker]
        .into_iter()
        .filter_map(|spec| match &spec.source {
            PluginSource::Path(path) => Some(path.clone()),
            PluginSource::Builtin => None,
        })
        .collect()
}

/// Hash of the config file and every plugin file it names, read through
/// their paths (so a swapped symlink counts as a change).
fn fingerprint(config: &Config) -> [u8; 32] {
    let mut h = Sha256::new();
    for path in std::iter::once(config.origin.clone()).chain(plugin_paths(config)) {
        h.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(&path) {
            Ok(bytes) => h.update(Sha256::digest(&bytes)),
            Err(e) => h.update(e.to_string().as_bytes()),
        }
    }
    h.finalize().into()
}

/// What wakes the reload thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// A file event in a watched directory.
    Changed,
    /// SIGHUP: reload even if nothing changed.
    Hangup,
    /// The proxy is shutting down.
    Stop,
}

/// A file watcher set up and watching, whose loop has not started yet.
///
/// Reloads run on a thread of their own, so how fast a change takes effect
/// does not depend on how busy the request workers are.
pub struct Watch {
    reloader: Arc<Reloader>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: BTreeSet<PathBuf>,
    tx: mpsc::Sender<Wake>,
    rx: mpsc::Receiver<Wake>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("watched", &self.watched)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Starts watching now, so a change made right after start-up is seen.
    pub fn start(reloader: Arc<Reloader>) -> Watch {
        let (tx, rx) = mpsc::channel::<Wake>();
        let events = tx.clone();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(event) = res
                && !event.kind.is_access()
            {
                let _ = events.send(Wake::Changed);
            }
        });
        let mut watch = Watch {
            watcher: None,
            watched: BTreeSet::new(),
            tx,
            rx,
            reloader,
        };
        match watcher {
            Ok(w) => {
                watch.watcher = Some(w);
                let dirs = watch.reloader.watch_dirs();
                watch.rewatch(dirs);
            }
            Err(e) => tracing::error!("cannot watch config files, reload only by SIGHUP: {e}"),
        }
        watch
    }

    fn rewatch(&mut self, wanted: BTreeSet<PathBuf>) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        for gone in self.watched.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        for new in wanted.difference(&self.watched) {
            if let Err(e) = watcher.watch(new, RecursiveMode::NonRecursive) {
                tracing::warn!(
                    "cannot watch {}: {e}; changes there need SIGHUP",
                    new.display()
                );
            }
        }
        self.watched = wanted;
    }

    /// Reloads on file changes and on SIGHUP until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let tx = self.tx.clone();
        // The reload thread enters this runtime so that what a reload starts
        // (ACME orders for new domains) runs on it.
        let runtime = tokio::runtime::Handle::current();
        let thread = std::thread::Builder::new()
            .name("bbproxy-reload".into())
            .spawn(move || {
                let _entered = runtime.enter();
                self.reload_loop();
            });
        if let Err(e) = thread {
            tracing::error!("cannot start the reload thread, config changes need a restart: {e}");
            return;
        }
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let wake = tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => Wake::Stop,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => Wake::Hangup,
            };
            let stop = wake == Wake::Stop;
            if tx.send(wake).is_err() || stop {
                return;
            }
        }
    }

    fn reload_loop(mut self) {
        while let Ok(wake) = self.rx.recv() {
            let forced = match wake {
                Wake::Stop => return,
                Wake::Hangup => {
                    tracing::info!("SIGHUP: reloading");
                    true
                }
                Wake::Changed => match debounce(&self.rx) {
                    Some(forced) => forced,
                    None => return,
                },
            };
            if let Ok(Outcome::Swapped(_)) = self.reloader.reload_blocking(forced) {
                let dirs = self.reloader.watch_dirs();
                self.rewatch(dirs);
            }
        }
    }
}

/// Waits until events stop for [`DEBOUNCE`] (at most [`DEBOUNCE_MAX`]).
/// Returns whether a SIGHUP came in meanwhile, or `None` to stop.
fn debounce(rx: &mpsc::Receiver<Wake>) -> Option<bool> {
    let end = std::time::Instant::now() + DEBOUNCE_MAX;
    let mut forced = false;
    loop {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Some(forced);
        }
        match rx.recv_timeout(DEBOUNCE.min(left)) {
            Ok(Wake::Changed) => {}
            Ok(Wake::Hangup) => forced = true,
            Ok(Wake::Stop) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => return Some(forced),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
    }
}
