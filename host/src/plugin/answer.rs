//! The contract of plugin answers, checked before the host acts on one.
//! The canonical ABI already guarantees the answer is well-typed (valid
//! UTF-8, known variant cases, in-bounds lists); these checks cover what the
//! types cannot say. A failed check is a `bad-answer` fault.
//!
//! The checks themselves live in `bbproxy-plugin-contract`, which the SDK's
//! test host applies too; this module maps the host's WIT types onto them.

use super::bindings::types::{BreakerState, Route, Verdict};

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
