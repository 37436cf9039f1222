//! The epoch ticker: advances the engine's epoch every tick ([`EPOCH_TICK`]
//! unless the runtime was given another) while guest code may run, which
//! is what bounds a plugin call. With nothing running for [`IDLE_TICKS`]
//! ticks it sleeps until a call starts: an idle proxy should not wake a
//! thousand times a second. Asleep, it still looks once a second whether
//! the engine is gone, and then ends.
//!
//! Entering a call costs one atomic increment and one load; only the first
//! call after the ticker fell asleep takes a lock to wake it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use wasmtime::EngineWeak;

/// How often the epoch advances by default. A call's deadline is a whole
/// number of ticks, so this is the granularity of plugin timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);
/// The shortest tick a runtime accepts: below it the ticker thread would
/// spend a large share of a core waking up.
pub const MIN_EPOCH_TICK: Duration = Duration::from_micros(50);
/// Ticks without any call before the ticker sleeps.
const IDLE_TICKS: u32 = 100;
/// How often a sleeping ticker checks that its engine still exists.
const ASLEEP_CHECK: Duration = Duration::from_secs(1);

/// Shared between the ticker thread and every plugin call.
#[derive(Debug)]
pub(super) struct Ticker {
    /// How often the epoch advances.
    tick: Duration,
    /// Guest calls (and instantiations) running now.
    active: AtomicU32,
    /// The ticker waits on `wake` for a call to start.
    asleep: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A running guest call; the ticker may sleep once none is left.
#[derive(Debug)]
pub(super) struct Running<'a>(&'a Ticker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    /// Marks a guest call as running until the guard drops, waking the
    /// ticker first if it sleeps.
    pub(super) fn enter(&self) -> Running<'_> {
        // SeqCst on both sides: either this call sees `asleep` and wakes the
        // ticker, or the ticker sees the call in `active` and does not sleep.
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.asleep.load(Ordering::SeqCst) {
            let _held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.asleep.store(false, Ordering::SeqCst);
            self.wake.notify_one();
        }
        Running(self)
    }

    /// How often the epoch advances.
    pub(super) fn tick(&self) -> Duration {
        self.tick
    }

    /// Whether the ticker is asleep now (for tests).
    #[cfg(test)]
    pub(super) fn is_asleep(&self) -> bool {
        self.asleep.load(Ordering::SeqCst)
    }

    /// The ticker thread's loop: returns once the engine is dropped.
    pub(super) fn run(&self, engine: EngineWeak) {
        let mut idle = 0u32;
        // Each tick is due a whole tick after the last one was due, not
        // after the last sleep ended: a sleep overshoots by the timer slack
        // and the wake-up (about 60 µs of every 1 ms here), and a 50 ms
        // budget counted in overshooting ticks ran for 56 ms. A tick that is
        // late already (the thread waited for a core) is not caught up
        // with a burst; the count starts again from now.
        let mut due = super::budget::real_now();
        loop {
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
            due += self.tick;
            let now = super::budget::real_now();
            match due.checked_duration_since(now) {
                Some(wait) => std::thread::sleep(wait),
                None => due = now,
            }
            if self.active.load(Ordering::SeqCst) > 0 {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            idle = 0;
            if !self.sleep(&engine) {
                return;
            }
            due = super::budget::real_now();
        }
    }

    /// Waits until a call starts; false if the engine went away meanwhile.
    fn sleep(&self, engine: &EngineWeak) -> bool {
        let mut held = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.asleep.store(true, Ordering::SeqCst);
        while self.asleep.load(Ordering::SeqCst) && self.active.load(Ordering::SeqCst) == 0 {
            let (h, waited) = self
                .wake
                .wait_timeout(held, ASLEEP_CHECK)
                .unwrap_or_else(|p| p.into_inner());
            held = h;
            if waited.timed_out() && engine.upgrade().is_none() {
                return false;
            }
        }
        self.asleep.store(false, Ordering::SeqCst);
        true
    }
}

/// Epoch ticks of length `tick` that cover `timeout`, at least one. Asked
/// for by the deadline callback, which runs as a tick begins (the epoch has
/// just advanced), so the next tick is a whole one away: adding one "in case
/// the current tick is about to end" would let every runaway call spin a
/// tick longer than its budget.
pub(super) fn ticks(timeout: Duration, tick: Duration) -> u64 {
    let ticks = timeout.as_nanos().div_ceil(tick.as_nanos().max(1));
    u64::try_from(ticks).unwrap_or(u64::MAX).max(1)
}

/// Starts the ticker thread for `engine`, advancing its epoch every `tick`.
pub(super) fn spawn(engine: EngineWeak, tick: Duration) -> std::io::Result<Arc<Ticker>> {
    let ticker = Arc::new(Ticker {
        tick,
        active: AtomicU32::new(0),
        asleep: AtomicBool::new(false),
        lock: Mutex::new(()),
        wake: Condvar::new(),
    });
    let thread = ticker.clone();
    std::thread::Builder::new()
        .name("bbproxy-epoch".into())
        .spawn(move || thread.run(engine))?;
    Ok(ticker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;
    use wasmtime::{Config, Engine, Instance, Module, Store, Trap};

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(5);
        while !cond() {
            assert!(Instant::now() < end, "{what} within 5 s");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The ticker sleeps once nothing runs, and a guest that loops forever
    /// after that is still interrupted at its epoch deadline: entering the
    /// call woke the ticker.
    #[test]
    fn sleeps_when_idle_and_a_call_wakes_it() {
        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).unwrap();
        let ticker = spawn(engine.weak(), EPOCH_TICK).unwrap();
        wait_until("the ticker sleeps", || ticker.is_asleep());

        let module =
            Module::new(&engine, r#"(module (func (export "spin") (loop (br 0))))"#).unwrap();
        let mut store = Store::new(&engine, ());
        store.set_epoch_deadline(5);
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        // Fail-safe: if the call did not wake the ticker, interrupt the
        // guest from here after 3 s, so the test fails instead of hanging.
        let watchdog = engine.weak();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(3));
            if let Some(e) = watchdog.upgrade() {
                for _ in 0..10 {
                    e.increment_epoch();
                }
            }
        });
        let running = ticker.enter();
        assert!(!ticker.is_asleep());
        let started = Instant::now();
        let err = spin.call(&mut store, ()).unwrap_err();
        drop(running);
        assert_eq!(
            err.downcast_ref::<Trap>(),
            Some(&Trap::Interrupt),
            "{err:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );

        // Idle again: back to sleep.
        wait_until("the ticker sleeps again", || ticker.is_asleep());
    }

    /// A deadline is the whole ticks that cover it, never less than one.
    #[test]
    fn a_deadline_is_counted_in_the_runtimes_ticks() {
        let us = Duration::from_micros;
        assert_eq!(ticks(us(1000), EPOCH_TICK), 1);
        assert_eq!(ticks(us(1001), EPOCH_TICK), 2);
        assert_eq!(ticks(Duration::ZERO, EPOCH_TICK), 1);
        assert_eq!(ticks(us(1000), us(100)), 10);
        assert_eq!(ticks(us(100), us(100)), 1);
        assert_eq!(ticks(Duration::MAX, us(50)), u64::MAX);
    }

    /// A sleeping ticker ends once its engine is gone.
    #[test]
    fn ends_with_its_engine() {
        let engine = Engine::default();
        let ticker = spawn(engine.weak(), EPOCH_TICK).unwrap();
        wait_until("the ticker sleeps", || ticker.is_asleep());
        drop(engine);
        // Its thread holds the other reference; it drops it on the way out.
        wait_until("the ticker thread ends", || Arc::strong_count(&ticker) == 1);
    }
}
