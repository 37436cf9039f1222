//! A domain's `routes`: each route's `match` ([`matcher`]) and its one
//! action, read with the domain; checked for routes that can never match;
//! then, once every domain and pool is known, resolved against the
//! upstream it forwards to (whose timeouts and retries it starts from).

mod matcher;

use serde_json::Value;

use super::walk::{Dir, Fields, Kept, R, array, index, join, keep, object, set, show};
use super::{filters, forwarding};
use crate::error::Fault;
use crate::model::*;
use bbproxy_plugin_contract::MAX_DIRECT_BODY_BYTES;

/// A route as read with its domain, its forwarding settings kept until the
/// upstream they start from is known.
pub(crate) struct Pending<'a> {
    path: String,
    matcher: Match,
    action: PendingAction<'a>,
    filters: Vec<Filter>,
}

enum PendingAction<'a> {
    Forward {
        upstream: (String, String),
        strip_prefix: Option<String>,
        timeouts: Kept<'a>,
        retries: Kept<'a>,
    },
    Done(Action),
}

/// A domain's `routes`: a list of route objects, none of them shadowed by
/// an earlier one.
pub(crate) fn routes<'a>(v: &'a Value, path: &str, dir: &Dir) -> R<Vec<Pending<'a>>> {
    let items = array(
        v,
        path,
        "a list of routes like [{\"match\": {\"path_prefix\": \"/api/\"}, \"upstream\": \"api\"}]",
    )?;
    let mut out: Vec<Pending> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let route = route(item, &index(path, i), dir)?;
        for (j, earlier) in out.iter().enumerate() {
            if let Some(why) = matcher::shadowed(&earlier.matcher, &route.matcher) {
                return Err(Fault::invalid(
                    &route.path,
                    format!("can never match: {why} {}", index(path, j)),
                ));
            }
        }
        out.push(route);
    }
    Ok(out)
}

fn route<'a>(v: &'a Value, path: &str, dir: &Dir) -> R<Pending<'a>> {
    let map = object(
        v,
        path,
        "{\"match\": {\"path_prefix\": \"/api/\"}, \"upstream\": \"api\"}",
    )?;
    let mut m = Match::default();
    let (mut upstream, mut redirect, mut respond): (Kept, Kept, Kept) = (None, None, None);
    let (mut strip, mut timeouts, mut retries): (Kept, Kept, Kept) = (None, None, None);
    let mut chain: Kept = None;
    Fields::new(map, path)
        .key("match", |v, p| set(&mut m, matcher::matcher(v, p)))
        .key("upstream", keep(&mut upstream))
        .key("redirect", keep(&mut redirect))
        .key("respond", keep(&mut respond))
        .key("strip_prefix", keep(&mut strip))
        .key("timeouts", keep(&mut timeouts))
        .key("retries", keep(&mut retries))
        .key("filters", keep(&mut chain))
        .read()?;
    let extras = [&strip, &timeouts, &retries, &chain];
    let action = match (upstream, redirect, respond) {
        (Some((v, p)), None, None) => PendingAction::Forward {
            upstream: (target_name(v, &p)?, p),
            strip_prefix: strip.map(|(v, p)| strip_prefix(v, &p)).transpose()?,
            timeouts,
            retries,
        },
        (None, Some((v, p)), None) => {
            forward_only(extras)?;
            PendingAction::Done(redirect_action(v, &p)?)
        }
        (None, None, Some((v, p))) => {
            forward_only(extras)?;
            PendingAction::Done(respond_action(v, &p)?)
        }
        (upstream, redirect, respond) => {
            let given: Vec<&str> = [
                ("upstream", upstream.is_some()),
                ("redirect", redirect.is_some()),
                ("respond", respond.is_some()),
            ]
            .iter()
            .filter(|(_, given)| *given)
            .map(|(name, _)| *name)
            .collect();
            let what = match given.as_slice() {
                [] => "none is given".to_owned(),
                several => format!("{} are given", several.join(" and ")),
            };
            return Err(Fault::invalid(
                path,
                format!(
                    "a route needs exactly one action, \"upstream\", \"redirect\" or \"respond\"; {what}"
                ),
            ));
        }
    };
    let filters = match &chain {
        Some((v, p)) => filters::filters(v, p, dir)?,
        None => Vec::new(),
    };
    Ok(Pending {
        path: path.to_owned(),
        matcher: m,
        action,
        filters,
    })
}

/// A route that answers by itself has no forwarding settings, and no
/// filters (they edit a forwarded request and its backend's response).
fn forward_only(given: [&Kept<'_>; 4]) -> R<()> {
    match given.into_iter().flatten().next() {
        Some((_, p)) => Err(Fault::invalid(
            p,
            "applies to routes that forward (\"upstream\") only",
        )),
        None => Ok(()),
    }
}

fn target_name(v: &Value, path: &str) -> R<String> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected the name of a pool of \"upstreams\" or of a domain, got {}",
                show(v)
            ),
        )),
    }
}

fn strip_prefix(v: &Value, path: &str) -> R<String> {
    match v.as_str() {
        Some(s) if matcher::is_request_path(s) => Ok(s.to_owned()),
        _ => Err(Fault::invalid(
            path,
            format!("expected a path prefix like \"/api\", got {}", show(v)),
        )),
    }
}

fn status(v: &Value, path: &str, allowed: impl Fn(u16) -> bool, what: &str) -> R<u16> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| allowed(*n))
        .ok_or_else(|| Fault::invalid(path, format!("expected {what}, got {}", show(v))))
}

fn redirect_action(v: &Value, path: &str) -> R<Action> {
    let map = object(v, path, "{\"status\": 308, \"location\": \"/new\"}")?;
    let (mut code, mut location) = (DEFAULT_REDIRECT_STATUS, None);
    Fields::new(map, path)
        .key("status", |v, p| {
            let redirect = |n| REDIRECT_STATUSES.contains(&n);
            set(
                &mut code,
                status(v, p, redirect, "301, 302, 303, 307 or 308"),
            )
        })
        .key("location", |v, p| match v.as_str() {
            Some(s) if !s.is_empty() && !s.contains(char::is_control) => {
                set(&mut location, Ok(Some(s.to_owned())))
            }
            _ => Err(Fault::invalid(
                p,
                format!(
                    "expected a URL or path like \"/new\" or \"https://example.com/\", got {}",
                    show(v)
                ),
            )),
        })
        .read()?;
    let location = location.ok_or_else(|| {
        Fault::invalid(
            join(path, "location"),
            "required: where to send the client, like \"/new\"",
        )
    })?;
    Ok(Action::Redirect {
        status: code,
        location,
    })
}

fn respond_action(v: &Value, path: &str) -> R<Action> {
    let map = object(v, path, "{\"status\": 404, \"body\": \"not found\"}")?;
    let (mut code, mut body) = (None, String::new());
    Fields::new(map, path)
        .key("status", |v, p| {
            let any = |n| (100..=599).contains(&n);
            set(
                &mut code,
                status(v, p, any, "an HTTP status from 100 to 599").map(Some),
            )
        })
        .key("body", |v, p| match v.as_str() {
            Some(s) if s.len() <= MAX_DIRECT_BODY_BYTES => set(&mut body, Ok(s.to_owned())),
            _ => Err(Fault::invalid(
                p,
                format!("expected a text of at most 64KiB, got {}", show(v)),
            )),
        })
        .read()?;
    let status = code.ok_or_else(|| {
        Fault::invalid(
            join(path, "status"),
            "required: the HTTP status to answer with",
        )
    })?;
    Ok(Action::Respond { status, body })
}

/// Resolves a domain's routes: a route's `upstream` must name a pool or
/// a domain with backends (`find` looks a name up; `pools` lists the pools
/// for the message); its timeouts and retries are that upstream's with the
/// route's on top.
pub(crate) fn resolve<'d>(
    pending: &[Pending<'_>],
    find: &dyn Fn(&str) -> Option<&'d Domain>,
    pools: &str,
) -> R<Vec<Route>> {
    pending
        .iter()
        .map(|r| resolve_one(r, find, pools))
        .collect()
}

fn resolve_one<'d>(
    r: &Pending<'_>,
    find: &dyn Fn(&str) -> Option<&'d Domain>,
    pools: &str,
) -> R<Route> {
    let action = match &r.action {
        PendingAction::Done(action) => action.clone(),
        PendingAction::Forward {
            upstream: (name, path),
            strip_prefix,
            timeouts: given_timeouts,
            retries: given_retries,
        } => {
            let target = target(name, path, find, pools)?;
            let mut timeouts = target.upstream.timeouts;
            if let Some((v, p)) = given_timeouts {
                forwarding::domain_timeouts(v, p, &mut timeouts)?;
            }
            let retries = match given_retries {
                Some((v, p)) => forwarding::retries(v, p, target.upstream.retries)?,
                None => target.upstream.retries,
            };
            Action::Forward(Forward {
                upstream: target.name.clone(),
                strip_prefix: strip_prefix.clone(),
                timeouts,
                retries,
            })
        }
    };
    Ok(Route {
        matcher: r.matcher.clone(),
        action,
        filters: r.filters.clone(),
    })
}

/// The pool or domain a route's `upstream` names, which must have backends.
fn target<'d>(
    name: &str,
    path: &str,
    find: &dyn Fn(&str) -> Option<&'d Domain>,
    pools: &str,
) -> R<&'d Domain> {
    let Some(found) = find(name) else {
        return Err(Fault::invalid(
            path,
            format!(
                "unknown upstream {name:?}: not a pool of \"upstreams\" ({pools}) nor a domain"
            ),
        ));
    };
    if found.backends.is_empty() {
        return Err(Fault::invalid(
            path,
            format!("{name:?} has no backends (its own requests only go through its routes)"),
        ));
    }
    Ok(found)
}

#[cfg(test)]
mod tests;
