//! When a failed attempt may be tried again on another backend, and the
//! budget that keeps retries from multiplying load on a failing upstream.
//!
//! - Connect failures (refused, unreachable, connect timeout): nothing was
//!   sent, so any request may go to another backend.
//! - A reset before response headers: only idempotent methods, and only if
//!   no byte of the request body was taken (the body streams from the
//!   client, see [`BodySlot`](super::request_body::BodySlot)), so a POST whose
//!   body went out is never sent twice.
//! - A response-header timeout is never retried: the backend may still be
//!   working on it.

use std::sync::atomic::{AtomicU64, Ordering};

use bbproxy_config::Retries;
use http::Method;

use super::forward::UpstreamError;

/// A token bucket in thousandths of a retry: each request adds
/// `budget_percent` hundredths, each retry takes one whole, and the bucket
/// holds at most `budget_min` retries (it starts full). So retries stay near
/// `budget_percent`% of traffic with bursts of `budget_min`.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicU64,
    cap: u64,
    earn: u64,
}

const ONE: u64 = 1000;

impl RetryBudget {
    /// A full bucket for `retries`.
    pub fn new(retries: &Retries) -> Self {
        let cap = u64::from(retries.budget_min) * ONE;
        Self {
            tokens: AtomicU64::new(cap),
            cap,
            earn: u64::from(retries.budget_percent) * ONE / 100,
        }
    }

    /// A request started: it earns its share of a retry.
    pub fn deposit(&self) {
        if self.earn == 0 {
            return;
        }
        let _ = self
            .tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < self.cap).then(|| (t + self.earn).min(self.cap))
            });
    }

    /// Takes one retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(ONE))
            .is_ok()
    }
}

/// Whether the failure allows another attempt, before looking at the body
/// or the budget.
pub fn retryable(error: &UpstreamError, method: &Method) -> bool {
    match error {
        UpstreamError::Connect { .. } => true,
        UpstreamError::Reset { .. } => is_idempotent(method),
        UpstreamError::Timeout { .. }
        | UpstreamError::BadRequest(_)
        | UpstreamError::Body(_)
        | UpstreamError::Overloaded { .. }
        | UpstreamError::BreakerFault(_) => false,
    }
}

/// RFC 9110 §9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refills_with_traffic() {
        let b = RetryBudget::new(&Retries {
            attempts: 2,
            budget_percent: 50,
            budget_min: 1,
        });
        assert!(b.withdraw());
        assert!(!b.withdraw());
        b.deposit();
        assert!(!b.withdraw());
        b.deposit();
        assert!(b.withdraw());
    }

    #[test]
    fn only_safe_failures_retry() {
        let reset = UpstreamError::Reset {
            backend: "b".into(),
            reason: "reset".into(),
            latency: std::time::Duration::ZERO,
        };
        assert!(retryable(&reset, &Method::GET));
        assert!(!retryable(&reset, &Method::POST));
        let connect = UpstreamError::Connect {
            backend: "b".into(),
            reason: "refused".into(),
            latency: std::time::Duration::ZERO,
            timed_out: false,
        };
        assert!(retryable(&connect, &Method::POST));
    }
}
