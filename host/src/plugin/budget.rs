//! The time budget of one plugin call. The epoch ticker measures wall time,
//! but a plugin should be charged for the CPU it used, not for the time its
//! thread waited for a core: on a loaded machine a 50 µs call can span a
//! 10 ms deadline. So when the epoch deadline passes, the store's callback
//! looks at the thread's CPU time: if the call has not used its budget yet,
//! the deadline is extended by what is left; otherwise the call traps
//! (`timeout`). Reading a thread's CPU clock is a system call, too dear
//! for every call of a few microseconds, so the first deadline is one epoch
//! tick away and the CPU clock is first read when it passes: the wall time
//! up to then is charged as CPU time, but never more than a tick (a thread
//! preempted before its first look must not be charged for the wait), and
//! from then on the CPU clock counts. A wall-clock cap (100 × the budget, at least 1 s) is only a
//! safety net: it is far enough out that a call is never charged for the
//! scheduler's choices on a loaded machine (that would turn load into
//! plugin faults, and a fail-closed plugin into 503s), yet it still ends a
//! call if the CPU clock is unavailable or misbehaves.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The wall-clock cap is this many times the CPU budget...
const WALL_FACTOR: u32 = 100;
/// ...and at least this long.
const MIN_WALL_CAP: Duration = Duration::from_secs(1);

/// Budget of the call in progress.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// The thread's CPU clock at the first look, and what was charged
    /// before it (the wall time until then).
    cpu_mark: Option<(Duration, Duration)>,
    /// A [`call_clock`] reading.
    wall_start: u64,
    cpu: Duration,
    wall_cap: Duration,
}

impl Budget {
    /// A budget of `cpu` starting at `now`, a [`call_clock`] reading (real,
    /// never paused: the wall cap bounds a guest call that holds this
    /// thread, and a paused test clock would never end it). The caller
    /// passes the reading it times the call with, so a call reads the clock
    /// once at its start.
    pub fn start(cpu: Duration, now: u64) -> Self {
        Self {
            cpu_mark: None,
            wall_start: now,
            cpu,
            wall_cap: cpu.saturating_mul(WALL_FACTOR).max(MIN_WALL_CAP),
        }
    }

    /// Time the call may still run, or `None` once it is spent. Asked at
    /// each epoch deadline of the runtime's `tick`: the first look charges
    /// the wall time until then as CPU time, but never more than a tick.
    pub fn remaining(&mut self, tick: Duration) -> Option<Duration> {
        let wall = call_clock_since(self.wall_start);
        if wall >= self.wall_cap {
            return None;
        }
        // Without a thread CPU clock, the wall clock is all there is.
        let used = match (self.cpu_mark, thread_cpu_time()) {
            (Some((mark, before)), Some(now)) => before + now.saturating_sub(mark),
            (None, Some(now)) => {
                let charged = wall.min(tick).min(self.cpu / 2);
                self.cpu_mark = Some((now, charged));
                charged
            }
            (_, None) => wall,
        };
        let left = self.cpu.checked_sub(used).filter(|d| !d.is_zero())?;
        Some(left.min(self.wall_cap - wall))
    }
}

/// CPU time of the calling thread.
#[cfg(unix)]
fn thread_cpu_time() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(Duration::new(
        u64::try_from(t.tv_sec).ok()?,
        u32::try_from(t.tv_nsec).ok()?,
    ))
}

#[cfg(not(unix))]
fn thread_cpu_time() -> Option<Duration> {
    None
}

/// The clock plugin calls are timed and capped with: the CPU's time-stamp
/// counter where it runs at a constant rate (quanta checks, and calibrates
/// it once against the monotonic clock; the metrics exporter's clock
/// shares that calibration), the monotonic clock otherwise. It is read at
/// the start and the end of every call, and `Instant::now` (a fenced
/// counter read and a conversion) took about a tenth of a short call.
static CALL_CLOCK: LazyLock<quanta::Clock> = LazyLock::new(quanta::Clock::new);

/// A raw reading of the call clock, for [`Budget::start`] and
/// [`call_clock_since`]. Real, never paused, like [`real_now`].
pub fn call_clock() -> u64 {
    CALL_CLOCK.raw()
}

/// The time since the [`call_clock`] reading `start`; zero if the counter
/// went back (a thread moved to a core whose counter is behind).
pub fn call_clock_since(start: u64) -> Duration {
    CALL_CLOCK.delta(start, CALL_CLOCK.raw())
}

/// A reading of the real clock, for the epoch ticker's schedule: the one
/// place the plugin runtime reads `std::time::Instant` (see the reason
/// below).
#[expect(
    clippy::disallowed_methods,
    reason = "the ticker paces real threads, whose calls it bounds; a paused test clock would stop it"
)]
pub fn real_now() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use super::super::ticker::EPOCH_TICK;
    use super::*;

    #[test]
    #[cfg(unix)]
    fn waiting_is_not_charged_but_spinning_is() {
        let mut b = Budget::start(Duration::from_millis(20), call_clock());
        // The first look (the first epoch tick) starts the CPU clock.
        assert!(b.remaining(EPOCH_TICK).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.remaining(EPOCH_TICK).is_some(), "sleeping used no CPU");
        // Spin until the thread has used 25 ms of CPU, however long that
        // takes on a loaded machine (the wall cap is 2 s).
        let start = thread_cpu_time().unwrap();
        while thread_cpu_time().unwrap() - start < Duration::from_millis(25) {
            std::hint::black_box(());
        }
        assert!(
            b.remaining(EPOCH_TICK).is_none(),
            "spinning used the budget"
        );
    }

    #[test]
    fn the_wall_cap_bounds_a_starved_call() {
        let mut b = Budget::start(Duration::from_millis(1), call_clock());
        assert_eq!(b.wall_cap, MIN_WALL_CAP);
        // Past the cap by a margin: the call clock is the calibrated cycle
        // counter, which may read a hair behind the sleep's clock (this
        // test once saw the cap not yet reached right at it).
        std::thread::sleep(MIN_WALL_CAP + Duration::from_millis(2));
        assert!(b.remaining(EPOCH_TICK).is_none());
    }

    #[test]
    fn time_before_the_first_look_is_charged_at_most_a_tick() {
        let mut b = Budget::start(Duration::from_millis(20), call_clock());
        std::thread::sleep(Duration::from_millis(30));
        let left = b
            .remaining(EPOCH_TICK)
            .expect("a preempted call keeps its budget");
        assert!(left <= Duration::from_millis(20) - EPOCH_TICK, "{left:?}");
    }
}
