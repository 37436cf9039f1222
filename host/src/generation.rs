//! A generation: one validated config plus the plugins it names, loaded and
//! `init`-checked, and the backends with their live state. Requests pin the
//! generation they start on; a reload builds a whole new one off the request
//! path and swaps it in only if every step passed.

mod load;
mod router_config;
mod routes;

pub use routes::{RouteAction, RouteTarget};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bbproxy_config::{Config, UpstreamSettings};
use bbproxy_plugin_contract::hosts::HostMatcher;

use crate::filter::{Chain, Chains};
use crate::plugin::{
    BalancerWorld, BreakerWorld, FilterWorld, LoadError, Plugin, RouterWorld, Runtime, Tenant,
    World,
};
use crate::telemetry::handles::{BackendMetrics, DomainMetrics};
use crate::upstream::health::HealthChecks;
use crate::upstream::pool::{PoolKey, UpstreamClients};
use crate::upstream::sticky::{StickyCookie, StickyError};
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
    /// An upstream's sticky cookie cannot be set (config validation
    /// allows only cookie names that can).
    // In the text and not a `source`, as for `DomainPlugin` below.
    #[error("{upstream}: {error}")]
    Sticky {
        /// The upstream's name.
        upstream: String,
        /// Why.
        error: StickyError,
    },
    /// A domain's own plugin failed to load: named by its config key, since
    /// several domains may load the same file with different settings.
    // The load error is in the text and not a `source`, or `{:#}` would
    // print it twice.
    #[error("{key}.{role}: {error}")]
    DomainPlugin {
        /// The domain's key path (`domains.example.com`), or the pool's
        /// (`upstreams.api`).
        key: String,
        /// `router`, `balancer` or `breaker`.
        role: &'static str,
        /// Why it failed.
        error: LoadError,
    },
    /// A filter component failed to load, named by its entry's key path
    /// (`domains.example.com.filters[1]`).
    #[error("{key}: {error}")]
    Filter {
        /// The entry's key path.
        key: String,
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

/// One upstream: a key of `domains`, or a pool of `upstreams` (after the
/// domains).
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
    /// The connection pool its requests go through, one per worker.
    pub clients: UpstreamClients,
    /// Limits retries to a share of its traffic.
    pub retry_budget: RetryBudget,
    /// Its own plugins, where config.json names them.
    pub plugins: DomainSlots,
    /// Its cookie, when it balances with `sticky-cookie`.
    pub sticky: Option<StickyCookie>,
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
    /// Upstreams in config order, the domains then the pools (the index is
    /// the WIT upstream number).
    pub upstreams: Vec<UpstreamSlot>,
    by_name: HashMap<String, u32>,
    /// What the built-in router's route references stand for.
    routes: routes::RouteTable,
    /// The global filter chain and each domain's (a route's is in its
    /// [`RouteTarget`]).
    filters: Chains,
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
    /// Hex SHA-256 over config.json's content (secrets blanked) and every
    /// plugin's bytes: equal on two replicas exactly when they run the same
    /// policy.
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
        let load::Loaded {
            router,
            balancer,
            breaker,
            domains: domain_slots,
        } = load::plugins(&config, runtime)?;

        // Backend state and pools are only staged: a build (or a reload)
        // that fails must not touch the registry, or the serving
        // generation's backends would be forgotten and their breaker state
        // lost at the next good reload. See `commit_registry`.
        let mut staged = Staged::default();
        let (upstreams, pool_keys) = upstreams(&config, registry, &mut staged, domain_slots)?;
        let mut health = HealthChecks::default();
        for ((d, u), key) in config.upstreams().zip(&upstreams).zip(&pool_keys) {
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
        let by_name: HashMap<String, u32> = upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.clone(), i as u32))
            .collect();
        let filters = load::filters(&config, runtime)?;
        let routes =
            routes::RouteTable::build(&config, |name| by_name.get(name).copied(), &filters)?;
        let roles = [
            router.primary.sha256(),
            balancer.primary.sha256(),
            breaker.primary.sha256(),
        ];
        let mut parts = components(roles, &upstreams);
        // Filter components in config order: the file bytes behind each
        // entry, which config.json's own digest does not cover.
        parts.extend(
            filters
                .all()
                .flat_map(|c| c.components())
                .map(|p| format!("filter {}", p.sha256())),
        );
        let digest = digest(&config, &parts);
        Ok(Self {
            digest,
            id,
            config,
            upstreams,
            by_name,
            routes,
            filters,
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
        let filters = self
            .filters
            .all()
            .flat_map(|c| c.components())
            .map(|p| p.sha256().to_owned());
        of(&self.router)
            .chain(of(&self.balancer))
            .chain(of(&self.breaker))
            .chain(own)
            .chain(filters)
            .collect()
    }

    /// The filter components of its chains, each once, in config order.
    pub fn filter_components(&self) -> impl Iterator<Item = &Arc<Plugin<FilterWorld>>> {
        let mut seen = std::collections::HashSet::new();
        self.filters
            .all()
            .flat_map(|c| c.components())
            .filter(move |p| seen.insert(Arc::as_ptr(p)))
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

    /// The filter chain of a request for `tenant` (the domain its host
    /// matches) that no route forwards: the global chain, then the
    /// domain's.
    pub fn filters_for(&self, tenant: Tenant) -> &Chain {
        let domain = match tenant {
            Tenant::Upstream(i) => Some(i as usize),
            Tenant::Unmatched => None,
        };
        self.filters.domain(domain)
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

    /// The name of upstream number `i`.
    pub fn upstream_name(&self, i: u32) -> Option<&str> {
        self.upstreams.get(i as usize).map(|u| u.name.as_str())
    }

    /// What route `index` of the domain with upstream number `domain`
    /// stands for: a forward or a redirect (a `respond` route is the
    /// router's own answer).
    pub fn route_action(&self, domain: u32, index: u32) -> Option<&RouteAction> {
        self.routes.get(domain, index)
    }
}

/// The upstreams of `config`, in its order, with their backends' states
/// and pools resolved through `registry` into `staged`, and `plugins`
/// (each domain's own); also each upstream's pool key.
fn upstreams(
    config: &Config,
    registry: &Registry,
    staged: &mut Staged,
    plugins: Vec<DomainSlots>,
) -> Result<(Vec<UpstreamSlot>, Vec<PoolKey>), BuildError> {
    let flat: Vec<(String, String, String)> = config
        .upstreams()
        .flat_map(|d| {
            d.backends
                .iter()
                .map(|b| (d.name.clone(), b.authority(), b.url_base()))
        })
        .collect();
    let mut states = registry.resolve(&flat, staged).into_iter();
    let pool_keys: Vec<PoolKey> = config
        .upstreams()
        .map(|d| PoolKey::of(&d.upstream, d.backend_ca.clone()))
        .collect();
    let clients = registry.pools(&pool_keys, staged)?;
    let stickies = config
        .upstreams()
        .map(|d| {
            d.sticky_cookie
                .as_deref()
                .map(|cookie| StickyCookie::new(cookie, &d.backends))
                .transpose()
                .map_err(|error| BuildError::Sticky {
                    upstream: d.name.clone(),
                    error,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let upstreams = config
        .upstreams()
        .zip(clients)
        .zip(plugins)
        .zip(stickies)
        .map(|(((d, clients), plugins), sticky)| UpstreamSlot {
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
            clients,
            retry_budget: RetryBudget::new(&d.upstream.retries),
            plugins,
            sticky,
        })
        .collect();
    Ok((upstreams, pool_keys))
}

/// What the digest covers besides config.json: the generation's router,
/// balancer and breaker, then each domain's own plugins, named by domain
/// and role.
fn components(roles: [&str; 3], upstreams: &[UpstreamSlot]) -> Vec<String> {
    let mut components: Vec<String> = roles.iter().map(|sha| (*sha).to_owned()).collect();
    for u in upstreams {
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
    components
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
