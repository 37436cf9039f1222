//! `filters`: a chain of filter entries, in `plugins`, a domain or a
//! route. Each entry is a built-in filter (`{"builtin": "headers",
//! "config": {...}}`) or a component of the `filter` world by `path`,
//! with the keys of any plugin entry. The built-in `headers` filter's names and values are parsed
//! here, so the proxy never parses them per request, and checked against
//! the one rule on which headers a filter may change.

use bbproxy_plugin_contract::headers::check_filter_header;
use serde_json::{Map, Value};

use super::entry::Entry;
use super::walk::{Dir, Fields, Kept, R, array, index, join, keep, object, present, set, show};
use crate::error::Fault;
use crate::model::*;

/// The built-in filters by name.
const BUILTIN_FILTERS: [&str; 1] = ["headers"];

const ENTRY_EXAMPLE: &str =
    "{\"builtin\": \"headers\", \"config\": {\"response\": {\"remove\": [\"server\"]}}}";

/// A `filters` list, in order.
pub(crate) fn filters(v: &Value, path: &str, dir: &Dir) -> R<Vec<Filter>> {
    array(
        v,
        path,
        format_args!("a list of filters like [{ENTRY_EXAMPLE}]"),
    )?
    .iter()
    .enumerate()
    .map(|(i, item)| filter(item, &index(path, i), dir))
    .collect()
}

fn filter(v: &Value, path: &str, dir: &Dir) -> R<Filter> {
    let map = object(v, path, ENTRY_EXAMPLE)?;
    // Which kind of entry decides which keys it may have: looked at first,
    // so a key of the other kind is named as such.
    if present(map, "path").is_some() {
        if present(map, "builtin").is_some() {
            return Err(Fault::invalid(
                path,
                "a filter is either built in (\"builtin\") or a component (\"path\"); both are given",
            ));
        }
        let mut entry = Entry::default();
        entry.keys(Fields::new(map, path), dir).read()?;
        return Ok(Filter::Wasm(entry.spec()));
    }
    let (mut builtin, mut config): (Kept, Kept) = (None, None);
    Fields::new(map, path)
        .key("builtin", keep(&mut builtin))
        .key("config", keep(&mut config))
        .read()?;
    let Some((v, p)) = builtin else {
        return Err(Fault::invalid(
            join(path, "builtin"),
            format!(
                "required: the built-in filter to run ({}), like {ENTRY_EXAMPLE}, or \"path\" to a filter component",
                BUILTIN_FILTERS.join(", ")
            ),
        ));
    };
    match v.as_str() {
        Some("headers") => {
            let edits = match &config {
                Some((v, p)) => header_filter(v, p)?,
                None => HeaderFilter::default(),
            };
            Ok(Filter::Headers(edits))
        }
        _ => Err(Fault::invalid(
            p,
            format!(
                "unknown built-in filter {} (built-in: {})",
                show(v),
                BUILTIN_FILTERS.join(", ")
            ),
        )),
    }
}

/// The `headers` filter's config: `request` and `response` edits.
fn header_filter(v: &Value, path: &str) -> R<HeaderFilter> {
    let map = object(
        v,
        path,
        "{\"request\": {\"set\": {\"x-a\": \"1\"}}, \"response\": {\"remove\": [\"server\"]}}",
    )?;
    let mut f = HeaderFilter::default();
    let HeaderFilter { request, response } = &mut f;
    Fields::new(map, path)
        .key("request", |v, p| set(request, edits(v, p)))
        .key("response", |v, p| set(response, edits(v, p)))
        .read()?;
    Ok(f)
}

/// One direction's `set`, `add` and `remove`.
fn edits(v: &Value, path: &str) -> R<HeaderEdits> {
    let map = object(
        v,
        path,
        "{\"set\": {\"x-a\": \"1\"}, \"add\": {\"x-b\": \"2\"}, \"remove\": [\"x-c\"]}",
    )?;
    let mut e = HeaderEdits::default();
    let HeaderEdits {
        remove,
        set: to_set,
        add,
    } = &mut e;
    Fields::new(map, path)
        .key("set", |v, p| {
            let pairs = pairs(v, p)?;
            // Two names that differ in case only: which value wins would
            // depend on the order the keys were written in.
            for (i, (name, _)) in pairs.iter().enumerate() {
                if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                    return Err(Fault::invalid(
                        join(p, name.as_str()),
                        "set twice (header names are case-insensitive); give it one value",
                    ));
                }
            }
            set(to_set, Ok(pairs))
        })
        .key("add", |v, p| set(add, pairs(v, p)))
        .key("remove", |v, p| set(remove, names(v, p)))
        .read()?;
    Ok(e)
}

/// `{"name": "value", ...}`, in file order.
fn pairs(v: &Value, path: &str) -> R<Vec<(HeaderName, HeaderValue)>> {
    let map: &Map<String, Value> = object(v, path, "{\"x-a\": \"1\"}")?;
    map.iter()
        .map(|(key, value)| {
            let p = join(path, key);
            let name = name(key, &p)?;
            let value = match value {
                Value::String(s) => HeaderValue::from_str(s).map_err(|_| {
                    Fault::invalid(
                        &p,
                        // The value is not repeated: it may be a
                        // credential (an `authorization` to set).
                        "invalid header value: visible ASCII, spaces and tabs only",
                    )
                })?,
                _ => {
                    return Err(Fault::invalid(
                        &p,
                        format!("expected a header value (a string), got {}", show(value)),
                    ));
                }
            };
            Ok((name, value))
        })
        .collect()
}

/// `["name", ...]`.
fn names(v: &Value, path: &str) -> R<Vec<HeaderName>> {
    array(v, path, "a list of header names like [\"server\"]")?
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let p = index(path, i);
            match item {
                Value::String(s) => name(s, &p),
                _ => Err(Fault::invalid(
                    &p,
                    format!("expected a header name, got {}", show(item)),
                )),
            }
        })
        .collect()
}

/// A header name a filter may change, lower-cased.
fn name(raw: &str, path: &str) -> R<HeaderName> {
    let name = HeaderName::from_bytes(raw.as_bytes())
        .map_err(|_| Fault::invalid(path, format!("invalid header name {raw:?}")))?;
    check_filter_header(name.as_str()).map_err(|why| Fault::invalid(path, why))?;
    Ok(name)
}

#[cfg(test)]
mod tests;
