//! `plugins`: the router, balancer and breaker slots, each `"builtin"` or a
//! component by path with its config, deadline, memory cap and fault
//! policy; the filter chain every domain starts with ([`super::filters`]);
//! and the directory compiled plugins are kept in.

use serde_json::Value;

use super::entry::Entry;
use super::walk::{Dir, Fields, R, object, set, show};
use crate::error::Fault;
use crate::model::*;

pub(crate) fn plugins(v: &Value, dir: &Dir) -> R<Plugins> {
    let map = object(v, "plugins", "{\"router\": \"builtin\"}")?;
    let mut plugins = Plugins {
        router: PluginSpec::builtin(),
        balancer: PluginSpec::builtin(),
        breaker: PluginSpec::builtin(),
        filters: Vec::new(),
        cache_dir: None,
    };
    let Plugins {
        router,
        balancer,
        breaker,
        filters,
        cache_dir,
    } = &mut plugins;
    Fields::new(map, "plugins")
        .key("router", |v, p| set(router, plugin(v, p, dir)))
        .key("balancer", |v, p| set(balancer, plugin(v, p, dir)))
        .key("breaker", |v, p| set(breaker, plugin(v, p, dir)))
        .key("filters", |v, p| {
            set(filters, super::filters::filters(v, p, dir))
        })
        .key("cache_dir", |v, p| {
            set(cache_dir, dir.dir_path(v, p).map(Some))
        })
        .read()?;
    Ok(plugins)
}

fn plugin(v: &Value, path: &str, dir: &Dir) -> R<PluginSpec> {
    let map = match v {
        Value::String(s) if s == "builtin" => return Ok(PluginSpec::builtin()),
        Value::Object(map) => map,
        _ => {
            return Err(Fault::invalid(
                path,
                format!(
                    "expected \"builtin\" or an object like {{\"path\": \"plugin.wasm\", \"config\": {{}}}}, got {}",
                    show(v)
                ),
            ));
        }
    };
    let mut entry = Entry::default();
    entry.keys(Fields::new(map, path), dir).read()?;
    Ok(entry.spec())
}

#[cfg(test)]
mod tests;
