//! The process's monotonic clock, as one number every module (and every
//! plugin, through `host.monotonic-ns`) agrees on.
//!
//! It runs on tokio's clock (the real one outside a paused test runtime),
//! so the breaker's open periods and every plugin's view of time follow a
//! test's paused clock. [`coarse_ms`], the cheaper reading for the
//! connections' and the pool's stamps, is real time only: a test that
//! pauses the clock sees those timeouts run on real time.

use std::sync::OnceLock;

use rustix::time::{ClockId, Timespec};
use tokio::time::Instant;

/// The clock's origin, read once: tokio's clock, and the kernel's coarse
/// monotonic clock with its tick, for [`coarse_ms`].
struct Origin {
    fine: Instant,
    coarse_ns: u64,
    tick_ns: u64,
}

fn origin() -> &'static Origin {
    static ORIGIN: OnceLock<Origin> = OnceLock::new();
    ORIGIN.get_or_init(|| {
        // The coarse reading first: its origin is then no later than the
        // fine one, which keeps `coarse_ms` from running behind.
        let coarse_ns = coarse_now_ns();
        Origin {
            fine: Instant::now(),
            coarse_ns,
            tick_ns: ns(rustix::time::clock_getres(ClockId::MonotonicCoarse)).max(1),
        }
    })
}

fn start() -> Instant {
    origin().fine
}

fn ns(t: Timespec) -> u64 {
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

fn coarse_now_ns() -> u64 {
    ns(rustix::time::clock_gettime(ClockId::MonotonicCoarse))
}

/// Nanoseconds since the clock was first read in this process.
pub fn monotonic_ns() -> u64 {
    u64::try_from(start().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds since the clock was first read in this process.
pub fn monotonic_ms() -> u64 {
    monotonic_ns() / 1_000_000
}

/// [`monotonic_ms`] at `at`, a reading of tokio's clock the caller has
/// already made (each reading costs tens of nanoseconds, and the request
/// path made some twenty).
pub fn ms_at(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(start()).as_millis()).unwrap_or(u64::MAX)
}

/// [`monotonic_ms`] from the kernel's coarse monotonic clock: the time of
/// the last timer tick (1-10 ms apart), read without the clock source, 13
/// ns against 49-85 for a fine reading on the bench VM. For the stamps
/// that only bound timeouts of seconds (a connection's phases, a pooled
/// connection's idle time), read on every request. One tick is added, so
/// a stamp is never earlier than [`monotonic_ms`] read at the same moment
/// (a timeout measured from it never ends early) and at most two ticks
/// later. Real time only: it does not follow a paused test runtime.
pub fn coarse_ms() -> u64 {
    let o = origin();
    coarse_now_ns()
        .saturating_sub(o.coarse_ns)
        .saturating_add(o.tick_ns)
        / 1_000_000
}

/// The coarse clock's tick in milliseconds, rounded up: how much later
/// than the fine clock a [`coarse_ms`] stamp can be, twice over at most.
pub fn coarse_tick_ms() -> u64 {
    origin().tick_ns.div_ceil(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every coarse stamp lies between the fine readings around it: never
    /// below the one before (a timeout from it cannot end early), and no
    /// more than two ticks (and the millisecond both truncate) past the
    /// one after. Checked over some 50 ms, so that ticks pass.
    #[test]
    fn a_coarse_stamp_is_never_early_and_at_most_two_ticks_late() {
        let tick = coarse_tick_ms();
        assert!(tick >= 1, "the coarse clock's tick is {tick} ms");
        let deadline = Instant::now() + std::time::Duration::from_millis(50);
        let mut stamps = 0u64;
        while Instant::now() < deadline && stamps < 10_000_000 {
            let before = monotonic_ms();
            let coarse = coarse_ms();
            let after = monotonic_ms();
            assert!(
                coarse >= before,
                "coarse {coarse} ms before the fine {before} ms"
            );
            assert!(
                coarse <= after + 2 * tick + 1,
                "coarse {coarse} ms more than two {tick} ms ticks past the fine {after} ms"
            );
            stamps += 1;
        }
        assert!(stamps > 0);
    }
}
