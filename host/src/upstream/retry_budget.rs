//! The budget that keeps retries from multiplying load on a failing
//! upstream. Whether a failure may be retried at all is the request path's
//! rule (see `proxy::error`); this only says whether one more retry fits.

use std::sync::atomic::{AtomicU64, Ordering};

use bbproxy_config::Retries;

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
}
