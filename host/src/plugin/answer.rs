//! The contract of plugin answers, checked before the host acts on one.
//! The canonical ABI already guarantees the answer is well-typed (valid
//! UTF-8, known variant cases, in-bounds lists); these checks cover what the
//! types cannot say. A failed check is a `bad-answer` fault.
//!
//! The checks themselves live in `bbproxy-plugin-contract`, which the SDK's
//! test host applies too; this module maps the host's WIT types onto them.

use http::{HeaderName, HeaderValue, StatusCode};

use super::bindings::types::{self, BreakerState, Route, Verdict};

use bbproxy_plugin_contract as contract;

pub use contract::{MAX_DIRECT_BODY_BYTES, MAX_UPSTREAM_NAME_BYTES, check_pick};

/// Checks a router's answer; `known` says whether an upstream name is
/// configured.
pub fn check_route(route: &Route, known: impl Fn(&str) -> bool) -> Result<(), String> {
    match route {
        Route::Upstream(name) => contract::check_route_upstream(name, known),
        Route::Respond(r) => contract::check_route_respond(r.status, r.body.len()),
    }
}

/// Checks a breaker's verdict: an open or half-open state needs at least
/// one probe.
pub fn check_verdict(verdict: &Verdict) -> Result<(), String> {
    contract::check_verdict(verdict.state.into(), verdict.probes)
}

/// One checked change to a message's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace every value with this one.
    Set(HeaderName, HeaderValue),
    /// Append this value.
    Add(HeaderName, HeaderValue),
    /// Remove every value.
    Remove(HeaderName),
}

impl HeaderEdit {
    /// Makes the change to `headers`.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        match self {
            HeaderEdit::Set(n, v) => {
                headers.insert(n.clone(), v.clone());
            }
            HeaderEdit::Add(n, v) => {
                headers.append(n.clone(), v.clone());
            }
            HeaderEdit::Remove(n) => {
                headers.remove(n);
            }
        }
    }
}

/// A filter's checked `on-request` decision.
#[derive(Debug)]
pub enum FilterAction {
    /// Go on with these changes.
    Forward {
        /// Header changes, in order.
        headers: Vec<HeaderEdit>,
        /// The new path and query, when either changed.
        target: Option<TargetEdit>,
    },
    /// Answer the client with this.
    Respond(FilterAnswer),
}

/// A new path and/or query for the request, as the filter gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetEdit {
    /// The new path, or `None` to keep it.
    pub path: Option<String>,
    /// The new query (`""` removes it), or `None` to keep it.
    pub query: Option<String>,
}

impl TargetEdit {
    /// `current` with the edit made; an `Err` says why the result is not a
    /// valid request target.
    pub fn apply(
        &self,
        current: &http::uri::PathAndQuery,
    ) -> Result<http::uri::PathAndQuery, String> {
        let path = self.path.as_deref().unwrap_or(current.path());
        let query = match &self.query {
            Some(q) => Some(q.as_str()).filter(|q| !q.is_empty()),
            None => current.query(),
        };
        let text = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        http::uri::PathAndQuery::try_from(text.as_str())
            .map_err(|_| format!("filter rewrote the request target to an invalid one: {text:?}"))
    }
}

/// An answer a filter gave instead of forwarding, checked.
#[derive(Debug)]
pub struct FilterAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Its headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Its body.
    pub body: String,
}

/// Checks a header a filter names: a valid name it may change, and (for
/// set and add) a valid value.
fn filter_header(name: &str) -> Result<HeaderName, String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("filter named an invalid header name {name:?}"))?;
    contract::headers::check_filter_header(parsed.as_str())?;
    Ok(parsed)
}

fn filter_header_value(name: &HeaderName, value: &str) -> Result<HeaderValue, String> {
    HeaderValue::from_str(value).map_err(|_| {
        format!("filter gave header {name} an invalid value (visible ASCII, spaces and tabs only)")
    })
}

fn filter_pair(h: &types::Header) -> Result<(HeaderName, HeaderValue), String> {
    let name = filter_header(&h.name)?;
    let value = filter_header_value(&name, &h.value)?;
    Ok((name, value))
}

/// Checks a filter's header changes.
pub fn check_header_edits(edits: &[types::HeaderEdit]) -> Result<Vec<HeaderEdit>, String> {
    edits
        .iter()
        .map(|e| match e {
            types::HeaderEdit::Set(h) => filter_pair(h).map(|(n, v)| HeaderEdit::Set(n, v)),
            types::HeaderEdit::Add(h) => filter_pair(h).map(|(n, v)| HeaderEdit::Add(n, v)),
            types::HeaderEdit::Remove(name) => filter_header(name).map(HeaderEdit::Remove),
        })
        .collect()
}

/// Checks a filter's `on-request` decision: header changes as
/// [`check_header_edits`], a path that starts with `/`, an answer with a
/// final status (200..=599) and a body of at most
/// [`MAX_DIRECT_BODY_BYTES`].
pub fn check_request_action(action: types::RequestAction) -> Result<FilterAction, String> {
    match action {
        types::RequestAction::Forward(edits) => {
            let headers = check_header_edits(&edits.headers)?;
            if let Some(path) = &edits.path
                && (!path.starts_with('/') || path.contains(['?', '#']))
            {
                return Err(format!(
                    "filter rewrote the path to {path:?}: a path starts with / and has no ? or #"
                ));
            }
            if let Some(query) = &edits.query
                && query.contains('#')
            {
                return Err(format!(
                    "filter rewrote the query to {query:?}: a query has no #"
                ));
            }
            let target = (edits.path.is_some() || edits.query.is_some()).then_some(TargetEdit {
                path: edits.path,
                query: edits.query,
            });
            // Checked here, not only when applied: a bad rewrite is the
            // filter's fault whatever the request.
            if let Some(t) = &target {
                t.apply(&http::uri::PathAndQuery::from_static("/"))?;
            }
            Ok(FilterAction::Forward { headers, target })
        }
        types::RequestAction::Respond(r) => {
            if !(200..=599).contains(&r.status) {
                return Err(format!(
                    "filter answered with status {}, outside 200..=599",
                    r.status
                ));
            }
            let status = StatusCode::from_u16(r.status)
                .map_err(|_| format!("filter answered with status {}", r.status))?;
            if r.body.len() > MAX_DIRECT_BODY_BYTES {
                return Err(format!(
                    "filter answered with a body of {} bytes (at most {MAX_DIRECT_BODY_BYTES})",
                    r.body.len()
                ));
            }
            let headers = r
                .headers
                .iter()
                .map(filter_pair)
                .collect::<Result<_, _>>()?;
            Ok(FilterAction::Respond(FilterAnswer {
                status,
                headers,
                body: r.body,
            }))
        }
    }
}

impl From<BreakerState> for contract::BreakerState {
    fn from(state: BreakerState) -> Self {
        match state {
            BreakerState::Closed => contract::BreakerState::Closed,
            BreakerState::Open => contract::BreakerState::Open,
            BreakerState::HalfOpen => contract::BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::DirectResponse;

    #[test]
    fn routes() {
        let known = |n: &str| n == "a.test";
        assert!(check_route(&Route::Upstream("a.test".into()), known).is_ok());
        let e = check_route(&Route::Upstream("b.test".into()), known).unwrap_err();
        assert!(e.contains("\"b.test\""), "{e}");
        let huge = Route::Upstream("x".repeat(MAX_UPSTREAM_NAME_BYTES + 1));
        assert!(check_route(&huge, |_| true).unwrap_err().contains("bytes"));
        let respond = |status, body: String| Route::Respond(DirectResponse { status, body });
        assert!(check_route(&respond(404, String::new()), known).is_ok());
        assert!(check_route(&respond(99, String::new()), known).is_err());
        assert!(check_route(&respond(600, String::new()), known).is_err());
        assert!(check_route(&respond(200, "x".repeat(MAX_DIRECT_BODY_BYTES + 1)), known).is_err());
    }

    #[test]
    fn verdicts() {
        let v = |state, probes| Verdict {
            failure: false,
            state,
            open_for_ms: 10,
            probes,
        };
        assert!(check_verdict(&v(BreakerState::Closed, 0)).is_ok());
        assert!(check_verdict(&v(BreakerState::Open, 1)).is_ok());
        assert!(check_verdict(&v(BreakerState::Open, 0)).is_err());
        assert!(check_verdict(&v(BreakerState::HalfOpen, 0)).is_err());
    }
}
