//! A backend's recent activity for the dashboard: requests and errors per
//! second over the last minutes, and a histogram of time to response
//! headers per 10 s window, kept in fixed rings of atomics.
//!
//! Recording a request is two compare-and-swap loops on words no other
//! backend touches: no lock, no allocation. Each word carries the number of
//! the second (or window) it counts in its top bits, so a slot left from an
//! earlier lap of the ring reads as zero and the first write of a new lap
//! resets it in the same swap; nothing sweeps the rings.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Seconds of request and error counts kept (the sparkline's span).
pub const SECONDS: usize = 180;
/// Seconds over which the rate and error ratio are taken.
pub const RATE_WINDOW_S: u64 = 10;
/// Length of one latency window.
const WINDOW_MS: u64 = 10_000;
/// Latency windows kept: the current one and the five before it.
const WINDOWS: usize = 6;
/// Seconds over which p50 and p99 are taken (the windows kept).
pub const LATENCY_WINDOW_S: u64 = WINDOW_MS / 1000 * WINDOWS as u64;
/// Histogram buckets; bucket `i` holds times up to `FIRST_US * 2^(i/2)`,
/// the last one everything longer (about 52 s and up).
const BUCKETS: usize = 40;
const FIRST_US: f64 = 50.0;

/// Bits of a word that hold the second or window number.
const TAG_BITS: u32 = 24;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// A per-second word: tag, then requests and errors in 20 bits each (a
/// million a second per backend; more saturates).
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
/// A histogram word: tag, then a 40-bit count.
const BUCKET_BITS: u32 = 64 - TAG_BITS;
const BUCKET_MAX: u64 = (1 << BUCKET_BITS) - 1;

/// Recent requests, errors and latencies of one backend.
#[derive(Debug)]
pub struct Activity {
    seconds: Box<[AtomicU64]>,
    latency: Box<[AtomicU64]>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            seconds: (0..SECONDS).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..WINDOWS * BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// What the dashboard shows of an [`Activity`], read at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Requests per second over the last [`RATE_WINDOW_S`] full seconds.
    pub rps: f64,
    /// Share of those answered with a 5xx (0 to 1).
    pub error_rate: f64,
    /// Median time to response headers over [`LATENCY_WINDOW_S`], if any
    /// request was answered then.
    pub p50: Option<Duration>,
    /// 99th percentile of the same.
    pub p99: Option<Duration>,
    /// Requests per `step_s` seconds, oldest first, covering [`SECONDS`].
    pub requests: Vec<u64>,
    /// Errors in the same steps.
    pub errors: Vec<u64>,
}

impl Activity {
    /// Counts a request answered after `header_time` at monotonic time
    /// `now_ms`; `error` for a 5xx.
    pub fn record(&self, now_ms: u64, header_time: Duration, error: bool) {
        let second = now_ms / 1000;
        let tag = second & TAG_MASK;
        let slot = &self.seconds[(second % SECONDS as u64) as usize];
        let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            let (requests, errors) = if old >> (64 - TAG_BITS) == tag {
                ((old >> COUNT_BITS) & COUNT_MAX, old & COUNT_MAX)
            } else {
                (0, 0)
            };
            let requests = (requests + 1).min(COUNT_MAX);
            let errors = (errors + u64::from(error)).min(COUNT_MAX);
            Some(tag << (64 - TAG_BITS) | requests << COUNT_BITS | errors)
        });
        let window = now_ms / WINDOW_MS;
        let tag = window & TAG_MASK;
        let i = (window % WINDOWS as u64) as usize * BUCKETS + bucket(header_time);
        let _ = self.latency[i].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            let count = if old >> BUCKET_BITS == tag {
                old & BUCKET_MAX
            } else {
                0
            };
            Some(tag << BUCKET_BITS | (count + 1).min(BUCKET_MAX))
        });
    }

    /// Requests and errors in second `second`, zero if its slot holds
    /// another lap's.
    fn second(&self, second: u64) -> (u64, u64) {
        let v = self.seconds[(second % SECONDS as u64) as usize].load(Ordering::Relaxed);
        if v >> (64 - TAG_BITS) == second & TAG_MASK {
            ((v >> COUNT_BITS) & COUNT_MAX, v & COUNT_MAX)
        } else {
            (0, 0)
        }
    }

    /// The summary at monotonic time `now_ms`, the sparkline in steps of
    /// `step_s` seconds (which should divide [`SECONDS`]).
    pub fn summary(&self, now_ms: u64, step_s: u64) -> Summary {
        let now_s = now_ms / 1000;
        let (mut requests, mut errors) = (0, 0);
        // Full seconds only: the current one has only begun.
        for s in now_s.saturating_sub(RATE_WINDOW_S)..now_s {
            let (r, e) = self.second(s);
            requests += r;
            errors += e;
        }
        let step_s = step_s.clamp(1, SECONDS as u64);
        let steps = SECONDS as u64 / step_s;
        // The last step ends with the current second; steps before the
        // process started are zero.
        let end = now_s + 1;
        let (mut spark_r, mut spark_e) = (Vec::new(), Vec::new());
        for step in (1..=steps).rev() {
            let (mut r, mut e) = (0, 0);
            if let Some(to) = end.checked_sub((step - 1) * step_s) {
                for s in end.saturating_sub(step * step_s)..to {
                    let (sr, se) = self.second(s);
                    r += sr;
                    e += se;
                }
            }
            spark_r.push(r);
            spark_e.push(e);
        }
        let counts = self.latency_counts(now_ms);
        Summary {
            rps: requests as f64 / RATE_WINDOW_S as f64,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50: quantile(&counts, 0.50),
            p99: quantile(&counts, 0.99),
            requests: spark_r,
            errors: spark_e,
        }
    }

    /// The histogram over every window still current at `now_ms`.
    fn latency_counts(&self, now_ms: u64) -> [u64; BUCKETS] {
        let mut counts = [0u64; BUCKETS];
        let window = now_ms / WINDOW_MS;
        for w in window.saturating_sub(WINDOWS as u64 - 1)..=window {
            let base = (w % WINDOWS as u64) as usize * BUCKETS;
            for (i, c) in counts.iter_mut().enumerate() {
                let v = self.latency[base + i].load(Ordering::Relaxed);
                if v >> BUCKET_BITS == w & TAG_MASK {
                    *c += v & BUCKET_MAX;
                }
            }
        }
        counts
    }
}

/// The bucket of a time: `ceil(2 * log2(t / FIRST_US))`, clamped.
fn bucket(t: Duration) -> usize {
    let us = t.as_secs_f64() * 1e6;
    if us <= FIRST_US {
        return 0;
    }
    let i = (2.0 * (us / FIRST_US).log2()).ceil();
    // In range by the clamp; `as` saturates a NaN to 0.
    (i.clamp(0.0, (BUCKETS - 1) as f64)) as usize
}

/// The time a bucket stands for: the geometric middle of its bounds, so
/// the error is at most a fifth either way.
fn bucket_value(i: usize) -> Duration {
    let upper = FIRST_US * 2f64.powf(i as f64 / 2.0);
    let middle = if i == 0 {
        upper
    } else {
        upper / 2f64.powf(0.25)
    };
    Duration::from_secs_f64(middle / 1e6)
}

fn quantile(counts: &[u64; BUCKETS], q: f64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: the p99 of 100 samples is the 99th.
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_value(i));
        }
    }
    Some(bucket_value(BUCKETS - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rates_count_full_seconds_only() {
        let a = Activity::default();
        // 20 requests in each of seconds 100..110, 2 of them errors.
        for s in 100..110u64 {
            for i in 0..20 {
                a.record(s * 1000 + i, MS, i < 2);
            }
        }
        // A request in the current second does not count yet.
        a.record(110_500, MS, true);
        let s = a.summary(110_600, 5);
        assert_eq!(s.rps, 20.0);
        assert!((s.error_rate - 0.1).abs() < 1e-9, "{}", s.error_rate);
        assert_eq!(s.requests.len(), SECONDS / 5);
        assert_eq!(s.requests.iter().sum::<u64>(), 201);
        assert_eq!(s.errors.iter().sum::<u64>(), 21);
        // The newest step holds seconds 106..=110.
        assert_eq!(s.requests.last(), Some(&81));
        assert_eq!(s.errors.last(), Some(&9));
    }

    #[test]
    fn an_old_lap_reads_as_zero_and_is_reset_by_the_next_write() {
        let a = Activity::default();
        a.record(5_000, MS, true);
        // Same slot, one lap later.
        let later = 5_000 + SECONDS as u64 * 1000;
        let s = a.summary(later + 1000, 1);
        assert_eq!(s.requests.iter().sum::<u64>(), 0);
        a.record(later, MS, false);
        let s = a.summary(later + 1000, 1);
        assert_eq!(s.requests.iter().sum::<u64>(), 1);
        assert_eq!(s.errors.iter().sum::<u64>(), 0);
        assert_eq!(s.rps, 0.1);
    }

    #[test]
    fn quantiles_are_within_a_fifth() {
        let a = Activity::default();
        // 98 fast answers (2 ms), 2 slow ones (300 ms).
        for i in 0..98 {
            a.record(1_000 + i, 2 * MS, false);
        }
        a.record(2_000, 300 * MS, false);
        a.record(2_001, 300 * MS, false);
        let s = a.summary(3_000, 5);
        let p50 = s.p50.unwrap().as_secs_f64() * 1e3;
        let p99 = s.p99.unwrap().as_secs_f64() * 1e3;
        assert!((1.6..2.4).contains(&p50), "{p50}");
        assert!((240.0..360.0).contains(&p99), "{p99}");
        // A minute later those windows have passed.
        assert_eq!(a.summary(3_000 + LATENCY_WINDOW_S * 1000, 5).p50, None);
    }

    #[test]
    fn buckets_cover_the_range() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_micros(50)), 0);
        assert_eq!(bucket(Duration::from_micros(51)), 1);
        assert_eq!(bucket(Duration::from_micros(100)), 2);
        assert_eq!(bucket(Duration::from_secs(3600)), BUCKETS - 1);
        for i in 1..BUCKETS - 1 {
            assert_eq!(bucket(bucket_value(i)), i, "{i}");
        }
    }

    #[test]
    fn counts_saturate_instead_of_spilling_into_the_tag() {
        let a = Activity::default();
        let slot = &a.seconds[7];
        slot.store(
            7 << (64 - TAG_BITS) | COUNT_MAX << COUNT_BITS,
            Ordering::Relaxed,
        );
        a.record(7_000, MS, false);
        assert_eq!(a.second(7), (COUNT_MAX, 0));
    }
}
