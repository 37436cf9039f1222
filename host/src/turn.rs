//! Waiting for the rest of a worker's scheduler round: the request path
//! writes to sockets once the worker's other ready tasks have run, so the
//! writes of one round go out back to back and a peer asleep on another CPU
//! is woken once for them (bench/README.md, 2026-12-05 and 2026-12-07).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Resolves once the tasks that were ready when it was first polled have
/// run. Its task wakes itself and returns `Pending` once: a worker's
/// current-thread runtime puts it at the back of its run queue, behind
/// them, and comes back to it before it polls for I/O again (it does that
/// once its queue is empty, or every `server::workers::EVENT_INTERVAL`
/// tasks on a worker; tokio's default of 61 elsewhere).
///
/// `tokio::task::yield_now` waits longer: its task is woken only after the
/// worker's next I/O poll, behind every task that poll readies. The writes
/// then waited for the next round's reads, and the other CPU (wrk and the
/// backend under the bench) went idle meanwhile: 3 % more CPU per HTTP/1.1
/// request, 5-6 % under HTTP/2 and 64 KiB bodies than with this.
pub fn rest_of_round() -> RestOfRound {
    RestOfRound { requeued: false }
}

/// The future of [`rest_of_round`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct RestOfRound {
    requeued: bool,
}

impl Future for RestOfRound {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.requeued {
            return Poll::Ready(());
        }
        self.requeued = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::AsyncReadExt;

    use super::rest_of_round;

    /// On a current-thread runtime, a task waiting on `rest_of_round` runs
    /// again after the tasks ready before it and before a socket that has
    /// become readable meanwhile is noticed; `yield_now`'s task runs after.
    #[test]
    fn resumes_after_the_ready_tasks_and_before_the_next_io_poll() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let order = rt.block_on(async {
            let order = Arc::new(Mutex::new(Vec::new()));
            let (mut reader, writer) = tokio::net::UnixStream::pair().unwrap();
            let log = order.clone();
            let read = tokio::spawn(async move {
                let mut b = [0u8; 1];
                reader.read_exact(&mut b).await.unwrap();
                log.lock().unwrap().push("readable");
            });
            // The reader registers its interest and waits.
            tokio::task::yield_now().await;
            writer.try_write(b"x").unwrap();
            let log = order.clone();
            let waiting = tokio::spawn(async move {
                log.lock().unwrap().push("before");
                rest_of_round().await;
                log.lock().unwrap().push("after");
            });
            let log = order.clone();
            let other = tokio::spawn(async move { log.lock().unwrap().push("other") });
            waiting.await.unwrap();
            other.await.unwrap();
            read.await.unwrap();
            order.lock().unwrap().clone()
        });
        assert_eq!(order, ["before", "other", "after", "readable"]);
    }
}
