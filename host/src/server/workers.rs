//! Thread per core: n single-threaded async runtimes, each on a thread of
//! its own, each accepting on its own `SO_REUSEPORT` socket of every
//! listener (see [`super::bind_workers`]), so a connection lives on the
//! worker that accepted it: its requests, its backend connections (pooled
//! per worker) and its plugin calls (on instances kept per worker) run
//! there, and no task moves between threads (see [`crate::per_worker`]).
//! Only shared state crosses cores: the generation, backend and breaker
//! state, counters, metrics, the drain.
//!
//! The control plane (admin endpoints, reloads, ACME, health checks, the
//! summary log) stays on the runtime that started the proxy.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How many ready tasks a worker runs before it polls for I/O (and timers)
/// again, when its run queue stays full; tokio's default is 61. Under load
/// the request path's tasks requeue themselves before they write (see
/// `crate::turn`), so a round of 61 cut the writes of one batch of
/// requests in two and woke the peers on the other CPUs more often: with
/// 128, 4-5 % less CPU per request under the h1 and HTTP/2 loads, the same
/// with 64 KiB bodies and HTTPS (256 and 192: no better; 31: 4 % worse;
/// bench/README.md, 2026-12-07). An I/O event waits at most 128 task polls,
/// some hundreds of microseconds under full load (nginx handles up to 512
/// events per epoll_wait).
const EVENT_INTERVAL: u32 = 128;

/// The worker threads of one proxy; they stop when this is dropped, and
/// what still runs on them is cancelled.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
    stats: Arc<WorkerStats>,
}

#[derive(Debug)]
struct Worker {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads, each with a current-thread
    /// runtime.
    pub fn start(n: usize) -> io::Result<Self> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (stop, stopped) = oneshot::channel::<()>();
            let (started, handle) = std::sync::mpsc::sync_channel(1);
            // The runtime is built, run and dropped on its own thread: a
            // runtime must not be dropped inside another one's task.
            std::thread::Builder::new()
                .name(format!("bbproxy-worker-{i}"))
                .spawn(move || {
                    crate::per_worker::enter(i);
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .event_interval(EVENT_INTERVAL)
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = started.send(Err(e));
                            return;
                        }
                    };
                    let _ = started.send(Ok(runtime.handle().clone()));
                    // Runs the worker's tasks until told to stop (or until
                    // `Workers` is gone); dropping the runtime then cancels
                    // whatever is left.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let handle = handle.recv().map_err(|_| {
                io::Error::other("a worker thread ended before its runtime started")
            })??;
            workers.push(Worker {
                handle,
                stop: Some(stop),
            });
        }
        let stats = WorkerStats::new(workers.len());
        Ok(Self { workers, stats })
    }

    /// Their connection counts.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are none (never, once started).
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs `make(seat)` on each worker, `seat` naming the worker; the
    /// handles finish when the futures do.
    pub fn spawn_each<F, Fut>(&self, mut make: F) -> Vec<JoinHandle<()>>
    where
        F: FnMut(Seat) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers
            .iter()
            .enumerate()
            .map(|(index, w)| {
                w.handle.spawn(make(Seat {
                    stats: self.stats.clone(),
                    index,
                }))
            })
            .collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if let Some(stop) = w.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

/// Accepted and open client connections per worker, for `/status` (an
/// operator sees whether the kernel spreads connections evenly).
#[derive(Debug)]
pub struct WorkerStats {
    accepted: Box<[AtomicU64]>,
    open: Box<[AtomicU64]>,
}

impl WorkerStats {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            accepted: (0..n).map(|_| AtomicU64::new(0)).collect(),
            open: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// `(accepted, open)` for each worker, in order.
    pub fn snapshot(&self) -> Vec<(u64, u64)> {
        self.accepted
            .iter()
            .zip(self.open.iter())
            .map(|(a, o)| (a.load(Ordering::Relaxed), o.load(Ordering::Relaxed)))
            .collect()
    }
}

/// One worker's place in its [`WorkerStats`], handed to its listeners.
#[derive(Debug, Clone)]
pub struct Seat {
    stats: Arc<WorkerStats>,
    index: usize,
}

impl Seat {
    /// The seat of a listener served outside any [`Workers`] (the only
    /// one of its own stats).
    pub fn alone() -> Self {
        Self {
            stats: WorkerStats::new(1),
            index: 0,
        }
    }

    /// The worker's number.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Counts a connection accepted on this worker; open until the guard
    /// is dropped.
    pub fn accepted(&self) -> OpenConnection {
        if let Some(a) = self.stats.accepted.get(self.index) {
            a.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(o) = self.stats.open.get(self.index) {
            o.fetch_add(1, Ordering::Relaxed);
        }
        OpenConnection(self.clone())
    }
}

/// A client connection open on a worker.
#[derive(Debug)]
pub struct OpenConnection(Seat);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(o) = self.0.stats.open.get(self.0.index) {
            o.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The number of workers for this process: one per CPU it may run on (the
/// affinity mask and cgroup quota count).
pub fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_worker_runs_on_its_own_thread_until_dropped() {
        let workers = Workers::start(2).unwrap();
        let names: Vec<_> = workers
            .spawn_each(|seat| async move {
                assert_eq!(
                    std::thread::current().name(),
                    Some(format!("bbproxy-worker-{}", seat.index()).as_str())
                );
                let _open = seat.accepted();
            })
            .into_iter()
            .collect();
        for h in names {
            h.await.unwrap();
        }
        assert_eq!(workers.stats().snapshot(), vec![(1, 0), (1, 0)]);
        let forever = workers.spawn_each(|_| std::future::pending::<()>());
        drop(workers);
        for h in forever {
            assert!(h.await.unwrap_err().is_cancelled());
        }
    }

    /// A worker polls for I/O only after `EVENT_INTERVAL` ready tasks:
    /// 100 tasks that requeue themselves once all run twice before a
    /// socket that became readable meanwhile is noticed (with tokio's
    /// default of 61, the reader came in after some 60 of them).
    #[tokio::test]
    async fn a_worker_runs_more_than_a_hundred_ready_tasks_between_io_polls() {
        use std::sync::Mutex;
        use tokio::io::AsyncReadExt;
        const TASKS: usize = 100;
        let workers = Workers::start(1).unwrap();
        let (done, order) = oneshot::channel();
        let mut done = Some(done);
        let driver = workers.spawn_each(move |_| {
            let done = done.take().unwrap();
            async move {
                let log = Arc::new(Mutex::new(Vec::new()));
                let (mut reader, writer) = tokio::net::UnixStream::pair().unwrap();
                let reader_log = log.clone();
                tokio::spawn(async move {
                    let mut b = [0u8; 1];
                    reader.read_exact(&mut b).await.unwrap();
                    reader_log.lock().unwrap().push("readable");
                    let _ = done.send(reader_log.lock().unwrap().clone());
                });
                // The reader registers its interest and waits.
                crate::turn::rest_of_round().await;
                writer.try_write(b"x").unwrap();
                for _ in 0..TASKS {
                    let log = log.clone();
                    tokio::spawn(async move {
                        crate::turn::rest_of_round().await;
                        log.lock().unwrap().push("requeued");
                    });
                }
                // The writer stays open with this future, until the test
                // drops the workers.
                std::future::pending::<()>().await;
            }
        });
        let order = order.await.unwrap();
        let before = order.iter().take_while(|&&e| e == "requeued").count();
        assert_eq!(before, TASKS, "{order:?}");
        drop(driver);
    }
}
