//! The state that lives as long as the process serves: the serving
//! generation and what outlives generations (plugin runtime, backend
//! registry, certificates), plus the reloads attempted and the last failure. The start-up
//! (`app`) builds it; the admin endpoints read it and reloads replace the
//! generation inside it, so it sits below all three.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::acme::CertManager;
use crate::generation::Generation;
use crate::plugin::Runtime;
use crate::proxy::observe::Observer;
use crate::server::workers::WorkerStats;
use crate::upstream::{ConnectionCounts, Registry};

/// A reload that failed, kept for `/status` until the next good one.
#[derive(Debug, Clone)]
pub struct ReloadFailure {
    /// When it failed.
    pub at: SystemTime,
    /// Why, naming the file.
    pub message: String,
}

/// One reload attempt, for `/status` and the dashboard.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    /// When it finished.
    pub at: SystemTime,
    /// The generation it swapped in; `None` when it failed.
    pub generation: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Reload attempts kept for `/status`.
const RELOADS_KEPT: usize = 10;

/// State shared by the proxy, the admin endpoints and reloads for the life of
/// the process; generations come and go inside it.
#[derive(Debug)]
pub struct Shared {
    /// The generation serving new requests.
    pub generation: Arc<ArcSwap<Generation>>,
    /// The plugin runtime (engine, compile cache, shared plugin state).
    pub runtime: Runtime,
    /// Backend state, carried across generations.
    pub registry: Arc<Registry>,
    /// Open connections per backend address.
    pub connections: &'static ConnectionCounts,
    /// Request recording.
    pub observer: Arc<Observer>,
    /// The config file serving was started from.
    pub config_path: PathBuf,
    /// True once every listener is bound.
    pub ready: AtomicBool,
    /// The last failed reload, cleared by a good one.
    pub last_reload_error: Mutex<Option<ReloadFailure>>,
    /// Certificates (static and ACME); a reload hands it the new domains.
    pub certs: Arc<CertManager>,
    /// Reloads attempted (a changed file or a forced reload), whether or
    /// not they were swapped in; generation numbers count only those that
    /// were.
    pub reload_attempts: AtomicU64,
    /// Client connections per worker thread.
    pub workers: Arc<WorkerStats>,
    /// The last reload attempts, newest last.
    pub(crate) reloads: Mutex<VecDeque<ReloadRecord>>,
}

impl Shared {
    /// The last reload attempts, newest first.
    pub fn reloads(&self) -> Vec<ReloadRecord> {
        let reloads = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        reloads.iter().rev().cloned().collect()
    }

    /// Remembers a reload attempt (the oldest of more than
    /// [`RELOADS_KEPT`] is forgotten).
    pub fn record_reload(&self, record: ReloadRecord) {
        let mut reloads = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        if reloads.len() == RELOADS_KEPT {
            reloads.pop_front();
        }
        reloads.push_back(record);
    }
}
