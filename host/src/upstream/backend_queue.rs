//! `limits.max_connections_per_backend`: at most N requests in flight to one
//! backend; up to `backend_queue` more wait (for at most
//! `backend_queue_timeout`), the rest are refused at once with 503.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// The per-backend gate. Its numbers come from the generation that sends
/// the request, so a reload changes them for new requests.
#[derive(Debug, Default)]
pub struct BackendQueue {
    in_use: AtomicU32,
    waiting: AtomicU32,
    freed: Notify,
}

/// Why a request could not get a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The wait queue is full.
    #[error("{max} requests in flight and {queue} waiting")]
    QueueFull {
        /// The limit.
        max: u32,
        /// The queue size.
        queue: u32,
    },
    /// Waited the whole queue timeout.
    #[error("waited {0:?} for a free connection")]
    Timeout(Duration),
}

/// A slot; given back when dropped.
#[derive(Debug)]
pub struct Permit(Option<Arc<BackendQueue>>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(l) = self.0.take() {
            l.in_use.fetch_sub(1, Ordering::AcqRel);
            l.freed.notify_one();
        }
    }
}

impl BackendQueue {
    /// Requests holding a slot.
    pub fn in_use(&self) -> u32 {
        self.in_use.load(Ordering::Acquire)
    }

    /// Requests waiting for a slot.
    pub fn waiting(&self) -> u32 {
        self.waiting.load(Ordering::Acquire)
    }

    fn try_take(&self, max: u32) -> bool {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Takes a slot under `max` (0: unlimited, no slot needed), waiting in a
    /// queue of at most `queue` for at most `wait`.
    pub async fn acquire(
        self: &Arc<Self>,
        max: u32,
        queue: u32,
        wait: Duration,
    ) -> Result<Permit, Refused> {
        if max == 0 {
            return Ok(Permit(None));
        }
        if self.try_take(max) {
            return Ok(Permit(Some(self.clone())));
        }
        let queued = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < queue).then_some(n + 1)
            });
        if queued.is_err() {
            return Err(Refused::QueueFull { max, queue });
        }
        let waited = tokio::time::timeout(wait, async {
            loop {
                let freed = self.freed.notified();
                if self.try_take(max) {
                    return;
                }
                freed.await;
            }
        })
        .await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(()) => Ok(Permit(Some(self.clone()))),
            Err(_) => {
                // Pass the wake-up on: another waiter may fit.
                self.freed.notify_one();
                Err(Refused::Timeout(wait))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queue_then_refuse() {
        let l = Arc::new(BackendQueue::default());
        let wait = Duration::from_secs(5);
        let a = l.acquire(1, 1, wait).await.unwrap();
        let l2 = l.clone();
        let queued = tokio::spawn(async move { l2.acquire(1, 1, wait).await.map(|_| ()) });
        // Wait until the spawned request sits in the queue.
        while l.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            l.acquire(1, 1, wait).await.err(),
            Some(Refused::QueueFull { max: 1, queue: 1 })
        );
        drop(a);
        assert_eq!(queued.await.unwrap(), Ok(()));
        assert_eq!(l.in_use(), 0);
        let _b = l.acquire(1, 0, wait).await.unwrap();
        assert_eq!(
            l.acquire(1, 1, Duration::from_millis(10)).await.err(),
            Some(Refused::Timeout(Duration::from_millis(10)))
        );
    }
}
