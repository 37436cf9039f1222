//! A plugin entry's keys (`path`, `config`, `timeout`, `memory_limit`,
//! `on_fault`, `fault_backoff`), read the same way wherever an entry is
//! written: `plugins.<role>`, a domain's own plugins, and a filter
//! component in any `filters` chain.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::walk::{Dir, Fields, R, object, positive_duration, set, show, size};
use crate::error::Fault;
use crate::model::*;

/// One WebAssembly page: a plugin cannot run in less.
const MIN_PLUGIN_MEMORY: u64 = 64 << 10;
/// The most a 32-bit WebAssembly memory can address.
const MAX_PLUGIN_MEMORY: u64 = 4 << 30;

/// A plugin entry's keys and the values read from them, in
/// `plugins.<role>` and in a domain (whose balancer adds its own keys).
#[derive(Default)]
pub(crate) struct Entry {
    path: Option<PathBuf>,
    config: Option<Value>,
    timeout: Option<Duration>,
    memory_limit: Option<u64>,
    on_fault: Option<OnFault>,
    fault_backoff: Option<FaultBackoff>,
    /// The path of the first key given other than `path`.
    setting: RefCell<Option<String>>,
}

impl Entry {
    /// `fields` with the entry's keys, which fill `self` when read.
    pub(crate) fn keys<'a, 'f>(
        &'f mut self,
        fields: Fields<'a, 'f>,
        dir: &'f Dir,
    ) -> Fields<'a, 'f> {
        let Entry {
            path,
            config,
            timeout,
            memory_limit: memory,
            on_fault: fault,
            fault_backoff: backoff,
            setting,
        } = self;
        let setting = &*setting;
        let note = move |p: &str| {
            setting.borrow_mut().get_or_insert_with(|| p.to_owned());
        };
        fields
            .key("path", |v, p| set(path, dir.file_path(v, p).map(Some)))
            .key("config", move |v, p| {
                note(p);
                set(config, Ok(Some(v.clone())))
            })
            .key("timeout", move |v, p| {
                note(p);
                set(timeout, positive_duration(v, p).map(Some))
            })
            .key("memory_limit", move |v, p| {
                note(p);
                set(memory, memory_limit(v, p).map(Some))
            })
            .key("on_fault", move |v, p| {
                note(p);
                set(fault, on_fault(v, p).map(Some))
            })
            .key("fault_backoff", move |v, p| {
                note(p);
                set(backoff, fault_backoff(v, p).map(Some))
            })
    }

    /// Whether the entry names a component file.
    pub(crate) fn has_path(&self) -> bool {
        self.path.is_some()
    }

    /// The path of the first setting given besides `path`, if any.
    pub(crate) fn first_setting(&self) -> Option<String> {
        self.setting.borrow().clone()
    }

    pub(crate) fn spec(self) -> PluginSpec {
        let source = match self.path {
            Some(path) => PluginSource::Path(path),
            None => PluginSource::Builtin,
        };
        // A custom plugin that breaks should be noticed; the builtin ones
        // only fault if something is badly wrong, and then serving with
        // default decisions beats refusing every request.
        let on_fault = self.on_fault.unwrap_or(match source {
            PluginSource::Builtin => OnFault::FailOpen,
            PluginSource::Path(_) => OnFault::FailClosed,
        });
        PluginSpec {
            source,
            config: self.config.unwrap_or_else(|| Value::Object(Map::new())),
            timeout: self.timeout.unwrap_or(DEFAULT_PLUGIN_TIMEOUT),
            memory_limit: self.memory_limit.unwrap_or(DEFAULT_PLUGIN_MEMORY),
            on_fault,
            fault_backoff: self.fault_backoff.unwrap_or_default(),
        }
    }
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
    let mut b = FaultBackoff::default();
    // The values as given, for the message when they do not fit together.
    let (mut initial, mut max) = (None, None);
    let FaultBackoff {
        after,
        initial: first,
        max: longest,
    } = &mut b;
    Fields::new(map, path)
        .key("after", |v, p| set(after, consecutive(v, p)))
        .key("initial", |v, p| {
            initial = Some(v);
            set(first, positive_duration(v, p))
        })
        .key("max", |v, p| {
            max = Some(v);
            set(longest, positive_duration(v, p))
        })
        .read()?;
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

fn consecutive(v: &Value, path: &str) -> R<u32> {
    v.as_u64()
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "expected a whole number of consecutive faults, at least 1, got {}",
                    show(v)
                ),
            )
        })
}
