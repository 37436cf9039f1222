//! State kept once per worker thread: backend connection pools and idle
//! plugin instances. With thread per core (see `server::workers`) a
//! connection and its requests stay on the worker that accepted it; if the
//! pools below it were shared, a backend connection opened by one worker
//! would be driven by a task on that worker while another worker's request
//! uses it (a wake-up across cores per read and write), and a plugin
//! instance's memory would move between cores' caches. One copy per worker
//! keeps all of it on one core; only counters and breaker state are shared.
//!
//! A worker thread says which worker it is once, when it starts
//! ([`enter`]); code on any other thread (the control runtime, tests) is
//! worker 0.

use std::cell::Cell;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
    static ENTERED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as worker `index`, for the rest of its life.
pub(crate) fn enter(index: usize) {
    INDEX.with(|i| i.set(index));
    ENTERED.with(|e| e.set(true));
}

/// Whether the calling thread is a worker: one runtime, its own, runs on
/// it for the rest of its life (state tied to a runtime may be kept).
pub fn is_worker() -> bool {
    ENTERED.with(Cell::get)
}

/// The worker the calling thread is (0 outside the worker threads).
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// One `T` per worker. Never empty.
#[derive(Debug)]
pub struct PerWorker<T> {
    items: Box<[T]>,
}

impl<T> PerWorker<T> {
    /// `make(i)` for each of `workers` workers (at least one).
    pub fn new(workers: usize, make: impl FnMut(usize) -> T) -> Self {
        Self {
            items: (0..workers.max(1)).map(make).collect(),
        }
    }

    /// [`PerWorker::new`] whose `make` can fail.
    pub fn try_new<E>(workers: usize, make: impl FnMut(usize) -> Result<T, E>) -> Result<Self, E> {
        Ok(Self {
            items: (0..workers.max(1)).map(make).collect::<Result<_, E>>()?,
        })
    }

    /// The calling worker's copy. A thread numbered past the end (more
    /// workers than copies) shares one by modulo: slower, never wrong.
    pub fn get(&self) -> &T {
        // The modulo only past the end: a 64-bit division costs tens of
        // cycles, and every plugin call looks its worker's pool up.
        let i = current();
        match self.items.get(i) {
            Some(item) => item,
            None => &self.items[i % self.items.len()],
        }
    }

    /// Every copy, in worker order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// How many copies there are.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Never true; for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_gets_its_own_copy() {
        let per = std::sync::Arc::new(PerWorker::new(2, |i| i * 10));
        assert_eq!(*per.get(), 0, "a thread that is no worker is worker 0");
        let seen: Vec<usize> = (0..3)
            .map(|w| {
                let per = per.clone();
                std::thread::spawn(move || {
                    enter(w);
                    *per.get()
                })
            })
            .map(|t| t.join().unwrap())
            .collect();
        assert_eq!(
            seen,
            vec![0, 10, 0],
            "worker 2 of 2 copies shares by modulo"
        );
        assert_eq!(PerWorker::new(0, |i| i).len(), 1);
    }
}
