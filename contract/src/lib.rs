//! The contract of plugin answers that the WIT types cannot express: the
//! proxy (`host/src/plugin/answer.rs`) checks every answer with these
//! functions before acting on it, and the SDK's test host
//! (`bbproxy_sdk::testing`) applies the same ones, so an answer a plugin's
//! unit test accepts is one the proxy accepts. A failed check is a
//! `bad-answer` fault; the `Err` text says what was wrong.
//!
//! The functions take plain values rather than WIT types because the proxy
//! and the SDK each generate their own bindings of the same WIT types.
//!
//! [`headers`] holds the rule on which headers a filter may change, which
//! config validation applies to the built-in filter too; [`filters`] holds
//! the checks of a Wasm filter's answers (header edits, a new path or
//! query, an answer of its own), built on that rule.
//!
//! [`stats`] holds the other shared rule: what a backend's statistics become
//! after an outcome and the breaker's verdict.
#![deny(missing_docs)]

pub mod balancers;
pub mod filters;
pub mod hash;
pub mod headers;
pub mod hosts;
pub mod routes;
pub mod stats;

pub use stats::{EWMA_NEW_SIXTEENTHS, Stats, Streak, ewma, record, streak};

/// Longest upstream name a router may answer. Upstream names are domain
/// names (at most 253 bytes) or address literals; anything longer cannot
/// match, and is refused before it is hashed.
pub const MAX_UPSTREAM_NAME_BYTES: usize = 1024;

/// Largest body of a router's direct response. Direct answers are short
/// texts (redirect notes, maintenance pages); a bigger one is a plugin bug.
pub const MAX_DIRECT_BODY_BYTES: usize = 64 * 1024;

/// Most request facts a contract 0.2.0 plugin may declare at `init`: each
/// is a value copied into every call, and a plugin that needs more reads
/// the rest through the request.
pub const MAX_FACTS: usize = 16;

/// Checks the request facts a 0.2.0 plugin declared at `init`: `count` of
/// them, `header_names` the names of its header facts (any case, each a
/// valid header name). The proxy refuses the plugin's `init` otherwise.
///
/// ```
/// use bbproxy_plugin_contract::check_facts;
/// assert!(check_facts(2, ["X-User"]).is_ok());
/// assert_eq!(check_facts(1, ["bad name"]).unwrap_err(), r#"declared fact header("bad name"): not a valid header name"#);
/// assert!(check_facts(17, []).unwrap_err().starts_with("declared 17 request facts"));
/// ```
pub fn check_facts<'a>(
    count: usize,
    header_names: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    if count > MAX_FACTS {
        return Err(format!(
            "declared {count} request facts, more than the {MAX_FACTS} a plugin may: read the others through the request"
        ));
    }
    for name in header_names {
        if !routes::is_token(name) {
            return Err(format!(
                "declared fact header({name:?}): not a valid header name"
            ));
        }
    }
    Ok(())
}

/// Checks an upstream number a contract 0.2.0 router answered with (`what`
/// names it in the error: `upstream`, `the route of domain`): it must be
/// below the number of upstreams.
///
/// ```
/// use bbproxy_plugin_contract::check_route_number;
/// assert_eq!(check_route_number(1, "upstream", 2), Ok(1));
/// assert_eq!(check_route_number(2, "upstream", 2).unwrap_err(), "route named upstream 2, but there are 2 upstreams");
/// ```
pub fn check_route_number(n: u32, what: &str, upstreams: usize) -> Result<u32, String> {
    if (n as usize) < upstreams {
        Ok(n)
    } else {
        Err(format!(
            "route named {what} {n}, but there are {upstreams} upstreams"
        ))
    }
}

/// Whether an outcome is one a contract 0.2.0 breaker left to the host
/// (its `outcome-calls.skip-closed-responses-below`): a response with a
/// status below `below` from a backend whose breaker is closed, which the
/// host counts as a success that keeps it closed, without a call.
///
/// ```
/// use bbproxy_plugin_contract::leaves_to_host;
/// assert!(leaves_to_host(true, true, 200, 500));
/// assert!(!leaves_to_host(true, true, 503, 500));
/// assert!(!leaves_to_host(false, true, 200, 500), "not closed");
/// assert!(!leaves_to_host(true, false, 0, 500), "not a response");
/// ```
pub fn leaves_to_host(closed: bool, response: bool, status: u16, below: u16) -> bool {
    closed && response && status < below
}

/// Checks a router's answer `upstream(name)`; `known` says whether an
/// upstream name is configured.
///
/// ```
/// use bbproxy_plugin_contract::check_route_upstream;
/// let known = |n: &str| n == "a.test";
/// assert!(check_route_upstream("a.test", known).is_ok());
/// assert!(check_route_upstream("b.test", known).is_err());
/// ```
pub fn check_route_upstream(name: &str, known: impl Fn(&str) -> bool) -> Result<(), String> {
    if name.len() > MAX_UPSTREAM_NAME_BYTES {
        return Err(format!(
            "route named an upstream of {} bytes (at most {MAX_UPSTREAM_NAME_BYTES})",
            name.len()
        ));
    }
    if !known(name) {
        return Err(format!(
            "route named upstream {name:?}, which is not a configured domain"
        ));
    }
    Ok(())
}

/// Checks a router's answer `respond({status, body})`, given the body's
/// length in bytes.
///
/// ```
/// use bbproxy_plugin_contract::check_route_respond;
/// assert!(check_route_respond(404, 10).is_ok());
/// assert!(check_route_respond(99, 0).is_err());
/// ```
pub fn check_route_respond(status: u16, body_bytes: usize) -> Result<(), String> {
    if !(100..=599).contains(&status) {
        return Err(format!(
            "route answered with status {status}, outside 100..=599"
        ));
    }
    if body_bytes > MAX_DIRECT_BODY_BYTES {
        return Err(format!(
            "route answered with a body of {body_bytes} bytes (at most {MAX_DIRECT_BODY_BYTES})"
        ));
    }
    Ok(())
}

/// Checks a balancer's answer against the number of candidates it was
/// given; returns the chosen index.
///
/// ```
/// use bbproxy_plugin_contract::check_pick;
/// assert_eq!(check_pick(Some(2), 3), Ok(2));
/// assert!(check_pick(Some(3), 3).is_err());
/// assert!(check_pick(None, 3).is_err());
/// ```
pub fn check_pick(choice: Option<u32>, candidates: usize) -> Result<usize, String> {
    match choice {
        Some(i) => usize::try_from(i)
            .ok()
            .filter(|&i| i < candidates)
            .ok_or_else(|| format!("pick returned index {i} for {candidates} candidates")),
        None => Err("pick returned none for a non-empty candidate list".into()),
    }
}

/// A circuit-breaker state, as the WIT enum `breaker-state` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// `closed`: the backend gets traffic.
    Closed,
    /// `open`: the backend gets no traffic.
    Open,
    /// `half-open`: the backend gets at most `probes` requests at a time.
    HalfOpen,
}

/// Checks a breaker's verdict: an open or half-open state needs at least
/// one probe.
///
/// ```
/// use bbproxy_plugin_contract::{BreakerState, check_verdict};
/// assert!(check_verdict(BreakerState::Closed, 0).is_ok());
/// assert!(check_verdict(BreakerState::Open, 1).is_ok());
/// assert!(check_verdict(BreakerState::HalfOpen, 0).is_err());
/// ```
pub fn check_verdict(state: BreakerState, probes: u32) -> Result<(), String> {
    if state != BreakerState::Closed && probes == 0 {
        return Err(format!(
            "on-outcome answered state {state:?} with 0 probes (at least 1)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let known = |n: &str| n == "a.test";
        assert!(check_route_upstream("a.test", known).is_ok());
        let e = check_route_upstream("b.test", known).unwrap_err();
        assert!(e.contains("\"b.test\""), "{e}");
        let huge = "x".repeat(MAX_UPSTREAM_NAME_BYTES + 1);
        assert!(
            check_route_upstream(&huge, |_| true)
                .unwrap_err()
                .contains("bytes")
        );
        assert!(check_route_upstream(&huge[1..], |_| true).is_ok());
        assert!(check_route_respond(100, 0).is_ok());
        assert!(check_route_respond(599, MAX_DIRECT_BODY_BYTES).is_ok());
        assert!(check_route_respond(99, 0).is_err());
        assert!(check_route_respond(600, 0).is_err());
        assert!(check_route_respond(200, MAX_DIRECT_BODY_BYTES + 1).is_err());
    }

    #[test]
    fn picks() {
        assert_eq!(check_pick(Some(2), 3), Ok(2));
        assert!(
            check_pick(Some(3), 3)
                .unwrap_err()
                .contains("index 3 for 3")
        );
        assert!(check_pick(Some(u32::MAX), 3).is_err());
        assert!(check_pick(None, 3).is_err());
    }

    #[test]
    fn verdicts() {
        assert!(check_verdict(BreakerState::Closed, 0).is_ok());
        assert!(check_verdict(BreakerState::Open, 1).is_ok());
        let e = check_verdict(BreakerState::Open, 0).unwrap_err();
        assert_eq!(
            e,
            "on-outcome answered state Open with 0 probes (at least 1)"
        );
        assert!(check_verdict(BreakerState::HalfOpen, 0).is_err());
    }
}
