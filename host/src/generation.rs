//! A generation: one validated config plus the plugins it names, loaded and
//! `init`-checked, and the backends with their live state. Requests pin the
//! generation they start on; a reload builds a whole new one off the request
//! path and swaps it in only if every step passed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use bbproxy_config::{Config, OnFault, PluginSource, PluginSpec, UpstreamSettings};
use bbproxy_plugin_contract::hosts::HostMatcher;
use serde_json::{Map, Value};

use crate::plugin::{
    BalancerWorld, BreakerWorld, LoadError, Plugin, RouterWorld, Runtime, Tenant, Upstream, World,
    bundle,
};
use crate::telemetry::handles::{BackendMetrics, DomainMetrics};
use crate::upstream::health::HealthChecks;
use crate::upstream::pool::{PoolKey, UpstreamClient};
use crate::upstream::{BackendState, Registry, RetryBudget, Staged};

/// Why a generation could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A plugin failed to load.
    #[error(transparent)]
    Plugin(#[from] LoadError),
    /// The config asks for something this build does not support yet.
    #[error("{0}")]
    Unsupported(String),
    /// A domain's `backend_ca` is unusable.
    #[error(transparent)]
    BackendCa(#[from] crate::tls::TlsError),
    /// A domain's own plugin failed to load: named by its config key, since
    /// several domains may load the same file with different settings.
    // The load error is in the text and not a `source`, or `{:#}` would
    // print it twice.
    #[error("domains.{domain}.{role}: {error}")]
    DomainPlugin {
        /// The domain's name.
        domain: String,
        /// `router`, `balancer` or `breaker`.
        role: &'static str,
        /// Why it failed.
        error: LoadError,
    },
}

/// One backend of an upstream in this generation.
#[derive(Debug)]
pub struct BackendSlot {
    /// Live state, shared with earlier and later generations.
    pub state: Arc<BackendState>,
    /// Configured weight.
    pub weight: u32,
    /// Its metric handles.
    pub metrics: BackendMetrics,
}

/// One upstream (a key of `domains`).
#[derive(Debug)]
pub struct UpstreamSlot {
    /// The domain name it is configured under.
    pub name: String,
    /// Its backends, in configured order (the index is the WIT `backend.id`).
    pub backends: Vec<BackendSlot>,
    /// Its metric handles.
    pub metrics: DomainMetrics,
    /// Timeouts, limits, retries, protocol, pool knobs.
    pub settings: UpstreamSettings,
    /// The connection pool its requests go through.
    pub client: UpstreamClient,
    /// Limits retries to a share of its traffic.
    pub retry_budget: RetryBudget,
    /// Its own plugins, where config.json names them.
    pub plugins: DomainSlots,
}

/// A domain's own plugins (`"router"`, `"balancer"`, `"breaker"` with a
/// `path` in its entry); `None` uses the generation's.
#[derive(Debug, Default)]
pub struct DomainSlots {
    /// Routes requests whose host matches the domain.
    pub router: Option<Slot<RouterWorld>>,
    /// Picks among its backends.
    pub balancer: Option<Slot<BalancerWorld>>,
    /// Judges its outcomes.
    pub breaker: Option<Slot<BreakerWorld>>,
}

/// Where a plugin came from, for `/status` and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The embedded default bundle.
    Builtin,
    /// A component file.
    File(std::path::PathBuf),
}

/// A role's plugin plus what to do when it faults.
#[derive(Debug)]
pub struct Slot<W: World> {
    /// The configured plugin.
    pub primary: Arc<Plugin<W>>,
    /// The built-in plugin of the same role, consulted when `primary` faults
    /// and its policy is fail-open.
    pub fallback: Option<Arc<Plugin<W>>>,
    /// Where `primary` came from.
    pub source: Source,
}

/// Everything one request needs, immutable once built.
#[derive(Debug)]
pub struct Generation {
    /// Increases by one with every successful load.
    pub id: u64,
    /// The config it was built from.
    pub config: Arc<Config>,
    /// Upstreams in config order (the index is the WIT upstream number).
    pub upstreams: Vec<UpstreamSlot>,
    by_name: HashMap<String, u32>,
    /// Which domain a host matches, as the default router decides it.
    hosts: HostMatcher,
    /// The router.
    pub router: Slot<RouterWorld>,
    /// The balancer.
    pub balancer: Slot<BalancerWorld>,
    /// The breaker.
    pub breaker: Slot<BreakerWorld>,
    /// When it was built.
    pub loaded_at: SystemTime,
    /// Hex SHA-256 over config.json's text and every plugin's bytes: equal
    /// on two replicas exactly when they run the same policy.
    pub digest: String,
    /// Active health checks of its upstreams; stop with the generation.
    pub health: HealthChecks,
    /// Its backend states and pools, for the registry once it serves.
    staged: Staged,
}

impl Generation {
    /// Builds generation `id` from `config`: resolves backend state through
    /// `registry`, loads and `init`s every plugin. Blocking (compiles Wasm).
    pub fn build(
        id: u64,
        config: Arc<Config>,
        runtime: &Runtime,
        registry: &Registry,
    ) -> Result<Self, BuildError> {
        let wit_upstreams: Arc<[Upstream]> = config
            .domains
            .iter()
            .map(|d| Upstream {
                name: d.name.clone(),
                balancer: d.balancer.clone(),
                backends: d.backends.len() as u32,
            })
            .collect();

        let plugins = &config.plugins;
        let router_builtin = object([(
            "default",
            config
                .default_domain
                .as_ref()
                .map_or(Value::Null, |d| Value::String(d.clone())),
        )]);
        let breaker_builtin = object([
            ("threshold", Value::from(config.breaker.threshold)),
            (
                "timeout_ms",
                Value::from(u64::try_from(config.breaker.timeout.as_millis()).unwrap_or(u64::MAX)),
            ),
        ]);
        let balancer_builtin = balancer_builtin_config(&config);
        // Every plugin of a role sees the same upstreams (a domain's own one
        // knows its domain by the `upstream` number of its calls).
        let load_router = |spec: &PluginSpec| {
            slot(
                runtime,
                spec,
                bundle::ROUTER,
                router_builtin.clone(),
                &wit_upstreams,
                &wit_upstreams,
            )
        };
        // `serves(i)`: whether upstream `i`'s picks go to this balancer
        // (only those are worth a line about its fallback).
        let load_balancer = |spec: &PluginSpec, serves: &dyn Fn(usize) -> bool| {
            slot(
                runtime,
                spec,
                bundle::BALANCER,
                balancer_builtin.clone(),
                &wit_upstreams,
                &fallback_balancer_upstreams(&wit_upstreams, spec, serves),
            )
        };
        let load_breaker = |spec: &PluginSpec| {
            slot(
                runtime,
                spec,
                bundle::BREAKER,
                breaker_builtin.clone(),
                &wit_upstreams,
                &wit_upstreams,
            )
        };
        let router = load_router(&plugins.router)?;
        // The domains with a balancer of their own never reach the
        // generation's, whatever their `kind`: the built-in one must not
        // refuse to load over a name only their plugin knows.
        let own_balancer: Vec<bool> = config
            .domains
            .iter()
            .map(|d| d.plugins.balancer.is_some())
            .collect();
        let has_own = |i: usize| own_balancer.get(i).copied().unwrap_or(false);
        let balancer = match plugins.balancer.source {
            PluginSource::Builtin => slot(
                runtime,
                &plugins.balancer,
                bundle::BALANCER,
                balancer_builtin.clone(),
                &round_robin_for(&wit_upstreams, |i, _| has_own(i)),
                &wit_upstreams,
            )?,
            PluginSource::Path(_) => load_balancer(&plugins.balancer, &|i| !has_own(i))?,
        };
        let breaker = load_breaker(&plugins.breaker)?;
        let mut domain_slots = Vec::with_capacity(config.domains.len());
        for (di, d) in config.domains.iter().enumerate() {
            let own = &d.plugins;
            let named = |role: &'static str| {
                move |error| BuildError::DomainPlugin {
                    domain: d.name.clone(),
                    role,
                    error,
                }
            };
            domain_slots.push(DomainSlots {
                router: own
                    .router
                    .as_ref()
                    .map(|spec| load_router(spec).map_err(named("router")))
                    .transpose()?,
                balancer: own
                    .balancer
                    .as_ref()
                    .map(|spec| load_balancer(spec, &|i| i == di).map_err(named("balancer")))
                    .transpose()?,
                breaker: own
                    .breaker
                    .as_ref()
                    .map(|spec| load_breaker(spec).map_err(named("breaker")))
                    .transpose()?,
            });
        }

        // Backend state and pools are only staged: a build (or a reload)
        // that fails must not touch the registry, or the serving
        // generation's backends would be forgotten and their breaker state
        // lost at the next good reload. See `commit_registry`.
        let mut staged = Staged::default();
        let flat: Vec<(String, String, String)> = config
            .domains
            .iter()
            .flat_map(|d| {
                d.backends
                    .iter()
                    .map(|b| (d.name.clone(), b.authority(), b.url_base()))
            })
            .collect();
        let mut states = registry.resolve(&flat, &mut staged).into_iter();
        let pool_keys: Vec<PoolKey> = config
            .domains
            .iter()
            .map(|d| PoolKey::of(&d.upstream, d.backend_ca.clone()))
            .collect();
        let mut clients = registry.pools(&pool_keys, &mut staged)?.into_iter();
        let upstreams: Vec<UpstreamSlot> = config
            .domains
            .iter()
            .zip(clients.by_ref())
            .zip(domain_slots)
            .map(|((d, client), plugins)| UpstreamSlot {
                name: d.name.clone(),
                backends: d
                    .backends
                    .iter()
                    .zip(states.by_ref())
                    .map(|(b, state)| BackendSlot {
                        metrics: BackendMetrics::new(&d.name, &state.authority),
                        state,
                        weight: b.weight,
                    })
                    .collect(),
                metrics: DomainMetrics::new(&d.name),
                settings: d.upstream.clone(),
                client,
                retry_budget: RetryBudget::new(&d.upstream.retries),
                plugins,
            })
            .collect();
        let mut health = HealthChecks::default();
        for ((d, u), key) in config.domains.iter().zip(&upstreams).zip(&pool_keys) {
            if let Some(check) = &d.upstream.health_check {
                let states: Vec<Arc<BackendState>> =
                    u.backends.iter().map(|b| b.state.clone()).collect();
                health.start(&u.name, &states, check, key.health_client()?);
            }
        }
        let default = config
            .default_domain
            .as_deref()
            .and_then(|d| config.domains.iter().position(|u| u.name == d));
        let hosts = HostMatcher::new(config.domains.iter().map(|d| d.name.as_str()), default);
        let by_name = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i as u32))
            .collect();
        let mut components = vec![
            router.primary.sha256().to_owned(),
            balancer.primary.sha256().to_owned(),
            breaker.primary.sha256().to_owned(),
        ];
        for u in &upstreams {
            let own = &u.plugins;
            for (role, sha) in [
                ("router", own.router.as_ref().map(|s| s.primary.sha256())),
                (
                    "balancer",
                    own.balancer.as_ref().map(|s| s.primary.sha256()),
                ),
                ("breaker", own.breaker.as_ref().map(|s| s.primary.sha256())),
            ] {
                if let Some(sha) = sha {
                    components.push(format!("{} {role} {sha}", u.name));
                }
            }
        }
        let digest = digest(&config, &components);
        Ok(Self {
            digest,
            id,
            config,
            upstreams,
            by_name,
            hosts,
            router,
            balancer,
            breaker,
            loaded_at: SystemTime::now(),
            health,
            staged,
        })
    }

    /// Hex SHA-256s of every component this generation runs (for the
    /// compile cache's eviction).
    pub fn component_digests(&self) -> std::collections::HashSet<String> {
        fn of<W: World>(slot: &Slot<W>) -> impl Iterator<Item = String> + '_ {
            std::iter::once(&slot.primary)
                .chain(slot.fallback.as_ref())
                .map(|p| p.sha256().to_owned())
        }
        let own = self.upstreams.iter().flat_map(|u| {
            let p = &u.plugins;
            p.router
                .iter()
                .flat_map(of)
                .chain(p.balancer.iter().flat_map(of))
                .chain(p.breaker.iter().flat_map(of))
        });
        of(&self.router)
            .chain(of(&self.balancer))
            .chain(of(&self.breaker))
            .chain(own)
            .collect()
    }

    /// Makes `registry` hold this generation's backend states and pools:
    /// call it when this generation is swapped in, not before.
    pub fn commit_registry(&self, registry: &Registry) {
        registry.commit(&self.staged);
    }

    /// The domain a request for `host` belongs to, by the default router's
    /// rule: the tenant its router faults are counted for.
    pub fn tenant_of(&self, host: &str) -> Tenant {
        match self.hosts.lookup(host) {
            Some(i) => Tenant::Upstream(u32::try_from(i).unwrap_or(u32::MAX)),
            None => Tenant::Unmatched,
        }
    }

    /// The router that decides for `tenant` (the domain the request's host
    /// matches): the domain's own, else the generation's.
    pub fn router_for(&self, tenant: Tenant) -> &Slot<RouterWorld> {
        match tenant {
            Tenant::Upstream(i) => self
                .upstreams
                .get(i as usize)
                .and_then(|u| u.plugins.router.as_ref())
                .unwrap_or(&self.router),
            Tenant::Unmatched => &self.router,
        }
    }

    /// The balancer of upstream `upstream`: its own, else the generation's.
    pub fn balancer_for(&self, upstream: u32) -> &Slot<BalancerWorld> {
        self.upstreams
            .get(upstream as usize)
            .and_then(|u| u.plugins.balancer.as_ref())
            .unwrap_or(&self.balancer)
    }

    /// The breaker of upstream `upstream`: its own, else the generation's.
    pub fn breaker_for(&self, upstream: u32) -> &Slot<BreakerWorld> {
        self.upstreams
            .get(upstream as usize)
            .and_then(|u| u.plugins.breaker.as_ref())
            .unwrap_or(&self.breaker)
    }

    /// The upstream number of `name`.
    pub fn upstream_index(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }
}

fn object<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The built-in balancer's config: for each `consistent-hash` domain, what
/// it hashes and its backends' addresses, which key the hash so that a
/// backend keeps its keys when others are added or removed (the plugin
/// only sees positions).
fn balancer_builtin_config(config: &Config) -> Map<String, Value> {
    let hash: Map<String, Value> = config
        .domains
        .iter()
        .filter_map(|d| {
            let on = d.hash_on.as_ref()?;
            let backends: Vec<Value> = d
                .backends
                .iter()
                .map(|b| Value::String(b.url_base()))
                .collect();
            Some((
                d.name.clone(),
                Value::Object(object([
                    ("on", Value::String(on.to_string())),
                    ("backends", Value::Array(backends)),
                ])),
            ))
        })
        .collect();
    if hash.is_empty() {
        return Map::new();
    }
    object([("hash", Value::Object(hash))])
}

/// The upstreams as a custom balancer's fail-open fallback, the built-in
/// balancer, sees them. A custom balancer's domains may carry any name
/// (`"balancer": "sticky"`), which the built-in one would refuse to load
/// with: it balances those round-robin instead, and the log says so once per
/// generation for each upstream whose picks the balancer serves (`serves`;
/// the others never reach it, and are only renamed so it loads).
fn fallback_balancer_upstreams(
    upstreams: &Arc<[Upstream]>,
    spec: &PluginSpec,
    serves: &dyn Fn(usize) -> bool,
) -> Arc<[Upstream]> {
    let custom = matches!(spec.source, PluginSource::Path(_)) && spec.on_fault == OnFault::FailOpen;
    let unknown = |u: &Upstream| !bbproxy_config::BUILTIN_BALANCERS.contains(&u.balancer.as_str());
    if !custom || !upstreams.iter().any(unknown) {
        return upstreams.clone();
    }
    round_robin_for(upstreams, |i, u| {
        if !unknown(u) {
            return false;
        }
        if !serves(i) {
            return true;
        }
        tracing::info!(
            upstream = %u.name,
            "balancer {:?} is not a built-in name: when the balancer plugin faults, its built-in fallback (fail-open) balances {} round-robin",
            u.balancer,
            u.name
        );
        true
    })
}

/// `upstreams` with the balancer name of those `replace` picks (by index)
/// set to round-robin.
fn round_robin_for(
    upstreams: &Arc<[Upstream]>,
    mut replace: impl FnMut(usize, &Upstream) -> bool,
) -> Arc<[Upstream]> {
    upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| {
            if !replace(i, u) {
                return u.clone();
            }
            Upstream {
                balancer: bbproxy_config::DEFAULT_BALANCER.to_owned(),
                ..u.clone()
            }
        })
        .collect()
}

/// Loads a role's plugin as `spec` says. A built-in plugin gets the config
/// the host derives from config.json, with the user's `config` keys laid over
/// it; a custom plugin gets the user's `config` as is. A fail-open fallback
/// sees `fallback_upstreams`.
fn slot<W: World>(
    runtime: &Runtime,
    spec: &PluginSpec,
    builtin_bytes: &[u8],
    builtin_config: Map<String, Value>,
    upstreams: &Arc<[Upstream]>,
    fallback_upstreams: &Arc<[Upstream]>,
) -> Result<Slot<W>, LoadError> {
    let limits = crate::plugin::Limits {
        backoff: spec.fault_backoff.into(),
        ..crate::plugin::Limits::new(spec.timeout, spec.memory_limit)
    };
    match &spec.source {
        PluginSource::Builtin => {
            let mut merged = builtin_config;
            if let Value::Object(user) = &spec.config {
                merged.extend(user.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let plugin = Plugin::<W>::load(
                runtime,
                "builtin",
                builtin_bytes,
                Value::Object(merged).to_string(),
                limits,
                upstreams.clone(),
            )?;
            Ok(Slot {
                primary: Arc::new(plugin),
                fallback: None,
                source: Source::Builtin,
            })
        }
        PluginSource::Path(path) => {
            let name = path.display().to_string();
            let bytes = read(path, &name)?;
            let primary = Plugin::<W>::load(
                runtime,
                &name,
                &bytes,
                spec.config.to_string(),
                limits,
                upstreams.clone(),
            )?;
            let fallback = match spec.on_fault {
                OnFault::FailClosed => None,
                OnFault::FailOpen => Some(Arc::new(Plugin::<W>::load(
                    runtime,
                    "builtin",
                    builtin_bytes,
                    Value::Object(builtin_config).to_string(),
                    limits,
                    fallback_upstreams.clone(),
                )?)),
            };
            Ok(Slot {
                primary: Arc::new(primary),
                fallback,
                source: Source::File(path.clone()),
            })
        }
    }
}

fn read(path: &Path, name: &str) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|error| LoadError::Io {
        name: name.to_owned(),
        error,
    })
}

/// The generation's digest: config.json's SHA-256, then each role's
/// component SHA-256 (router, balancer, breaker; a built-in plugin's bytes
/// are the binary's, so two versions with different built-ins differ),
/// then each domain's own plugins, named by domain and role.
fn digest(config: &Config, components: &[String]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(config.sha256);
    for c in components {
        h.update(c.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}
