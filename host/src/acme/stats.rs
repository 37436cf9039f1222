//! What the ACME side did, for `/status` and the metrics: orders counted,
//! renewal times, the last error per name.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::telemetry::names;

/// Counters, also exported as `bbproxy_acme_orders_total{result}`, and
/// the renewal schedule (`bbproxy_cert_renewal_timestamp_seconds`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Orders that produced a certificate.
    pub orders_ok: AtomicU64,
    /// Orders that failed.
    pub orders_failed: AtomicU64,
    renewals: Mutex<HashMap<String, SystemTime>>,
    /// The last ACME or storage error per name, cleared by a certificate.
    errors: Mutex<HashMap<String, (SystemTime, String)>>,
}

impl Stats {
    pub(super) fn record(&self, ok: bool) {
        let (counter, result) = if ok {
            (&self.orders_ok, "ok")
        } else {
            (&self.orders_failed, "error")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(names::ACME_ORDERS, "result" => result).increment(1);
    }

    /// Orders that produced a certificate so far.
    pub fn ok(&self) -> u64 {
        self.orders_ok.load(Ordering::Relaxed)
    }

    /// Orders that failed so far.
    pub fn failed(&self) -> u64 {
        self.orders_failed.load(Ordering::Relaxed)
    }

    /// When the certificate of `name` is next due for renewal, once its
    /// task has decided.
    pub fn renewal_at(&self, name: &str) -> Option<SystemTime> {
        let renewals = self.renewals.lock().unwrap_or_else(PoisonError::into_inner);
        renewals.get(name).copied()
    }

    /// The last error of `name` and when it happened, until a certificate
    /// is installed for it.
    pub fn last_error(&self, name: &str) -> Option<(SystemTime, String)> {
        let errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.get(name).cloned()
    }

    pub(super) fn error(&self, name: &str, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.insert(name.to_owned(), (SystemTime::now(), message));
    }

    pub(super) fn clear_error(&self, name: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(PoisonError::into_inner);
        errors.remove(name);
    }

    pub(super) fn schedule(&self, name: &str, at: SystemTime) {
        let mut renewals = self.renewals.lock().unwrap_or_else(PoisonError::into_inner);
        renewals.insert(name.to_owned(), at);
        metrics::gauge!(names::CERT_RENEWAL, "domain" => name.to_owned())
            .set(super::unix_seconds(at));
    }
}

/// One certificate as `/status` shows it.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The name it is served for (`*.example.com` for a wildcard).
    pub name: String,
    /// Ordered through ACME (else a file of the config).
    pub acme: bool,
    /// The leaf's issuer; `None` while an ACME name has no certificate yet.
    pub issuer: Option<String>,
    /// notAfter of the leaf.
    pub not_after: Option<SystemTime>,
    /// When an ACME certificate is due for renewal.
    pub renewal_at: Option<SystemTime>,
    /// The last failed ACME order or storage error for the name (when and
    /// why), until a certificate is installed for it.
    pub last_error: Option<(SystemTime, String)>,
}
