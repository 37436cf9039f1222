//! Putting the pieces together: config → plugin runtime → first generation →
//! admin listener → proxy listeners. Used by `main` and by the integration
//! tests, which run the whole proxy in-process on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bbproxy_config::{Config, TlsSource};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::acme::{AcmeError, CertManager, Tuning};
use crate::front::Front;
use crate::generation::{BuildError, Generation};
use crate::plugin::{LoadError, Runtime, RuntimeOptions};
use crate::proxy::observe::Observer;
use crate::proxy::{Proxy, Scheme};
use crate::reload::{self, Reloader};
use crate::server::workers::{self, Workers};
use crate::server::{self, BindError};
use crate::state::Shared;
use crate::telemetry;
use crate::telemetry::otel::Tracing;
use crate::tls::{Resumption, TlsTerminator};
use crate::upstream::{Registry, connection_counts};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The WebAssembly engine could not start.
    #[error(transparent)]
    Runtime(#[from] LoadError),
    /// The first generation could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// A certificate, key or the ACME setup is unusable.
    #[error(transparent)]
    Certs(#[from] AcmeError),
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// No listener is configured.
    #[error("nothing to serve: set listen.http or listen.https in the config")]
    NoListener,
    /// The worker threads could not be started.
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
    /// The OTLP trace exporter could not start.
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::otel::TracingError),
}

/// Options that do not come from config.json.
#[derive(Debug, Clone)]
pub struct Options {
    /// Overrides the config's `shutdown_grace`.
    pub shutdown_grace: Option<Duration>,
    /// Watch the config file and its plugins and reload on change (off for
    /// the demo, whose config is not a file).
    pub watch: bool,
    /// ACME renewal and retry timing.
    pub acme: Tuning,
    /// Worker threads serving the listeners (none: one per CPU).
    pub workers: Option<usize>,
    /// The plugin cache directory when the config sets no
    /// `plugins.cache_dir` (tests share one, so the suite compiles each
    /// plugin once).
    pub plugin_cache_dir: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            shutdown_grace: None,
            watch: true,
            acme: Tuning::default(),
            workers: None,
            plugin_cache_dir: None,
        }
    }
}

/// A loaded proxy whose admin listener (if any) is up but whose proxy
/// listeners are not bound yet: `/readyz` says not ready.
#[derive(Debug)]
pub struct Prepared {
    config: Arc<Config>,
    options: Options,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// Where the admin endpoints are served, if enabled.
    pub admin: Option<SocketAddr>,
    /// Reloads the config (also on file change and SIGHUP).
    pub reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    workers: Workers,
}

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    /// Where plain HTTP is served, if configured.
    pub http: Option<SocketAddr>,
    /// Where HTTPS is served, if configured.
    pub https: Option<SocketAddr>,
    /// Certificates (static and ACME).
    pub certs: Arc<CertManager>,
    /// Where the admin endpoints are served, if enabled.
    pub admin: Option<SocketAddr>,
    /// The generation serving new requests.
    pub generation: Arc<ArcSwap<Generation>>,
    /// The plugin runtime (shared state, compile cache).
    pub runtime: Runtime,
    /// Process-lifetime state.
    pub shared: Arc<Shared>,
    /// Reloads the config (also on file change and SIGHUP).
    pub reloader: Arc<Reloader>,
    /// How many worker threads serve the listeners.
    pub workers: usize,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Declared last: dropped after `tasks`, it stops the worker threads
    /// (and cancels what still runs on them).
    _workers: Workers,
}

impl Running {
    /// Stops accepting, drains open connections within the grace period,
    /// and returns when every listener is done.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.wait().await;
    }

    /// Returns when the listeners stop (after a shutdown signal), and the
    /// spans still queued are exported.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(tracing) = self.shared.observer.tracing().cloned() {
            // The exporter blocks its caller while it sends on this
            // runtime: off the async threads.
            let _ =
                tokio::task::spawn_blocking(move || tracing.shutdown(Duration::from_secs(5))).await;
        }
    }

    /// A handle that makes [`Running::wait`] return.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

/// Builds a generation off the async threads (compiling Wasm blocks).
pub async fn build_generation(
    id: u64,
    config: Arc<Config>,
    runtime: Runtime,
    registry: Arc<Registry>,
) -> Result<Generation, BuildError> {
    tokio::task::spawn_blocking(move || Generation::build(id, config, &runtime, &registry))
        .await
        .unwrap_or_else(|join| {
            Err(BuildError::Unsupported(format!(
                "generation build panicked: {join}"
            )))
        })
}

/// Starts the proxy for `config`.
pub async fn start(config: Config, options: Options) -> Result<Running, StartError> {
    prepare(config, options).await?.serve().await
}

/// Loads `config` and starts the admin listener, without binding the proxy
/// listeners yet.
pub async fn prepare(config: Config, options: Options) -> Result<Prepared, StartError> {
    // Install the recorder before any handle is made, so every metric is
    // recorded into it.
    telemetry::install();
    // SIGHUP ends the process by default: take it over before the slow
    // first build, and fingerprint the files before that build reads them.
    let hangup = if options.watch {
        reload::hangup()
    } else {
        None
    };
    let fingerprint = options
        .watch
        .then(|| reload::fingerprint_before_build(&config))
        .flatten();
    let worker_count = options.workers.unwrap_or_else(workers::default_count);
    let runtime = runtime(&config, &options, worker_count)?;
    let registry = Arc::new(Registry::new(worker_count));
    let config = Arc::new(config);
    let first = build_generation(1, config.clone(), runtime.clone(), registry.clone()).await?;
    announce(&first);
    // Certificates before listeners: a bad cert file fails the start.
    let certs = CertManager::new(options.acme);
    certs.update_domains(&config)?;
    first.commit_registry(&registry);
    // Threads now, listeners once `serve` binds them.
    let workers = Workers::start(worker_count).map_err(StartError::Workers)?;
    let tracing = config.tracing.as_ref().map(start_tracing).transpose()?;
    let shared = Arc::new(Shared {
        workers: workers.stats().clone(),
        certs,
        generation: Arc::new(ArcSwap::from_pointee(first)),
        runtime,
        registry,
        connections: connection_counts(),
        observer: Arc::new(Observer::new(config.access_log).with_tracing(tracing)),
        config_path: config.origin.clone(),
        ready: AtomicBool::new(false),
        last_reload_error: Mutex::new(None),
        reload_attempts: AtomicU64::new(0),
        reloads: Mutex::default(),
    });
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let admin = match config.admin {
        Some(addr) => {
            let (bound, task) = start_admin(addr, shared.clone(), rx.clone()).await?;
            tasks.push(task);
            bound
        }
        None => None,
    };
    let reloader = Arc::new(Reloader::new(shared.clone(), &config, fingerprint));
    if options.watch {
        let watch = reload::Watch::start(reloader.clone(), hangup);
        tasks.push(tokio::spawn(watch.run(rx.clone())));
    }
    tasks.push(tokio::spawn(summary_loop(
        shared.clone(),
        config.metrics.log_interval,
        rx,
    )));
    Ok(Prepared {
        config,
        options,
        shared,
        admin,
        reloader,
        shutdown,
        tasks,
        workers,
    })
}

/// The engine, with an idle-instance list per worker and the config's
/// plugin cache (or the options' default one).
fn runtime(config: &Config, options: &Options, workers: usize) -> Result<Runtime, StartError> {
    let cache_dir = config
        .plugins
        .cache_dir
        .as_ref()
        .or(options.plugin_cache_dir.as_ref());
    Ok(Runtime::with_options(RuntimeOptions {
        workers,
        cache_dir: cache_dir.cloned(),
        ..RuntimeOptions::default()
    })?)
}

/// Starts the OTLP trace exporter `settings` describe.
fn start_tracing(settings: &bbproxy_config::TracingSettings) -> Result<Arc<Tracing>, StartError> {
    let tracing = Tracing::start(settings, tokio::runtime::Handle::current())?;
    tracing::info!(
        "exporting traces to {} (sample ratio {})",
        tracing.traces_url(),
        tracing.sample_ratio()
    );
    Ok(Arc::new(tracing))
}

/// Logs the first generation's plugins and sets the generation gauge.
fn announce(first: &Generation) {
    tracing::info!(
        generation = first.id,
        domains = first.config.domains.len(),
        router = %first.router.primary.name(),
        balancer = %first.balancer.primary.name(),
        breaker = %first.breaker.primary.name(),
        "configuration loaded from {}",
        first.config.origin.display()
    );
    metrics::gauge!(telemetry::names::GENERATION).set(first.id as f64);
}

/// Binds the admin listener on `addr` and serves it; its bound address.
async fn start_admin(
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> Result<(Option<SocketAddr>, JoinHandle<()>), BindError> {
    let listener = server::bind(addr, "admin").await?;
    let bound = listener.local_addr().ok();
    if !addr.ip().is_loopback() {
        tracing::warn!("admin endpoints are reachable from other machines on {addr}");
    }
    if let Some(a) = bound {
        tracing::info!(
            "admin endpoints on http://{a}/ (dashboard, metrics, status, healthz, readyz)"
        );
    }
    let task = tokio::spawn(crate::admin::serve(listener, shared, shutdown));
    Ok((bound, task))
}

impl Prepared {
    /// Binds the proxy listeners and starts serving; `/readyz` turns ready.
    pub async fn serve(self) -> Result<Running, StartError> {
        let Prepared {
            config,
            options,
            shared,
            admin,
            reloader,
            shutdown,
            mut tasks,
            workers,
        } = self;
        let stop_on_error = |e: StartError| {
            let _ = shutdown.send(true);
            e
        };
        let proxy = Arc::new(Proxy::new(
            shared.generation.clone(),
            shared.observer.clone(),
        ));
        let grace = options.shutdown_grace.unwrap_or(config.shutdown_grace);
        let mut spawn_listener = |listeners, front, tls| {
            tasks.extend(serve_on_workers(
                &workers, listeners, front, tls, &shutdown, grace,
            ));
        };
        let mut https = None;
        if let Some(addr) = config.listen.https {
            let listeners = server::bind_workers(addr, "listen.https", workers.len())
                .map_err(|e| stop_on_error(e.into()))?;
            https = listeners.first().and_then(|l| l.local_addr().ok());
            let front = Arc::new(Front::new(proxy.clone(), Scheme::Https));
            let resumption = if config.listen.tls_session_resumption {
                Resumption::On
            } else {
                Resumption::Off
            };
            let tls = TlsTerminator::new(shared.certs.store(), resumption)
                .map_err(|e| stop_on_error(e.into()))?
                .with_challenges(shared.certs.alpn_from_storage());
            spawn_listener(listeners, front, Some(tls));
            tracing::info!("serving HTTPS on {}", https.unwrap_or(addr));
        }
        let mut http = None;
        if let Some(addr) = config.listen.http {
            let listeners = server::bind_workers(addr, "listen.http", workers.len())
                .map_err(|e| stop_on_error(e.into()))?;
            http = listeners.first().and_then(|l| l.local_addr().ok());
            let mut front = Front::new(proxy, Scheme::Http);
            if let Some(https) = https {
                front = front.with_http01(shared.certs.http01());
                if config.listen.redirect_http {
                    front = front.redirecting_to(https.port());
                }
            }
            spawn_listener(listeners, Arc::new(front), None);
            if let Some(addr) = http {
                tracing::info!("serving HTTP on {addr}");
            }
        }
        if http.is_none() && https.is_none() {
            return Err(stop_on_error(StartError::NoListener));
        }
        shared.ready.store(true, Ordering::Release);
        Ok(Running {
            http,
            https,
            certs: shared.certs.clone(),
            admin,
            generation: shared.generation.clone(),
            runtime: shared.runtime.clone(),
            shared,
            reloader,
            workers: workers.len(),
            shutdown,
            tasks,
            _workers: workers,
        })
    }
}

/// Serves `listeners` (one socket per worker) with `front`: each worker
/// accepts on its own socket and serves those connections on its own
/// thread.
fn serve_on_workers(
    workers: &Workers,
    listeners: Vec<std::net::TcpListener>,
    front: Arc<Front>,
    tls: Option<TlsTerminator>,
    shutdown: &watch::Sender<bool>,
    grace: Duration,
) -> Vec<JoinHandle<()>> {
    let mut listeners = listeners.into_iter().map(Some).collect::<Vec<_>>();
    workers.spawn_each(|seat| {
        let listener = listeners.get_mut(seat.index()).and_then(Option::take);
        let (front, tls, shutdown) = (front.clone(), tls.clone(), shutdown.subscribe());
        async move {
            let Some(listener) = listener else { return };
            match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => server::serve_front(l, front, tls, shutdown, grace, seat).await,
                Err(e) => tracing::error!(
                    "worker {} cannot serve its listener socket: {e}",
                    seat.index()
                ),
            }
        }
    })
}

/// Logs one summary line per interval: requests, error rate, p50/p99,
/// open breakers.
async fn summary_loop(
    shared: Arc<Shared>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tick.tick() => {}
        }
        let s = shared.observer.window.take();
        let generation = shared.generation.load();
        let now = crate::clock::monotonic_ms();
        let open: Vec<String> = generation
            .upstreams
            .iter()
            .flat_map(|u| {
                u.backends
                    .iter()
                    .filter(move |b| {
                        b.state.breaker.state(now) != crate::plugin::BreakerState::Closed
                    })
                    .map(move |b| format!("{}/{}", u.name, b.state.authority))
            })
            .collect();
        let error_rate = if s.requests == 0 {
            0.0
        } else {
            s.errors as f64 * 100.0 / s.requests as f64
        };
        tracing::info!(
            target: "bbproxy::summary",
            requests = s.requests,
            errors = s.errors,
            error_rate_percent = error_rate,
            p50_ms = s.p50.as_secs_f64() * 1000.0,
            p99_ms = s.p99.as_secs_f64() * 1000.0,
            open_breakers = open.len(),
            "last {:?}: {} requests, {:.2}% errors, p50 {:.3} ms, p99 {:.3} ms, breakers not closed: {}",
            interval,
            s.requests,
            error_rate,
            s.p50.as_secs_f64() * 1000.0,
            s.p99.as_secs_f64() * 1000.0,
            if open.is_empty() { "none".to_owned() } else { open.join(", ") }
        );
    }
}

/// Validates `config` and every plugin it names without serving: the
/// `bbproxy check` command. Returns the report to print.
pub fn check(config: Config) -> Result<String, StartError> {
    // Through the cache the proxy will use: a check before a restart
    // leaves the compiled plugins there for it.
    let runtime = runtime(&config, &Options::default(), 1)?;
    let registry = Registry::default();
    let config = Arc::new(config);
    let g = Generation::build(1, config.clone(), &runtime, &registry)?;
    for d in &config.domains {
        if let TlsSource::Files { cert, key } = crate::acme::source(d, &config) {
            crate::tls::files::load(&cert, &key).map_err(AcmeError::from)?;
        }
    }
    Ok(crate::check::report(&config, &g))
}
