//! Loading a generation's plugins: the router, balancer and breaker every
//! domain shares, and the ones a domain names for itself, each with the
//! config the host derives for the built-in ones and the fail-open fallback
//! its policy asks for.

use std::path::Path;
use std::sync::Arc;

use bbproxy_config::{Config, OnFault, PluginSource, PluginSpec};
use serde_json::{Map, Value};

use super::{BuildError, DomainSlots, Slot, Source};
use crate::filter::Chains;
use crate::plugin::{
    BalancerWorld, BreakerWorld, FilterWorld, LoadError, Plugin, RouterWorld, Runtime, Upstream,
    World, bundle,
};

/// A generation's plugins, loaded and `init`-checked.
pub(super) struct Loaded {
    pub(super) router: Slot<RouterWorld>,
    pub(super) balancer: Slot<BalancerWorld>,
    pub(super) breaker: Slot<BreakerWorld>,
    /// Each domain's own, in config order.
    pub(super) domains: Vec<DomainSlots>,
}

/// The upstreams as `host.upstreams` lists them to every plugin.
fn wit_upstreams(config: &Config) -> Arc<[Upstream]> {
    config
        .upstreams()
        .map(|d| Upstream {
            name: d.name.clone(),
            balancer: d.balancer.clone(),
            backends: d.backends.len() as u32,
        })
        .collect()
}

/// Compiles `config`'s filter chains, loading each filter component (one
/// instance per entry: two entries of one file may have different
/// configs; the compiled code is shared through the runtime's cache).
/// Blocking (compiles Wasm).
pub(super) fn filters(config: &Config, runtime: &Runtime) -> Result<Chains, BuildError> {
    let upstreams = wit_upstreams(config);
    Chains::build(config, &mut |spec: &PluginSpec, key: &str| {
        let named = |error| BuildError::Filter {
            key: key.to_owned(),
            error,
        };
        let PluginSource::Path(path) = &spec.source else {
            // Validation gives every component entry a path.
            return Err(BuildError::Unsupported(format!(
                "{key}: a filter component needs a \"path\""
            )));
        };
        let name = path.display().to_string();
        let bytes = read(path, &name).map_err(named)?;
        let limits = crate::plugin::Limits {
            backoff: spec.fault_backoff.into(),
            ..crate::plugin::Limits::new(spec.timeout, spec.memory_limit)
        };
        let plugin = Plugin::<FilterWorld>::load(
            runtime,
            &name,
            &bytes,
            spec.config.to_string(),
            limits,
            upstreams.clone(),
        )
        .map_err(named)?;
        Ok(Arc::new(plugin))
    })
}

/// Loads every plugin `config` names. Blocking (compiles Wasm).
pub(super) fn plugins(config: &Config, runtime: &Runtime) -> Result<Loaded, BuildError> {
    let wit_upstreams = wit_upstreams(config);

    let plugins = &config.plugins;
    let (router_builtin, balancer_builtin, breaker_builtin) = builtin_configs(config);
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
        .upstreams()
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
    let domains = domain_plugins(config, &load_router, &load_balancer, &load_breaker)?;
    Ok(Loaded {
        router,
        balancer,
        breaker,
        domains,
    })
}

/// Loads a role's plugin from its entry.
type Loader<'a, W> = &'a dyn Fn(&PluginSpec) -> Result<Slot<W>, LoadError>;
/// Loads a balancer serving the picks of the upstreams (by index) the
/// second argument says.
type BalancerLoader<'a> =
    &'a dyn Fn(&PluginSpec, &dyn Fn(usize) -> bool) -> Result<Slot<BalancerWorld>, LoadError>;

/// Each upstream's own plugins (domains, then pools), loaded with the generation's loaders (the
/// balancer's serves only its domain's picks).
fn domain_plugins(
    config: &Config,
    load_router: Loader<'_, RouterWorld>,
    load_balancer: BalancerLoader<'_>,
    load_breaker: Loader<'_, BreakerWorld>,
) -> Result<Vec<DomainSlots>, BuildError> {
    let domains = config.domains.len();
    let mut domain_slots = Vec::with_capacity(domains + config.pools.len());
    for (di, d) in config.upstreams().enumerate() {
        let own = &d.plugins;
        let named = |role: &'static str| {
            move |error| BuildError::DomainPlugin {
                key: format!(
                    "{}.{}",
                    if di < domains { "domains" } else { "upstreams" },
                    d.name
                ),
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

    Ok(domain_slots)
}

/// The configs the host derives from config.json for the built-in router,
/// balancer and breaker.
fn builtin_configs(
    config: &Config,
) -> (Map<String, Value>, Map<String, Value>, Map<String, Value>) {
    let mut router = object([(
        "default",
        config
            .default_domain
            .as_ref()
            .map_or(Value::Null, |d| Value::String(d.clone())),
    )]);
    router.extend(super::router_config::routes(config));
    let breaker = object([
        ("threshold", Value::from(config.breaker.threshold)),
        (
            "timeout_ms",
            Value::from(u64::try_from(config.breaker.timeout.as_millis()).unwrap_or(u64::MAX)),
        ),
    ]);
    (router, balancer_builtin_config(config), breaker)
}

fn object<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The built-in balancer's config: for each `consistent-hash` domain, what
/// it hashes, its backends' addresses, which key the hash so that a
/// backend keeps its keys when others are added or removed (the plugin
/// only sees positions), and whether their weights differ (only then does
/// a pick read every candidate, not just their ids); for each
/// `sticky-cookie` one, the cookie's name
/// and each backend's token, the values the proxy sets the cookie to.
fn balancer_builtin_config(config: &Config) -> Map<String, Value> {
    let hash = by_upstream(config, |d| {
        let on = d.hash_on.as_ref()?;
        let backends = d.backends.iter().map(|b| Value::String(b.url_base()));
        let weighted = d.backends.windows(2).any(|w| w[0].weight != w[1].weight);
        Some(object([
            ("on", Value::String(on.to_string())),
            ("backends", Value::Array(backends.collect())),
            ("weighted", Value::Bool(weighted)),
        ]))
    });
    let sticky = by_upstream(config, |d| {
        let cookie = d.sticky_cookie.as_ref()?;
        let tokens = d
            .backends
            .iter()
            .map(|b| Value::String(crate::upstream::sticky::token(b)));
        Some(object([
            ("cookie", Value::String(cookie.clone())),
            ("tokens", Value::Array(tokens.collect())),
        ]))
    });
    let mut out = Map::new();
    if !hash.is_empty() {
        out.insert("hash".to_owned(), Value::Object(hash));
    }
    if !sticky.is_empty() {
        out.insert("sticky".to_owned(), Value::Object(sticky));
    }
    out
}

/// Upstream name → its `settings`, for the upstreams that have any.
fn by_upstream(
    config: &Config,
    settings: impl Fn(&bbproxy_config::Domain) -> Option<Map<String, Value>>,
) -> Map<String, Value> {
    config
        .upstreams()
        .filter_map(|d| Some((d.name.clone(), Value::Object(settings(d)?))))
        .collect()
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
