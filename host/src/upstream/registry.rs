//! Keeps backend state alive across generations: a reload asks the registry
//! for each configured backend and gets the existing state when the same
//! backend (same upstream, same address) was configured before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::BackendState;
use super::pool::{PoolKey, UpstreamClient};
use crate::tls::TlsError;

/// Backend states by `(upstream, base URL)`, and connection pools by
/// profile.
#[derive(Debug, Default)]
pub struct Registry {
    backends: Mutex<HashMap<(String, String), Arc<BackendState>>>,
    pools: Mutex<HashMap<PoolKey, UpstreamClient>>,
}

impl Registry {
    /// Returns the states for a new generation's backends, reusing existing
    /// ones, and forgets backends the new generation no longer has.
    /// `backends` lists `(upstream, authority, base URL)`.
    pub fn resolve(&self, backends: &[(String, String, String)]) -> Vec<Arc<BackendState>> {
        let mut map = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::with_capacity(backends.len());
        let out = backends
            .iter()
            .map(|(upstream, authority, base)| {
                let key = (upstream.clone(), base.clone());
                let state = map.get(&key).cloned().unwrap_or_else(|| {
                    Arc::new(
                        BackendState::new(authority.clone(), base.clone())
                            .counting_transitions(upstream),
                    )
                });
                next.insert(key, state.clone());
                state
            })
            .collect();
        *map = next;
        out
    }

    /// The pools for a new generation's upstreams, reusing existing ones
    /// with the same profile; pools no upstream uses any more are dropped
    /// (their connections close once requests in flight on them finish).
    /// Fails, changing nothing, when a new pool's `backend_ca` is unusable.
    pub fn pools(&self, keys: &[PoolKey]) -> Result<Vec<UpstreamClient>, TlsError> {
        let mut map = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::with_capacity(keys.len());
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let client = match map.get(key) {
                Some(c) => c.clone(),
                None => key.build()?,
            };
            next.insert(key.clone(), client.clone());
            out.push(client);
        }
        *map = next;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(u: &str, a: &str) -> (String, String, String) {
        (u.into(), a.into(), format!("http://{a}"))
    }

    #[test]
    fn unchanged_backends_keep_their_state() {
        let r = Registry::default();
        let first = r.resolve(&[b("x", "a:1"), b("x", "b:1")]);
        let _g = first[0].start();
        let second = r.resolve(&[b("x", "a:1"), b("x", "c:1")]);
        assert!(Arc::ptr_eq(&first[0], &second[0]));
        assert_eq!(second[0].in_flight(), 1);
        assert!(!Arc::ptr_eq(&first[1], &second[1]));
        // The same address under another upstream is another backend.
        let third = r.resolve(&[b("y", "a:1")]);
        assert!(!Arc::ptr_eq(&first[0], &third[0]));
    }
}
