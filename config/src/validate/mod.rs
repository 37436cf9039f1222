//! Walks the parsed JSON into a [`Config`]. Walking `serde_json::Value` by
//! hand, rather than deriving, lets every error carry the full key path, the
//! offending value and the accepted forms, and lets one key take the several
//! shapes the format allows (`"builtin"` or an object, a list or an object).
//!
//! This module reads the top level and hands each section to its own
//! module; all of them build on the primitives in [`walk`].

mod acme;
mod domains;
mod entry;
mod filters;
mod forwarding;
mod listen;
mod observe;
mod plugins;
mod routes;
mod storage;
mod upstreams;
mod walk;

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::Fault;
use crate::model::*;
use walk::{Dir, Fields, Kept, R, boolean, keep, object, positive_duration, set, show};

/// The top level's values, each kept by the reader of its key until the
/// sections it depends on are read.
#[derive(Default)]
struct Top<'a> {
    domains: Kept<'a>,
    upstreams: Kept<'a>,
    default_domain: Kept<'a>,
    listen: Kept<'a>,
    /// `null` included (`"admin": null` is off).
    admin: Option<&'a Value>,
    breaker_threshold: Kept<'a>,
    breaker_timeout: Kept<'a>,
    cert_cache_dir: Kept<'a>,
    cert_cache_path: Kept<'a>,
    plugins: Kept<'a>,
    acme: Kept<'a>,
    metrics: Kept<'a>,
    access_log: Kept<'a>,
    log_format: Kept<'a>,
    tracing: Kept<'a>,
    timeouts: Kept<'a>,
    limits: Kept<'a>,
    retries: Kept<'a>,
    shutdown_grace: Kept<'a>,
    storage: Kept<'a>,
}

impl<'a> Top<'a> {
    /// Checks the top level's keys and keeps their values.
    fn read(root: &'a Map<String, Value>) -> R<Self> {
        let mut top = Top::default();
        let Top {
            domains,
            upstreams,
            default_domain,
            listen,
            admin,
            breaker_threshold,
            breaker_timeout,
            cert_cache_dir,
            cert_cache_path,
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
            storage,
        } = &mut top;
        Fields::new(root, "")
            .key("domains", keep(domains))
            .key("upstreams", keep(upstreams))
            .key("default_domain", keep(default_domain))
            .key("listen", keep(listen))
            .nullable("admin", |v, _| set(admin, Ok(Some(v))))
            .key("circuit_breaker_threshold", keep(breaker_threshold))
            .key("circuit_breaker_timeout", keep(breaker_timeout))
            .key("cert_cache_dir", keep(cert_cache_dir))
            .key("cert_cache_path", keep(cert_cache_path))
            .key("plugins", keep(plugins))
            .key("acme", keep(acme))
            .key("metrics", keep(metrics))
            .key("access_log", keep(access_log))
            .key("log_format", keep(log_format))
            .key("tracing", keep(tracing))
            .key("timeouts", keep(timeouts))
            .key("limits", keep(limits))
            .key("retries", keep(retries))
            .key("shutdown_grace", keep(shutdown_grace))
            .key("storage", keep(storage))
            .read()?;
        Ok(top)
    }
}

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
    let top = Top::read(root)?;
    let (timeouts, limits, retries) = forwarding::global(&top.timeouts, &top.limits, &top.retries)?;
    let shutdown_grace = forwarding::shutdown_grace(&top.shutdown_grace)?;
    let dir = Dir::of(origin);
    // The top-level forwarding settings every domain starts from.
    let upstream = UpstreamSettings {
        timeouts: timeouts.upstream,
        limits: limits.upstream,
        retries,
        ..UpstreamSettings::default()
    };

    let mut placed = domains::domains(top.domains.as_ref().map(|(v, _)| *v), &dir, &upstream)?;
    let pools = upstreams::pools(
        top.upstreams.as_ref().map(|(v, _)| *v),
        &dir,
        &upstream,
        &placed,
    )?;
    upstreams::resolve(&mut placed, &pools)?;
    let default_domain = match &top.default_domain {
        Some((v, _)) => Some(domains::default_domain(v, &placed)?),
        None => None,
    };
    let listen = listen::listen(top.listen.as_ref().map(|(v, _)| *v))?;
    let (admin, admin_token) = listen::admin(top.admin, &listen)?;
    let breaker = breaker(&top.breaker_threshold, &top.breaker_timeout)?;
    let (cert_cache_dir, storage) = certificates(&top, &dir)?;
    let plugins = match &top.plugins {
        Some((v, _)) => plugins::plugins(v, &dir)?,
        None => Plugins::default(),
    };
    let acme = match &top.acme {
        Some((v, _)) => acme::acme(v, &dir)?,
        None => Acme::default(),
    };
    let metrics = match &top.metrics {
        Some((v, p)) => metrics(v, p)?,
        None => MetricsSettings::default(),
    };
    let (access_log, log_format, tracing) = observability(&top)?;
    domains::check_tls_needs(&placed, &listen, &acme)?;
    domains::check_balancer_kinds(&placed, &plugins)?;
    domains::check_balancer_kinds(&pools, &plugins)?;
    upstreams::check_router(&placed, &plugins)?;

    Ok(Config {
        origin: origin.to_path_buf(),
        sha256: [0; 32],
        listen,
        admin,
        admin_token,
        domains: placed.into_iter().map(|p| p.domain).collect(),
        pools: pools.into_iter().map(|p| p.domain).collect(),
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

/// Where certificates are kept: `cert_cache_dir` (or its alias) on this
/// node, or a `storage` the replicas share; never both.
fn certificates(top: &Top, dir: &Dir) -> R<(Option<PathBuf>, Option<crate::storage::Storage>)> {
    storage::conflict(&top.storage, [&top.cert_cache_dir, &top.cert_cache_path])?;
    let cert_cache_dir =
        acme::cert_cache_dir(top.cert_cache_dir.clone(), top.cert_cache_path.clone(), dir)?;
    let storage = match &top.storage {
        Some((v, _)) => Some(storage::storage(v, dir, &|name| std::env::var(name).ok())?),
        None => None,
    };
    Ok((cert_cache_dir, storage))
}

/// `access_log`, `log_format` and `tracing`.
fn observability(top: &Top) -> R<(bool, Option<LogFormat>, Option<TracingSettings>)> {
    let access_log = match &top.access_log {
        Some((v, p)) => boolean(v, p)?,
        None => true,
    };
    let log_format = match &top.log_format {
        Some((v, _)) => Some(observe::log_format(v)?),
        None => None,
    };
    let tracing = match &top.tracing {
        Some((v, _)) => Some(observe::tracing(v)?),
        None => None,
    };
    Ok((access_log, log_format, tracing))
}

/// The original's `circuit_breaker_threshold` and `circuit_breaker_timeout`.
fn breaker(threshold_given: &Kept, timeout: &Kept) -> R<BreakerSettings> {
    Ok(BreakerSettings {
        threshold: match threshold_given {
            Some((v, p)) => threshold(v, p)?,
            None => DEFAULT_BREAKER_THRESHOLD,
        },
        timeout: match timeout {
            Some((v, p)) => positive_duration(v, p)?,
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

fn metrics(v: &Value, path: &str) -> R<MetricsSettings> {
    let map = object(v, path, "{\"log_interval\": \"60s\"}")?;
    let mut metrics = MetricsSettings::default();
    let MetricsSettings { log_interval } = &mut metrics;
    Fields::new(map, path)
        .key("log_interval", |v, p| {
            set(log_interval, positive_duration(v, p))
        })
        .read()?;
    Ok(metrics)
}
