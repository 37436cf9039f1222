//! Polling a connection's rare events (its timer, the drain phase) only
//! after they fired. The driver's task wakes for every read and write of
//! its connection, four times a request, and a `select!` polls every
//! branch at each wake: the timer re-registered its waker and the drain
//! watch took its channel's lock each time, for events that come once in
//! thousands of wakes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Lets a future be polled only when its own waker fired since its last
/// poll, or when the gate was opened (a new future, a timer reset).
pub(super) struct Gate {
    flag: Arc<Flag>,
    /// The waker the gated future is polled with: it sets the flag and
    /// wakes the task.
    waker: Waker,
    /// The task's waker as the flag holds it, compared without the lock.
    task: Option<Waker>,
}

struct Flag {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

impl Gate {
    /// A gate whose first poll polls the future.
    pub(super) fn new() -> Self {
        let flag = Arc::new(Flag {
            fired: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            waker: Waker::from(flag.clone()),
            flag,
            task: None,
        }
    }

    /// The next poll polls the future: it is a new one, or it must
    /// register again.
    pub(super) fn open(&self) {
        self.flag.fired.store(true, Ordering::Release);
    }

    /// Polls `fut` if it fired since its last poll (or the gate was
    /// opened); otherwise it is still pending.
    pub(super) fn poll<F: Future + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        fut: Pin<&mut F>,
    ) -> Poll<F::Output> {
        if !self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            let task = cx.waker().clone();
            *self.flag.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.clone());
            self.task = Some(task);
        }
        // Cleared before the poll: a wake during or after it sets it again.
        // A load first: nearly every wake finds it unset, and a swap is a
        // locked instruction on each of them.
        if !self.flag.fired.load(Ordering::Acquire)
            || !self.flag.fired.swap(false, Ordering::AcqRel)
        {
            return Poll::Pending;
        }
        fut.poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// A future that counts its polls and is ready once `ready` is set,
    /// waking whoever polled it last when it is set.
    struct Counted {
        polls: Arc<AtomicUsize>,
        ready: Arc<Mutex<(bool, Option<Waker>)>>,
    }

    impl Future for Counted {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            let mut r = self.ready.lock().unwrap();
            if r.0 {
                return Poll::Ready(());
            }
            r.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn polls_only_after_a_wake_or_an_opening() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(Mutex::new((false, None::<Waker>)));
        let mut fut = std::pin::pin!(Counted {
            polls: polls.clone(),
            ready: ready.clone(),
        });
        let mut gate = Gate::new();
        let mut task_cx = Context::from_waker(Waker::noop());
        // The first poll goes through; later ones do not until it fires.
        for _ in 0..5 {
            assert!(gate.poll(&mut task_cx, fut.as_mut()).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        gate.open();
        assert!(gate.poll(&mut task_cx, fut.as_mut()).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);

        // Fired from another thread: the task is woken and the next poll
        // sees it ready.
        let setter = ready.clone();
        let fire = std::thread::spawn(move || {
            let waker = {
                let mut r = setter.lock().unwrap();
                r.0 = true;
                r.1.take()
            };
            waker.unwrap().wake();
        });
        let waited = tokio::time::timeout(
            Duration::from_secs(5),
            poll_fn(|cx| gate.poll(cx, fut.as_mut())),
        )
        .await;
        fire.join().unwrap();
        assert!(waited.is_ok(), "the wake reached the task");
        assert_eq!(
            polls.load(Ordering::SeqCst),
            3,
            "polled once more, on the wake"
        );
    }
}
