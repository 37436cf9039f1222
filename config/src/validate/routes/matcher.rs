//! A route's `match` object, and when an earlier route's matchers make a
//! later route unreachable. The segment-aware prefix and CIDR rules are the
//! plugin contract's, the ones the built-in router matches by.

use serde_json::{Map, Value};

use super::super::walk::{Fields, R, index, join, object, set, show};
use crate::error::Fault;
use crate::model::*;
use bbproxy_plugin_contract::routes::{Cidr, is_token, prefix_base, prefix_matches};

pub(super) fn matcher(v: &Value, path: &str) -> R<Match> {
    let map = object(v, path, "{\"path_prefix\": \"/api/\", \"method\": \"GET\"}")?;
    let mut m = Match::default();
    let Match {
        path: exact,
        path_prefix,
        path_regex,
        methods,
        headers,
        query,
        client_ip,
    } = &mut m;
    Fields::new(map, path)
        .key("path", |v, p| set(exact, request_path(v, p).map(Some)))
        .key("path_prefix", |v, p| {
            set(path_prefix, request_path(v, p).map(Some))
        })
        .key("path_regex", |v, p| set(path_regex, regex(v, p).map(Some)))
        .key("method", |v, p| set(methods, method_list(v, p)))
        .key("header", |v, p| set(headers, header_map(v, p)))
        .key("query", |v, p| set(query, query_map(v, p)))
        .key("client_ip", |v, p| set(client_ip, cidrs(v, p)))
        .read()?;
    Ok(m)
}

/// A path as requests carry it: absolute, no query, nothing a request
/// target cannot hold.
pub(super) fn is_request_path(s: &str) -> bool {
    s.starts_with('/')
        && !s.contains(|c: char| c == '?' || c == '#' || c.is_whitespace() || c.is_control())
}

fn request_path(v: &Value, path: &str) -> R<String> {
    match v.as_str() {
        Some(s) if is_request_path(s) => Ok(s.to_owned()),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a request path like \"/api/\" (starting with /, no query), got {}",
                show(v)
            ),
        )),
    }
}

fn regex(v: &Value, path: &str) -> R<String> {
    let Some(s) = v.as_str() else {
        return Err(Fault::invalid(
            path,
            format!(
                "expected a regular expression like \"^/v[0-9]+/\", got {}",
                show(v)
            ),
        ));
    };
    match regex::Regex::new(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(Fault::invalid(
            path,
            format!(
                "invalid regular expression {}: {}",
                show(v),
                one_line(&e.to_string())
            ),
        )),
    }
}

/// The regex crate's syntax errors draw a caret under the pattern over
/// several lines; a config error is one line, so only its `error:` line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| message.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn method_list(v: &Value, path: &str) -> R<Vec<String>> {
    let bad = |v: &Value, p: &str| {
        Fault::invalid(
            p,
            format!(
                "expected an HTTP method like \"GET\" or a list of them, got {}",
                show(v)
            ),
        )
    };
    let Some(items) = one_or_list(v, path) else {
        return Err(bad(v, path));
    };
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (m, p) in items {
        let Some(name) = m.as_str().filter(|s| is_token(s)) else {
            return Err(bad(m, &p));
        };
        let name = name.to_ascii_uppercase();
        if out.contains(&name) {
            return Err(Fault::invalid(p, format!("{name} is listed twice")));
        }
        out.push(name);
    }
    Ok(out)
}

/// A string, or a non-empty list (of anything: its items are checked by
/// the caller), each with its key path.
fn one_or_list<'a>(v: &'a Value, path: &str) -> Option<Vec<(&'a Value, String)>> {
    match v {
        Value::String(_) => Some(vec![(v, path.to_owned())]),
        Value::Array(list) if !list.is_empty() => Some(
            list.iter()
                .enumerate()
                .map(|(i, item)| (item, index(path, i)))
                .collect(),
        ),
        _ => None,
    }
}

fn non_empty<'a>(v: &'a Value, path: &str, example: &str) -> R<&'a Map<String, Value>> {
    let map = object(v, path, example)?;
    if map.is_empty() {
        return Err(Fault::invalid(
            path,
            format!("empty: give at least one, like {example}, or leave the key out"),
        ));
    }
    Ok(map)
}

fn header_map(v: &Value, path: &str) -> R<Vec<(String, HeaderMatch)>> {
    let map = non_empty(v, path, "{\"x-env\": \"canary\"}")?;
    let mut out: Vec<(String, HeaderMatch)> = Vec::with_capacity(map.len());
    for (name, value) in map {
        let p = join(path, name);
        if !is_token(name) {
            return Err(Fault::invalid(
                p,
                format!("{name:?} is not a valid header name"),
            ));
        }
        let lower = name.to_ascii_lowercase();
        if out.iter().any(|(n, _)| *n == lower) {
            return Err(Fault::invalid(
                p,
                format!("header {lower} is listed twice (names are case-insensitive)"),
            ));
        }
        let wanted = match value {
            Value::Bool(true) => HeaderMatch::Present,
            Value::String(s) => HeaderMatch::Exact(s.clone()),
            _ => {
                return Err(Fault::invalid(
                    p,
                    format!(
                        "expected the exact value as a string, or true for any value, got {}",
                        show(value)
                    ),
                ));
            }
        };
        out.push((lower, wanted));
    }
    Ok(out)
}

fn query_map(v: &Value, path: &str) -> R<Vec<(String, String)>> {
    let map = non_empty(v, path, "{\"version\": \"2\"}")?;
    map.iter()
        .map(|(key, value)| match value.as_str() {
            Some(s) if !key.is_empty() => Ok((key.clone(), s.to_owned())),
            _ => Err(Fault::invalid(
                join(path, key),
                format!(
                    "expected a parameter name and its value as a string, got {}",
                    show(value)
                ),
            )),
        })
        .collect()
}

fn cidrs(v: &Value, path: &str) -> R<Vec<Cidr>> {
    let Some(items) = one_or_list(v, path) else {
        return Err(Fault::invalid(
            path,
            format!(
                "expected a list of IP blocks like [\"10.0.0.0/8\", \"2001:db8::/32\"], got {}",
                show(v)
            ),
        ));
    };
    items
        .into_iter()
        .map(|(c, p)| match c.as_str() {
            Some(s) => Cidr::parse(s)
                .map_err(|e| Fault::invalid(p, format!("invalid IP block {}: {e}", show(c)))),
            None => Err(Fault::invalid(
                p,
                format!("expected an IP block like \"10.0.0.0/8\", got {}", show(c)),
            )),
        })
        .collect()
}

/// Why `later` can never match when `earlier` comes first (every request
/// it matches, `earlier` matches), or `None` when it can.
pub(super) fn shadowed(earlier: &Match, later: &Match) -> Option<&'static str> {
    if !covers(earlier, later) {
        return None;
    }
    Some(if covers(later, earlier) {
        "its match is the same as that of the earlier route"
    } else {
        "every request it matches is matched first by the earlier route"
    })
}

/// Whether every request `b` matches is matched by `a`: each matcher of
/// `a` is implied by one of `b`'s (a sufficient test, not a complete one:
/// regexes are only compared as text).
fn covers(a: &Match, b: &Match) -> bool {
    let path = match &a.path {
        None => true,
        Some(p) => b.path.as_ref() == Some(p),
    };
    let prefix = match &a.path_prefix {
        None => true,
        // `/` matches every path; otherwise `b`'s exact path or prefix
        // must lie under `a`'s.
        Some(p) => {
            prefix_base(p).is_empty()
                || b.path.as_deref().is_some_and(|x| prefix_matches(p, x))
                || b.path_prefix
                    .as_deref()
                    .is_some_and(|q| prefix_matches(p, prefix_base(q)))
        }
    };
    let regex = a.path_regex.is_none() || a.path_regex == b.path_regex;
    let methods = a.methods.is_empty()
        || (!b.methods.is_empty() && b.methods.iter().all(|m| a.methods.contains(m)));
    let headers = a.headers.iter().all(|(name, want)| {
        b.headers
            .iter()
            .any(|(n, w)| n == name && (w == want || *want == HeaderMatch::Present))
    });
    let query = a.query.iter().all(|q| b.query.contains(q));
    let clients = a.client_ip.is_empty()
        || (!b.client_ip.is_empty()
            && b.client_ip
                .iter()
                .all(|c| a.client_ip.iter().any(|n| n.covers(c))));
    path && prefix && regex && methods && headers && query && clients
}
