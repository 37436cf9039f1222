//! `plugins`: the router, balancer and breaker slots, each `"builtin"` or a
//! component by path with its config, deadline, memory cap and fault
//! policy.

use std::time::Duration;

use serde_json::{Map, Value};

use super::walk::{Dir, R, check_keys, join, object, positive_duration, present, show, size};
use crate::error::Fault;
use crate::model::*;

const PLUGINS_KEYS: &[&str] = &["router", "balancer", "breaker"];
/// The keys of a plugin entry, in `plugins.<role>` and in a domain.
pub(crate) const PLUGIN_KEYS: &[&str] = &[
    "path",
    "config",
    "timeout",
    "memory_limit",
    "on_fault",
    "fault_backoff",
];
const FAULT_BACKOFF_KEYS: &[&str] = &["after", "initial", "max"];

/// One WebAssembly page: a plugin cannot run in less.
const MIN_PLUGIN_MEMORY: u64 = 64 << 10;
/// The most a 32-bit WebAssembly memory can address.
const MAX_PLUGIN_MEMORY: u64 = 4 << 30;

pub(crate) fn plugins(v: &Value, dir: &Dir) -> R<Plugins> {
    let map = object(v, "plugins", "{\"router\": \"builtin\"}")?;
    // Named on its own rather than as an unknown key: it was accepted
    // once, and silently ignoring it would let requests skip a filter
    // the operator believes runs.
    if map.contains_key("filters") {
        return Err(Fault::invalid(
            "plugins.filters",
            "not supported yet; there is no filter plugin world (plugins are a router, a \
             balancer and a breaker), so remove the key",
        ));
    }
    check_keys(map, "plugins", PLUGINS_KEYS)?;
    let slot = |key: &str| match present(map, key) {
        Some(v) => plugin(v, &join("plugins", key), dir),
        None => Ok(PluginSpec::builtin()),
    };
    Ok(Plugins {
        router: slot("router")?,
        balancer: slot("balancer")?,
        breaker: slot("breaker")?,
    })
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
    check_keys(map, path, PLUGIN_KEYS)?;
    plugin_entry(map, path, dir)
}

/// The keys of a plugin entry `map` at `path` (already checked against the
/// keys its place allows; others are ignored here).
pub(crate) fn plugin_entry(map: &Map<String, Value>, path: &str, dir: &Dir) -> R<PluginSpec> {
    let source = match present(map, "path") {
        Some(v) => PluginSource::Path(dir.file_path(v, &join(path, "path"))?),
        None => PluginSource::Builtin,
    };
    let config = match present(map, "config") {
        Some(v) => v.clone(),
        None => Value::Object(Map::new()),
    };
    let timeout = match present(map, "timeout") {
        Some(v) => positive_duration(v, &join(path, "timeout"))?,
        None => DEFAULT_PLUGIN_TIMEOUT,
    };
    let memory_limit = match present(map, "memory_limit") {
        Some(v) => memory_limit(v, &join(path, "memory_limit"))?,
        None => DEFAULT_PLUGIN_MEMORY,
    };
    let on_fault = match present(map, "on_fault") {
        Some(v) => on_fault(v, &join(path, "on_fault"))?,
        // A custom plugin that breaks should be noticed; the builtin
        // ones only fault if something is badly wrong, and then serving
        // with default decisions beats refusing every request.
        None => match source {
            PluginSource::Builtin => OnFault::FailOpen,
            PluginSource::Path(_) => OnFault::FailClosed,
        },
    };
    let fault_backoff = match present(map, "fault_backoff") {
        Some(v) => fault_backoff(v, &join(path, "fault_backoff"))?,
        None => FaultBackoff::default(),
    };
    Ok(PluginSpec {
        source,
        config,
        timeout,
        memory_limit,
        on_fault,
        fault_backoff,
    })
}

fn memory_limit(v: &Value, path: &str) -> R<u64> {
    let bytes = size(v, path)?;
    if !(MIN_PLUGIN_MEMORY..=MAX_PLUGIN_MEMORY).contains(&bytes) {
        return Err(Fault::invalid(
            path,
            format!(
                "{} is out of range: a plugin needs at least 64KiB (one WebAssembly page) and can address at most 4GiB",
                show(v)
            ),
        ));
    }
    Ok(bytes)
}

fn on_fault(v: &Value, path: &str) -> R<OnFault> {
    match v.as_str() {
        Some("fail-open") => Ok(OnFault::FailOpen),
        Some("fail-closed") => Ok(OnFault::FailClosed),
        _ => Err(Fault::invalid(
            path,
            format!("expected \"fail-open\" or \"fail-closed\", got {}", show(v)),
        )),
    }
}

/// `{"after": 5, "initial": "1s", "max": "60s"}`; missing keys keep their
/// defaults.
fn fault_backoff(v: &Value, path: &str) -> R<FaultBackoff> {
    let map = object(
        v,
        path,
        "{\"after\": 5, \"initial\": \"1s\", \"max\": \"60s\"}",
    )?;
    check_keys(map, path, FAULT_BACKOFF_KEYS)?;
    let mut b = FaultBackoff::default();
    if let Some(v) = present(map, "after") {
        b.after = v
            .as_u64()
            .filter(|n| *n >= 1)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                Fault::invalid(
                    join(path, "after"),
                    format!(
                        "expected a whole number of consecutive faults, at least 1, got {}",
                        show(v)
                    ),
                )
            })?;
    }
    let initial = present(map, "initial");
    if let Some(v) = initial {
        b.initial = positive_duration(v, &join(path, "initial"))?;
    }
    let max = present(map, "max");
    if let Some(v) = max {
        b.max = positive_duration(v, &join(path, "max"))?;
    }
    if b.initial > b.max {
        let shown = |v: Option<&Value>, d: Duration| match v {
            Some(v) => show(v),
            None => format!("{d:?} (the default)"),
        };
        return Err(Fault::invalid(
            path,
            format!(
                "initial {} is longer than max {}; the suspension starts at initial and doubles up to max",
                shown(initial, b.initial),
                shown(max, b.max)
            ),
        ));
    }
    Ok(b)
}

#[cfg(test)]
mod tests;
