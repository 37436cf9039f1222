//! Backoff for a plugin that keeps faulting. Without it, a plugin that traps
//! on every call (or in `init`) would be re-instantiated for every request:
//! a tight loop of compile-free but not free instantiations, and for a
//! looping plugin a full CPU deadline per request.
//!
//! Faults stay with their tenant: the streak and the suspension are kept per
//! plugin *and* per [`Tenant`] (the upstream a balancer or breaker call is
//! for; the domain a router call's host matched), so a burst of requests
//! that make the plugin fault on one domain never suspends its decisions for
//! another, while a plugin that faults on every domain is suspended on each.
//!
//! After [`Backoff::after`] consecutive faults of one tenant with no
//! successful call for it in between, the plugin is suspended for that
//! tenant: its calls are answered with the `on_fault` policy without
//! entering the plugin, for [`Backoff::initial`]. When the interval ends,
//! calls go through again; the first fault after that suspends it for twice
//! as long (up to [`Backoff::max`]); the first success resets everything.
//! Successes interleaved with faults (a plugin that only fails for some
//! requests) never suspend it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// When and for how long a faulting plugin is suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Consecutive faults that suspend the plugin (at least 1).
    pub after: u32,
    /// First suspension.
    pub initial: Duration,
    /// Longest suspension; each one after a failed retry doubles up to it.
    pub max: Duration,
}

/// The defaults of config.json's `fault_backoff`: 5 faults, 1 s doubling to
/// 60 s.
impl Default for Backoff {
    fn default() -> Self {
        Self::from(bbproxy_config::FaultBackoff::default())
    }
}

/// A plugin entry's validated `fault_backoff`.
impl From<bbproxy_config::FaultBackoff> for Backoff {
    fn from(b: bbproxy_config::FaultBackoff) -> Self {
        Self {
            after: b.after,
            initial: b.initial,
            max: b.max,
        }
    }
}

/// A suspension that just started, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suspension {
    /// Consecutive faults so far.
    pub faults: u32,
    /// How long calls are skipped.
    pub interval: Duration,
}

/// Whose requests a call was for: the unit a fault streak and a suspension
/// belong to. Bounded by the config (one per domain, plus one), never by
/// what clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenant {
    /// The upstream (domain) with this number: the one a balancer or breaker
    /// call is for, or the one a router call's host matched.
    Upstream(u32),
    /// A router call whose host matched no domain (and there is no
    /// `default_domain`).
    Unmatched,
}

/// One [`Streak`] per tenant of a plugin: one per upstream, and one for
/// hosts that match none.
#[derive(Debug)]
pub struct Streaks {
    /// Index `i` for `Tenant::Upstream(i)`; the last for `Tenant::Unmatched`.
    by_tenant: Box<[Streak]>,
}

impl Streaks {
    /// Streaks for a plugin that sees `upstreams` upstreams.
    pub fn new(upstreams: usize) -> Self {
        Self {
            by_tenant: (0..=upstreams).map(|_| Streak::default()).collect(),
        }
    }

    /// The streak of `tenant`. An upstream number the plugin was not loaded
    /// with (which the host never passes) shares the unmatched one.
    pub fn of(&self, tenant: Tenant) -> &Streak {
        let last = self.by_tenant.len() - 1;
        let i = match tenant {
            Tenant::Upstream(i) => usize::try_from(i).map_or(last, |i| i.min(last)),
            Tenant::Unmatched => last,
        };
        &self.by_tenant[i]
    }

    /// The tenants suspended at `now_ms`, with the monotonic ms their
    /// suspension ends.
    pub fn suspended(&self, now_ms: u64) -> Vec<(Tenant, u64)> {
        let last = self.by_tenant.len() - 1;
        self.by_tenant
            .iter()
            .enumerate()
            .filter_map(|(i, streak)| {
                let remaining = streak.admit(now_ms).err()?;
                let tenant = if i == last {
                    Tenant::Unmatched
                } else {
                    Tenant::Upstream(u32::try_from(i).unwrap_or(u32::MAX))
                };
                Some((tenant, now_ms + remaining))
            })
            .collect()
    }
}

/// Fault history of one plugin for one tenant, shared by every worker
/// thread.
#[derive(Debug, Default)]
pub struct Streak {
    consecutive: AtomicU32,
    /// Monotonic ms until which calls are skipped (0: not suspended).
    suspended_until_ms: AtomicU64,
    /// The current suspension interval; 0 while healthy. Written only under
    /// `faults`, so two threads faulting at once cannot both double it.
    interval_ms: AtomicU64,
    faults: Mutex<()>,
}

impl Streak {
    /// `Err(remaining ms)` while suspended at monotonic time `now_ms`.
    pub fn admit(&self, now_ms: u64) -> Result<(), u64> {
        let until = self.suspended_until_ms.load(Ordering::Acquire);
        if now_ms < until {
            Err(until - now_ms)
        } else {
            Ok(())
        }
    }

    /// [`Streak::admit`] that reads the clock (`now_ms`) only when this
    /// streak was ever suspended: a healthy plugin's call, the common case,
    /// costs one atomic load and no clock read.
    pub fn admit_with(&self, now_ms: impl FnOnce() -> u64) -> Result<(), u64> {
        if self.suspended_until_ms.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        self.admit(now_ms())
    }

    /// A call succeeded: the plugin is healthy again.
    pub fn success(&self) {
        // Read first: the common case (already healthy) writes nothing, so
        // worker threads do not bounce the cache line on every call.
        if self.consecutive.load(Ordering::Relaxed) != 0 {
            self.consecutive.store(0, Ordering::Relaxed);
        }
        if self.interval_ms.load(Ordering::Relaxed) != 0 {
            let _guard = self.faults.lock().unwrap_or_else(|p| p.into_inner());
            self.interval_ms.store(0, Ordering::Relaxed);
        }
    }

    /// A call faulted at `now_ms`; returns the suspension it starts, if any.
    pub fn fault(&self, now_ms: u64, backoff: &Backoff) -> Option<Suspension> {
        let faults = self
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if faults < backoff.after.max(1) {
            return None;
        }
        let _guard = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        // Faults of calls that started before a suspension began do not
        // extend it.
        if now_ms < self.suspended_until_ms.load(Ordering::Acquire) {
            return None;
        }
        let initial = millis(backoff.initial).max(1);
        let max = millis(backoff.max).max(initial);
        let interval = match self.interval_ms.load(Ordering::Relaxed) {
            0 => initial,
            previous => previous.saturating_mul(2).min(max),
        };
        self.interval_ms.store(interval, Ordering::Relaxed);
        self.suspended_until_ms
            .store(now_ms.saturating_add(interval), Ordering::Release);
        Some(Suspension {
            faults,
            interval: Duration::from_millis(interval),
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Backoff = Backoff {
        after: 3,
        initial: Duration::from_millis(100),
        max: Duration::from_millis(350),
    };

    #[test]
    fn suspends_after_consecutive_faults_and_doubles() {
        let h = Streak::default();
        assert_eq!(h.fault(0, &B), None);
        assert_eq!(h.fault(0, &B), None);
        let s = h.fault(0, &B).unwrap();
        assert_eq!((s.faults, s.interval), (3, Duration::from_millis(100)));
        assert_eq!(h.admit(50), Err(50));
        // A fault of a call that started before the suspension: no change.
        assert_eq!(h.fault(60, &B), None);
        assert_eq!(h.admit(100), Ok(()));
        // The retry faults: twice as long, then capped.
        assert_eq!(
            h.fault(100, &B).unwrap().interval,
            Duration::from_millis(200)
        );
        assert_eq!(h.admit(299), Err(1));
        assert_eq!(
            h.fault(300, &B).unwrap().interval,
            Duration::from_millis(350)
        );
        assert_eq!(
            h.fault(650, &B).unwrap().interval,
            Duration::from_millis(350)
        );
    }

    #[test]
    fn a_success_resets_everything() {
        let h = Streak::default();
        for _ in 0..3 {
            h.fault(0, &B);
        }
        assert!(h.admit(10).is_err());
        h.success();
        // The current suspension runs out, but the next streak starts over.
        assert_eq!(h.fault(100, &B), None);
        assert_eq!(h.fault(100, &B), None);
        assert_eq!(
            h.fault(100, &B).unwrap().interval,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn interleaved_successes_never_suspend() {
        let h = Streak::default();
        for t in 0..1000 {
            assert_eq!(h.fault(t, &B), None);
            h.success();
        }
        assert_eq!(h.admit(1000), Ok(()));
    }
}

#[cfg(test)]
mod tenant_tests {
    use super::*;

    #[test]
    fn a_burst_on_one_tenant_leaves_the_others_admitted() {
        let b = Backoff {
            after: 5,
            ..Backoff::default()
        };
        let s = Streaks::new(2);
        for _ in 0..10 {
            s.of(Tenant::Upstream(1)).fault(0, &b);
        }
        assert!(s.of(Tenant::Upstream(1)).admit(10).is_err());
        assert_eq!(s.of(Tenant::Upstream(0)).admit(10), Ok(()));
        assert_eq!(s.of(Tenant::Unmatched).admit(10), Ok(()));
    }

    #[test]
    fn unknown_upstreams_share_the_unmatched_streak() {
        let s = Streaks::new(1);
        assert!(std::ptr::eq(
            s.of(Tenant::Upstream(7)),
            s.of(Tenant::Unmatched)
        ));
        assert!(!std::ptr::eq(
            s.of(Tenant::Upstream(0)),
            s.of(Tenant::Unmatched)
        ));
        let none = Streaks::new(0);
        assert!(std::ptr::eq(
            none.of(Tenant::Upstream(0)),
            none.of(Tenant::Unmatched)
        ));
    }

    #[test]
    fn suspended_tenants_are_listed_with_their_end() {
        let b = Backoff {
            after: 3,
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        let s = Streaks::new(2);
        for _ in 0..3 {
            s.of(Tenant::Upstream(1)).fault(1_000, &b);
            s.of(Tenant::Unmatched).fault(1_000, &b);
        }
        assert_eq!(
            s.suspended(1_050),
            [(Tenant::Upstream(1), 1_100), (Tenant::Unmatched, 1_100)]
        );
        assert!(s.suspended(1_100).is_empty());
    }
}
