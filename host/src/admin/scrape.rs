//! `/metrics`: the recorder's text plus the gauges written from live state
//! at each scrape (breakers, drained backends, pools), which must follow the
//! backends of the serving generation. Here, above the generation, rather
//! than in `telemetry`, which everything records into and so must not
//! depend on what it records.

use metrics::gauge;

use crate::generation::Generation;
use crate::plugin::BreakerState;
use crate::telemetry::names::*;
use crate::telemetry::{self, buckets::escape};
use crate::upstream::ConnectionCounts;

/// Label value of a breaker state.
pub(super) fn breaker_label(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    }
}

/// Sets the generation gauge and writes the gauges that mirror live state
/// (breakers, pools) of `generation`'s backends. Those are not kept in the
/// recorder: written from live state at each scrape, a backend a reload
/// removed disappears from them instead of keeping its last value forever.
fn live_gauges(generation: &Generation, connections: &ConnectionCounts) -> String {
    use std::fmt::Write;
    let now = crate::clock::monotonic_ms();
    gauge!(GENERATION).set(generation.id as f64);
    let mut breakers = String::new();
    let mut drained = String::new();
    // A backend shared by two domains has one pool entry.
    let mut pools = std::collections::BTreeMap::new();
    for up in &generation.upstreams {
        for b in &up.backends {
            let state = match b.state.breaker.state(now) {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            };
            let labels = format!(
                "{{domain=\"{}\",backend=\"{}\"}}",
                escape(&up.name),
                escape(&b.state.authority)
            );
            let _ = writeln!(breakers, "{BREAKER_STATE}{labels} {state}");
            let _ = writeln!(
                drained,
                "{BACKEND_DRAINED}{labels} {}",
                u8::from(b.state.is_drained())
            );
            let open = connections.open(&b.state.authority);
            let in_flight = u64::from(b.state.in_flight());
            let entry = pools
                .entry(b.state.authority.as_str())
                .or_insert((open, 0u64));
            entry.1 += in_flight;
        }
    }
    let mut out = String::new();
    let mut family = |name: &str, help: &str, body: &str| {
        if !body.is_empty() {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{body}\n");
        }
    };
    family(
        BREAKER_STATE,
        "Breaker state per backend: 0 closed, 1 half-open, 2 open.",
        &breakers,
    );
    family(
        BACKEND_DRAINED,
        "1 while an operator has drained the backend (POST /backends/drain), else 0.",
        &drained,
    );
    let (mut open, mut idle) = (String::new(), String::new());
    for (backend, (n, busy)) in &pools {
        let backend = escape(backend);
        let _ = writeln!(open, "{POOL_OPEN}{{backend=\"{backend}\"}} {n}");
        let _ = writeln!(
            idle,
            "{POOL_IDLE}{{backend=\"{backend}\"}} {}",
            n.saturating_sub(*busy)
        );
    }
    family(POOL_OPEN, "Open connections to a backend.", &open);
    // Written here rather than recorded: a recorded gauge would keep every
    // digest the process ever served.
    family(
        CONFIG_INFO,
        "Always 1; sha256 names the serving config.json and plugins (equal on replicas running the same policy).",
        &format!("{CONFIG_INFO}{{sha256=\"{}\"}} 1\n", generation.digest),
    );
    family(
        POOL_IDLE,
        "Open connections to a backend with no request on them (open minus in-flight).",
        &idle,
    );
    out
}

/// The Prometheus text exposition of everything recorded so far.
pub(super) fn render(generation: &Generation, connections: &ConnectionCounts) -> String {
    let live = live_gauges(generation, connections);
    let mut text = telemetry::render();
    text.push_str(&live);
    text
}
