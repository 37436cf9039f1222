//! What the proxy records about each request: Prometheus counters and
//! histograms (through handles resolved once per generation), the
//! interval summary, and the access log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::activity::Activity;
use crate::telemetry::otel::{ServerSpan, Tracing};
use metrics::{Gauge, counter, gauge};

use crate::telemetry::handles::{BackendMetrics, CLASSES, DomainMetrics, class_index};
use crate::telemetry::names::{CLIENT_CLOSED_REQUESTS, IN_FLIGHT, REQUESTS};
use crate::telemetry::summary::Window;

/// Process-wide recording state shared by all generations.
#[derive(Debug)]
pub struct Observer {
    /// The current summary interval.
    pub window: Window,
    in_flight: Gauge,
    /// Follows `access_log` in the serving config (a reload turns it on or
    /// off).
    access_log: AtomicBool,
    /// OpenTelemetry traces, when `tracing` is configured (restart-only).
    tracing: Option<Arc<Tracing>>,
}

impl Observer {
    /// An observer; `access_log` turns the per-request log line on.
    pub fn new(access_log: bool) -> Self {
        Self {
            window: Window::default(),
            in_flight: gauge!(IN_FLIGHT),
            access_log: AtomicBool::new(access_log),
            tracing: None,
        }
    }

    /// Exports traces through `tracing`.
    pub fn with_tracing(mut self, tracing: Option<Arc<Tracing>>) -> Self {
        self.tracing = tracing;
        self
    }

    /// The tracer, when tracing is on.
    pub fn tracing(&self) -> Option<&Arc<Tracing>> {
        self.tracing.as_ref()
    }

    /// Whether the per-request access log line is on.
    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// Turns the per-request log line on or off (on reload).
    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// Marks a request as started. `generation` and `access` (when the
    /// access log is on) are what its log line will say.
    pub fn start<'g>(
        self: &Arc<Self>,
        generation: u64,
        access: Option<AccessFields>,
    ) -> Started<'g> {
        self.in_flight.increment(1.0);
        Started {
            observer: self.clone(),
            at: Instant::now(),
            route: Route::default(),
            generation,
            access,
            responded: false,
        }
    }
}

/// Status recorded for a request whose client went away before its response
/// headers (nginx's "client closed request"); it is never sent.
pub const CLIENT_CLOSED: u16 = 499;

/// A request being handled. Dropped without [`Started::respond`] (the
/// handler future was cancelled: client disconnect, HTTP/2 reset, write
/// timeout, drain), it still lowers the in-flight gauge, counts the request
/// in `bbproxy_requests_client_closed_total` and writes its access log line
/// with status 499.
#[derive(Debug)]
pub struct Started<'g> {
    observer: Arc<Observer>,
    at: Instant,
    /// Where the request went so far; the request path fills it in.
    pub route: Route<'g>,
    generation: u64,
    access: Option<AccessFields>,
    responded: bool,
}

/// Where a request went, for recording.
#[derive(Debug, Default)]
pub struct Route<'g> {
    /// Its domain's metrics, once routed.
    pub domain: Option<&'g DomainMetrics>,
    /// Its backend's metrics and address, once picked.
    pub backend: Option<(&'g BackendMetrics, &'g str)>,
    /// Its backend's recent activity (the dashboard's rates and
    /// percentiles), once picked.
    pub activity: Option<&'g Activity>,
    /// Its domain's timeouts, once routed: the connection takes its
    /// keep-alive and client write timeouts from them.
    pub timeouts: Option<&'g bbproxy_config::UpstreamTimeouts>,
    /// When the backend's response head came in, if one did: the time the
    /// response's record counts to, with no clock reading of its own.
    pub answered_at: Option<Instant>,
    /// Its server span, when tracing is on (boxed: a request without one
    /// carries a pointer's worth, not the span).
    pub trace: Option<Box<ServerSpan>>,
}

impl Route<'_> {
    /// When a plugin call starts, if the request is traced (no clock read
    /// otherwise).
    pub fn decision_start(&self) -> Option<Instant> {
        self.trace.as_ref().map(|_| Instant::now())
    }

    /// Records plugin `role`'s decision, started at `since`, on the server
    /// span.
    pub fn decision(&mut self, role: &'static str, since: Option<Instant>) {
        if let (Some(t), Some(since)) = (self.trace.as_mut(), since) {
            t.decision(role, since.elapsed());
        }
    }
}

/// Request fields for the access log, captured before the request is
/// consumed.
#[derive(Debug)]
pub struct AccessFields {
    /// Method.
    pub method: http::Method,
    /// Host asked for.
    pub host: String,
    /// Path (without query: queries may carry secrets).
    pub path: String,
}

impl Started<'_> {
    /// When the request started.
    pub fn at(&self) -> Instant {
        self.at
    }

    /// Records the response headers being sent: counters, duration,
    /// summary. Returns what completes the record when the body ends.
    pub fn respond(mut self, status: u16) -> Finish {
        self.responded = true;
        // One reading for the duration and the activity's timestamp: the
        // backend's answer's, or (the proxy's own answers) one made now.
        let now = self.route.answered_at.unwrap_or_else(Instant::now);
        let elapsed = now.saturating_duration_since(self.at);
        let route = &self.route;
        match (route.backend, route.domain) {
            (Some((b, _)), _) => b.count(status),
            (None, Some(d)) => d.count_local(status),
            (None, None) => {
                counter!(REQUESTS, "domain" => "", "backend" => "", "class" => CLASSES[class_index(status)])
                    .increment(1)
            }
        }
        if let Some(d) = route.domain {
            d.record_duration(elapsed);
        }
        if let Some(a) = route.activity {
            a.record(crate::clock::ms_at(now), elapsed, status >= 500);
        }
        self.observer.window.record(elapsed, status >= 500);
        let access = self.access.take().map(|a| {
            Box::new(AccessLine {
                fields: a,
                status,
                backend: self.backend().to_owned(),
                generation: self.generation,
                header_time: elapsed,
            })
        });
        let backend = route.backend.map(|(_, addr)| addr);
        let domain = route.domain.map(|d| d.name());
        let trace = self.route.trace.take().map(|mut t| {
            t.respond(status, domain, backend);
            t
        });
        Finish {
            observer: self.observer.clone(),
            at: self.at,
            access,
            trace,
        }
    }

    fn backend(&self) -> &str {
        self.route.backend.map_or("", |(_, addr)| addr)
    }
}

impl Drop for Started<'_> {
    fn drop(&mut self) {
        if self.responded {
            return;
        }
        // Cancelled before the response headers: nothing else will account
        // for this request.
        self.observer.in_flight.decrement(1.0);
        let domain = self.route.domain.map_or("", |d| d.name());
        counter!(
            CLIENT_CLOSED_REQUESTS,
            "domain" => domain.to_owned(),
            "backend" => self.backend().to_owned()
        )
        .increment(1);
        if let Some(fields) = self.access.take() {
            let elapsed = self.at.elapsed();
            AccessLine {
                fields,
                status: CLIENT_CLOSED,
                backend: self.backend().to_owned(),
                generation: self.generation,
                header_time: elapsed,
            }
            .log(elapsed, 0);
        }
    }
}

#[derive(Debug)]
struct AccessLine {
    fields: AccessFields,
    status: u16,
    backend: String,
    generation: u64,
    header_time: Duration,
}

/// Completes a request's record when its response body is done.
#[derive(Debug)]
pub struct Finish {
    observer: Arc<Observer>,
    at: Instant,
    access: Option<Box<AccessLine>>,
    /// Ends with the body; dropped unfinished (cut), it ends there.
    trace: Option<Box<ServerSpan>>,
}

impl Finish {
    /// The body is done after `bytes` bytes.
    pub fn complete(self, bytes: u64) {
        if let Some(t) = self.trace {
            t.end();
        }
        self.observer.in_flight.decrement(1.0);
        if let Some(a) = self.access {
            a.log(self.at.elapsed(), bytes);
        }
    }
}

impl AccessLine {
    fn log(&self, duration: Duration, bytes: u64) {
        tracing::info!(
            target: "bbproxy::access",
            method = %self.fields.method,
            host = %self.fields.host,
            path = %self.fields.path,
            status = self.status,
            backend = %self.backend,
            duration_ms = duration.as_secs_f64() * 1000.0,
            header_ms = self.header_time.as_secs_f64() * 1000.0,
            bytes,
            generation = self.generation,
            "request"
        );
    }
}
