//! Putting the pieces together: config → plugin runtime → first generation →
//! listeners. Used by `main` and by the integration tests, which run the
//! whole proxy in-process on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bbproxy_config::Config;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::generation::{BuildError, Generation};
use crate::plugin::{LoadError, Runtime};
use crate::proxy::{Proxy, Scheme};
use crate::server::{self, BindError};
use crate::upstream::Registry;

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
    /// No listener is configured.
    #[error("nothing to serve: set listen.http in the config")]
    NoListener,
}

/// Options that do not come from config.json.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Overrides the config's `shutdown_grace`.
    pub shutdown_grace: Option<Duration>,
}

/// A running proxy.
#[derive(Debug)]
pub struct Running {
    /// Where plain HTTP is served, if configured.
    pub http: Option<SocketAddr>,
    /// The generation serving new requests.
    pub generation: Arc<ArcSwap<Generation>>,
    /// The plugin runtime (shared state, compile cache).
    pub runtime: Runtime,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, drains open connections within the grace period,
    /// and returns when every listener is done.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }

    /// Returns when the listeners stop (after a shutdown signal).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
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
    let runtime = Runtime::new()?;
    let registry = Arc::new(Registry::default());
    let config = Arc::new(config);
    let first = build_generation(1, config.clone(), runtime.clone(), registry.clone()).await?;
    tracing::info!(
        generation = first.id,
        domains = config.domains.len(),
        router = %first.router.primary.name(),
        balancer = %first.balancer.primary.name(),
        breaker = %first.breaker.primary.name(),
        "configuration loaded from {}",
        config.origin.display()
    );
    let generation = Arc::new(ArcSwap::from_pointee(first));
    let proxy = Arc::new(Proxy::new(generation.clone()));

    if let Some(addr) = config.listen.https {
        tracing::warn!(
            "listen.https {addr}: HTTPS is not implemented in this build; only plain HTTP is served"
        );
    }
    let Some(http_addr) = config.listen.http else {
        return Err(StartError::NoListener);
    };
    let listener = server::bind(http_addr, "listen.http").await?;
    let http = listener.local_addr().ok();
    let (shutdown, rx) = watch::channel(false);
    let tasks = vec![tokio::spawn(server::serve(
        listener,
        proxy,
        Scheme::Http,
        rx,
        options.shutdown_grace.unwrap_or(config.shutdown_grace),
    ))];
    if let Some(addr) = http {
        tracing::info!("serving HTTP on {addr}");
    }
    Ok(Running {
        http,
        generation,
        runtime,
        shutdown,
        tasks,
    })
}

/// Validates `config` and every plugin it names without serving: the
/// `bbproxy check` command. Returns a short summary.
pub fn check(config: Config) -> Result<String, StartError> {
    let runtime = Runtime::new()?;
    let registry = Registry::default();
    let config = Arc::new(config);
    let g = Generation::build(1, config.clone(), &runtime, &registry)?;
    let backends: usize = g.upstreams.iter().map(|u| u.backends.len()).sum();
    Ok(format!(
        "{}: OK: {} domain(s), {} backend(s); router {}, balancer {}, breaker {}",
        config.origin.display(),
        g.upstreams.len(),
        backends,
        g.router.primary.name(),
        g.balancer.primary.name(),
        g.breaker.primary.name(),
    ))
}
