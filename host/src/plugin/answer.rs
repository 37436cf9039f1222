//! The contract of plugin answers, checked before the host acts on one.
//! The canonical ABI already guarantees the answer is well-typed (valid
//! UTF-8, known variant cases, in-bounds lists); these checks cover what the
//! types cannot say. A failed check is a `bad-answer` fault.

use super::bindings::types::{BreakerState, Route, Verdict};

/// Longest upstream name a router may answer. Upstream names are domain
/// names (at most 253 bytes) or address literals; anything longer cannot
/// match, and is refused before it is hashed.
pub const MAX_UPSTREAM_NAME_BYTES: usize = 1024;

/// Largest body of a router's direct response. Direct answers are short
/// texts (redirect notes, maintenance pages); a bigger one is a plugin bug.
pub const MAX_DIRECT_BODY_BYTES: usize = 64 * 1024;

/// Checks a router's answer; `known` says whether an upstream name is
/// configured.
pub fn check_route(route: &Route, known: impl Fn(&str) -> bool) -> Result<(), String> {
    match route {
        Route::Upstream(name) if name.len() > MAX_UPSTREAM_NAME_BYTES => Err(format!(
            "route named an upstream of {} bytes (at most {MAX_UPSTREAM_NAME_BYTES})",
            name.len()
        )),
        Route::Upstream(name) if !known(name) => Err(format!(
            "route named upstream {name:?}, which is not a configured domain"
        )),
        Route::Upstream(_) => Ok(()),
        Route::Respond(r) if !(100..=599).contains(&r.status) => Err(format!(
            "route answered with status {}, outside 100..=599",
            r.status
        )),
        Route::Respond(r) if r.body.len() > MAX_DIRECT_BODY_BYTES => Err(format!(
            "route answered with a body of {} bytes (at most {MAX_DIRECT_BODY_BYTES})",
            r.body.len()
        )),
        Route::Respond(_) => Ok(()),
    }
}

/// Checks a balancer's answer against the number of candidates it was
/// given; returns the chosen index.
pub fn check_pick(choice: Option<u32>, candidates: usize) -> Result<usize, String> {
    match choice {
        Some(i) => usize::try_from(i)
            .ok()
            .filter(|&i| i < candidates)
            .ok_or_else(|| format!("pick returned index {i} for {candidates} candidates")),
        None => Err("pick returned none for a non-empty candidate list".into()),
    }
}

/// Checks a breaker's verdict: an open or half-open state needs at least
/// one probe.
pub fn check_verdict(verdict: &Verdict) -> Result<(), String> {
    if verdict.state != BreakerState::Closed && verdict.probes == 0 {
        return Err(format!(
            "on-outcome answered state {:?} with 0 probes (at least 1)",
            verdict.state
        ));
    }
    Ok(())
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
