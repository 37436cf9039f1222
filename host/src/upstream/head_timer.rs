//! The timer an exchange's response head is awaited under. A new tokio
//! `Sleep` per exchange clones the runtime's handle, takes the timer
//! wheel's lock at its first poll to be registered and again when it is
//! dropped to be removed (0.12 µs of a 11 µs HTTP/1.1 request here,
//! bench/README.md). A worker thread keeps the sleeps of its finished
//! exchanges instead, still registered, and hands them to the next ones:
//! a sleep registered for an earlier deadline than the exchange's is kept
//! as it is and moved on to the exchange's own only if it fires first, so
//! under a steady load an exchange's timer touches neither the wheel nor
//! the handle. It is polled (its waker set) once per exchange: the
//! request's task polls the exchange again before the response comes (it
//! waits for the rest of the scheduler's round before writing), and the
//! sleep, registered with the same waker, is not polled again then.
//!
//! Only on a worker thread, whose one runtime lives as long as the thread:
//! a sleep polled under another runtime than its own panics, and other
//! threads (the control runtime, tests) may run several runtimes in turn.
//! A kept sleep holds the waker of the exchange that last polled it until
//! it is polled again or fires (a finished task's memory, for at most the
//! response timeout), so at most `MAX_SPARES` are kept.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

/// The most sleeps a worker keeps: more than the exchanges one worker
/// has in flight at once under the bench's loads (64 connections).
const MAX_SPARES: usize = 256;

thread_local! {
    static SPARES: RefCell<Vec<Pin<Box<Sleep>>>> = const { RefCell::new(Vec::new()) };
}

/// A timer for one exchange; its sleep goes back to the worker's spares
/// when it is dropped.
pub struct HeadTimer {
    /// Taken out only when the timer is dropped.
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the sleep may be kept: taken on a worker thread.
    keep: bool,
    /// The waker the sleep was last polled with (its data and vtable, as
    /// `Waker::will_wake` compares them): while it is the caller's and the
    /// sleep has neither fired nor needs moving, a poll is not repeated
    /// (the sleep wakes that waker when it fires).
    waiting: Option<(usize, usize)>,
}

impl HeadTimer {
    /// A timer that has not fired; `deadline` is a hint for a new sleep
    /// (a kept one is moved by [`poll_until`](Self::poll_until)).
    pub fn new(deadline: Instant) -> Self {
        let keep = crate::per_worker::is_worker();
        let spare = if keep {
            SPARES.with_borrow_mut(Vec::pop)
        } else {
            None
        };
        let sleep = spare.unwrap_or_else(|| Box::pin(tokio::time::sleep_until(deadline)));
        Self {
            sleep: Some(sleep),
            keep,
            waiting: None,
        }
    }

    /// Ready once `deadline` has passed (to the timer's millisecond). The
    /// deadline may move from one poll to the next, either way.
    pub fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let Some(sleep) = self.sleep.as_mut() else {
            return Poll::Pending;
        };
        let waker = cx.waker();
        let by = (waker.data() as usize, waker.vtable() as *const _ as usize);
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        } else if self.waiting == Some(by) && !sleep.is_elapsed() {
            return Poll::Pending;
        }
        self.waiting = None;
        loop {
            // Out of tokio's task budget, a poll returns `Pending` without
            // registering the waker: not a wait to skip polls on.
            let budgeted = tokio::task::coop::has_budget_remaining();
            if sleep.as_mut().poll(cx).is_pending() {
                if budgeted {
                    self.waiting = Some(by);
                }
                return Poll::Pending;
            }
            // It fired at its own deadline, which may be an earlier one
            // (a kept sleep's, or this exchange's before it moved on).
            if sleep.deadline() >= deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

impl Drop for HeadTimer {
    fn drop(&mut self) {
        let Some(sleep) = self.sleep.take().filter(|_| self.keep) else {
            return;
        };
        // Not kept while the thread's locals are being torn down.
        let _ = SPARES.try_with(|spares| {
            if let Ok(mut spares) = spares.try_borrow_mut()
                && spares.len() < MAX_SPARES
            {
                spares.push(sleep);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use super::*;

    fn spares() -> usize {
        SPARES.with_borrow(Vec::len)
    }

    /// Runs `test` on a thread of its own with a current-thread runtime,
    /// marked as a worker when `worker` says so.
    fn on_thread(worker: bool, test: impl Future<Output = ()> + Send + 'static) {
        std::thread::spawn(move || {
            if worker {
                crate::per_worker::enter(0);
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(test);
        })
        .join()
        .unwrap();
    }

    /// A kept sleep still registered for an earlier exchange's deadline
    /// fires first; the next exchange's timer waits on to its own.
    #[test]
    fn a_kept_sleep_fires_at_the_next_exchanges_deadline_not_its_own() {
        on_thread(true, async {
            let start = Instant::now();
            let mut first = HeadTimer::new(start + Duration::from_millis(20));
            let polled =
                poll_fn(|cx| Poll::Ready(first.poll_until(start + Duration::from_millis(20), cx)))
                    .await;
            assert!(polled.is_pending());
            let kept = first.sleep.as_ref().map(|s| &**s as *const Sleep as usize);
            drop(first);
            assert_eq!(spares(), 1, "the worker kept no sleep");
            let deadline = start + Duration::from_millis(200);
            let mut next = HeadTimer::new(deadline);
            assert_eq!(spares(), 0);
            assert_eq!(
                next.sleep.as_ref().map(|s| &**s as *const Sleep as usize),
                kept,
                "the next exchange did not get the kept sleep"
            );
            poll_fn(|cx| next.poll_until(deadline, cx)).await;
            assert!(
                Instant::now() >= deadline,
                "fired {:?} early",
                deadline - Instant::now()
            );
        });
    }

    /// A kept sleep registered for a later deadline (a longer timeout's)
    /// is moved back to the exchange's.
    #[test]
    fn a_kept_sleep_with_a_later_deadline_is_moved_back() {
        on_thread(true, async {
            let start = Instant::now();
            let late = start + Duration::from_secs(60);
            let mut first = HeadTimer::new(late);
            let polled = poll_fn(|cx| Poll::Ready(first.poll_until(late, cx))).await;
            assert!(polled.is_pending());
            drop(first);
            let deadline = start + Duration::from_millis(30);
            let mut next = HeadTimer::new(deadline);
            tokio::time::timeout(
                Duration::from_secs(10),
                poll_fn(|cx| next.poll_until(deadline, cx)),
            )
            .await
            .expect("the timer waited for the kept sleep's deadline");
            assert!(Instant::now() >= deadline);
        });
    }

    /// Off a worker thread (several runtimes may run on one in turn),
    /// nothing is kept.
    #[test]
    fn other_threads_keep_no_sleep() {
        on_thread(false, async {
            let deadline = Instant::now() + Duration::from_millis(10);
            let mut timer = HeadTimer::new(deadline);
            poll_fn(|cx| timer.poll_until(deadline, cx)).await;
            drop(timer);
            assert_eq!(spares(), 0);
        });
    }

    /// A waker that tells when it is woken.
    struct Flag(tokio::sync::Notify);

    impl std::task::Wake for Flag {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.notify_one();
        }
    }

    /// A poll with another waker than the last one's registers it: the
    /// sleep wakes the waker that polled it last.
    #[test]
    fn a_poll_with_another_waker_moves_the_wake_up_to_it() {
        on_thread(false, async {
            let deadline = Instant::now() + Duration::from_millis(30);
            let mut timer = HeadTimer::new(deadline);
            let first = std::sync::Arc::new(Flag(tokio::sync::Notify::new()));
            let second = std::sync::Arc::new(Flag(tokio::sync::Notify::new()));
            for flag in [&first, &second] {
                let waker = std::task::Waker::from(flag.clone());
                let polled = timer.poll_until(deadline, &mut Context::from_waker(&waker));
                assert!(polled.is_pending());
            }
            tokio::time::timeout(Duration::from_secs(10), second.0.notified())
                .await
                .expect("the waker that polled last was not woken");
        });
    }

    /// A poll that tokio's task budget turned away registered nothing: the
    /// next one polls the sleep again instead of trusting it.
    #[test]
    fn a_poll_out_of_budget_is_not_trusted_to_have_registered() {
        on_thread(false, async {
            let deadline = Instant::now() + Duration::from_millis(30);
            let mut timer = HeadTimer::new(deadline);
            while tokio::task::coop::has_budget_remaining() {
                tokio::task::coop::consume_budget().await;
            }
            let polled = poll_fn(|cx| Poll::Ready(timer.poll_until(deadline, cx))).await;
            assert!(polled.is_pending());
            tokio::time::timeout(
                Duration::from_secs(10),
                poll_fn(|cx| timer.poll_until(deadline, cx)),
            )
            .await
            .expect("the timer never fired");
        });
    }
}
