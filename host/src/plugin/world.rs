//! The four plugin roles behind one trait, so loading, pooling and fault
//! handling are written once. The decision roles come in two contract
//! versions (0.1.x and 0.2.0, see `wit/` and `wit/v0.2/`); a component's
//! exports say which it implements.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{CounterHandle, balancer, breaker, filter, router, v2};
use super::facts::Facts;
use super::state::PluginState;

/// A value of one of the two contract versions.
pub enum Versioned<A, B> {
    /// `bbproxy:plugin@0.1.x`.
    V1(A),
    /// `bbproxy:plugin@0.2.0`.
    V2(B),
}

/// What `init` returned besides success.
#[derive(Debug, Clone)]
pub struct InitAnswer {
    /// A 0.2.0 breaker's `outcome-calls.skip-closed-responses-below`
    /// (0 for every other plugin: it is called for everything).
    pub skip_closed_responses_below: u16,
    /// A 0.2.0 filter's `filter-calls.on-response` (true for every other
    /// plugin).
    pub on_response: bool,
    /// The request facts a 0.2.0 router, balancer or filter declared: sent
    /// with each `route`, `pick` or `on-request` call (none for the rest).
    pub facts: Facts,
    /// By upstream number: whether a 0.2.0 router declared (through
    /// `router-answers`) that requests of that domain go to its own
    /// upstream, so their `route` is answered without a call. Empty for
    /// every other plugin.
    pub upstream_is_domain: Vec<bool>,
    /// By upstream number: the shared counter a 0.2.0 balancer declared
    /// (through `balancer-answers`) to pick that upstream's candidates
    /// round-robin on, so its `pick` is answered without a call. Empty
    /// for every other plugin.
    pub round_robin: Vec<Option<CounterHandle>>,
}

impl InitAnswer {
    /// Whether requests of domain `domain` go to its own upstream without
    /// a call (see `upstream_is_domain`).
    pub fn routes_to_itself(&self, domain: u32) -> bool {
        self.upstream_is_domain
            .get(domain as usize)
            .copied()
            .unwrap_or(false)
    }

    /// The candidate (an index below `count`) of the next round-robin turn
    /// of upstream `upstream`, when the balancer declared it round-robin:
    /// its counter advanced by one, as the balancer's own pick would.
    pub fn round_robin_pick(&self, upstream: u32, count: usize) -> Option<usize> {
        let turns = self.round_robin.get(upstream as usize)?.as_ref()?;
        if count == 0 {
            return None;
        }
        let n = turns.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bbproxy_plugin_contract::balancers::round_robin_turn(n, count)
    }

    /// Whether upstream `upstream`'s picks are the host's round-robin
    /// turns (see `round_robin`).
    pub fn picks_round_robin(&self, upstream: u32) -> bool {
        self.round_robin
            .get(upstream as usize)
            .is_some_and(Option::is_some)
    }
}

impl Default for InitAnswer {
    /// A 0.1.x plugin's: every call made.
    fn default() -> Self {
        Self {
            skip_closed_responses_below: 0,
            on_response: true,
            facts: Facts::default(),
            upstream_is_domain: Vec::new(),
            round_robin: Vec::new(),
        }
    }
}

/// Why an `init` did not succeed, when it returned rather than trapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// The plugin refused its config, in its own words.
    Config(String),
    /// The plugin accepted its config but answered something the proxy
    /// cannot take (a 0.2.0 fact list that is too long or names an invalid
    /// header): a bug of the plugin, not of the operator's config.
    Answer(String),
}

/// A plugin role: its WIT world, pre-instantiation and `init` export.
pub trait World: Send + Sync + 'static {
    /// `router`, `balancer`, `breaker` or `filter`.
    const ROLE: &'static str;
    /// The world's typed pre-instance.
    type Pre: Send + Sync;
    /// The world's typed exports of one instance.
    type Exports: Send;

    /// Checks the component's exports against the world, the newest
    /// version first.
    fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre>;
    /// `Some("0.2.0")` when `pre` is of the 0.2.0 world; `None` for 0.1.x,
    /// whose minor version only the component's imports tell.
    fn version(pre: &Self::Pre) -> Option<&'static str>;
    /// Instantiates into `store`.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Self::Exports>;
    /// Calls the world's `init` export.
    fn init(
        exports: &Self::Exports,
        store: &mut Store<PluginState>,
        config: &str,
    ) -> wasmtime::Result<Result<InitAnswer, InitError>>;
}

/// The `router` world.
#[derive(Debug)]
pub enum RouterWorld {}
/// The `balancer` world.
#[derive(Debug)]
pub enum BalancerWorld {}
/// The `breaker` world.
#[derive(Debug)]
pub enum BreakerWorld {}
/// The `filter` world.
#[derive(Debug)]
pub enum FilterWorld {}

/// The world's pre-instance of whichever version the component exports:
/// 0.2.0 first. When both fail, the error says why for each, so the author
/// of a plugin of either version sees what theirs lacks.
fn either<A, B>(
    pre: InstancePre<PluginState>,
    v2: impl FnOnce(InstancePre<PluginState>) -> wasmtime::Result<B>,
    v1: impl FnOnce(InstancePre<PluginState>) -> wasmtime::Result<A>,
) -> wasmtime::Result<Versioned<A, B>> {
    match v2(pre.clone()) {
        Ok(b) => Ok(Versioned::V2(b)),
        Err(e2) => v1(pre).map(Versioned::V1).map_err(|e1| {
            wasmtime::Error::msg(format!(
                "as contract 0.1.x: {e1:#}; as contract 0.2.0: {e2:#}"
            ))
        }),
    }
}

macro_rules! versioned_world {
    ($ty:ty, $role:literal, $module:ident, $pre:ident, $exports:ident, $init2:expr) => {
        impl World for $ty {
            const ROLE: &'static str = $role;
            type Pre = Versioned<$module::$pre<PluginState>, v2::$module::$pre<PluginState>>;
            type Exports = Versioned<$module::$exports, v2::$module::$exports>;

            fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre> {
                either(pre, v2::$module::$pre::new, $module::$pre::new)
            }

            fn version(pre: &Self::Pre) -> Option<&'static str> {
                match pre {
                    Versioned::V1(_) => None,
                    Versioned::V2(_) => Some("0.2.0"),
                }
            }

            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<PluginState>,
            ) -> wasmtime::Result<Self::Exports> {
                Ok(match pre {
                    Versioned::V1(p) => Versioned::V1(p.instantiate(store)?),
                    Versioned::V2(p) => Versioned::V2(p.instantiate(store)?),
                })
            }

            fn init(
                exports: &Self::Exports,
                store: &mut Store<PluginState>,
                config: &str,
            ) -> wasmtime::Result<Result<InitAnswer, InitError>> {
                Ok(match exports {
                    Versioned::V1(e) => e
                        .call_init(store, config)?
                        .map(|()| InitAnswer::default())
                        .map_err(InitError::Config),
                    Versioned::V2(e) => {
                        // A router declares its `router-answers`, a
                        // balancer its `balancer-answers`, during this
                        // call, and only then.
                        store.data_mut().initializing = true;
                        let answer = e.call_init(&mut *store, config);
                        let state = store.data_mut();
                        state.initializing = false;
                        let upstream_is_domain = std::mem::take(&mut state.upstream_is_domain);
                        let round_robin = std::mem::take(&mut state.round_robin);
                        match answer? {
                            Ok(answer) => $init2(answer)
                                .map(|a| InitAnswer {
                                    upstream_is_domain,
                                    round_robin,
                                    ..a
                                })
                                .map_err(InitError::Answer),
                            Err(msg) => Err(InitError::Config(msg)),
                        }
                    }
                })
            }
        }
    };
}

/// A 0.2.0 router's or balancer's `init` answer: its declared facts.
fn declared(facts: Vec<v2::decisions::Fact>) -> Result<InitAnswer, String> {
    Ok(InitAnswer {
        facts: Facts::declared(facts)?,
        ..InitAnswer::default()
    })
}

versioned_world!(RouterWorld, "router", router, RouterPre, Router, declared);
versioned_world!(
    BalancerWorld,
    "balancer",
    balancer,
    BalancerPre,
    Balancer,
    declared
);
versioned_world!(
    BreakerWorld,
    "breaker",
    breaker,
    BreakerPre,
    Breaker,
    |calls: v2::decisions::OutcomeCalls| Ok(InitAnswer {
        skip_closed_responses_below: calls.skip_closed_responses_below,
        ..InitAnswer::default()
    })
);

versioned_world!(
    FilterWorld,
    "filter",
    filter,
    FilterPre,
    Filter,
    |calls: v2::decisions::FilterCalls| {
        Ok(InitAnswer {
            on_response: calls.on_response,
            facts: Facts::declared(calls.request_facts)?,
            ..InitAnswer::default()
        })
    }
);
