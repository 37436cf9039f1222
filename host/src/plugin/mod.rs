//! The plugin runtime: one wasmtime engine, components compiled once (cached
//! by content hash), pre-instantiated, and instances reused across requests.
//!
//! Every call is bounded by an epoch deadline and a memory cap. A trap,
//! timeout, memory cap hit or answer outside the contract is a [`Fault`]: the
//! instance is discarded (a trapped instance cannot be entered again; one
//! that answered garbage is not trusted again), the next call gets a fresh
//! one, and the caller applies the plugin's failure policy. A plugin that
//! keeps faulting for one tenant (domain) is suspended for it with backoff
//! (see [`backoff`]).

pub mod answer;
pub mod backoff;
mod bindings;
mod budget;
pub mod bundle;
mod calls;
mod candidates;
mod code_memory;
mod declared;
pub mod describe;
mod engine;
mod engine_config;
mod error;
mod facts;
mod fault;
pub mod logbudget;
mod pool;
pub mod resource_caps;
mod shared;
mod state;
#[cfg(test)]
mod test_plugins;
mod ticker;
mod wasi;
mod world;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::per_worker::PerWorker;

pub use answer::{FilterAction, FilterAnswer, HeaderEdit, Route, TargetEdit};
pub use answer::{MAX_DIRECT_BODY_BYTES, MAX_UPSTREAM_NAME_BYTES};
pub use backoff::{Backoff, Tenant};
pub use bindings::types::{
    Backend, BreakerState, DirectResponse, Outcome, OutcomeKind, Upstream, Verdict,
};
pub use engine::{Pooling, Runtime, RuntimeOptions};
pub use error::LoadError;
pub use fault::Fault;
pub use shared::SharedState;
pub use state::{PluginIdentity, RequestView, ResponseView};
pub use ticker::{EPOCH_TICK, MIN_EPOCH_TICK};
pub use world::{
    BalancerWorld, BreakerWorld, FilterWorld, InitAnswer, InitError, RouterWorld, World,
};

use crate::telemetry::names;
use backoff::Streaks;
use budget::Budget;
use logbudget::LogBudget;
use resource_caps::Limiter;
use state::PluginState;

/// The versions of the WIT package `bbproxy:plugin` this host speaks,
/// newest first: 0.2.0 (`wit/v0.2`), then 0.1.1 (`wit/`); a plugin built
/// against an earlier 0.1.x runs unchanged (wasmtime resolves its `@0.1.0`
/// imports to the 0.1.1 definitions, which only add to them).
pub const CONTRACT_VERSIONS: &[&str] = &["0.2.0", "0.1.1", "0.1.0"];

/// The kinds of [`Fault`] a call can record (`suspended` is not a fault).
pub const FAULT_KINDS: [&str; 6] = [
    "timeout",
    "memory",
    "stack-overflow",
    "trap",
    "bad-answer",
    "instantiate",
];

/// Idle instances kept per plugin and worker thread. A worker runs one call
/// at a time (its runtime is single-threaded and calls are synchronous), so
/// it needs one; the control runtime (reload checks, `/status`) may add a
/// few on worker 0's list. More would only hold memory.
const MAX_IDLE_INSTANCES: usize = 8;

/// `init` may take this many times the call deadline (at least
/// [`MIN_INIT_TIMEOUT`]): parsing a config is slower than one decision.
const INIT_TIMEOUT_FACTOR: u32 = 10;
/// The least time `init` gets.
const MIN_INIT_TIMEOUT: Duration = Duration::from_millis(100);

/// Per-call bounds of one plugin.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// CPU deadline of one call (rounded up to the epoch tick).
    pub timeout: Duration,
    /// Linear memory cap of one instance, in bytes.
    pub memory: u64,
    /// Suspension of a plugin that keeps faulting.
    pub backoff: Backoff,
}

impl Limits {
    /// `timeout` and `memory` as configured, default backoff.
    pub fn new(timeout: Duration, memory: u64) -> Self {
        Self {
            timeout,
            memory,
            backoff: Backoff::default(),
        }
    }

    fn init_timeout(&self) -> Duration {
        self.timeout
            .saturating_mul(INIT_TIMEOUT_FACTOR)
            .max(MIN_INIT_TIMEOUT)
    }
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
    /// Upstream numbers by name, to check a router's answer.
    pub(super) upstream_index: HashMap<String, u32>,
    /// Ready instances, one list per worker: an instance's memory stays in
    /// the cache of the core that uses it, and workers never wait on each
    /// other's lock.
    idle: PerWorker<Mutex<Vec<Instance<W>>>>,
    sha256: String,
    /// See [`Plugin::contract`].
    contract: &'static str,
    /// What the first instance's `init` returned (at load); it holds for
    /// the plugin's life.
    init_answer: InitAnswer,
    faults: AtomicU64,
    /// Faults by kind, in [`FAULT_KINDS`] order, for `/status`.
    fault_kinds: [AtomicU64; FAULT_KINDS.len()],
    /// Calls that entered the plugin, for `/status`.
    calls_made: AtomicU64,
    /// Reads of a request through `request`'s methods, each a call back
    /// into the host (see [`Plugin::request_reads`]).
    request_reads: AtomicU64,
    calls: metrics::Counter,
    call_seconds: metrics::Histogram,
    suspended_calls: AtomicU64,
    /// Fault streaks and suspensions, one per tenant.
    streaks: Streaks,
    logs: Arc<LogBudget>,
    /// Fault log lines get the same rate limit as `host.log`, in a budget
    /// of their own (a plugin's own logging must not hide its faults).
    fault_lines: LogBudget,
    /// Fault lines left out since the last one written.
    fault_lines_dropped: AtomicU64,
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
    /// not on the first request. An `init` that traps, runs past its
    /// deadline or returns an error is a [`LoadError::Init`] saying which.
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
        let upstream_index = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect();
        let tenants = upstreams.len();
        let contract = W::version(&pre).unwrap_or_else(|| contract_of(runtime, &component));
        let mut plugin = Self {
            identity: PluginIdentity {
                name: Arc::from(name),
                role: W::ROLE,
            },
            pre,
            runtime: runtime.clone(),
            config,
            limits,
            upstreams,
            upstream_index,
            idle: PerWorker::new(runtime.workers(), |_| Mutex::new(Vec::new())),
            sha256,
            contract,
            init_answer: InitAnswer::default(),
            faults: AtomicU64::new(0),
            fault_kinds: Default::default(),
            calls_made: AtomicU64::new(0),
            request_reads: AtomicU64::new(0),
            calls: metrics::counter!(names::PLUGIN_CALLS, "plugin" => name.to_owned(), "role" => W::ROLE),
            call_seconds: metrics::histogram!(names::PLUGIN_CALL_DURATION, "plugin" => name.to_owned(), "role" => W::ROLE),
            suspended_calls: AtomicU64::new(0),
            streaks: Streaks::new(tenants),
            logs: Arc::new(LogBudget::default()),
            fault_lines: LogBudget::default(),
            fault_lines_dropped: AtomicU64::new(0),
        };
        let (first, answer) = plugin.instantiate().map_err(|fault| LoadError::Init {
            name: name.to_owned(),
            role: W::ROLE,
            // At load time "cannot create an instance" says nothing new.
            reason: match fault {
                Fault::Instantiate(reason) => reason,
                other => other.to_string(),
            },
        })?;
        plugin.init_answer = answer;
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

    /// The plugin's bounds.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Faults counted since the plugin was loaded (calls skipped while it
    /// was suspended are not faults; see [`Plugin::suspended_calls`]).
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::Relaxed)
    }

    /// Faults of each kind of [`FAULT_KINDS`] since the plugin was loaded.
    pub fn faults_by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FAULT_KINDS
            .iter()
            .zip(&self.fault_kinds)
            .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
    }

    /// Calls that entered the plugin since it was loaded.
    pub fn calls(&self) -> u64 {
        self.calls_made.load(Ordering::Relaxed)
    }

    /// Reads of a request the plugin made through `request`'s methods
    /// since it was loaded: each a call back into the host, which a 0.2.0
    /// plugin avoids for what it declares as facts.
    pub fn request_reads(&self) -> u64 {
        self.request_reads.load(Ordering::Relaxed)
    }

    /// The tenants (`domain example.com`, `hosts that match no domain`)
    /// whose calls are answered with the `on_fault` policy without entering
    /// the plugin at `now_ms`, and the monotonic ms each suspension ends.
    pub fn suspensions(&self, now_ms: u64) -> Vec<(String, u64)> {
        self.streaks
            .suspended(now_ms)
            .into_iter()
            .map(|(tenant, until)| (self.tenant_name(tenant), until))
            .collect()
    }

    /// The version of the plugin contract (`bbproxy:plugin`) the plugin
    /// was built against: the version of its imports of the package.
    pub fn contract(&self) -> &'static str {
        self.contract
    }

    /// What the plugin's `init` returned besides success (at load).
    pub fn init_answer(&self) -> &InitAnswer {
        &self.init_answer
    }

    /// Calls answered with the fault policy without entering the plugin,
    /// because it was suspended after repeated faults.
    pub fn suspended_calls(&self) -> u64 {
        self.suspended_calls.load(Ordering::Relaxed)
    }

    fn new_store(&self) -> Store<PluginState> {
        let state = PluginState::new(
            Limiter::new(self.limits.memory),
            self.runtime.shared().clone(),
            self.upstreams.clone(),
            self.identity.clone(),
            self.logs.clone(),
        );
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        let tick = self.runtime.ticker().tick();
        store.epoch_deadline_callback(move |mut ctx| match ctx.data_mut().budget.remaining(tick) {
            Some(left) => Ok(UpdateDeadline::Continue(ticker::ticks(left, tick))),
            None => Err(Trap::Interrupt.into()),
        });
        store
    }

    /// Starts the budget of a call (or of `init`) of length `timeout`.
    fn arm(store: &mut Store<PluginState>, timeout: Duration, now: u64) {
        // A refused growth the plugin survived in an earlier call must not
        // make a later, unrelated trap look like a memory fault.
        store.data_mut().limits.take_denied();
        store.data_mut().budget = Budget::start(timeout, now);
        // One tick: the callback then reads the CPU clock and extends the
        // deadline by what is left (see `budget`).
        store.set_epoch_deadline(1);
    }

    /// A fresh instance with `init` already run. Instantiation itself runs
    /// no guest code we care about (components have no start function), but
    /// it is bounded all the same.
    fn instantiate(&self) -> Result<(Instance<W>, InitAnswer), Fault> {
        let _running = self.runtime.ticker().enter();
        let mut store = self.new_store();
        Self::arm(&mut store, self.limits.init_timeout(), budget::call_clock());
        let exports = match W::instantiate(&self.pre, &mut store) {
            Ok(e) => e,
            Err(e) => {
                let denied = store.data_mut().limits.take_denied();
                return Err(Fault::Instantiate(Fault::from_call(&e, denied).to_string()));
            }
        };
        Self::arm(&mut store, self.limits.init_timeout(), budget::call_clock());
        let result = fault::guarded(|| W::init(&exports, &mut store, &self.config));
        match result {
            Ok(Ok(answer)) => Ok((Instance { store, exports }, answer)),
            Ok(Err(InitError::Config(msg))) => Err(Fault::Instantiate(format!(
                "plugin rejected its config: {msg}"
            ))),
            Ok(Err(InitError::Answer(msg))) => Err(Fault::Instantiate(format!(
                "init answered what the proxy cannot take: {msg}"
            ))),
            Err(e) => {
                let denied = store.data_mut().limits.take_denied();
                let fault = Fault::from_call(&e, denied);
                Err(Fault::Instantiate(format!(
                    "init {fault} (init deadline {:?})",
                    self.limits.init_timeout()
                )))
            }
        }
    }

    /// Runs one call for `tenant` on a pooled instance and checks its answer
    /// with `check`. `request` (and a filter's `response`) is lent to the
    /// store for the call and always handed back, whatever the outcome. On
    /// any fault the instance is dropped.
    pub(super) fn call<R, T>(
        &self,
        tenant: Tenant,
        request: &mut Option<Box<RequestView>>,
        response: &mut Option<ResponseView>,
        f: impl FnOnce(&W::Exports, &mut Store<PluginState>) -> wasmtime::Result<R>,
        check: impl FnOnce(R) -> Result<T, String>,
    ) -> Result<T, Fault> {
        let streak = self.streaks.of(tenant);
        if let Err(remaining_ms) = streak.admit_with(crate::clock::monotonic_ms) {
            self.suspended_calls.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(
                names::PLUGIN_SUSPENDED_CALLS,
                "plugin" => self.identity.name.to_string(),
                "role" => W::ROLE,
            )
            .increment(1);
            return Err(Fault::Suspended { remaining_ms });
        }
        let mut pool = self.pool();
        let mut own = None;
        let inst = match self.instance(pool.as_deref_mut(), &mut own) {
            Ok(i) => i,
            Err(fault) => return Err(self.record(fault, tenant)),
        };
        // One clock reading starts both the call's budget and its timing:
        // at a few hundred nanoseconds a call, every reading shows.
        let started = budget::call_clock();
        Self::arm(&mut inst.store, self.limits.timeout, started);
        // Moved in (and back) only when there is one: most calls of the
        // breaker lend neither.
        let lends = (request.is_some(), response.is_some());
        if lends.0 {
            inst.store.data_mut().request = request.take();
        }
        if lends.1 {
            inst.store.data_mut().response = response.take();
        }
        let running = self.runtime.ticker().enter();
        let result = fault::guarded(|| f(&inst.exports, &mut inst.store));
        drop(running);
        self.call_seconds.record(budget::call_clock_since(started));
        self.calls.increment(1);
        self.calls_made.fetch_add(1, Ordering::Relaxed);
        let reads = std::mem::take(&mut inst.store.data_mut().request_reads);
        if reads != 0 {
            self.request_reads
                .fetch_add(u64::from(reads), Ordering::Relaxed);
        }
        if lends.0 {
            *request = inst.store.data_mut().request.take();
        }
        if lends.1 {
            *response = inst.store.data_mut().response.take();
        }
        let (fault, trace) = match result {
            Ok(answer) => match check(answer) {
                Ok(t) => {
                    streak.success();
                    drop(pool);
                    if let Some(i) = own {
                        self.release(i);
                    }
                    return Ok(t);
                }
                Err(msg) => (Fault::BadAnswer(msg), None),
            },
            Err(e) => {
                let denied = inst.store.data_mut().limits.take_denied();
                (Fault::from_call(&e, denied), fault::backtrace(&e))
            }
        };
        // On any fault the instance is dropped: its state may be anything
        // now.
        if let Some(idle) = pool.as_deref_mut() {
            idle.pop();
        }
        drop(pool);
        Err(self.record_traced(fault, tenant, trace))
    }

    /// Counts and logs a fault of a call for `tenant`, and feeds that
    /// tenant's backoff; returns the fault for the caller's policy.
    pub fn record(&self, fault: Fault, tenant: Tenant) -> Fault {
        self.record_traced(fault, tenant, None)
    }

    /// [`Plugin::record`] of a fault that came with a wasm backtrace. The
    /// warning is one line (the top frame is in the fault's text); the full
    /// trace goes to the debug level. Both are rate limited per plugin like
    /// `host.log`: a client who can make a plugin fault must not be able to
    /// flood the log.
    fn record_traced(&self, fault: Fault, tenant: Tenant, trace: Option<String>) -> Fault {
        self.faults.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = FAULT_KINDS.iter().position(|k| *k == fault.kind()) {
            self.fault_kinds[i].fetch_add(1, Ordering::Relaxed);
        }
        metrics::counter!(
            names::PLUGIN_FAULTS,
            "plugin" => self.identity.name.to_string(),
            "role" => W::ROLE,
            "kind" => fault.kind(),
        )
        .increment(1);
        if self.fault_lines.take(crate::clock::monotonic_ms()) {
            let dropped = self.fault_lines_dropped.swap(0, Ordering::Relaxed);
            tracing::warn!(
                plugin = %self.identity.name,
                role = W::ROLE,
                kind = fault.kind(),
                "plugin fault for {}: {}{}",
                self.tenant_name(tenant),
                logbudget::truncate(&fault.to_string()),
                match dropped {
                    0 => String::new(),
                    n => format!(" ({n} earlier fault lines of this plugin not logged: over the rate limit; bbproxy_plugin_faults_total counts every fault)"),
                }
            );
            if let Some(trace) = trace {
                tracing::debug!(plugin = %self.identity.name, role = W::ROLE, "{trace}");
            }
        } else {
            self.fault_lines_dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(s) = self
            .streaks
            .of(tenant)
            .fault(crate::clock::monotonic_ms(), &self.limits.backoff)
        {
            tracing::warn!(
                plugin = %self.identity.name,
                role = W::ROLE,
                "plugin suspended for {} for {:?} after {} consecutive faults there; those requests get its on_fault policy meanwhile, other domains' calls go on",
                self.tenant_name(tenant),
                s.interval,
                s.faults
            );
        }
        fault
    }
}

impl<W: World> Plugin<W> {
    /// `tenant` as a log line names it.
    fn tenant_name(&self, tenant: Tenant) -> String {
        match tenant {
            Tenant::Upstream(i) => match self.upstreams.get(i as usize) {
                Some(u) => format!("domain {}", u.name),
                None => format!("upstream {i}"),
            },
            Tenant::Unmatched => "hosts that match no domain".to_owned(),
        }
    }
}

/// The 0.1.x [`CONTRACT_VERSIONS`] entry `component` imports
/// `bbproxy:plugin` at (the newest 0.1.x when it imports none, or one this
/// host does not know, which the linker refuses anyway). Only for a
/// component of a 0.1.x world: a 0.2.0 one imports 0.1.1's interfaces too.
pub(super) fn contract_of(runtime: &Runtime, component: &Component) -> &'static str {
    let engine = runtime.engine();
    component
        .component_type()
        .imports(engine)
        .find_map(|(name, _)| {
            let version = name.strip_prefix("bbproxy:plugin/")?.split_once('@')?.1;
            CONTRACT_VERSIONS.iter().find(|v| **v == version).copied()
        })
        .unwrap_or(CONTRACT_VERSIONS[1])
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_contract_versions_are_the_wit_package_versions() {
        let package = |wit: &str| {
            wit.lines()
                .find_map(|l| l.trim().strip_prefix("package bbproxy:plugin@"))
                .expect("the WIT file names its package")
                .trim_end_matches(';')
                .to_owned()
        };
        let v2 = package(include_str!("../../../wit/v0.2/plugin.wit"));
        let v1 = package(include_str!("../../../wit/plugin.wit"));
        assert_eq!([v2.as_str(), v1.as_str()], super::CONTRACT_VERSIONS[..2]);
    }
}
