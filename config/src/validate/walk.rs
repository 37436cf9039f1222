//! The walker's primitives, shared by every section: objects and their
//! keys, key paths for errors, values shown in errors, and the scalar forms
//! (booleans, durations, sizes, file paths) that appear in several
//! sections. Sections import from here and from nothing beside them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::duration::parse_duration;
use crate::error::Fault;
use crate::size::parse_size;

pub(crate) type R<T> = Result<T, Fault>;

/// The config file's directory: relative paths in the file resolve against
/// it.
pub(crate) struct Dir(PathBuf);

impl Dir {
    pub(crate) fn of(origin: &Path) -> Dir {
        Dir(origin.parent().unwrap_or(Path::new("")).to_path_buf())
    }

    pub(crate) fn resolve(&self, relative: &str) -> PathBuf {
        // `join` keeps absolute paths as they are.
        self.0.join(relative)
    }

    /// A non-empty string naming a file, resolved.
    pub(crate) fn file_path(&self, v: &Value, path: &str) -> R<PathBuf> {
        match v {
            Value::String(s) if !s.is_empty() => Ok(self.resolve(s)),
            _ => Err(Fault::invalid(
                path,
                format!("expected a file path, got {}", show(v)),
            )),
        }
    }
}

pub(crate) fn boolean(v: &Value, path: &str) -> R<bool> {
    v.as_bool()
        .ok_or_else(|| Fault::invalid(path, format!("expected true or false, got {}", show(v))))
}

pub(crate) fn object<'a>(v: &'a Value, path: &str, example: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Fault::invalid(
            path,
            format!("expected an object like {example}, got {}", show(v)),
        )
    })
}

pub(crate) fn check_keys(
    map: &Map<String, Value>,
    path: &str,
    expected: &'static [&'static str],
) -> R<()> {
    match map.keys().find(|k| !expected.contains(&k.as_str())) {
        Some(name) => Err(Fault::UnknownKey {
            key: join(path, name),
            name: name.clone(),
            expected,
        }),
        None => Ok(()),
    }
}

/// A key's value, treating `null` like absence so that `"key": null` means
/// "use the default" everywhere it is not given another meaning.
pub(crate) fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The value as compact JSON, shortened so one error stays one line.
pub(crate) fn show(v: &Value) -> String {
    const MAX: usize = 60;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

pub(crate) fn duration(v: &Value, path: &str) -> R<Duration> {
    match v {
        Value::String(s) => parse_duration(s)
            .map_err(|why| Fault::invalid(path, format!("invalid duration {}: {why}", show(v)))),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a duration like \"30s\", \"500ms\" or \"1m\", got {}",
                show(v)
            ),
        )),
    }
}

pub(crate) fn positive_duration(v: &Value, path: &str) -> R<Duration> {
    let d = duration(v, path)?;
    if d.is_zero() {
        return Err(Fault::invalid(
            path,
            format!("must be greater than zero, got {}", show(v)),
        ));
    }
    Ok(d)
}

/// A byte count: a whole number or a string like `"16MiB"`.
pub(crate) fn size(v: &Value, path: &str) -> R<u64> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "expected a whole number of bytes or a size like \"16MiB\", got {}",
                    show(v)
                ),
            )
        }),
        Value::String(s) => parse_size(s)
            .map_err(|why| Fault::invalid(path, format!("invalid size {}: {why}", show(v)))),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a size like \"16MiB\" or a number of bytes, got {}",
                show(v)
            ),
        )),
    }
}

/// A whole number of at least `min` that fits in a `u32`.
pub(crate) fn count(v: &Value, path: &str, min: u32) -> R<u32> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n >= min)
        .ok_or_else(|| {
            Fault::invalid(
                path,
                format!("expected a whole number of at least {min}, got {}", show(v)),
            )
        })
}
