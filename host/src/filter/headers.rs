//! The built-in `headers` filter: `remove`, then `set`, then `add`, with
//! names and values parsed once by config validation, so a request pays
//! for the header map's inserts only.

use bbproxy_config::HeaderEdits;
use http::HeaderMap;

/// Makes `edits` to `headers`.
pub(super) fn apply(edits: &HeaderEdits, headers: &mut HeaderMap) {
    for name in &edits.remove {
        headers.remove(name);
    }
    for (name, value) in &edits.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &edits.add {
        headers.append(name.clone(), value.clone());
    }
}
