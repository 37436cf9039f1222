//! The host's cache of one backend's circuit-breaker state. The breaker
//! plugin decides transitions; the host enforces them on the request path:
//! an open backend gets nothing until its open period ends, then becomes
//! half-open and admits at most `probes` requests at a time.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use metrics::Counter;

use crate::plugin::{BreakerState, Verdict};
use crate::telemetry::names::BREAKER_TRANSITIONS;

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Breaker state of one backend, lock-free.
#[derive(Debug)]
pub struct BreakerCell {
    state: AtomicU8,
    /// While open: monotonic ms at which probes may start.
    open_until_ms: AtomicU64,
    /// Probes admitted at once while half-open.
    probes: AtomicU32,
    /// Probes currently in flight.
    probes_in_flight: AtomicU32,
    /// Consecutive successes. Kept here because every transition into open
    /// or half-open starts a new streak: successes before the backend opened
    /// must not count toward closing it again.
    successes: AtomicU32,
    /// Transitions since the backend was first configured, by target state
    /// (closed, open, half-open), for the transitions metric.
    transitions: [AtomicU64; 3],
    /// `bbproxy_breaker_transitions_total` by target state (same order),
    /// incremented at each change: a backend removed and added again gets a
    /// new cell, and its new transitions still add to the old series.
    counters: [Counter; 3],
    /// Monotonic ms of the last transition (0: never changed).
    changed_at_ms: AtomicU64,
}

impl Default for BreakerCell {
    fn default() -> Self {
        Self {
            state: AtomicU8::new(CLOSED),
            open_until_ms: AtomicU64::new(0),
            probes: AtomicU32::new(0),
            probes_in_flight: AtomicU32::new(0),
            successes: AtomicU32::new(0),
            transitions: Default::default(),
            counters: [Counter::noop(), Counter::noop(), Counter::noop()],
            changed_at_ms: AtomicU64::new(0),
        }
    }
}

/// Whether a backend may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: no restriction.
    Closed,
    /// Half-open and a probe slot is free (not yet taken).
    Probe,
    /// Open, or half-open with every probe slot taken.
    Refused,
}

impl BreakerCell {
    /// A closed breaker whose transitions are counted under `domain` and
    /// `backend`.
    pub fn counted(domain: &str, backend: &str) -> Self {
        let counter = |to: &'static str| {
            metrics::counter!(
                BREAKER_TRANSITIONS,
                "domain" => domain.to_owned(),
                "backend" => backend.to_owned(),
                "to" => to
            )
        };
        Self {
            counters: [counter("closed"), counter("open"), counter("half_open")],
            ..Self::default()
        }
    }

    fn count(&self, to: u8) {
        self.changed_at_ms
            .store(crate::clock::monotonic_ms().max(1), Ordering::Relaxed);
        let i = usize::from(to);
        self.transitions[i].fetch_add(1, Ordering::Relaxed);
        self.counters[i].increment(1);
    }

    /// The state as plugins see it, moving open → half-open once the open
    /// period has passed.
    pub fn state(&self, now_ms: u64) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            HALF_OPEN => BreakerState::HalfOpen,
            _ if now_ms >= self.open_until_ms.load(Ordering::Acquire) => {
                // Only the first thread to see the deadline pass moves it.
                if self
                    .state
                    .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.probes_in_flight.store(0, Ordering::Release);
                    self.successes.store(0, Ordering::Release);
                    self.count(HALF_OPEN);
                }
                BreakerState::HalfOpen
            }
            _ => BreakerState::Open,
        }
    }

    /// Whether a request may go to this backend now (without taking a slot).
    pub fn admission(&self, now_ms: u64) -> Admission {
        match self.state(now_ms) {
            BreakerState::Closed => Admission::Closed,
            BreakerState::Open => Admission::Refused,
            BreakerState::HalfOpen => {
                if self.probes_in_flight.load(Ordering::Acquire)
                    < self.probes.load(Ordering::Acquire).max(1)
                {
                    Admission::Probe
                } else {
                    Admission::Refused
                }
            }
        }
    }

    /// Takes a probe slot; false when another request took the last one.
    pub fn try_take_probe(&self) -> bool {
        let max = self.probes.load(Ordering::Acquire).max(1);
        self.probes_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives a probe slot back once its outcome is known.
    pub fn release_probe(&self) {
        let _ = self
            .probes_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Applies the breaker plugin's verdict. Returns the new state when it
    /// changed. The open timer restarts only on a transition into open, so a
    /// late failure of a request sent earlier does not extend it.
    pub fn apply(&self, verdict: &Verdict, now_ms: u64) -> Option<BreakerState> {
        let new = match verdict.state {
            BreakerState::Closed => CLOSED,
            BreakerState::Open => OPEN,
            BreakerState::HalfOpen => HALF_OPEN,
        };
        if new != CLOSED {
            self.probes.store(verdict.probes.max(1), Ordering::Release);
        }
        let old = self.state.load(Ordering::Acquire);
        if old == new {
            return None;
        }
        if new == OPEN {
            self.open_until_ms.store(
                now_ms.saturating_add(verdict.open_for_ms),
                Ordering::Release,
            );
            self.successes.store(0, Ordering::Release);
        }
        // If another thread changed the state meanwhile, its decision stands.
        self.state
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        self.count(new);
        Some(verdict.state)
    }

    /// Monotonic ms of the last state change; `None` if it never changed
    /// (closed since the backend was configured).
    pub fn changed_at_ms(&self) -> Option<u64> {
        Some(self.changed_at_ms.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }

    /// Consecutive successes in the current streak.
    pub fn successes(&self) -> u32 {
        self.successes.load(Ordering::Acquire)
    }

    /// Extends the success streak.
    pub fn count_success(&self) {
        let _ = self
            .successes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_add(1))
            });
    }

    /// Ends the success streak.
    pub fn reset_successes(&self) {
        self.successes.store(0, Ordering::Release);
    }

    /// State transitions so far, all targets together.
    pub fn transitions(&self) -> u64 {
        self.transitions
            .iter()
            .map(|t| t.load(Ordering::Relaxed))
            .sum()
    }

    /// Transitions into `state` so far.
    pub fn transitions_to(&self, state: BreakerState) -> u64 {
        let i = match state {
            BreakerState::Closed => CLOSED,
            BreakerState::Open => OPEN,
            BreakerState::HalfOpen => HALF_OPEN,
        };
        self.transitions[usize::from(i)].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(state: BreakerState, open_for_ms: u64, probes: u32) -> Verdict {
        Verdict {
            failure: state != BreakerState::Closed,
            state,
            open_for_ms,
            probes,
        }
    }

    #[test]
    fn open_then_half_open_after_the_period() {
        let b = BreakerCell::default();
        assert_eq!(b.admission(0), Admission::Closed);
        assert_eq!(
            b.apply(&verdict(BreakerState::Open, 100, 1), 1000),
            Some(BreakerState::Open)
        );
        assert_eq!(b.admission(1050), Admission::Refused);
        assert_eq!(b.admission(1100), Admission::Probe);
        assert_eq!(b.state(1100), BreakerState::HalfOpen);
        assert!(b.try_take_probe());
        assert_eq!(b.admission(1101), Admission::Refused);
        assert!(!b.try_take_probe());
        b.release_probe();
        assert_eq!(b.admission(1101), Admission::Probe);
        assert_eq!(
            b.apply(&verdict(BreakerState::Closed, 0, 0), 1200),
            Some(BreakerState::Closed)
        );
        assert_eq!(b.admission(1200), Admission::Closed);
        assert_eq!(b.transitions(), 3);
        assert_eq!(b.transitions_to(BreakerState::HalfOpen), 1);
    }

    #[test]
    fn going_half_open_starts_a_new_success_streak() {
        let b = BreakerCell::default();
        b.apply(&verdict(BreakerState::Open, 100, 1), 0);
        // Successes recorded while open (late answers to requests sent
        // before it opened) must not carry into half-open.
        b.count_success();
        b.count_success();
        assert_eq!(b.successes(), 2);
        assert_eq!(b.state(100), BreakerState::HalfOpen);
        assert_eq!(b.successes(), 0);
        b.count_success();
        assert_eq!(b.successes(), 1);
        // A failed probe reopens: the streak starts over again.
        b.apply(&verdict(BreakerState::Open, 100, 1), 150);
        assert_eq!(b.successes(), 0);
    }

    #[test]
    fn staying_open_does_not_restart_the_timer() {
        let b = BreakerCell::default();
        b.apply(&verdict(BreakerState::Open, 100, 1), 0);
        assert_eq!(b.apply(&verdict(BreakerState::Open, 100, 1), 90), None);
        assert_eq!(b.admission(100), Admission::Probe);
    }
}
