//! Whether the storage answers, as operators see it: the
//! `bbproxy_storage_up` gauge, `bbproxy_storage_errors_total{op}`, the
//! state in `/status`, and one warning when an outage starts and one line
//! when it ends (not one per retry). ACME work that needs the storage waits
//! on [`Health::wait_up`].

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::StorageError;
use crate::telemetry::names;

/// What `/status` shows.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// `file`, `memory` or `redis`.
    pub kind: &'static str,
    /// A directory or a redacted URL.
    pub target: String,
    /// Answering now.
    pub up: bool,
    /// Since when it is in that state.
    pub since: SystemTime,
    /// The last error, if it ever failed.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct State {
    since: SystemTime,
    last_error: Option<String>,
}

/// Up/down state of one storage.
#[derive(Debug)]
pub struct Health {
    kind: &'static str,
    target: String,
    /// The config key an operator fixes when it is down.
    key: &'static str,
    up: watch::Sender<bool>,
    /// An operation has succeeded at least once since this process
    /// opened the storage.
    reached: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
}

impl Health {
    /// A storage assumed up until an operation fails.
    pub fn new(kind: &'static str, target: String, key: &'static str) -> Self {
        metrics::gauge!(names::STORAGE_UP).set(1.0);
        Self {
            kind,
            target,
            key,
            up: watch::channel(true).0,
            reached: std::sync::atomic::AtomicBool::new(false),
            state: Mutex::new(State {
                since: SystemTime::now(),
                last_error: None,
            }),
        }
    }

    /// An operation succeeded: an outage, if there was one, is over.
    pub fn ok(&self) {
        self.reached
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if *self.up.borrow() {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if self.up.send_replace(true) {
            return;
        }
        let down_for = SystemTime::now()
            .duration_since(state.since)
            .unwrap_or(Duration::ZERO);
        state.since = SystemTime::now();
        metrics::gauge!(names::STORAGE_UP).set(1.0);
        tracing::info!(
            storage = self.kind,
            target = %self.target,
            down_for = ?down_for,
            "storage reachable again; ACME work resumes"
        );
    }

    /// Operation `op` failed with `error`. An unreachable storage turns the
    /// state down (warned once); a corrupt value is only counted.
    pub fn failed(&self, op: &'static str, error: &StorageError) {
        metrics::counter!(names::STORAGE_ERRORS, "op" => op).increment(1);
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.last_error = Some(error.to_string());
        if !matches!(error, StorageError::Unavailable(_)) {
            return;
        }
        if !self.up.send_replace(false) {
            return;
        }
        state.since = SystemTime::now();
        metrics::gauge!(names::STORAGE_UP).set(0.0);
        tracing::warn!(
            storage = self.kind,
            target = %self.target,
            op,
            "storage unreachable ({}): {error}; serving the certificates in memory, ACME work waits until it is back",
            self.key
        );
    }

    /// Whether an operation has ever succeeded: until then this process
    /// cannot know what the storage holds.
    pub fn reached(&self) -> bool {
        self.reached.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Answering, as far as the last operation knows.
    pub fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// Returns once the storage is up (at once if it is).
    pub async fn wait_up(&self) {
        let mut rx = self.up.subscribe();
        let _ = rx.wait_for(|up| *up).await;
    }

    /// The state for `/status`.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        Snapshot {
            kind: self.kind,
            target: self.target.clone(),
            up: self.is_up(),
            since: state.since,
            last_error: state.last_error.clone(),
        }
    }
}
