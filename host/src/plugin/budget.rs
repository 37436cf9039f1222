//! The time budget of one plugin call. The epoch ticker measures wall time,
//! but a plugin should be charged for the CPU it used, not for the time its
//! thread waited for a core: on a loaded machine a 50 µs call can span a
//! 10 ms deadline. So when the epoch deadline passes, the store's callback
//! looks at the thread's CPU time: if the call has not used its budget yet,
//! the deadline is extended by what is left; otherwise the call traps
//! (`timeout`). A wall-clock cap (100 × the budget, at least 1 s) is only a
//! safety net: it is far enough out that a call is never charged for the
//! scheduler's choices on a loaded machine (that would turn load into
//! plugin faults, and a fail-closed plugin into 503s), yet it still ends a
//! call if the CPU clock is unavailable or misbehaves.

use std::time::{Duration, Instant};

/// The wall-clock cap is this many times the CPU budget...
const WALL_FACTOR: u32 = 100;
/// ...and at least this long.
const MIN_WALL_CAP: Duration = Duration::from_secs(1);

/// Budget of the call in progress.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    cpu_start: Option<Duration>,
    wall_start: Instant,
    cpu: Duration,
    wall_cap: Duration,
}

impl Budget {
    /// A budget of `cpu` starting now.
    pub fn start(cpu: Duration) -> Self {
        Self {
            cpu_start: thread_cpu_time(),
            wall_start: Instant::now(),
            cpu,
            wall_cap: cpu.saturating_mul(WALL_FACTOR).max(MIN_WALL_CAP),
        }
    }

    /// Time the call may still run, or `None` once it is spent.
    pub fn remaining(&self) -> Option<Duration> {
        let wall = self.wall_start.elapsed();
        if wall >= self.wall_cap {
            return None;
        }
        // Without a thread CPU clock, the wall clock is all there is.
        let used = match (self.cpu_start, thread_cpu_time()) {
            (Some(start), Some(now)) => now.saturating_sub(start),
            _ => wall,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(unix)]
    fn waiting_is_not_charged_but_spinning_is() {
        let b = Budget::start(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.remaining().is_some(), "sleeping used no CPU");
        // Spin until the thread has used 25 ms of CPU, however long that
        // takes on a loaded machine (the wall cap is 2 s).
        let start = thread_cpu_time().unwrap();
        while thread_cpu_time().unwrap() - start < Duration::from_millis(25) {
            std::hint::black_box(());
        }
        assert!(b.remaining().is_none(), "spinning used the budget");
    }

    #[test]
    fn the_wall_cap_bounds_a_starved_call() {
        let b = Budget::start(Duration::from_millis(1));
        assert_eq!(b.wall_cap, MIN_WALL_CAP);
        std::thread::sleep(MIN_WALL_CAP);
        assert!(b.remaining().is_none());
    }
}
