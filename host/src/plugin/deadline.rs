//! Per-call CPU budgets on top of epoch interruption.
//!
//! Epochs measure wall-clock time, and a thread that the OS preempts (a busy
//! machine, more threads than cores) would see its plugin call "time out"
//! without having used the CPU. So the epoch only wakes a callback once per
//! tick while a call runs; the callback charges the thread's actual CPU time
//! against the budget and traps only when the budget is spent (or when a
//! generous wall-clock cap is hit, so a call can never hang). A call that
//! finishes within one tick — every normal call — never reaches the callback
//! and pays nothing.

use std::time::Duration;

use cpu_time::ThreadTime;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::engine::EPOCH_TICK;
use super::state::PluginState;

/// Wall-clock cap of a call, as a multiple of its CPU budget.
const WALL_CAP_FACTOR: u32 = 20;
/// Wall-clock cap floor: short budgets still tolerate a scheduler hiccup.
const MIN_WALL_CAP: Duration = Duration::from_millis(500);

/// The budget of the call in progress.
#[derive(Debug, Default)]
pub struct Budget {
    cpu: Duration,
    wall_ticks_left: u64,
    /// Thread CPU time when the first tick of this call fired.
    baseline: Option<Duration>,
}

impl Budget {
    fn start(&mut self, cpu: Duration) {
        let wall = (cpu * WALL_CAP_FACTOR).max(MIN_WALL_CAP);
        self.cpu = cpu;
        self.wall_ticks_left =
            u64::try_from(wall.as_nanos() / EPOCH_TICK.as_nanos()).unwrap_or(u64::MAX);
        self.baseline = None;
    }
}

/// Installs the budget callback on a new store.
pub fn install(store: &mut Store<PluginState>) {
    store.epoch_deadline_callback(|mut ctx| {
        let budget = &mut ctx.data_mut().budget;
        let now = ThreadTime::now().as_duration();
        let baseline = *budget.baseline.get_or_insert(now);
        // CPU used before the first tick is unknown but at most one tick.
        let used = now.saturating_sub(baseline) + EPOCH_TICK;
        budget.wall_ticks_left = budget.wall_ticks_left.saturating_sub(1);
        if used >= budget.cpu || budget.wall_ticks_left == 0 {
            return Err(Trap::Interrupt.into());
        }
        Ok(UpdateDeadline::Continue(1))
    });
}

/// Arms the budget for the next call on `store`.
pub fn arm(store: &mut Store<PluginState>, cpu: Duration) {
    store.data_mut().budget.start(cpu);
    store.set_epoch_deadline(1);
}
