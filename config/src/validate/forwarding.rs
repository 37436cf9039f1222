//! The forwarding settings: timeouts, limits, retries, health checks, the
//! backend protocol and pool knobs. The client header timeout, header limits
//! and connection cap exist only at the top level because they apply before
//! a request is routed; keep-alive and the client write timeout are the
//! connection's values until a request is routed and can be overridden per
//! domain for what follows its requests. Everything about an upstream can be
//! set at the top level as a default and per domain.

use std::time::Duration;

use serde_json::Value;

use super::walk::{
    Fields, Kept, R, count, duration, join, object, positive_duration, set, show, size,
};
use crate::error::Fault;
use crate::model::*;

/// hyper cannot buffer a request head in less than this.
const MIN_HEADER_BYTES: u64 = 8192;
const MAX_RETRY_ATTEMPTS: u64 = 10;

/// The top-level `timeouts`, `limits` and `retries` objects; the upstream
/// parts become every domain's defaults.
pub(crate) fn global(
    timeouts: &Kept,
    limits: &Kept,
    retries_given: &Kept,
) -> R<(Timeouts, Limits, Retries)> {
    let mut t = Timeouts::default();
    if let Some((v, path)) = timeouts {
        let map = object(v, path, "{\"client_header\": \"10s\"}")?;
        let Timeouts {
            client_header,
            keep_alive,
            client_write,
            upstream,
        } = &mut t;
        let fields = Fields::new(map, path)
            .key("client_header", |v, p| set(client_header, duration(v, p)))
            .key("keep_alive", |v, p| set(keep_alive, duration(v, p)))
            .key("client_write", |v, p| set(client_write, duration(v, p)));
        upstream_timeouts(fields, exchange(upstream)).read()?;
    }
    t.upstream.keep_alive = t.keep_alive;
    t.upstream.client_write = t.client_write;
    let mut l = Limits::default();
    if let Some((v, path)) = limits {
        let map = object(v, path, "{\"max_body_size\": \"10MiB\"}")?;
        let Limits {
            max_header_bytes,
            max_headers,
            max_uri_length,
            max_connections,
            upstream,
        } = &mut l;
        let fields = Fields::new(map, path)
            .key("max_header_bytes", |v, p| {
                set(max_header_bytes, header_bytes(v, p))
            })
            .key("max_headers", |v, p| set(max_headers, count(v, p, 1)))
            .key("max_uri_length", |v, p| {
                set(max_uri_length, size(v, p).map(|n| n.max(1)))
            })
            .key("max_connections", |v, p| {
                set(max_connections, count(v, p, 1))
            });
        upstream_limits(fields, upstream).read()?;
    }
    let mut r = Retries::default();
    if let Some((v, path)) = retries_given {
        r = retries(v, path, r)?;
    }
    Ok((t, l, r))
}

fn header_bytes(v: &Value, path: &str) -> R<u64> {
    let n = size(v, path)?;
    if n < MIN_HEADER_BYTES {
        return Err(Fault::invalid(
            path,
            format!("{} is too small: at least 8KiB (8192 bytes)", show(v)),
        ));
    }
    Ok(n)
}

/// `fields` with a domain's forwarding keys, which override the
/// top-level defaults already in `s`.
pub(crate) fn domain_keys<'a, 'f>(
    fields: Fields<'a, 'f>,
    s: &'f mut UpstreamSettings,
) -> Fields<'a, 'f> {
    let UpstreamSettings {
        timeouts,
        limits,
        retries: tries,
        health_check: check,
        protocol: wire,
        pool,
    } = s;
    fields
        .key("timeouts", |v, p| domain_timeouts(v, p, timeouts))
        .key("limits", |v, p| {
            let m = object(v, p, "{\"max_body_size\": \"1MiB\"}")?;
            upstream_limits(Fields::new(m, p), limits).read()
        })
        .key("retries", |v, p| set(tries, retries(v, p, *tries)))
        .key("health_check", |v, p| {
            set(check, health_check(v, p).map(Some))
        })
        .key("protocol", |v, p| set(wire, protocol(v, p)))
        .key("pool", |v, p| {
            let m = object(v, p, "{\"max_idle\": 32, \"idle_timeout\": \"90s\"}")?;
            let PoolSettings {
                max_idle,
                idle_timeout,
            } = pool;
            Fields::new(m, p)
                .key("max_idle", |v, p| set(max_idle, count(v, p, 0)))
                .key("idle_timeout", |v, p| set(idle_timeout, duration(v, p)))
                .read()
        })
}

/// A domain's `timeouts`: the upstream ones, keep-alive and client write.
pub(crate) fn domain_timeouts(v: &Value, path: &str, t: &mut UpstreamTimeouts) -> R<()> {
    let m = object(v, path, "{\"upstream_connect\": \"2s\"}")?;
    if m.contains_key("client_header") {
        return Err(Fault::invalid(
            join(path, "client_header"),
            "only a top-level setting (timeouts.client_header): no domain is known before a request head has been read",
        ));
    }
    let UpstreamTimeouts {
        client_body,
        connect,
        response_headers,
        idle,
        keep_alive,
        client_write,
    } = t;
    let exchange = ExchangeTimeouts {
        client_body,
        connect,
        response_headers,
        idle,
    };
    upstream_timeouts(Fields::new(m, path), exchange)
        .key("keep_alive", |v, p| set(keep_alive, duration(v, p)))
        .key("client_write", |v, p| set(client_write, duration(v, p)))
        .read()
}

/// The timeouts of an upstream exchange (not keep-alive and client write,
/// which the two places that read these handle apart).
struct ExchangeTimeouts<'f> {
    client_body: &'f mut Duration,
    connect: &'f mut Duration,
    response_headers: &'f mut Duration,
    idle: &'f mut Duration,
}

fn exchange(t: &mut UpstreamTimeouts) -> ExchangeTimeouts<'_> {
    ExchangeTimeouts {
        client_body: &mut t.client_body,
        connect: &mut t.connect,
        response_headers: &mut t.response_headers,
        idle: &mut t.idle,
    }
}

fn upstream_timeouts<'a, 'f>(fields: Fields<'a, 'f>, t: ExchangeTimeouts<'f>) -> Fields<'a, 'f> {
    let ExchangeTimeouts {
        client_body,
        connect,
        response_headers,
        idle,
    } = t;
    fields
        .key("client_body", |v, p| set(client_body, duration(v, p)))
        .key("upstream_connect", |v, p| set(connect, duration(v, p)))
        .key("upstream_response_headers", |v, p| {
            set(response_headers, duration(v, p))
        })
        .key("upstream_idle", |v, p| set(idle, duration(v, p)))
}

fn upstream_limits<'a, 'f>(fields: Fields<'a, 'f>, l: &'f mut UpstreamLimits) -> Fields<'a, 'f> {
    let UpstreamLimits {
        max_body_size,
        max_connections_per_backend,
        backend_queue,
        backend_queue_timeout,
    } = l;
    fields
        .key("max_body_size", |v, p| set(max_body_size, size(v, p)))
        .key("max_connections_per_backend", |v, p| {
            set(max_connections_per_backend, count(v, p, 0))
        })
        .key("backend_queue", |v, p| set(backend_queue, count(v, p, 0)))
        .key("backend_queue_timeout", |v, p| {
            set(backend_queue_timeout, duration(v, p))
        })
}

pub(crate) fn retries(v: &Value, path: &str, mut r: Retries) -> R<Retries> {
    let map = object(v, path, "{\"attempts\": 2}")?;
    let Retries {
        attempts,
        budget_percent,
        budget_min,
    } = &mut r;
    Fields::new(map, path)
        .key("attempts", |v, p| {
            let n = count(v, p, 1)?;
            if u64::from(n) > MAX_RETRY_ATTEMPTS {
                return Err(Fault::invalid(
                    p,
                    format!("{} is too many: at most 10 attempts per request", show(v)),
                ));
            }
            set(attempts, Ok(n))
        })
        .key("budget_percent", |v, p| {
            let n = count(v, p, 0)?;
            if n > 100 {
                return Err(Fault::invalid(
                    p,
                    format!("expected a percentage from 0 to 100, got {}", show(v)),
                ));
            }
            set(budget_percent, Ok(n))
        })
        .key("budget_min", |v, p| set(budget_min, count(v, p, 0)))
        .read()?;
    Ok(r)
}

fn health_check(v: &Value, path: &str) -> R<HealthCheck> {
    let map = object(v, path, "{\"path\": \"/healthz\", \"interval\": \"5s\"}")?;
    let mut h = HealthCheck::default();
    let HealthCheck {
        path: request_path,
        interval,
        timeout,
        healthy_threshold,
        unhealthy_threshold,
    } = &mut h;
    Fields::new(map, path)
        .key("path", |v, p| match v.as_str() {
            Some(s) if s.starts_with('/') && !s.contains(char::is_whitespace) => {
                set(request_path, Ok(s.to_owned()))
            }
            _ => Err(Fault::invalid(
                p,
                format!(
                    "expected an absolute request path like \"/healthz\", got {}",
                    show(v)
                ),
            )),
        })
        .key("interval", |v, p| set(interval, positive_duration(v, p)))
        .key("timeout", |v, p| set(timeout, positive_duration(v, p)))
        .key("healthy_threshold", |v, p| {
            set(healthy_threshold, count(v, p, 1))
        })
        .key("unhealthy_threshold", |v, p| {
            set(unhealthy_threshold, count(v, p, 1))
        })
        .read()?;
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

/// The top-level `shutdown_grace`.
pub(crate) fn shutdown_grace(given: &Kept) -> R<Duration> {
    match given {
        Some((v, path)) => duration(v, path),
        None => Ok(DEFAULT_SHUTDOWN_GRACE),
    }
}

#[cfg(test)]
mod tests;
