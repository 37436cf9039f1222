//! `upstreams` (named pools of backends) and what ties the domains' routes
//! to them: each route resolved against the pool or domain it forwards
//! to, and routes only where the built-in router decides.

use serde_json::Value;

use super::domains::{self, Kind, Placed};
use super::routes;
use super::walk::{Dir, R, join, object};
use crate::address::normalize_domain;
use crate::error::Fault;
use crate::model::*;
use bbproxy_plugin_contract::routes::{RESERVED_ROUTER_KEYS, ROUTE_REF_SEPARATOR};

/// `upstreams`: each pool an object with a domain's forwarding keys (or a
/// list of backends). A pool's name is non-empty, has no `#` (the router's
/// route references use it) and is no domain's.
pub(crate) fn pools<'a>(
    v: Option<&'a Value>,
    dir: &Dir,
    defaults: &UpstreamSettings,
    domains: &[Placed<'_>],
) -> R<Vec<Placed<'a>>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let map = object(
        v,
        "upstreams",
        "{\"api\": {\"backends\": [\"localhost:9001\"]}}",
    )?;
    let mut out = Vec::with_capacity(map.len());
    for (name, value) in map {
        let path = join("upstreams", name);
        if name.trim().is_empty() || name.contains(ROUTE_REF_SEPARATOR) {
            return Err(Fault::invalid(
                path,
                format!("invalid pool name {name:?}: it must be non-empty and without '#'"),
            ));
        }
        let same = normalize_domain(name).ok();
        if let Some(d) = domains
            .iter()
            .find(|d| same.as_deref() == Some(d.domain.name.as_str()))
        {
            return Err(Fault::invalid(
                path,
                format!(
                    "{name:?} is also a domain ({}); a route names either, so give the pool another name",
                    d.path
                ),
            ));
        }
        out.push(domains::domain(
            value,
            path,
            name.clone(),
            dir,
            defaults,
            Kind::Pool,
        )?);
    }
    Ok(out)
}

/// Resolves every domain's routes against the pools (by exact name) and
/// the domains (by name as domain keys are written).
pub(crate) fn resolve(domains: &mut [Placed<'_>], pools: &[Placed<'_>]) -> R<()> {
    let names: Vec<&str> = pools.iter().map(|p| p.domain.name.as_str()).collect();
    let names = match names.is_empty() {
        true => "there are none".to_owned(),
        false => names.join(", "),
    };
    for i in 0..domains.len() {
        let built = {
            let all: &[Placed<'_>] = domains;
            let find = |name: &str| {
                let pool = pools.iter().find(|p| p.domain.name == name);
                pool.or_else(|| {
                    let normal = normalize_domain(name).ok()?;
                    all.iter().find(|d| d.domain.name == normal)
                })
                .map(|p| &p.domain)
            };
            routes::resolve(&all[i].routes, &find, &names)?
        };
        domains[i].domain.routes = built;
    }
    Ok(())
}

/// Routes are the built-in router's: a domain whose router is a plugin of
/// the user's cannot have them, and the keys the host passes them under
/// cannot be set by hand.
pub(crate) fn check_router(domains: &[Placed<'_>], plugins: &Plugins) -> R<()> {
    if plugins.router.source == PluginSource::Builtin {
        for key in RESERVED_ROUTER_KEYS {
            if plugins.router.config.get(key).is_some() {
                return Err(Fault::invalid(
                    format!("plugins.router.config.{key}"),
                    "reserved: the host passes the domains' routes to the built-in router under this key; write them in domains.<name>.routes",
                ));
            }
        }
    }
    for d in domains.iter().filter(|d| !d.routes.is_empty()) {
        let whose = match (&d.domain.plugins.router, &plugins.router.source) {
            (Some(_), _) => join(&d.path, "router"),
            (None, PluginSource::Path(_)) => "plugins.router".to_owned(),
            (None, PluginSource::Builtin) => continue,
        };
        return Err(Fault::invalid(
            join(&d.path, "routes"),
            format!(
                "routes are matched by the built-in router, but this domain's router is a plugin of your own ({whose}); route in that plugin, or remove one of the two"
            ),
        ));
    }
    Ok(())
}
