//! What a backend's statistics become after an outcome and the breaker's
//! verdict on it. The proxy keeps them in atomics
//! (`host/src/upstream/`), `bbproxy plugin check` and the SDK's test host
//! (`bbproxy_sdk::testing::record`) in plain records; all three apply the
//! functions here, so a breaker sees the same numbers in a unit test, in
//! `plugin check` and in the proxy.

use crate::BreakerState;

/// Weight of a new latency sample in the moving average, in 1/16ths.
pub const EWMA_NEW_SIXTEENTHS: u64 = 4;

/// The latency average after a response that took `sample_us`; `old` is 0
/// before the first response.
///
/// ```
/// use bbproxy_plugin_contract::ewma;
/// assert_eq!(ewma(0, 1000), 1000);
/// assert_eq!(ewma(1000, 2000), 1250);
/// ```
pub fn ewma(old: u64, sample_us: u64) -> u64 {
    if old == 0 {
        sample_us.max(1)
    } else {
        // u128: a pathological sample must not overflow the weighting.
        let mixed = (u128::from(old) * u128::from(16 - EWMA_NEW_SIXTEENTHS)
            + u128::from(sample_us) * u128::from(EWMA_NEW_SIXTEENTHS))
            / 16;
        u64::try_from(mixed).unwrap_or(u64::MAX)
    }
}

/// How the consecutive-outcome counts change after a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streak {
    /// One more failure; the success streak ends.
    Failure,
    /// One more success; the failure streak ends.
    Success,
    /// Nothing changes.
    Unchanged,
}

/// The streak change for a verdict that says `failure` and leaves the
/// backend in `state`. A success while the verdict keeps the backend open
/// is a late answer to a request sent before it opened: it neither ends the
/// failure streak nor starts a success streak, so it cannot help close the
/// breaker (the README's "a response that arrives while the backend is
/// open").
///
/// ```
/// use bbproxy_plugin_contract::{BreakerState, Streak, streak};
/// assert_eq!(streak(true, BreakerState::Open), Streak::Failure);
/// assert_eq!(streak(false, BreakerState::Closed), Streak::Success);
/// assert_eq!(streak(false, BreakerState::Open), Streak::Unchanged);
/// ```
pub fn streak(failure: bool, state: BreakerState) -> Streak {
    if failure {
        Streak::Failure
    } else if state == BreakerState::Open {
        Streak::Unchanged
    } else {
        Streak::Success
    }
}

/// A backend's statistics as a plugin sees them (the fields of the WIT
/// `backend` record that outcomes change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Requests sent.
    pub requests: u64,
    /// Consecutive outcomes counted as failures.
    pub consecutive_failures: u32,
    /// Consecutive outcomes counted as successes.
    pub consecutive_successes: u32,
    /// Moving average of the response latency, 0 before the first response.
    pub latency_ewma_us: u64,
    /// Breaker state.
    pub breaker: BreakerState,
}

/// Applies one forwarded request to `stats`: one more request, the latency
/// folded into the average if the backend answered (`response_latency_us`),
/// then the breaker's verdict (`failure`, `state`). Entering `open` starts a
/// new success streak, as the proxy's breaker cell does.
///
/// ```
/// use bbproxy_plugin_contract::{BreakerState, Stats, record};
/// let mut s = Stats {
///     requests: 0, consecutive_failures: 2, consecutive_successes: 0,
///     latency_ewma_us: 0, breaker: BreakerState::Open,
/// };
/// // A late success while the backend stays open counts for nothing.
/// record(&mut s, Some(900), false, BreakerState::Open);
/// assert_eq!((s.requests, s.consecutive_failures, s.consecutive_successes), (1, 2, 0));
/// ```
pub fn record(
    stats: &mut Stats,
    response_latency_us: Option<u64>,
    failure: bool,
    state: BreakerState,
) {
    stats.requests = stats.requests.saturating_add(1);
    if let Some(sample) = response_latency_us {
        stats.latency_ewma_us = ewma(stats.latency_ewma_us, sample);
    }
    match streak(failure, state) {
        Streak::Failure => {
            stats.consecutive_failures = stats.consecutive_failures.saturating_add(1);
            stats.consecutive_successes = 0;
        }
        Streak::Success => {
            stats.consecutive_successes = stats.consecutive_successes.saturating_add(1);
            stats.consecutive_failures = 0;
        }
        Streak::Unchanged => {}
    }
    if state == BreakerState::Open && stats.breaker != BreakerState::Open {
        stats.consecutive_successes = 0;
    }
    stats.breaker = state;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> Stats {
        Stats {
            requests: 0,
            consecutive_failures: 0,
            consecutive_successes: 0,
            latency_ewma_us: 0,
            breaker: BreakerState::Closed,
        }
    }

    #[test]
    fn streaks_end_each_other() {
        let mut s = stats();
        record(&mut s, None, true, BreakerState::Closed);
        record(&mut s, None, true, BreakerState::Closed);
        assert_eq!((s.consecutive_failures, s.consecutive_successes), (2, 0));
        record(&mut s, Some(10), false, BreakerState::Closed);
        assert_eq!((s.consecutive_failures, s.consecutive_successes), (0, 1));
        assert_eq!((s.requests, s.latency_ewma_us), (3, 10));
    }

    #[test]
    fn opening_without_a_failure_ends_the_success_streak() {
        let mut s = stats();
        for _ in 0..5 {
            record(&mut s, Some(10), false, BreakerState::Closed);
        }
        record(&mut s, Some(10), false, BreakerState::Open);
        assert_eq!(s.consecutive_successes, 0);
        assert_eq!(s.breaker, BreakerState::Open);
    }

    #[test]
    fn the_average_never_overflows() {
        assert_eq!(ewma(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(ewma(0, 0), 1);
    }
}
