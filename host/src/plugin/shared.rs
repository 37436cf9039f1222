//! State that plugins share across instances, worker threads and reloads:
//! named atomic counters and a small key-value store (WIT `host.counter`,
//! `host.kv-*`). Plugin instances are disposable, so anything a policy must
//! remember lives here.

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, RwLock};

/// Largest key the key-value store accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest value the key-value store accepts, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most keys the key-value store holds.
pub const MAX_KEYS: usize = 10_000;

/// Counters and key-value pairs shared by every plugin of the process.
#[derive(Debug, Default)]
pub struct SharedState {
    counters: RwLock<HashMap<String, Arc<AtomicI64>>>,
    kv: RwLock<HashMap<String, String>>,
}

impl SharedState {
    /// The counter called `name`, created at 0 on first use. Plugins open a
    /// counter once and keep the handle, so the map is off the per-call path.
    pub fn counter(&self, name: &str) -> Arc<AtomicI64> {
        // A poisoned lock only means another thread panicked mid-insert of an
        // Arc; the map itself is still consistent, so keep serving.
        if let Some(c) = self
            .counters
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return c.clone();
        }
        self.counters
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Reads `key`.
    pub fn kv_get(&self, key: &str) -> Option<String> {
        self.kv
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    /// Writes `key`; false when a size or count limit refuses it.
    pub fn kv_set(&self, key: String, value: String) -> bool {
        if key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            return false;
        }
        let mut kv = self.kv.write().unwrap_or_else(|p| p.into_inner());
        if kv.len() >= MAX_KEYS && !kv.contains_key(&key) {
            return false;
        }
        kv.insert(key, value);
        true
    }

    /// Removes `key`; whether it existed.
    pub fn kv_delete(&self, key: &str) -> bool {
        self.kv
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn counters_are_shared_by_name() {
        let s = SharedState::default();
        s.counter("a").fetch_add(3, Ordering::Relaxed);
        assert_eq!(s.counter("a").load(Ordering::Relaxed), 3);
        assert_eq!(s.counter("b").load(Ordering::Relaxed), 0);
    }

    #[test]
    fn kv_enforces_limits() {
        let s = SharedState::default();
        assert!(s.kv_set("k".into(), "v".into()));
        assert_eq!(s.kv_get("k").as_deref(), Some("v"));
        assert!(!s.kv_set("x".repeat(MAX_KEY_BYTES + 1), String::new()));
        assert!(!s.kv_set("big".into(), "v".repeat(MAX_VALUE_BYTES + 1)));
        assert!(s.kv_delete("k"));
        assert!(!s.kv_delete("k"));
        for i in 0..MAX_KEYS {
            assert!(s.kv_set(format!("k{i}"), String::new()));
        }
        assert!(!s.kv_set("one-too-many".into(), String::new()));
        // Overwriting an existing key is still allowed at the cap.
        assert!(s.kv_set("k0".into(), "new".into()));
    }
}
