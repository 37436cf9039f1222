//! The contract of plugin answers, checked before the host acts on one.
//! The canonical ABI already guarantees the answer is well-typed (valid
//! UTF-8, known variant cases, in-bounds lists); these checks cover what the
//! types cannot say. A failed check is a `bad-answer` fault.
//!
//! The checks themselves live in `bbproxy-plugin-contract`, which the SDK's
//! test host applies too; this module maps the host's WIT types onto them.

use http::{HeaderName, HeaderValue, StatusCode};

use super::bindings::types::{self, BreakerState, Verdict};
use super::bindings::v2::decisions;

use bbproxy_plugin_contract as contract;

pub use contract::{MAX_DIRECT_BODY_BYTES, MAX_UPSTREAM_NAME_BYTES, check_pick};

/// The routers' answers as the two contract versions type them, which
/// [`check_route_v1`] and [`check_route_v2`] take (named here for callers
/// outside the host, such as the fuzz targets).
pub use super::bindings::types::Route as RouteV1;
pub use super::bindings::v2::decisions::{DomainRoute, Route as RouteV2};

/// A router's checked answer, in upstream numbers whichever contract
/// version the router speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Forward to upstream number n.
    Upstream(u32),
    /// Forward (or redirect) as `domains.<domain>.routes[<index>]` says;
    /// `domain` is an upstream number, the route's existence is the
    /// generation's to check.
    DomainRoute {
        /// The domain's upstream number.
        domain: u32,
        /// The route's position in its `routes`.
        index: u32,
    },
    /// Answer directly.
    Respond {
        /// HTTP status (100..=599).
        status: u16,
        /// Plain-text body.
        body: String,
    },
}

/// Checks a 0.1.x router's answer and turns it into upstream numbers;
/// `number` finds an upstream's number by name.
pub fn check_route_v1(
    route: types::Route,
    number: impl Fn(&str) -> Option<u32>,
) -> Result<Route, String> {
    match route {
        types::Route::Upstream(name) => {
            let found = number(&name).map(Route::Upstream).or_else(|| {
                let (domain, index) = contract::routes::parse_route_ref(&name)?;
                Some(Route::DomainRoute {
                    domain: number(domain)?,
                    index: u32::try_from(index).ok()?,
                })
            });
            contract::check_route_upstream(&name, |_| found.is_some())?;
            found.ok_or_else(|| format!("route named upstream {name:?}, which is not configured"))
        }
        types::Route::Respond(r) => {
            contract::check_route_respond(r.status, r.body.len())?;
            Ok(Route::Respond {
                status: r.status,
                body: r.body,
            })
        }
    }
}

/// Checks a 0.2.0 router's answer: its numbers must be below `upstreams`.
pub fn check_route_v2(route: decisions::Route, upstreams: usize) -> Result<Route, String> {
    match route {
        decisions::Route::Upstream(n) => Ok(Route::Upstream(contract::check_route_number(
            n, "upstream", upstreams,
        )?)),
        decisions::Route::DomainRoute(r) => Ok(Route::DomainRoute {
            domain: contract::check_route_number(r.domain, "the route of domain", upstreams)?,
            index: r.index,
        }),
        decisions::Route::Respond(r) => {
            contract::check_route_respond(r.status, r.body.len())?;
            Ok(Route::Respond {
                status: r.status,
                body: r.body,
            })
        }
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
        // The text is left out of the error: its query may carry a secret.
        http::uri::PathAndQuery::try_from(text.as_str())
            .map_err(|_| "filter rewrote the request target to an invalid one".to_owned())
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

/// A WIT header edit as the contract's checks take it.
fn edit(e: &types::HeaderEdit) -> contract::filters::Edit<'_> {
    use contract::filters::Edit;
    match e {
        types::HeaderEdit::Set(h) => Edit::Set(&h.name, &h.value),
        types::HeaderEdit::Add(h) => Edit::Add(&h.name, &h.value),
        types::HeaderEdit::Remove(name) => Edit::Remove(name),
    }
}

/// A header the contract accepted, parsed (the contract's rule is
/// stricter than `http`'s, so parsing cannot fail; if it did, the answer
/// is still refused).
fn parse_name(name: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))
}

fn parse_pair(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let value =
        HeaderValue::from_str(value).map_err(|_| format!("invalid value of header {name}"))?;
    Ok((parse_name(name)?, value))
}

fn parse_edits(edits: &[types::HeaderEdit]) -> Result<Vec<HeaderEdit>, String> {
    edits
        .iter()
        .map(|e| match e {
            types::HeaderEdit::Set(h) => {
                parse_pair(&h.name, &h.value).map(|(n, v)| HeaderEdit::Set(n, v))
            }
            types::HeaderEdit::Add(h) => {
                parse_pair(&h.name, &h.value).map(|(n, v)| HeaderEdit::Add(n, v))
            }
            types::HeaderEdit::Remove(name) => parse_name(name).map(HeaderEdit::Remove),
        })
        .collect()
}

/// Checks a filter's `on-response` header changes
/// (`contract::filters::check_response_edits`).
pub fn check_header_edits(edits: &[types::HeaderEdit]) -> Result<Vec<HeaderEdit>, String> {
    contract::filters::check_response_edits(edits.iter().map(edit))?;
    parse_edits(edits)
}

/// Checks a filter's `on-request` decision
/// (`contract::filters::check_forward` / `check_respond`).
pub fn check_request_action(action: types::RequestAction) -> Result<FilterAction, String> {
    match action {
        types::RequestAction::Forward(edits) => {
            contract::filters::check_forward(
                edits.headers.iter().map(edit),
                edits.path.as_deref(),
                edits.query.as_deref(),
            )?;
            let headers = parse_edits(&edits.headers)?;
            let target = (edits.path.is_some() || edits.query.is_some()).then_some(TargetEdit {
                path: edits.path,
                query: edits.query,
            });
            Ok(FilterAction::Forward { headers, target })
        }
        types::RequestAction::Respond(r) => {
            contract::filters::check_respond(
                r.status,
                r.headers
                    .iter()
                    .map(|h| (h.name.as_str(), h.value.as_str())),
                r.body.len(),
            )?;
            let status = StatusCode::from_u16(r.status)
                .map_err(|_| format!("on-request answer: status {}", r.status))?;
            let headers = r
                .headers
                .iter()
                .map(|h| parse_pair(&h.name, &h.value))
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
    fn routes_of_both_versions() {
        let number = |n: &str| (n == "a.test").then_some(0);
        let v1 = |name: &str| check_route_v1(types::Route::Upstream(name.into()), number);
        assert_eq!(v1("a.test"), Ok(Route::Upstream(0)));
        assert_eq!(
            v1("a.test#3"),
            Ok(Route::DomainRoute {
                domain: 0,
                index: 3
            })
        );
        for bad in ["b.test", "b.test#1", "a.test#x"] {
            let e = v1(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let huge = "x".repeat(MAX_UPSTREAM_NAME_BYTES + 1);
        assert!(v1(&huge).unwrap_err().contains("bytes"));
        let respond = |status, body: String| DirectResponse { status, body };
        let v1r =
            |status, body| check_route_v1(types::Route::Respond(respond(status, body)), number);
        assert!(v1r(404, String::new()).is_ok());
        assert!(v1r(99, String::new()).is_err());
        assert!(v1r(600, String::new()).is_err());
        assert!(v1r(200, "x".repeat(MAX_DIRECT_BODY_BYTES + 1)).is_err());

        let v2 = |r| check_route_v2(r, 2);
        assert_eq!(v2(decisions::Route::Upstream(1)), Ok(Route::Upstream(1)));
        assert!(
            v2(decisions::Route::Upstream(2))
                .unwrap_err()
                .contains("2 upstreams")
        );
        let route =
            |domain, index| decisions::Route::DomainRoute(decisions::DomainRoute { domain, index });
        assert_eq!(
            v2(route(1, 7)),
            Ok(Route::DomainRoute {
                domain: 1,
                index: 7
            })
        );
        assert!(v2(route(5, 0)).is_err());
        assert!(v2(decisions::Route::Respond(respond(600, String::new()))).is_err());
        assert!(
            v2(decisions::Route::Respond(respond(
                200,
                "x".repeat(MAX_DIRECT_BODY_BYTES + 1)
            )))
            .is_err()
        );
    }

    fn header(name: &str, value: &str) -> types::Header {
        types::Header {
            name: name.into(),
            value: value.into(),
        }
    }

    fn forward(headers: Vec<types::HeaderEdit>, path: Option<&str>) -> types::RequestAction {
        types::RequestAction::Forward(types::RequestEdits {
            headers,
            path: path.map(str::to_owned),
            query: None,
        })
    }

    #[test]
    fn filter_answers_are_checked_and_parsed() {
        let ok = check_request_action(forward(
            vec![
                types::HeaderEdit::Set(header("X-A", "1")),
                types::HeaderEdit::Remove("x-b".into()),
            ],
            Some("/new"),
        ))
        .unwrap();
        let FilterAction::Forward { headers, target } = ok else {
            panic!("{ok:?}");
        };
        assert_eq!(
            headers,
            [
                HeaderEdit::Set(
                    HeaderName::from_static("x-a"),
                    HeaderValue::from_static("1")
                ),
                HeaderEdit::Remove(HeaderName::from_static("x-b")),
            ]
        );
        let target = target.unwrap();
        let old = http::uri::PathAndQuery::from_static("/old?q=1");
        assert_eq!(target.apply(&old).unwrap(), "/new?q=1");

        // A refused header is named, whichever way it comes.
        for action in [
            forward(
                vec![types::HeaderEdit::Set(header("Content-Length", "0"))],
                None,
            ),
            forward(
                vec![types::HeaderEdit::Remove("transfer-encoding".into())],
                None,
            ),
            types::RequestAction::Respond(types::FilterResponse {
                status: 401,
                headers: vec![header("connection", "close")],
                body: String::new(),
            }),
        ] {
            let e = check_request_action(action).unwrap_err();
            assert!(
                e.contains("content-length")
                    || e.contains("transfer-encoding")
                    || e.contains("connection"),
                "{e}"
            );
        }
        let e =
            check_header_edits(&[types::HeaderEdit::Add(header("upgrade", "h2c"))]).unwrap_err();
        assert!(e.contains("upgrade"), "{e}");
        assert!(check_request_action(forward(vec![], Some("no-slash"))).is_err());
        assert!(
            check_request_action(types::RequestAction::Respond(types::FilterResponse {
                status: 101,
                headers: vec![],
                body: String::new(),
            }))
            .is_err()
        );
        assert!(
            check_header_edits(&[types::HeaderEdit::Set(header("x-a", "bad\r\nx-b: 1"))]).is_err()
        );
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
