//! The `/status` document: what is loaded (generation, plugins,
//! certificates, the last reloads) and how every backend is doing (breaker,
//! health, drain, load, rates, latency and the last minutes of activity).
//! The dashboard renders exactly this.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::generation::{BackendSlot, Generation, Slot, Source, UpstreamSlot};
use crate::plugin::{BreakerState, Plugin, World};
use crate::state::Shared;
use crate::telemetry::activity::{LATENCY_WINDOW_S, RATE_WINDOW_S, SECONDS};

/// Seconds per point of the sparklines: 36 points over three minutes.
const SPARK_STEP_S: u64 = 5;

/// Unix seconds, as JSON numbers with millisecond precision.
pub(super) fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0)
}

/// Converts the process's monotonic milliseconds to wall-clock times.
struct Clock {
    wall: SystemTime,
    mono_ms: u64,
}

impl Clock {
    fn now() -> Self {
        Self {
            wall: SystemTime::now(),
            mono_ms: crate::clock::monotonic_ms(),
        }
    }

    fn unix_of(&self, mono_ms: u64) -> f64 {
        let ago = Duration::from_millis(self.mono_ms.saturating_sub(mono_ms));
        unix(self.wall.checked_sub(ago).unwrap_or(UNIX_EPOCH))
    }
}

fn plugin<W: World>(slot: &Slot<W>, loaded_at: SystemTime, clock: &Clock) -> Value {
    let source = match &slot.source {
        Source::Builtin => "builtin".to_owned(),
        Source::File(p) => p.display().to_string(),
    };
    let fallback = slot.fallback.as_ref().map(|_| "builtin");
    component(&slot.primary, source, fallback, loaded_at, clock)
}

/// One loaded component: `source` is where it came from, `fallback` what
/// answers when it faults and fails open.
fn component<W: World>(
    p: &Plugin<W>,
    source: String,
    fallback: Option<&str>,
    loaded_at: SystemTime,
    clock: &Clock,
) -> Value {
    let by_kind: Map<String, Value> = p
        .faults_by_kind()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| (kind.to_owned(), Value::from(n)))
        .collect();
    json!({
        "role": W::ROLE,
        "source": source,
        "name": p.name(),
        "sha256": p.sha256(),
        "contract": format!("bbproxy:plugin@{}", p.contract()),
        "loaded_at": unix(loaded_at),
        "calls": p.calls(),
        "faults": p.faults(),
        "faults_by_kind": by_kind,
        // Suspension is per tenant (the domain a call was for).
        "suspended": p
            .suspensions(clock.mono_ms)
            .into_iter()
            .map(|(tenant, until)| json!({ "tenant": tenant, "until": clock.unix_of(until) }))
            .collect::<Vec<_>>(),
        "suspended_calls": p.suspended_calls(),
        "fallback": fallback,
    })
}

fn backend(shared: &Shared, up: &UpstreamSlot, i: usize, b: &BackendSlot, clock: &Clock) -> Value {
    let state = &b.state;
    let breaker = state.breaker.state(clock.mono_ms);
    let s = state.snapshot(i as u32, b.weight, breaker);
    let activity = state.activity.summary(clock.mono_ms, SPARK_STEP_S);
    let ms = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3);
    let health = if up.settings.health_check.is_none() {
        "unchecked"
    } else if state.health.is_healthy() {
        "healthy"
    } else {
        "unhealthy"
    };
    json!({
        "address": state.authority,
        "weight": b.weight,
        "breaker": super::scrape::breaker_label(breaker),
        // Since the last transition; a backend that never changed has been
        // closed since the process first configured it.
        "breaker_since": state.breaker.changed_at_ms().map(|t| clock.unix_of(t)),
        "last_failure": state.last_failure().map(|f| json!({
            "at": clock.unix_of(f.at_ms),
            "reason": f.reason(),
        })),
        "health": health,
        "drained": state.is_drained(),
        "in_flight": s.in_flight,
        "consecutive_failures": s.consecutive_failures,
        "consecutive_successes": s.consecutive_successes,
        "latency_ewma_us": s.latency_ewma_us,
        "requests": s.requests,
        "connections_open": shared.connections.open(&state.authority),
        "rps": activity.rps,
        "error_rate": activity.error_rate,
        "p50_ms": ms(activity.p50),
        "p99_ms": ms(activity.p99),
        "spark_requests": activity.requests,
        "spark_errors": activity.errors,
    })
}

fn certificates(shared: &Shared) -> Vec<Value> {
    shared
        .certs
        .certificates()
        .into_iter()
        .map(|c| {
            json!({
                "name": c.name,
                "source": if c.acme { "acme" } else { "file" },
                "issuer": c.issuer,
                "not_after": c.not_after.map(unix),
                "renewal_at": c.renewal_at.map(unix),
                "last_error": c.last_error.map(|(at, error)| json!({
                    "at": unix(at),
                    "error": error,
                })),
            })
        })
        .collect()
}

/// The certificate storage (`cert_cache_dir` files, memory or Redis) and
/// whether it answers; `null` before any ACME name.
fn storage(shared: &Shared) -> Value {
    shared.certs.storage().map_or(Value::Null, |s| {
        json!({
            "kind": s.kind,
            "target": s.target,
            "state": if s.up { "up" } else { "down" },
            "since": unix(s.since),
            "last_error": s.last_error,
        })
    })
}

/// One domain of `/status`: its backends and its own plugins (none when
/// it uses `plugins.<role>`).
fn domain(shared: &Shared, g: &Generation, u: &UpstreamSlot, clock: &Clock) -> Value {
    let backends: Vec<Value> = u
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| backend(shared, u, i, b, clock))
        .collect();
    let own = &u.plugins;
    let plugins: Vec<Value> = own
        .router
        .iter()
        .map(|s| plugin(s, g.loaded_at, clock))
        .chain(own.balancer.iter().map(|s| plugin(s, g.loaded_at, clock)))
        .chain(own.breaker.iter().map(|s| plugin(s, g.loaded_at, clock)))
        .collect();
    json!({
        "name": u.name,
        "health_check": u.settings.health_check.is_some(),
        "backends": backends,
        "plugins": plugins,
    })
}

/// The last reload attempts, newest first.
fn reloads(shared: &Shared) -> Value {
    shared
        .reloads()
        .into_iter()
        .map(|r| {
            json!({
                "at": unix(r.at),
                "result": if r.error.is_none() { "ok" } else { "error" },
                "generation": r.generation,
                "error": r.error,
            })
        })
        .collect()
}

/// The `/status` document.
pub fn status(shared: &Shared) -> Value {
    let g: Arc<Generation> = shared.generation.load_full();
    let clock = Clock::now();
    let domains: Vec<Value> = g
        .upstreams
        .iter()
        .map(|u| domain(shared, &g, u, &clock))
        .collect();
    let last_error = shared
        .last_reload_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let open = g
        .upstreams
        .iter()
        .flat_map(|u| &u.backends)
        .filter(|b| b.state.breaker.state(clock.mono_ms) != BreakerState::Closed)
        .count();
    let plugins: Vec<Value> = [
        plugin(&g.router, g.loaded_at, &clock),
        plugin(&g.balancer, g.loaded_at, &clock),
        plugin(&g.breaker, g.loaded_at, &clock),
    ]
    .into_iter()
    // Filter components, each once (chains share their prefixes);
    // fail-open skips a filter, so none has a fallback.
    .chain(
        g.filter_components()
            .map(|f| component(&**f, f.name().to_owned(), None, g.loaded_at, &clock)),
    )
    .collect();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "generation": g.id,
        "config_sha256": g.digest,
        "config": shared.config_path.display().to_string(),
        "loaded_at": unix(g.loaded_at),
        "now": unix(clock.wall),
        "ready": shared.ready.load(Ordering::Acquire),
        "admin_actions": g.config.admin_token.is_some(),
        "activity": {
            "rate_window_s": RATE_WINDOW_S,
            "latency_window_s": LATENCY_WINDOW_S,
            "spark_step_s": SPARK_STEP_S,
            "spark_span_s": SECONDS,
        },
        "breakers_not_closed": open,
        "plugins": plugins,
        "domains": domains,
        "storage": storage(shared),
        "certificates": certificates(shared),
        "reload_attempts": shared.reload_attempts.load(Ordering::Relaxed),
        "reloads": reloads(shared),
        "workers": shared
            .workers
            .snapshot()
            .into_iter()
            .map(|(accepted, open)| json!({ "connections_accepted": accepted, "connections_open": open }))
            .collect::<Vec<_>>(),
        "last_reload_error": last_error.map(|e| json!({ "at": unix(e.at), "error": e.message })),
        "tracing": tracing(shared),
        "plugin_cache": shared.runtime.disk_cache().map(|c| json!({
            "dir": c.dir.display().to_string(),
            "hits": c.hits,
            "misses": c.misses,
        })),
    })
}

/// `null` with tracing off; else where spans go and how many went. The
/// URL carries no credentials: config validation refuses userinfo and a
/// query in it (a collector's token goes in `OTEL_EXPORTER_OTLP_HEADERS`,
/// which is never shown).
fn tracing(shared: &Shared) -> Value {
    let Some(t) = shared.observer.tracing() else {
        return Value::Null;
    };
    let c = t.counts();
    json!({
        "otlp_traces_url": t.traces_url(),
        "sample_ratio": t.sample_ratio(),
        "queue_size": t.queue_size(),
        "spans_ended": c.ended,
        "spans_exported": c.exported,
        "spans_failed": c.failed,
        "failed_exports": c.failed_exports,
        "spans_dropped": c.dropped,
    })
}
