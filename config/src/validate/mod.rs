//! Walks the parsed JSON into a [`Config`]. Walking `serde_json::Value` by
//! hand, rather than deriving, lets every error carry the full key path, the
//! offending value and the accepted forms, and lets one key take the several
//! shapes the format allows (`"builtin"` or an object, a list or an object).
//!
//! This module reads the top level and hands each section to its own
//! module; all of them build on the primitives in [`walk`].

mod acme;
mod domains;
mod forwarding;
mod listen;
mod observe;
mod plugins;
mod storage;
mod walk;

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::Fault;
use crate::model::*;
use walk::{Dir, R, boolean, check_keys, object, positive_duration, present, show};

const TOP_KEYS: &[&str] = &[
    "domains",
    "default_domain",
    "listen",
    "admin",
    "circuit_breaker_threshold",
    "circuit_breaker_timeout",
    "cert_cache_dir",
    "cert_cache_path",
    "plugins",
    "acme",
    "metrics",
    "access_log",
    "log_format",
    "tracing",
    "timeouts",
    "limits",
    "retries",
    "shutdown_grace",
    "storage",
];
const METRICS_KEYS: &[&str] = &["log_interval"];

/// Turns the document into a `Config`; relative paths in it are resolved
/// against the directory of `origin`.
pub(crate) fn config(root: &Value, origin: &Path) -> R<Config> {
    let Value::Object(root) = root else {
        return Err(Fault::invalid(
            "",
            format!(
                "the top level must be a JSON object like {{\"domains\": {{...}}}}, got {}",
                show(root)
            ),
        ));
    };
    check_keys(root, "", TOP_KEYS)?;
    let (timeouts, limits, retries) = forwarding::global(root)?;
    let shutdown_grace = forwarding::shutdown_grace(root)?;
    let dir = Dir::of(origin);
    // The top-level forwarding settings every domain starts from.
    let upstream = UpstreamSettings {
        timeouts: timeouts.upstream,
        limits: limits.upstream,
        retries,
        ..UpstreamSettings::default()
    };

    let placed = domains::domains(root.get("domains"), &dir, &upstream)?;
    let default_domain = match present(root, "default_domain") {
        Some(v) => Some(domains::default_domain(v, &placed)?),
        None => None,
    };
    let listen = listen::listen(present(root, "listen"))?;
    let (admin, admin_token) = listen::admin(root.get("admin"), &listen)?;
    let breaker = breaker(root)?;
    let cert_cache_dir = acme::cert_cache_dir(root, &dir)?;
    storage::conflict(root)?;
    let storage = match present(root, "storage") {
        Some(v) => Some(storage::storage(v, &dir, &|name| std::env::var(name).ok())?),
        None => None,
    };
    let plugins = match present(root, "plugins") {
        Some(v) => plugins::plugins(v, &dir)?,
        None => Plugins::default(),
    };
    let acme = match present(root, "acme") {
        Some(v) => acme::acme(v, &dir)?,
        None => Acme::default(),
    };
    let metrics = match present(root, "metrics") {
        Some(v) => metrics(v)?,
        None => MetricsSettings::default(),
    };
    let access_log = match present(root, "access_log") {
        Some(v) => boolean(v, "access_log")?,
        None => true,
    };
    let log_format = match present(root, "log_format") {
        Some(v) => Some(observe::log_format(v)?),
        None => None,
    };
    let tracing = match present(root, "tracing") {
        Some(v) => Some(observe::tracing(v)?),
        None => None,
    };
    domains::check_tls_needs(&placed, &listen, &acme)?;
    domains::check_balancer_kinds(&placed, &plugins)?;

    Ok(Config {
        origin: origin.to_path_buf(),
        sha256: [0; 32],
        listen,
        admin,
        admin_token,
        domains: placed.into_iter().map(|p| p.domain).collect(),
        default_domain,
        breaker,
        cert_cache_dir,
        storage,
        plugins,
        acme,
        metrics,
        access_log,
        log_format,
        tracing,
        timeouts,
        limits,
        retries,
        shutdown_grace,
    })
}

/// The original's `circuit_breaker_threshold` and `circuit_breaker_timeout`.
fn breaker(root: &Map<String, Value>) -> R<BreakerSettings> {
    Ok(BreakerSettings {
        threshold: match present(root, "circuit_breaker_threshold") {
            Some(v) => threshold(v, "circuit_breaker_threshold")?,
            None => DEFAULT_BREAKER_THRESHOLD,
        },
        timeout: match present(root, "circuit_breaker_timeout") {
            Some(v) => positive_duration(v, "circuit_breaker_timeout")?,
            None => DEFAULT_BREAKER_TIMEOUT,
        },
    })
}

fn threshold(v: &Value, path: &str) -> R<u32> {
    v.as_u64()
        .filter(|t| *t >= 1)
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "expected a whole number of failures, at least 1, got {}",
                    show(v)
                ),
            )
        })
}

fn metrics(v: &Value) -> R<MetricsSettings> {
    let map = object(v, "metrics", "{\"log_interval\": \"60s\"}")?;
    check_keys(map, "metrics", METRICS_KEYS)?;
    Ok(MetricsSettings {
        log_interval: match present(map, "log_interval") {
            Some(v) => positive_duration(v, "metrics.log_interval")?,
            None => DEFAULT_METRICS_INTERVAL,
        },
    })
}
