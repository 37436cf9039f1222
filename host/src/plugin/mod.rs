//! The plugin runtime: one wasmtime engine, components compiled once (cached
//! by content hash), pre-instantiated, and instances reused across requests.
//!
//! Every call is bounded by an epoch deadline and a memory cap. A trap,
//! timeout or answer outside the contract is a [`Fault`]: the instance is
//! discarded (a trapped instance cannot be entered again) and the caller
//! applies the plugin's failure policy.

mod bindings;
pub mod bundle;
mod deadline;
mod engine;
pub mod inspect;
mod shared;
mod state;
mod world;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, Resource};
use wasmtime::{Store, StoreLimitsBuilder};

pub use bindings::types::{
    Backend, BreakerState, DirectResponse, Outcome, OutcomeKind, Route, Upstream, Verdict,
};
pub use engine::Runtime;
pub use shared::SharedState;
pub use state::{PluginIdentity, RequestView};
pub use world::{BalancerWorld, BreakerWorld, RouterWorld, World};

use crate::telemetry::names;
use state::PluginState;

/// Least CPU budget of instantiation plus `init`.
const INIT_MIN_BUDGET: Duration = Duration::from_millis(200);

/// Idle instances kept per plugin. Enough for every worker thread to find one
/// without instantiating; more would only hold memory.
const MAX_IDLE_INSTANCES: usize = 64;

/// Errors loading a plugin: each names the plugin and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component could not be read.
    #[error("{name}: cannot read plugin file: {source}")]
    Io {
        /// Plugin name (file path).
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The bytes are not a valid WebAssembly component.
    #[error("{name}: not a valid WebAssembly component: {reason}")]
    Compile {
        /// Plugin name.
        name: String,
        /// Why wasmtime refused it.
        reason: String,
    },
    /// The component does not implement the role's world.
    #[error("{name}: does not implement the bbproxy:plugin/{role} world: {reason}")]
    WrongWorld {
        /// Plugin name.
        name: String,
        /// The role it was configured for.
        role: &'static str,
        /// What is missing or mismatched.
        reason: String,
    },
    /// Instantiation or `init` trapped, timed out or returned an error.
    #[error("{name} ({role}): init failed: {reason}")]
    Init {
        /// Plugin name.
        name: String,
        /// The role.
        role: &'static str,
        /// The trap or the plugin's own error text.
        reason: String,
    },
    /// The engine could not be created.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

/// A plugin misbehaved during a call.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// Trap, deadline exceeded or memory cap hit.
    #[error("trap: {0}")]
    Trap(String),
    /// An answer outside the plugin's contract.
    #[error("invalid answer: {0}")]
    BadAnswer(String),
}

impl Fault {
    /// Short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Trap(msg) if msg.contains("interrupt") => "timeout",
            Fault::Trap(_) => "trap",
            Fault::BadAnswer(_) => "bad-answer",
        }
    }
}

/// Per-call bounds of one plugin.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CPU deadline of one call (rounded up to the epoch tick).
    pub timeout: Duration,
    /// Linear memory cap of one instance, in bytes.
    pub memory: u64,
}

/// A live instance: its store and the typed exports.
struct Instance<W: World> {
    store: Store<PluginState>,
    exports: W::Exports,
}

/// One loaded plugin of role `W`: compiled, pre-instantiated and
/// `init`-checked, with a pool of ready instances.
pub struct Plugin<W: World> {
    identity: PluginIdentity,
    pre: W::Pre,
    runtime: Runtime,
    config: String,
    limits: Limits,
    upstreams: Arc<[Upstream]>,
    idle: Mutex<Vec<Instance<W>>>,
    sha256: String,
    faults: AtomicU64,
    calls: metrics::Counter,
    call_seconds: metrics::Histogram,
}

impl<W: World> std::fmt::Debug for Plugin<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.identity.name)
            .field("role", &self.identity.role)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl<W: World> Plugin<W> {
    /// Compiles (or takes from the cache) `bytes`, checks the world, and
    /// makes one instance and runs its `init`, so a bad plugin fails here and
    /// not on the first request.
    pub fn load(
        runtime: &Runtime,
        name: &str,
        bytes: &[u8],
        config: String,
        limits: Limits,
        upstreams: Arc<[Upstream]>,
    ) -> Result<Self, LoadError> {
        let (component, sha256) = runtime.compile(name, bytes)?;
        let pre = Self::pre(runtime, name, &component)?;
        let plugin = Self {
            identity: PluginIdentity {
                name: Arc::from(name),
                role: W::ROLE,
            },
            pre,
            runtime: runtime.clone(),
            config,
            limits,
            upstreams,
            idle: Mutex::new(Vec::new()),
            sha256,
            faults: AtomicU64::new(0),
            calls: metrics::counter!(names::PLUGIN_CALLS, "plugin" => name.to_owned(), "role" => W::ROLE),
            call_seconds: metrics::histogram!(names::PLUGIN_CALL_DURATION, "plugin" => name.to_owned(), "role" => W::ROLE),
        };
        let first = plugin.instantiate().map_err(|reason| LoadError::Init {
            name: name.to_owned(),
            role: W::ROLE,
            reason,
        })?;
        plugin.release(first);
        Ok(plugin)
    }

    fn pre(runtime: &Runtime, name: &str, component: &Component) -> Result<W::Pre, LoadError> {
        let wrong = |e: wasmtime::Error| LoadError::WrongWorld {
            name: name.to_owned(),
            role: W::ROLE,
            reason: format!("{e:#}"),
        };
        let pre = runtime.linker().instantiate_pre(component).map_err(wrong)?;
        W::pre(pre).map_err(wrong)
    }

    /// The plugin's name (`builtin` or its file name).
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// The plugin's role.
    pub fn role(&self) -> &'static str {
        W::ROLE
    }

    /// Hex SHA-256 of the component's bytes.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Faults counted since the plugin was loaded.
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    fn new_store(&self) -> Store<PluginState> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(usize::try_from(self.limits.memory).unwrap_or(usize::MAX))
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        let state = PluginState::new(
            limits,
            self.runtime.shared().clone(),
            self.upstreams.clone(),
            self.identity.clone(),
        );
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        deadline::install(&mut store);
        store
    }

    /// A fresh instance with `init` already run.
    fn instantiate(&self) -> Result<Instance<W>, String> {
        let mut store = self.new_store();
        // Instantiation and init parse config and build tables once; give
        // them more room than a per-request call.
        let init_budget = (self.limits.timeout * 10).max(INIT_MIN_BUDGET);
        deadline::arm(&mut store, init_budget);
        let exports = W::instantiate(&self.pre, &mut store).map_err(|e| format!("{e:#}"))?;
        deadline::arm(&mut store, init_budget);
        match W::init(&exports, &mut store, &self.config) {
            Ok(Ok(())) => Ok(Instance { store, exports }),
            Ok(Err(msg)) => Err(format!("plugin rejected its config: {msg}")),
            Err(trap) => Err(format!("{trap:#}")),
        }
    }

    fn acquire(&self) -> Result<Instance<W>, Fault> {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match idle {
            Some(i) => Ok(i),
            None => self.instantiate().map_err(Fault::Trap),
        }
    }

    fn release(&self, instance: Instance<W>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(instance);
        }
    }

    /// Runs one call on a pooled instance. `request` is lent to the store for
    /// the call and always handed back, whatever the outcome.
    fn call<R>(
        &self,
        request: &mut Option<RequestView>,
        f: impl FnOnce(&W::Exports, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        let mut inst = match self.acquire() {
            Ok(i) => i,
            Err(fault) => return Err(self.record(fault)),
        };
        deadline::arm(&mut inst.store, self.limits.timeout);
        inst.store.data_mut().request = request.take();
        let started = std::time::Instant::now();
        let result = f(&inst.exports, &mut inst.store);
        self.call_seconds.record(started.elapsed());
        self.calls.increment(1);
        *request = inst.store.data_mut().request.take();
        match result {
            Ok(r) => {
                self.release(inst);
                Ok(r)
            }
            // The instance is poisoned after a trap: drop it.
            Err(trap) => Err(self.record(Fault::Trap(format!("{trap:#}")))),
        }
    }

    /// Counts and logs a fault; returns it for the caller's policy.
    pub fn record(&self, fault: Fault) -> Fault {
        self.faults.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            names::PLUGIN_FAULTS,
            "plugin" => self.identity.name.to_string(),
            "role" => W::ROLE,
            "kind" => fault.kind()
        )
        .increment(1);
        tracing::warn!(
            plugin = %self.identity.name,
            role = W::ROLE,
            kind = fault.kind(),
            "plugin fault: {fault}"
        );
        fault
    }
}

/// A borrow of the request resource for one call. The rep is unused: the
/// host answers from the request held in the store.
fn request_borrow() -> Resource<bindings::RequestHandle> {
    Resource::new_borrow(0)
}

impl Plugin<RouterWorld> {
    /// Asks the router where the request goes.
    pub fn route(&self, request: &mut Option<RequestView>) -> Result<Route, Fault> {
        let route = self.call(request, |e, store| e.call_route(store, request_borrow()))?;
        if let Route::Respond(r) = &route
            && !(100..=599).contains(&r.status)
        {
            return Err(self.record(Fault::BadAnswer(format!(
                "route answered with status {}, outside 100..=599",
                r.status
            ))));
        }
        Ok(route)
    }
}

impl Plugin<BalancerWorld> {
    /// Asks the balancer which of `candidates` gets the request; the answer
    /// is checked to be an index into `candidates`.
    pub fn pick(
        &self,
        request: &mut Option<RequestView>,
        upstream: u32,
        candidates: &[Backend],
    ) -> Result<usize, Fault> {
        let choice = self.call(request, |e, store| {
            e.call_pick(store, request_borrow(), upstream, candidates)
        })?;
        match choice {
            Some(i) if (i as usize) < candidates.len() => Ok(i as usize),
            Some(i) => Err(self.record(Fault::BadAnswer(format!(
                "pick returned index {i} for {} candidates",
                candidates.len()
            )))),
            None => Err(self.record(Fault::BadAnswer(
                "pick returned none for a non-empty candidate list".into(),
            ))),
        }
    }
}

impl Plugin<BreakerWorld> {
    /// Asks the breaker for a backend's state after `outcome`.
    pub fn on_outcome(
        &self,
        upstream: u32,
        backend: Backend,
        outcome: Outcome,
    ) -> Result<Verdict, Fault> {
        self.call(&mut None, |e, store| {
            e.call_on_outcome(store, upstream, backend, outcome)
        })
    }
}
