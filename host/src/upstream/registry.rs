//! Keeps backend state alive across generations: a reload asks the registry
//! for each configured backend and gets the existing state when the same
//! backend (same upstream, same address) was configured before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::BackendState;
use super::pool::{PoolKey, UpstreamClients};
use crate::per_worker::PerWorker;
use crate::tls::TlsError;

/// Backend states by `(upstream, base URL)`, and connection pools by
/// profile, each pool in one copy per worker thread.
#[derive(Debug)]
pub struct Registry {
    backends: Mutex<HashMap<BackendKey, Arc<BackendState>>>,
    pools: Mutex<HashMap<PoolKey, UpstreamClients>>,
    workers: usize,
}

impl Default for Registry {
    /// A registry for one worker.
    fn default() -> Self {
        Self::new(1)
    }
}

type BackendKey = (String, String);

/// What a new generation would make of the registry: its backend states and
/// pools, reusing the registry's where they match. Nothing is committed until
/// [`Registry::commit`], so a reload that fails later (a plugin, a
/// certificate) leaves the registry exactly as the serving generation needs
/// it.
#[derive(Debug, Default)]
pub struct Staged {
    backends: HashMap<BackendKey, Arc<BackendState>>,
    pools: HashMap<PoolKey, UpstreamClients>,
}

impl Registry {
    /// A registry whose pools have one copy for each of `workers` worker
    /// threads (see [`crate::per_worker`]).
    pub fn new(workers: usize) -> Self {
        Self {
            backends: Mutex::default(),
            pools: Mutex::default(),
            workers,
        }
    }

    /// The states for a new generation's backends, reusing existing ones,
    /// recorded in `staged`. `backends` lists `(upstream, authority, base
    /// URL)`.
    pub fn resolve(
        &self,
        backends: &[(String, String, String)],
        staged: &mut Staged,
    ) -> Vec<Arc<BackendState>> {
        let map = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        backends
            .iter()
            .map(|(upstream, authority, base)| {
                let key = (upstream.clone(), base.clone());
                let state = staged
                    .backends
                    .get(&key)
                    .or_else(|| map.get(&key))
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(
                            BackendState::new(authority.clone(), base.clone())
                                .counting_transitions(upstream),
                        )
                    });
                staged.backends.insert(key, state.clone());
                state
            })
            .collect()
    }

    /// The pools for a new generation's upstreams, reusing existing ones
    /// with the same profile, recorded in `staged`. Fails when a new pool's
    /// `backend_ca` is unusable.
    pub fn pools(
        &self,
        keys: &[PoolKey],
        staged: &mut Staged,
    ) -> Result<Vec<UpstreamClients>, TlsError> {
        let map = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let client = match staged.pools.get(key).or_else(|| map.get(key)) {
                Some(c) => c.clone(),
                None => Arc::new(PerWorker::try_new(self.workers, |_| key.build())?),
            };
            staged.pools.insert(key.clone(), client.clone());
            out.push(client);
        }
        Ok(out)
    }

    /// Makes `staged` the registry: called when its generation is swapped
    /// in. Backends and pools it does not have are forgotten (a dropped
    /// pool's connections close once requests in flight on them finish).
    pub fn commit(&self, staged: &Staged) {
        *self.backends.lock().unwrap_or_else(|p| p.into_inner()) = staged.backends.clone();
        *self.pools.lock().unwrap_or_else(|p| p.into_inner()) = staged.pools.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(u: &str, a: &str) -> (String, String, String) {
        (u.into(), a.into(), format!("http://{a}"))
    }

    fn resolve(r: &Registry, backends: &[(String, String, String)]) -> Vec<Arc<BackendState>> {
        let mut staged = Staged::default();
        let out = r.resolve(backends, &mut staged);
        r.commit(&staged);
        out
    }

    #[test]
    fn unchanged_backends_keep_their_state() {
        let r = Registry::default();
        let first = resolve(&r, &[b("x", "a:1"), b("x", "b:1")]);
        let _g = first[0].start();
        let second = resolve(&r, &[b("x", "a:1"), b("x", "c:1")]);
        assert!(Arc::ptr_eq(&first[0], &second[0]));
        assert_eq!(second[0].in_flight(), 1);
        assert!(!Arc::ptr_eq(&first[1], &second[1]));
        // The same address under another upstream is another backend.
        let third = resolve(&r, &[b("y", "a:1")]);
        assert!(!Arc::ptr_eq(&first[0], &third[0]));
    }

    #[test]
    fn nothing_changes_until_commit() {
        let r = Registry::default();
        let first = resolve(&r, &[b("x", "a:1")]);
        // A staged generation without `a:1` that is never committed (its
        // reload failed later) does not make the registry forget `a:1`.
        let mut staged = Staged::default();
        let other = r.resolve(&[b("x", "c:1")], &mut staged);
        drop(staged);
        let again = resolve(&r, &[b("x", "a:1"), b("x", "c:1")]);
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        assert!(!Arc::ptr_eq(&other[0], &again[1]));
    }
}
