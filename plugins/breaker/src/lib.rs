//! BBProxy's default circuit breaker.
//!
//! Configuration (every key optional; these are the defaults):
//!
//! ```json
//! {"threshold": 5, "timeout_ms": 30000, "half_open_probes": 1,
//!  "success_threshold": 1, "failure_on_5xx": false}
//! ```
//!
//! - `threshold` (>= 1): consecutive failures that open a closed backend.
//! - `timeout_ms`: how long an opened backend gets no traffic before the host
//!   lets probes through (half-open).
//! - `half_open_probes` (>= 1): probe requests in flight at once while
//!   half-open.
//! - `success_threshold` (>= 1): consecutive successful probes that close a
//!   half-open backend.
//! - `failure_on_5xx`: also count responses with status >= 500 as failures
//!   (otherwise only connect errors, timeouts and resets count).
//!
//! A failed probe reopens the backend. An outcome that arrives while the
//! backend is open (a request sent before it opened) keeps it open; the host
//! restarts the open period only on a transition into open.

use bbproxy_sdk::serde::Deserialize;
use bbproxy_sdk::v2::Breaker;
use bbproxy_sdk::{Backend, BreakerState, Outcome, Verdict};

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields, default)]
pub struct Config {
    /// Consecutive failures that open a closed backend.
    pub threshold: u32,
    /// Open period in milliseconds.
    pub timeout_ms: u64,
    /// Probe requests in flight at once while half-open.
    pub half_open_probes: u32,
    /// Consecutive successful probes that close a half-open backend.
    pub success_threshold: u32,
    /// Whether a 5xx response counts as a failure.
    pub failure_on_5xx: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            threshold: 5,
            timeout_ms: 30_000,
            half_open_probes: 1,
            success_threshold: 1,
            failure_on_5xx: false,
        }
    }
}

impl Config {
    /// Parses and validates the JSON configuration text.
    pub fn parse(json: &str) -> Result<Config, String> {
        let config: Config =
            bbproxy_sdk::parse_config(json).map_err(|e| format!("invalid breaker config: {e}"))?;
        for (key, value) in [
            ("threshold", config.threshold),
            ("half_open_probes", config.half_open_probes),
            ("success_threshold", config.success_threshold),
        ] {
            if value == 0 {
                return Err(format!(
                    "invalid breaker config: \"{key}\" must be at least 1, got 0"
                ));
            }
        }
        Ok(config)
    }

    /// The backend's state after `outcome`, given its stats from before it.
    pub fn decide(&self, backend: &Backend, outcome: &Outcome) -> Verdict {
        let failure = outcome.is_failure(self.failure_on_5xx);
        let open = Verdict::open(true, self.timeout_ms, self.half_open_probes);
        match backend.breaker {
            BreakerState::Closed => {
                if failure && backend.consecutive_failures.saturating_add(1) >= self.threshold {
                    open
                } else {
                    Verdict::closed(failure)
                }
            }
            BreakerState::HalfOpen => {
                if failure {
                    open
                } else if backend.consecutive_successes.saturating_add(1) >= self.success_threshold
                {
                    Verdict::closed(false)
                } else {
                    Verdict::half_open(false, self.half_open_probes)
                }
            }
            BreakerState::Open => Verdict { failure, ..open },
        }
    }
}

/// The breaker plugin.
#[derive(Debug, Default)]
pub struct DefaultBreaker {
    config: Config,
}

impl Breaker for DefaultBreaker {
    fn init(config: &str) -> Result<Self, String> {
        Ok(DefaultBreaker {
            config: Config::parse(config)?,
        })
    }

    /// A response a closed backend sends is a success that keeps it closed
    /// (see [`Config::decide`]) unless it is a 5xx counted as a failure:
    /// the host counts those itself, without a call.
    fn skip_closed_responses_below(&self) -> u16 {
        if self.config.failure_on_5xx { 500 } else { 600 }
    }

    fn on_outcome(&mut self, _upstream: u32, backend: &Backend, outcome: &Outcome) -> Verdict {
        self.config.decide(backend, outcome)
    }
}

bbproxy_sdk::v2::export!(DefaultBreaker: breaker);

#[cfg(test)]
mod tests {
    use super::*;
    use bbproxy_sdk::OutcomeKind;

    fn backend(state: BreakerState, failures: u32, successes: u32) -> Backend {
        Backend {
            consecutive_failures: failures,
            consecutive_successes: successes,
            breaker: state,
            ..bbproxy_sdk::testing::backend(0)
        }
    }

    fn response(status: u16) -> Outcome {
        Outcome {
            kind: OutcomeKind::Response,
            status,
            latency_us: 1000,
        }
    }

    fn error(kind: OutcomeKind) -> Outcome {
        Outcome {
            kind,
            status: 0,
            latency_us: 1000,
        }
    }

    fn config(json: &str) -> Config {
        Config::parse(json).unwrap()
    }

    #[test]
    fn defaults() {
        assert_eq!(config("{}"), Config::default());
        let c = Config::default();
        assert_eq!(
            (
                c.threshold,
                c.timeout_ms,
                c.half_open_probes,
                c.success_threshold
            ),
            (5, 30_000, 1, 1)
        );
        assert!(!c.failure_on_5xx);
    }

    /// The outcomes the breaker leaves to the host are exactly those whose
    /// verdict is "a success, still closed", whatever the closed backend's
    /// streaks: skipping the call changes nothing.
    #[test]
    fn the_host_skips_only_outcomes_that_keep_a_backend_closed() {
        for json in [
            r#"{"threshold": 3}"#,
            r#"{"threshold": 3, "failure_on_5xx": true}"#,
        ] {
            let breaker = bbproxy_sdk::testing::TestHost::new()
                .breaker_v2::<DefaultBreaker>(json)
                .unwrap();
            let skip = breaker.skip_closed_responses_below();
            for status in 100..600u16 {
                let outcome = Outcome {
                    kind: OutcomeKind::Response,
                    status,
                    latency_us: 1000,
                };
                for failures in 0..4 {
                    let closed = Backend {
                        consecutive_failures: failures,
                        ..bbproxy_sdk::testing::backend(0)
                    };
                    let verdict = breaker.config.decide(&closed, &outcome);
                    assert_eq!(
                        verdict == Verdict::closed(false),
                        status < skip,
                        "{json}: status {status} after {failures} failures: {verdict:?}, skip below {skip}"
                    );
                }
            }
        }
    }

    #[test]
    fn full_config() {
        let c = config(
            r#"{"threshold": 3, "timeout_ms": 500, "half_open_probes": 2,
                "success_threshold": 4, "failure_on_5xx": true}"#,
        );
        assert_eq!(
            c,
            Config {
                threshold: 3,
                timeout_ms: 500,
                half_open_probes: 2,
                success_threshold: 4,
                failure_on_5xx: true
            }
        );
    }

    #[test]
    fn invalid_config() {
        let err = Config::parse(r#"{"treshold": 3}"#).unwrap_err();
        assert!(err.contains("unknown field `treshold`"), "{err}");
        let err = Config::parse(r#"{"threshold": 0}"#).unwrap_err();
        assert_eq!(
            err,
            "invalid breaker config: \"threshold\" must be at least 1, got 0"
        );
        let err = Config::parse(r#"{"half_open_probes": 0}"#).unwrap_err();
        assert!(err.contains("half_open_probes"), "{err}");
        let err = Config::parse(r#"{"success_threshold": 0}"#).unwrap_err();
        assert!(err.contains("success_threshold"), "{err}");
        assert!(Config::parse(r#"{"threshold": -1}"#).is_err());
        assert!(Config::parse(r#"{"timeout_ms": "30s"}"#).is_err());
        assert!(Config::parse("[]").is_err());
    }

    #[test]
    fn closed_counts_failures_up_to_threshold() {
        let c = Config::default();
        let timeout = error(OutcomeKind::Timeout);
        for failures in 0..4 {
            let v = c.decide(&backend(BreakerState::Closed, failures, 0), &timeout);
            assert_eq!(v, Verdict::closed(true), "after {failures} failures");
        }
        let v = c.decide(&backend(BreakerState::Closed, 4, 0), &timeout);
        assert_eq!(v, Verdict::open(true, 30_000, 1));
    }

    #[test]
    fn threshold_one_opens_at_once() {
        let c = config(r#"{"threshold": 1, "timeout_ms": 100, "half_open_probes": 3}"#);
        let v = c.decide(
            &backend(BreakerState::Closed, 0, 7),
            &error(OutcomeKind::ConnectError),
        );
        assert_eq!(v, Verdict::open(true, 100, 3));
    }

    #[test]
    fn every_error_kind_is_a_failure() {
        let c = Config::default();
        for kind in [
            OutcomeKind::ConnectError,
            OutcomeKind::Timeout,
            OutcomeKind::Reset,
        ] {
            let v = c.decide(&backend(BreakerState::Closed, 0, 0), &error(kind));
            assert!(v.failure, "{kind:?}");
        }
    }

    #[test]
    fn responses_succeed_unless_failure_on_5xx() {
        let lenient = Config::default();
        let strict = config(r#"{"failure_on_5xx": true, "threshold": 2}"#);
        let closed = backend(BreakerState::Closed, 1, 0);
        assert_eq!(
            lenient.decide(&closed, &response(503)),
            Verdict::closed(false)
        );
        assert_eq!(
            lenient.decide(&closed, &response(200)),
            Verdict::closed(false)
        );
        assert_eq!(
            strict.decide(&closed, &response(500)),
            Verdict::open(true, 30_000, 1)
        );
        assert_eq!(
            strict.decide(&closed, &response(499)),
            Verdict::closed(false)
        );
    }

    #[test]
    fn half_open_failure_reopens() {
        let c = config(r#"{"half_open_probes": 2}"#);
        let v = c.decide(
            &backend(BreakerState::HalfOpen, 0, 0),
            &error(OutcomeKind::Reset),
        );
        assert_eq!(v, Verdict::open(true, 30_000, 2));
    }

    #[test]
    fn half_open_closes_after_success_threshold() {
        let c = config(r#"{"success_threshold": 3, "half_open_probes": 2}"#);
        let ok = response(200);
        assert_eq!(
            c.decide(&backend(BreakerState::HalfOpen, 0, 0), &ok),
            Verdict::half_open(false, 2)
        );
        assert_eq!(
            c.decide(&backend(BreakerState::HalfOpen, 0, 1), &ok),
            Verdict::half_open(false, 2)
        );
        assert_eq!(
            c.decide(&backend(BreakerState::HalfOpen, 0, 2), &ok),
            Verdict::closed(false)
        );
        // Default: one successful probe closes.
        assert_eq!(
            Config::default().decide(&backend(BreakerState::HalfOpen, 3, 0), &ok),
            Verdict::closed(false)
        );
    }

    #[test]
    fn late_outcomes_keep_it_open() {
        let c = config(r#"{"timeout_ms": 1000}"#);
        let open = backend(BreakerState::Open, 5, 0);
        let v = c.decide(&open, &response(200));
        assert_eq!(v, Verdict::open(false, 1000, 1));
        let v = c.decide(&open, &error(OutcomeKind::Timeout));
        assert_eq!(v, Verdict::open(true, 1000, 1));
    }

    #[test]
    fn saturating_counts() {
        let c = Config::default();
        let v = c.decide(
            &backend(BreakerState::Closed, u32::MAX, 0),
            &error(OutcomeKind::Timeout),
        );
        assert_eq!(v.state, BreakerState::Open);
    }
}
