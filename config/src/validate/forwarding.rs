//! The forwarding settings: timeouts, limits, retries, health checks, the
//! backend protocol and pool knobs. The client header timeout, header limits
//! and connection cap exist only at the top level because they apply before
//! a request is routed; keep-alive and the client write timeout are the
//! connection's values until a request is routed and can be overridden per
//! domain for what follows its requests. Everything about an upstream can be
//! set at the top level as a default and per domain.

use std::time::Duration;

use serde_json::{Map, Value};

use super::walk::{
    R, check_keys, count, duration, join, object, positive_duration, present, show, size,
};
use crate::error::Fault;
use crate::model::*;

const TIMEOUT_KEYS: &[&str] = &[
    "client_header",
    "client_body",
    "keep_alive",
    "client_write",
    "upstream_connect",
    "upstream_response_headers",
    "upstream_idle",
];
const DOMAIN_TIMEOUT_KEYS: &[&str] = &[
    "client_body",
    "keep_alive",
    "client_write",
    "upstream_connect",
    "upstream_response_headers",
    "upstream_idle",
];
const LIMIT_KEYS: &[&str] = &[
    "max_header_bytes",
    "max_headers",
    "max_uri_length",
    "max_body_size",
    "max_connections",
    "max_connections_per_backend",
    "backend_queue",
    "backend_queue_timeout",
];
const DOMAIN_LIMIT_KEYS: &[&str] = &[
    "max_body_size",
    "max_connections_per_backend",
    "backend_queue",
    "backend_queue_timeout",
];
const RETRY_KEYS: &[&str] = &["attempts", "budget_percent", "budget_min"];
const HEALTH_KEYS: &[&str] = &[
    "path",
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
];
const POOL_KEYS: &[&str] = &["max_idle", "idle_timeout"];

/// hyper cannot buffer a request head in less than this.
const MIN_HEADER_BYTES: u64 = 8192;
const MAX_RETRY_ATTEMPTS: u64 = 10;

/// The top-level `timeouts`, `limits` and `retries` objects; the upstream
/// parts become every domain's defaults.
pub(crate) fn global(root: &Map<String, Value>) -> R<(Timeouts, Limits, Retries)> {
    let mut t = Timeouts::default();
    if let Some(v) = present(root, "timeouts") {
        let map = object(v, "timeouts", "{\"client_header\": \"10s\"}")?;
        check_keys(map, "timeouts", TIMEOUT_KEYS)?;
        set_duration(map, "timeouts", "client_header", &mut t.client_header)?;
        set_duration(map, "timeouts", "keep_alive", &mut t.keep_alive)?;
        set_duration(map, "timeouts", "client_write", &mut t.client_write)?;
        upstream_timeouts(map, "timeouts", &mut t.upstream)?;
    }
    t.upstream.keep_alive = t.keep_alive;
    t.upstream.client_write = t.client_write;
    let mut l = Limits::default();
    if let Some(v) = present(root, "limits") {
        let map = object(v, "limits", "{\"max_body_size\": \"10MiB\"}")?;
        check_keys(map, "limits", LIMIT_KEYS)?;
        if let Some(v) = present(map, "max_header_bytes") {
            let path = "limits.max_header_bytes";
            l.max_header_bytes = size(v, path)?;
            if l.max_header_bytes < MIN_HEADER_BYTES {
                return Err(Fault::invalid(
                    path,
                    format!("{} is too small: at least 8KiB (8192 bytes)", show(v)),
                ));
            }
        }
        if let Some(v) = present(map, "max_headers") {
            l.max_headers = count(v, "limits.max_headers", 1)?;
        }
        if let Some(v) = present(map, "max_uri_length") {
            l.max_uri_length = size(v, "limits.max_uri_length")?.max(1);
        }
        if let Some(v) = present(map, "max_connections") {
            l.max_connections = count(v, "limits.max_connections", 1)?;
        }
        upstream_limits(map, "limits", &mut l.upstream)?;
    }
    let mut r = Retries::default();
    if let Some(v) = present(root, "retries") {
        r = retries(v, "retries", r)?;
    }
    Ok((t, l, r))
}

/// A domain's settings: the top-level defaults with its own overrides.
pub(crate) fn domain(
    map: &Map<String, Value>,
    path: &str,
    defaults: &UpstreamSettings,
) -> R<UpstreamSettings> {
    let mut s = defaults.clone();
    if let Some(v) = present(map, "timeouts") {
        let p = join(path, "timeouts");
        let m = object(v, &p, "{\"upstream_connect\": \"2s\"}")?;
        if m.contains_key("client_header") {
            return Err(Fault::invalid(
                join(&p, "client_header"),
                "only a top-level setting (timeouts.client_header): no domain is known before a request head has been read",
            ));
        }
        check_keys(m, &p, DOMAIN_TIMEOUT_KEYS)?;
        upstream_timeouts(m, &p, &mut s.timeouts)?;
        set_duration(m, &p, "keep_alive", &mut s.timeouts.keep_alive)?;
        set_duration(m, &p, "client_write", &mut s.timeouts.client_write)?;
    }
    if let Some(v) = present(map, "limits") {
        let p = join(path, "limits");
        let m = object(v, &p, "{\"max_body_size\": \"1MiB\"}")?;
        check_keys(m, &p, DOMAIN_LIMIT_KEYS)?;
        upstream_limits(m, &p, &mut s.limits)?;
    }
    if let Some(v) = present(map, "retries") {
        s.retries = retries(v, &join(path, "retries"), s.retries)?;
    }
    if let Some(v) = present(map, "health_check") {
        s.health_check = Some(health_check(v, &join(path, "health_check"))?);
    }
    if let Some(v) = present(map, "protocol") {
        s.protocol = protocol(v, &join(path, "protocol"))?;
    }
    if let Some(v) = present(map, "pool") {
        let p = join(path, "pool");
        let m = object(v, &p, "{\"max_idle\": 32, \"idle_timeout\": \"90s\"}")?;
        check_keys(m, &p, POOL_KEYS)?;
        if let Some(v) = present(m, "max_idle") {
            s.pool.max_idle = count(v, &join(&p, "max_idle"), 0)?;
        }
        set_duration(m, &p, "idle_timeout", &mut s.pool.idle_timeout)?;
    }
    Ok(s)
}

fn upstream_timeouts(map: &Map<String, Value>, path: &str, t: &mut UpstreamTimeouts) -> R<()> {
    set_duration(map, path, "client_body", &mut t.client_body)?;
    set_duration(map, path, "upstream_connect", &mut t.connect)?;
    set_duration(
        map,
        path,
        "upstream_response_headers",
        &mut t.response_headers,
    )?;
    set_duration(map, path, "upstream_idle", &mut t.idle)
}

fn upstream_limits(map: &Map<String, Value>, path: &str, l: &mut UpstreamLimits) -> R<()> {
    if let Some(v) = present(map, "max_body_size") {
        l.max_body_size = size(v, &join(path, "max_body_size"))?;
    }
    if let Some(v) = present(map, "max_connections_per_backend") {
        l.max_connections_per_backend = count(v, &join(path, "max_connections_per_backend"), 0)?;
    }
    if let Some(v) = present(map, "backend_queue") {
        l.backend_queue = count(v, &join(path, "backend_queue"), 0)?;
    }
    set_duration(
        map,
        path,
        "backend_queue_timeout",
        &mut l.backend_queue_timeout,
    )
}

fn retries(v: &Value, path: &str, mut r: Retries) -> R<Retries> {
    let map = object(v, path, "{\"attempts\": 2}")?;
    check_keys(map, path, RETRY_KEYS)?;
    if let Some(v) = present(map, "attempts") {
        let p = join(path, "attempts");
        r.attempts = count(v, &p, 1)?;
        if u64::from(r.attempts) > MAX_RETRY_ATTEMPTS {
            return Err(Fault::invalid(
                p,
                format!("{} is too many: at most 10 attempts per request", show(v)),
            ));
        }
    }
    if let Some(v) = present(map, "budget_percent") {
        let p = join(path, "budget_percent");
        r.budget_percent = count(v, &p, 0)?;
        if r.budget_percent > 100 {
            return Err(Fault::invalid(
                p,
                format!("expected a percentage from 0 to 100, got {}", show(v)),
            ));
        }
    }
    if let Some(v) = present(map, "budget_min") {
        r.budget_min = count(v, &join(path, "budget_min"), 0)?;
    }
    Ok(r)
}

fn health_check(v: &Value, path: &str) -> R<HealthCheck> {
    let map = object(v, path, "{\"path\": \"/healthz\", \"interval\": \"5s\"}")?;
    check_keys(map, path, HEALTH_KEYS)?;
    let mut h = HealthCheck::default();
    if let Some(v) = present(map, "path") {
        match v.as_str() {
            Some(p) if p.starts_with('/') && !p.contains(char::is_whitespace) => {
                h.path = p.to_owned();
            }
            _ => {
                return Err(Fault::invalid(
                    join(path, "path"),
                    format!(
                        "expected an absolute request path like \"/healthz\", got {}",
                        show(v)
                    ),
                ));
            }
        }
    }
    if let Some(v) = present(map, "interval") {
        h.interval = positive_duration(v, &join(path, "interval"))?;
    }
    if let Some(v) = present(map, "timeout") {
        h.timeout = positive_duration(v, &join(path, "timeout"))?;
    }
    if let Some(v) = present(map, "healthy_threshold") {
        h.healthy_threshold = count(v, &join(path, "healthy_threshold"), 1)?;
    }
    if let Some(v) = present(map, "unhealthy_threshold") {
        h.unhealthy_threshold = count(v, &join(path, "unhealthy_threshold"), 1)?;
    }
    Ok(h)
}

fn protocol(v: &Value, path: &str) -> R<UpstreamProtocol> {
    match v.as_str() {
        Some("http1") => Ok(UpstreamProtocol::Http1),
        Some("h2c") => Ok(UpstreamProtocol::H2c),
        Some("h2") => Ok(UpstreamProtocol::H2),
        _ => Err(Fault::invalid(
            path,
            format!("expected \"http1\", \"h2c\" or \"h2\", got {}", show(v)),
        )),
    }
}

/// `h2c` is HTTP/2 over plain TCP and `h2` is HTTP/2 over TLS: a backend
/// whose scheme says otherwise would fail on every request, so it is a
/// config error naming the backend.
pub(crate) fn check_protocol(
    protocol: UpstreamProtocol,
    backends: &[Backend],
    path: &str,
) -> R<()> {
    let wrong = |scheme: Scheme| backends.iter().find(|b| b.scheme == scheme);
    match protocol {
        UpstreamProtocol::Http1 => Ok(()),
        UpstreamProtocol::H2c => match wrong(Scheme::Https) {
            Some(b) => Err(Fault::invalid(
                join(path, "protocol"),
                format!(
                    "\"h2c\" is HTTP/2 over plain TCP, but backend {b} uses TLS; use \"h2\" for HTTP/2 over TLS"
                ),
            )),
            None => Ok(()),
        },
        UpstreamProtocol::H2 => match wrong(Scheme::Http) {
            Some(b) => Err(Fault::invalid(
                join(path, "protocol"),
                format!(
                    "\"h2\" is HTTP/2 over TLS (ALPN), but backend {b} is plain HTTP; write it as https://{}, or use \"h2c\" for HTTP/2 over plain TCP",
                    b.authority()
                ),
            )),
            None => Ok(()),
        },
    }
}

fn set_duration(map: &Map<String, Value>, path: &str, key: &str, out: &mut Duration) -> R<()> {
    if let Some(v) = present(map, key) {
        *out = duration(v, &join(path, key))?;
    }
    Ok(())
}

/// The top-level `shutdown_grace`.
pub(crate) fn shutdown_grace(root: &Map<String, Value>) -> R<Duration> {
    match present(root, "shutdown_grace") {
        Some(v) => duration(v, "shutdown_grace"),
        None => Ok(DEFAULT_SHUTDOWN_GRACE),
    }
}
