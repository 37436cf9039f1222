//! The process's monotonic clock, as one number every module (and every
//! plugin, through `host.monotonic-ns`) agrees on.
//!
//! It runs on tokio's clock (the real one outside a paused test runtime),
//! so the breaker's open periods and every plugin's view of time follow a
//! test's paused clock.

use std::sync::OnceLock;

use tokio::time::Instant;

fn start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
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
