//! Backends and their live state. A [`BackendState`] is shared by every worker
//! thread (atomics only, no locks on the request path) and by successive
//! generations: the [`Registry`] hands a reloaded generation the same state for
//! a backend that did not change, so breaker state and statistics carry over.

pub mod backend_queue;
mod breaker;
mod connector;
pub mod exchange;
pub mod h1;
mod head_timer;
pub mod health;
pub mod pool;
mod registry;
pub mod request_body;
mod retry_budget;
pub mod sticky;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

pub use breaker::{Admission, BreakerCell};
pub use connector::{ConnectionCounts, Counted, Counting, connection_counts};
pub use registry::{Registry, Staged};
pub use retry_budget::RetryBudget;

use bbproxy_plugin_contract as contract;

use crate::plugin::{Backend, BreakerState, Outcome, OutcomeKind, Verdict};

/// Live state of one backend.
#[derive(Debug)]
pub struct BackendState {
    /// `host:port`, as configured.
    pub authority: String,
    /// Base URL the request path is appended to (`http://host:port`).
    pub base: String,
    /// `base`'s scheme and authority, parsed once: every request's URI is
    /// made from them without formatting and parsing a string.
    pub origin: Option<(http::uri::Scheme, http::uri::Authority)>,
    in_flight: AtomicU32,
    consecutive_failures: AtomicU32,
    latency_ewma_us: AtomicU64,
    requests: AtomicU64,
    /// Circuit-breaker state as last decided by the breaker plugin.
    pub breaker: BreakerCell,
    /// Active health-check verdict.
    pub health: health::HealthCell,
    /// `limits.max_connections_per_backend` gate.
    pub queue: Arc<backend_queue::BackendQueue>,
    /// Set by an operator (`POST /backends/drain`): no new requests, those
    /// in flight finish. Runtime only: it lives as long as this state, which
    /// a reload keeps for a backend that remains and a restart does not.
    drained: AtomicBool,
    /// Requests, errors and latencies of the last minutes, for the
    /// dashboard; kept across reloads with the rest of this state.
    pub activity: crate::telemetry::activity::Activity,
    /// The last outcome the breaker called a failure.
    last_failure: LastFailure,
}

/// The last failure of a backend, in atomics so recording it takes no lock
/// even when every request fails.
#[derive(Debug, Default)]
struct LastFailure {
    /// Monotonic ms of the failure, 0 for none.
    at_ms: AtomicU64,
    /// `OutcomeKind` as a number, and the status for a response.
    kind_status: AtomicU32,
}

/// Why a backend last failed, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// Monotonic ms of the failure.
    pub at_ms: u64,
    /// What happened.
    pub kind: OutcomeKind,
    /// The response status when `kind` is a response (a 5xx the breaker
    /// counts as a failure).
    pub status: u16,
}

impl Failure {
    /// A short reason: `connect error`, `timeout`, `reset`, `HTTP 503`.
    pub fn reason(&self) -> String {
        match self.kind {
            OutcomeKind::ConnectError => "connect error".to_owned(),
            OutcomeKind::Timeout => "timeout".to_owned(),
            OutcomeKind::Reset => "connection reset".to_owned(),
            OutcomeKind::Response => format!("HTTP {}", self.status),
        }
    }
}

fn kind_number(kind: OutcomeKind) -> u32 {
    match kind {
        OutcomeKind::Response => 0,
        OutcomeKind::ConnectError => 1,
        OutcomeKind::Timeout => 2,
        OutcomeKind::Reset => 3,
    }
}

fn kind_of(number: u32) -> OutcomeKind {
    match number {
        1 => OutcomeKind::ConnectError,
        2 => OutcomeKind::Timeout,
        3 => OutcomeKind::Reset,
        _ => OutcomeKind::Response,
    }
}

impl BackendState {
    /// A backend with no history.
    pub fn new(authority: String, base: String) -> Self {
        let origin = base
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| Some((u.scheme()?.clone(), u.authority()?.clone())));
        Self {
            authority,
            base,
            origin,
            in_flight: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            latency_ewma_us: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            breaker: BreakerCell::default(),
            health: health::HealthCell::default(),
            queue: Arc::default(),
            drained: AtomicBool::new(false),
            activity: Default::default(),
            last_failure: LastFailure::default(),
        }
    }

    /// The last outcome its breaker called a failure, if any.
    pub fn last_failure(&self) -> Option<Failure> {
        // Read the time last: it is written last, so a failure recorded
        // meanwhile shows with its own kind or not at all.
        let kind_status = self.last_failure.kind_status.load(Ordering::Acquire);
        let at_ms = self.last_failure.at_ms.load(Ordering::Acquire);
        (at_ms != 0).then(|| Failure {
            at_ms,
            kind: kind_of(kind_status >> 16),
            status: (kind_status & 0xffff) as u16,
        })
    }

    /// Whether an operator drained this backend: it is no candidate for new
    /// requests, like a backend whose breaker is open.
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Drains (`true`) or undrains the backend; returns whether that changed
    /// anything.
    pub fn set_drained(&self, drained: bool) -> bool {
        self.drained.swap(drained, Ordering::Relaxed) != drained
    }

    /// Counts its breaker's transitions under `domain` (the registry does
    /// this for every backend it creates).
    pub fn counting_transitions(mut self, domain: &str) -> Self {
        self.breaker = BreakerCell::counted(domain, &self.authority);
        self
    }

    /// The stats record plugins see.
    pub fn snapshot(&self, id: u32, weight: u32, breaker: BreakerState) -> Backend {
        Backend {
            id,
            weight,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            consecutive_failures: self.consecutive_failures.load(Ordering::Relaxed),
            consecutive_successes: self.breaker.successes(),
            latency_ewma_us: self.latency_ewma_us.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            breaker,
        }
    }

    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests sent since the backend was first configured.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Consecutive failures as counted by the breaker.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Marks a request as sent; the guard marks it finished when dropped
    /// (after the response body ends, so slow downloads count as load).
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Records the breaker's verdict on `outcome`, by the rule every
    /// simulator of the proxy applies too ([`contract::streak`]): a success
    /// while the verdict keeps the backend open is a late answer to a
    /// request sent before it opened, and counts for nothing.
    pub fn record_result(&self, verdict: &Verdict, outcome: &Outcome) {
        match contract::streak(verdict.failure, verdict.state.into()) {
            contract::Streak::Failure => {
                self.last_failure.kind_status.store(
                    kind_number(outcome.kind) << 16 | u32::from(outcome.status),
                    Ordering::Release,
                );
                self.last_failure
                    .at_ms
                    .store(crate::clock::monotonic_ms().max(1), Ordering::Release);
                self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.reset_successes();
            }
            contract::Streak::Success => {
                self.breaker.count_success();
                self.consecutive_failures.store(0, Ordering::Relaxed);
            }
            contract::Streak::Unchanged => {}
        }
    }

    /// Folds a response latency into the moving average.
    pub fn record_latency(&self, sample_us: u64) {
        let _ = self
            .latency_ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(contract::ewma(old, sample_us))
            });
    }
}

/// A request in flight to a backend; finished when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<BackendState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_follows_guards() {
        let b = Arc::new(BackendState::new("a:1".into(), "http://a:1".into()));
        let g1 = b.start();
        let g2 = b.start();
        assert_eq!(b.in_flight(), 2);
        drop(g1);
        assert_eq!(b.in_flight(), 1);
        drop(g2);
        assert_eq!(b.in_flight(), 0);
        assert_eq!(b.requests(), 2);
    }

    fn verdict(failure: bool, state: BreakerState) -> Verdict {
        Verdict {
            failure,
            state,
            open_for_ms: 100,
            probes: 1,
        }
    }

    const RESPONSE: Outcome = Outcome {
        kind: OutcomeKind::Response,
        status: 200,
        latency_us: 1,
    };

    fn successes(b: &BackendState) -> u32 {
        b.snapshot(0, 1, BreakerState::Closed).consecutive_successes
    }

    #[test]
    fn results_reset_the_opposite_streak() {
        let b = BackendState::new("a:1".into(), "http://a:1".into());
        b.record_result(&verdict(true, BreakerState::Closed), &RESPONSE);
        b.record_result(&verdict(true, BreakerState::Closed), &RESPONSE);
        assert_eq!(b.consecutive_failures(), 2);
        b.record_result(&verdict(false, BreakerState::Closed), &RESPONSE);
        assert_eq!(b.consecutive_failures(), 0);
        assert_eq!(successes(&b), 1);
        b.record_result(&verdict(true, BreakerState::Closed), &RESPONSE);
        assert_eq!(successes(&b), 0);
    }

    #[test]
    fn late_successes_while_open_do_not_count_toward_closing() {
        let b = BackendState::new("a:1".into(), "http://a:1".into());
        let open = verdict(true, BreakerState::Open);
        b.record_result(&open, &RESPONSE);
        b.breaker.apply(&open, 0);
        // Three requests sent before it opened answer 200 while it is open.
        for _ in 0..3 {
            b.record_result(&verdict(false, BreakerState::Open), &RESPONSE);
        }
        assert_eq!(successes(&b), 0);
        assert_eq!(b.consecutive_failures(), 1);
        // Half-open: the first probe's success is the streak's first, so a
        // success threshold of 3 still needs two more.
        assert_eq!(b.breaker.state(100), BreakerState::HalfOpen);
        b.record_result(&verdict(false, BreakerState::HalfOpen), &RESPONSE);
        assert_eq!(successes(&b), 1);
    }

    #[test]
    fn a_success_streak_before_opening_is_gone_once_half_open() {
        let b = BackendState::new("a:1".into(), "http://a:1".into());
        for _ in 0..5 {
            b.record_result(&verdict(false, BreakerState::Closed), &RESPONSE);
        }
        // A plugin may open without calling this outcome a failure.
        let open = verdict(false, BreakerState::Open);
        b.record_result(&open, &RESPONSE);
        b.breaker.apply(&open, 0);
        assert_eq!(b.breaker.state(100), BreakerState::HalfOpen);
        assert_eq!(successes(&b), 0);
    }

    #[test]
    fn the_last_failure_keeps_its_kind_and_status() {
        let b = BackendState::new("a:1".into(), "http://a:1".into());
        assert_eq!(b.last_failure(), None);
        b.record_result(&verdict(false, BreakerState::Closed), &RESPONSE);
        assert_eq!(b.last_failure(), None);
        let refused = Outcome {
            kind: OutcomeKind::ConnectError,
            status: 0,
            latency_us: 5,
        };
        b.record_result(&verdict(true, BreakerState::Closed), &refused);
        assert_eq!(b.last_failure().unwrap().reason(), "connect error");
        let bad = Outcome {
            status: 503,
            ..RESPONSE
        };
        b.record_result(&verdict(true, BreakerState::Open), &bad);
        let f = b.last_failure().unwrap();
        assert_eq!(
            (f.kind, f.status, f.reason().as_str()),
            (OutcomeKind::Response, 503, "HTTP 503")
        );
        // A success afterwards does not erase why it last failed.
        b.record_result(&verdict(false, BreakerState::Closed), &RESPONSE);
        assert_eq!(b.last_failure().unwrap().status, 503);
    }

    #[test]
    fn draining_reports_changes() {
        let b = BackendState::new("a:1".into(), "http://a:1".into());
        assert!(!b.is_drained());
        assert!(b.set_drained(true));
        assert!(!b.set_drained(true));
        assert!(b.is_drained());
        assert!(b.set_drained(false));
        assert!(!b.is_drained());
    }

    #[test]
    fn latency_average_moves_toward_samples() {
        let b = BackendState::new("a:1".into(), "http://a:1".into());
        b.record_latency(1000);
        assert_eq!(b.snapshot(0, 1, BreakerState::Closed).latency_ewma_us, 1000);
        b.record_latency(2000);
        let v = b.snapshot(0, 1, BreakerState::Closed).latency_ewma_us;
        assert!(v > 1000 && v < 2000, "{v}");
    }

    /// The proxy, `bbproxy plugin check` and the SDK's test host apply the
    /// same rule to a backend's stats after each verdict, including the case
    /// the three used to disagree on: a success while the verdict keeps the
    /// backend open (a late answer) counts for nothing.
    #[test]
    fn the_proxy_plugin_check_and_the_sdk_agree_on_stats_after_verdicts() {
        use crate::plugin::{Outcome, OutcomeKind};
        use bbproxy_sdk::testing as sdk;

        let response = |latency_us| Outcome {
            kind: OutcomeKind::Response,
            status: 200,
            latency_us,
        };
        let refused = Outcome {
            kind: OutcomeKind::ConnectError,
            status: 0,
            latency_us: 300,
        };
        let v = |failure, state| Verdict {
            failure,
            state,
            open_for_ms: 100,
            probes: 1,
        };
        use BreakerState::{Closed, HalfOpen, Open};
        // (outcome, verdict, ms after the start when it arrives)
        let steps = [
            (response(1000), v(false, Closed), 0),
            (response(3000), v(false, Closed), 1),
            (refused, v(true, Closed), 2),
            (refused, v(true, Open), 3),
            // Late answers to requests sent before it opened.
            (response(500), v(false, Open), 4),
            (refused, v(true, Open), 5),
            // After the open period: a probe succeeds.
            (response(700), v(false, HalfOpen), 200),
            (response(700), v(false, Closed), 201),
            // A breaker may open without calling the outcome a failure.
            (response(900), v(false, Open), 202),
        ];

        let host = Arc::new(BackendState::new("a:1".into(), "http://a:1".into()));
        let mut check = host.snapshot(0, 1, Closed);
        let _sdk_host = sdk::TestHost::new();
        let mut simulated = sdk::backend(0);
        for (i, (outcome, verdict, now)) in steps.into_iter().enumerate() {
            // The proxy: counted when sent, then what `report_outcome` does.
            drop(host.start());
            if outcome.kind == OutcomeKind::Response {
                host.record_latency(outcome.latency_us);
            }
            host.record_result(&verdict, &outcome);
            host.breaker.apply(&verdict, now);
            let proxy = host.snapshot(0, 1, host.breaker.state(now));

            crate::cli::plugin_check::apply(&mut check, &outcome, &verdict);
            sdk::record(
                &mut simulated,
                &sdk_outcome(&outcome),
                &bbproxy_sdk::Verdict {
                    failure: verdict.failure,
                    state: sdk_state(verdict.state),
                    open_for_ms: verdict.open_for_ms,
                    probes: verdict.probes,
                },
            );
            let fields = |b: &Backend| {
                (
                    b.requests,
                    b.consecutive_failures,
                    b.consecutive_successes,
                    b.latency_ewma_us,
                    b.breaker,
                )
            };
            let sdk_fields = (
                simulated.requests,
                simulated.consecutive_failures,
                simulated.consecutive_successes,
                simulated.latency_ewma_us,
                verdict.state,
            );
            assert_eq!(fields(&proxy), fields(&check), "step {i}: plugin check");
            assert_eq!(fields(&proxy), sdk_fields, "step {i}: SDK test host");
            assert_eq!(sdk_state(proxy.breaker), simulated.breaker, "step {i}");
        }
        // The late success (step 4) did not start a streak; the probe did.
        assert_eq!(host.breaker.successes(), 0, "opened again at the end");
    }

    fn sdk_state(state: BreakerState) -> bbproxy_sdk::BreakerState {
        match state {
            BreakerState::Closed => bbproxy_sdk::BreakerState::Closed,
            BreakerState::Open => bbproxy_sdk::BreakerState::Open,
            BreakerState::HalfOpen => bbproxy_sdk::BreakerState::HalfOpen,
        }
    }

    fn sdk_outcome(o: &crate::plugin::Outcome) -> bbproxy_sdk::Outcome {
        use crate::plugin::OutcomeKind as K;
        bbproxy_sdk::Outcome {
            kind: match o.kind {
                K::Response => bbproxy_sdk::OutcomeKind::Response,
                K::ConnectError => bbproxy_sdk::OutcomeKind::ConnectError,
                K::Timeout => bbproxy_sdk::OutcomeKind::Timeout,
                K::Reset => bbproxy_sdk::OutcomeKind::Reset,
            },
            status: o.status,
            latency_us: o.latency_us,
        }
    }
}
