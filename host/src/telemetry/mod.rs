//! Prometheus metrics: the recorder and the names (one place, documented).
//! The gauges written from live state at scrape time are the admin
//! listener's (`admin/scrape.rs`): this module sits below everything that
//! records, so it reads no generation.
//!
//! Counters on the request path use handles resolved once per backend or
//! plugin, so a request costs a few atomic increments, not label hashing.

pub mod activity;
pub mod buckets;
pub mod handles;
pub mod names;
pub mod otel;
pub mod summary;

use std::sync::{Arc, OnceLock};

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use names::*;

/// Buckets of the latency histograms, in seconds: 100 µs to 60 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0, 60.0,
];

/// Buckets of the plugin call histogram, in seconds: 1 µs to 100 ms.
const PLUGIN_BUCKETS: [f64; 12] = [
    0.000001, 0.0000025, 0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.001, 0.01, 0.05,
    0.1,
];

/// The bounds of histogram `name`: the plugin call buckets for plugin
/// calls, the latency buckets for every other.
fn bounds(name: &str) -> &'static [f64] {
    match name {
        PLUGIN_CALL_DURATION => &PLUGIN_BUCKETS,
        _ => &LATENCY_BUCKETS,
    }
}

/// The process's recorder, installed on first use: counters and gauges in
/// the Prometheus exporter's, histograms in fixed buckets ([`buckets`]).
/// Every proxy started in this process (tests start several) reports into
/// it.
fn recorder() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let inner = PrometheusBuilder::new().build_recorder();
        let handle = inner.handle();
        let histograms = Arc::new(buckets::Registry::new(bounds));
        let recorder = buckets::Recorder {
            inner,
            histograms: histograms.clone(),
        };
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics may be incomplete");
        }
        describe();
        Installed { handle, histograms }
    })
}

/// What [`recorder`] keeps to render.
struct Installed {
    handle: PrometheusHandle,
    histograms: Arc<buckets::Registry>,
}

/// Installs the recorder, if it is not yet: before any handle is made, so
/// every metric is recorded into it.
pub fn install() {
    recorder();
}

/// The Prometheus text exposition of everything recorded so far.
pub fn render() -> String {
    let installed = recorder();
    let mut text = installed.handle.render();
    text.push_str(&installed.histograms.render());
    text
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "Requests answered, by domain, backend and status class."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request to response headers, by domain."
    );
    describe_gauge!(IN_FLIGHT, "Requests being handled now.");
    describe_counter!(
        CLIENT_CLOSED_REQUESTS,
        "Requests whose client went away before the response headers, by domain and backend."
    );
    describe_counter!(
        REQUEST_ERRORS,
        "Requests that ended without a backend's response, by where the fault lies (side) and kind."
    );
    describe_counter!(CONNECT_ERRORS, "Failed connection attempts to a backend.");
    describe_counter!(
        UPSTREAM_TIMEOUTS,
        "Backend connects or responses that timed out."
    );
    describe_counter!(
        SPLICED_BYTES,
        Unit::Bytes,
        "Response body bytes moved from backend to client sockets by splice(2), not copied."
    );
    describe_counter!(
        BREAKER_TRANSITIONS,
        "Breaker state changes, by target state, counted as they happen."
    );
    describe_counter!(PLUGIN_CALLS, "Calls into plugins, by plugin and role.");
    describe_histogram!(
        PLUGIN_CALL_DURATION,
        Unit::Seconds,
        "Duration of plugin calls, by plugin and role."
    );
    describe_counter!(PLUGIN_FAULTS, "Plugin traps, timeouts and invalid answers.");
    describe_counter!(
        PLUGIN_COMPILES,
        "WebAssembly components compiled (cache hits by content hash excluded)."
    );
    describe_counter!(RELOADS, "Configuration reloads, by result (ok, error).");
    describe_gauge!(GENERATION, "Number of the generation serving new requests.");
    describe_gauge!(
        STORAGE_UP,
        "1 while the certificate storage answers, 0 while it is unreachable."
    );
    describe_counter!(
        STORAGE_ERRORS,
        "Failed certificate storage operations, by operation."
    );
    describe_counter!(
        TRACE_SPANS_EXPORTED,
        "Spans the OTLP collector accepted (tracing on)."
    );
    describe_counter!(
        TRACE_EXPORT_FAILURES,
        "Span batches that failed to export to the OTLP collector."
    );
    describe_counter!(
        TRACE_SPANS_DROPPED,
        "Sampled spans dropped because the trace export queue was full."
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn histograms_render() {
        super::install();
        let hist = metrics::histogram!(super::names::REQUEST_DURATION, "domain" => "unit.test");
        hist.record(std::time::Duration::from_millis(3));
        hist.record(0.5);
        // No upkeep: the samples are in their buckets as they are recorded.
        let text = super::render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or("")
                .to_owned()
        };
        assert_eq!(
            line("bbproxy_request_duration_seconds_count{domain=\"unit.test\"}"),
            "bbproxy_request_duration_seconds_count{domain=\"unit.test\"} 2",
            "{text}"
        );
        assert_eq!(
            line("bbproxy_request_duration_seconds_bucket{domain=\"unit.test\",le=\"0.005\"}"),
            "bbproxy_request_duration_seconds_bucket{domain=\"unit.test\",le=\"0.005\"} 1",
            "{text}"
        );
        assert!(
            text.contains("# HELP bbproxy_request_duration_seconds Time from request"),
            "{text}"
        );
        let calls = metrics::histogram!(super::names::PLUGIN_CALL_DURATION, "plugin" => "unit", "role" => "router");
        calls.record(0.000002);
        let text = super::render();
        assert!(
            text.contains("bbproxy_plugin_call_duration_seconds_bucket{plugin=\"unit\",role=\"router\",le=\"0.0000025\"} 1"),
            "plugin calls have their own buckets: {text}"
        );
    }
}
