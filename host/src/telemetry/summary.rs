//! The periodic summary log line the original BBProxy promised ("metrics
//! logged every 60 seconds"): requests, error rate, p50/p99 latency and open
//! breakers over the last interval.
//!
//! Latencies go into a fixed set of logarithmic buckets (atomics, no lock);
//! each interval takes and resets them, so percentiles are per interval and
//! accurate to a bucket (about ±9%).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per power of two of microseconds.
const SUB: usize = 8;
/// 2^0 µs .. 2^36 µs (about 19 hours) in 8 steps per octave.
const BUCKETS: usize = 37 * SUB;

/// Request counts and a latency histogram for the current interval.
#[derive(Debug)]
pub struct Window {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket(us: u64) -> usize {
    let us = us.max(1);
    let octave = 63 - us.leading_zeros() as usize;
    // The SUB bits after the leading one select the step within the octave.
    let frac = if octave >= 3 {
        ((us >> (octave - 3)) & 0b111) as usize
    } else {
        ((us << (3 - octave)) & 0b111) as usize
    };
    (octave * SUB + frac).min(BUCKETS - 1)
}

fn bucket_upper_us(i: usize) -> u64 {
    let (octave, frac) = (i / SUB, i % SUB);
    let base = 1u64 << octave;
    base + (base * (frac as u64 + 1)) / SUB as u64
}

/// One interval's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Requests answered.
    pub requests: u64,
    /// Of those, answered with 5xx.
    pub errors: u64,
    /// Median latency (upper bound of its bucket).
    pub p50: Duration,
    /// 99th percentile latency (upper bound of its bucket).
    pub p99: Duration,
}

impl Window {
    /// Records one answered request.
    pub fn record(&self, latency: Duration, server_error: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if server_error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the interval's figures and starts a new interval.
    pub fn take(&self) -> Summary {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            if total == 0 {
                return Duration::ZERO;
            }
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Duration::from_micros(bucket_upper_us(i));
                }
            }
            Duration::ZERO
        };
        Summary {
            requests: self.requests.swap(0, Ordering::Relaxed),
            errors: self.errors.swap(0, Ordering::Relaxed),
            p50: quantile(0.5),
            p99: quantile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut last = 0;
        for us in [1u64, 2, 3, 7, 8, 9, 100, 1000, 1500, 65_000, 10_000_000] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            assert!(
                bucket_upper_us(b) >= us,
                "{us} <= upper {}",
                bucket_upper_us(b)
            );
            assert!(
                bucket_upper_us(b) <= us + us / 8 + 1,
                "{us}: upper {}",
                bucket_upper_us(b)
            );
        }
    }

    #[test]
    fn percentiles_and_reset() {
        let w = Window::default();
        for _ in 0..98 {
            w.record(Duration::from_millis(1), false);
        }
        w.record(Duration::from_millis(100), true);
        w.record(Duration::from_millis(100), true);
        let s = w.take();
        assert_eq!((s.requests, s.errors), (100, 2));
        assert!(
            s.p50 >= Duration::from_millis(1) && s.p50 < Duration::from_micros(1130),
            "{:?}",
            s.p50
        );
        assert!(
            s.p99 >= Duration::from_millis(100) && s.p99 < Duration::from_millis(113),
            "{:?}",
            s.p99
        );
        let empty = w.take();
        assert_eq!((empty.requests, empty.p99), (0, Duration::ZERO));
    }
}
