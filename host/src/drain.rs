//! Graceful drain: counts open client connections and upgraded tunnels, tells
//! them when to finish, and lets shutdown wait until they have — within a
//! grace period, after which they are told to stop at once. hyper-util's
//! `GracefulShutdown` only knows plain `auto::Connection`s; upgraded
//! connections leave hyper entirely, so the proxy keeps this count itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Serving.
    Running,
    /// Finish what is in flight, accept nothing new, close idle keep-alives.
    Draining,
    /// The grace period is over: close everything now.
    Abort,
}

/// The shared drain state of one proxy (all listeners).
#[derive(Debug)]
pub struct Drain {
    connections: AtomicUsize,
    tunnels: AtomicUsize,
    idle: Notify,
    phase: watch::Sender<Phase>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            connections: AtomicUsize::new(0),
            tunnels: AtomicUsize::new(0),
            idle: Notify::new(),
            phase: watch::channel(Phase::Running).0,
        }
    }
}

/// What a guard counts.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Connection,
    Tunnel,
}

/// Counts one connection or tunnel while alive.
#[derive(Debug)]
pub struct Guard {
    drain: Arc<Drain>,
    kind: Kind,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let counter = self.drain.counter(self.kind);
        counter.fetch_sub(1, Ordering::AcqRel);
        if self.drain.open() == 0 {
            self.drain.idle.notify_waiters();
        }
    }
}

impl Drain {
    fn counter(&self, kind: Kind) -> &AtomicUsize {
        match kind {
            Kind::Connection => &self.connections,
            Kind::Tunnel => &self.tunnels,
        }
    }

    /// Registers a client connection unless `max` are already open: the
    /// caller refuses it then.
    pub fn try_connection(self: &Arc<Self>, max: usize) -> Option<Guard> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(Guard {
            drain: self.clone(),
            kind: Kind::Connection,
        })
    }

    /// Registers an upgraded tunnel (WebSocket and the like).
    pub fn tunnel(self: &Arc<Self>) -> Guard {
        self.tunnels.fetch_add(1, Ordering::AcqRel);
        Guard {
            drain: self.clone(),
            kind: Kind::Tunnel,
        }
    }

    /// Open client connections.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Open tunnels.
    pub fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::Acquire)
    }

    fn open(&self) -> usize {
        self.connections() + self.tunnels()
    }

    /// Follows the phase.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Starts draining, waits up to `grace` for every connection and tunnel
    /// to end, then aborts the rest. Returns how many were still open (to
    /// the caller that aborted them; 0 to the others).
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.phase.send_if_modified(|p| {
            let changed = *p == Phase::Running;
            if changed {
                *p = Phase::Draining;
            }
            changed
        });
        let drained = async {
            loop {
                let notified = self.idle.notified();
                if self.open() == 0 {
                    return;
                }
                notified.await;
            }
        };
        if tokio::time::timeout(grace, drained).await.is_ok() {
            return 0;
        }
        let left = self.open();
        // Every listener of the proxy waits here; the one that ends the
        // grace period reports what was left, so it is logged once.
        let aborted = self.phase.send_if_modified(|p| {
            let changed = *p != Phase::Abort;
            *p = Phase::Abort;
            changed
        });
        if aborted { left } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_is_enforced() {
        let d = Arc::new(Drain::default());
        let a = d.try_connection(2);
        let b = d.try_connection(2);
        assert!(a.is_some() && b.is_some());
        assert!(d.try_connection(2).is_none());
        drop(a);
        assert!(d.try_connection(2).is_some());
    }

    #[tokio::test]
    async fn shutdown_waits_for_guards_then_aborts() {
        let d = Arc::new(Drain::default());
        let g = d.tunnel();
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.shutdown(Duration::from_secs(5)).await });
        let mut phase = d.subscribe();
        phase.wait_for(|p| *p == Phase::Draining).await.unwrap();
        drop(g);
        assert_eq!(waiter.await.unwrap(), 0);

        let d = Arc::new(Drain::default());
        let _held = d.try_connection(1);
        assert_eq!(d.shutdown(Duration::from_millis(20)).await, 1);
        assert_eq!(d.phase(), Phase::Abort);
    }
}
