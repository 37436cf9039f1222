//! What the proxy records about each request: Prometheus counters and
//! histograms (through handles resolved once per generation), the
//! interval summary, and the access log line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

use crate::telemetry::names::{
    CONNECT_ERRORS, IN_FLIGHT, REQUEST_DURATION, REQUESTS, UPSTREAM_TIMEOUTS,
};
use crate::telemetry::summary::Window;

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn class_index(status: u16) -> usize {
    usize::from(status / 100).clamp(1, 5) - 1
}

/// Metric handles of one backend.
#[derive(Debug)]
pub struct BackendMetrics {
    requests: [Counter; 5],
    /// Failed connection attempts.
    pub connect_errors: Counter,
    /// Connect or response timeouts.
    pub timeouts: Counter,
}

impl BackendMetrics {
    /// Handles for backend `authority` of `domain`.
    pub fn new(domain: &str, authority: &str) -> Self {
        let requests = CLASSES.map(|class| {
            counter!(REQUESTS, "domain" => domain.to_owned(), "backend" => authority.to_owned(), "class" => class)
        });
        Self {
            requests,
            connect_errors: counter!(CONNECT_ERRORS, "backend" => authority.to_owned()),
            timeouts: counter!(UPSTREAM_TIMEOUTS, "backend" => authority.to_owned()),
        }
    }
}

/// Metric handles of one domain.
#[derive(Debug)]
pub struct DomainMetrics {
    duration: Histogram,
    /// Answers the proxy gave itself for this domain (no backend).
    local: [Counter; 5],
}

impl DomainMetrics {
    /// Handles for `domain`.
    pub fn new(domain: &str) -> Self {
        Self {
            duration: histogram!(REQUEST_DURATION, "domain" => domain.to_owned()),
            local: CLASSES.map(|class| {
                counter!(REQUESTS, "domain" => domain.to_owned(), "backend" => "", "class" => class)
            }),
        }
    }
}

/// Process-wide recording state shared by all generations.
#[derive(Debug)]
pub struct Observer {
    /// The current summary interval.
    pub window: Window,
    in_flight: Gauge,
    /// Follows `access_log` in the serving config (a reload turns it on or
    /// off).
    access_log: AtomicBool,
}

impl Observer {
    /// An observer; `access_log` turns the per-request log line on.
    pub fn new(access_log: bool) -> Self {
        Self {
            window: Window::default(),
            in_flight: gauge!(IN_FLIGHT),
            access_log: AtomicBool::new(access_log),
        }
    }

    /// Whether the per-request access log line is on.
    pub fn access_log(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    /// Turns the per-request log line on or off (on reload).
    pub fn set_access_log(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }

    /// Marks a request as started.
    pub fn start(self: &Arc<Self>) -> Started {
        self.in_flight.increment(1.0);
        Started {
            observer: self.clone(),
            at: Instant::now(),
        }
    }
}

/// A request being handled.
#[derive(Debug)]
pub struct Started {
    observer: Arc<Observer>,
    at: Instant,
}

/// Where a request went, for recording.
#[derive(Debug, Default)]
pub struct Route<'g> {
    /// Its domain's metrics, once routed.
    pub domain: Option<&'g DomainMetrics>,
    /// Its backend's metrics and address, once picked.
    pub backend: Option<(&'g BackendMetrics, &'g str)>,
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

impl Started {
    /// Records the response headers being sent: counters, duration,
    /// summary. Returns what completes the record when the body ends.
    pub fn respond(
        self,
        route: &Route<'_>,
        status: u16,
        generation: u64,
        access: Option<AccessFields>,
    ) -> Finish {
        let elapsed = self.at.elapsed();
        let class = class_index(status);
        match (route.backend, route.domain) {
            (Some((b, _)), _) => b.requests[class].increment(1),
            (None, Some(d)) => d.local[class].increment(1),
            (None, None) => {
                counter!(REQUESTS, "domain" => "", "backend" => "", "class" => CLASSES[class])
                    .increment(1)
            }
        }
        if let Some(d) = route.domain {
            d.duration.record(elapsed);
        }
        self.observer.window.record(elapsed, status >= 500);
        let access = access.map(|a| {
            Box::new(AccessLine {
                fields: a,
                status,
                backend: route
                    .backend
                    .map(|(_, addr)| addr.to_owned())
                    .unwrap_or_default(),
                generation,
                header_time: elapsed,
            })
        });
        Finish {
            observer: self.observer,
            at: self.at,
            access,
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
}

impl Finish {
    /// The body is done after `bytes` bytes.
    pub fn complete(self, bytes: u64) {
        self.observer.in_flight.decrement(1.0);
        if let Some(a) = self.access {
            tracing::info!(
                target: "bbproxy::access",
                method = %a.fields.method,
                host = %a.fields.host,
                path = %a.fields.path,
                status = a.status,
                backend = %a.backend,
                duration_ms = self.at.elapsed().as_secs_f64() * 1000.0,
                header_ms = a.header_time.as_secs_f64() * 1000.0,
                bytes,
                generation = a.generation,
                "request"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::class_index;

    #[test]
    fn status_classes() {
        assert_eq!(class_index(101), 0);
        assert_eq!(class_index(200), 1);
        assert_eq!(class_index(308), 2);
        assert_eq!(class_index(421), 3);
        assert_eq!(class_index(503), 4);
        assert_eq!(class_index(0), 0);
        assert_eq!(class_index(999), 4);
    }
}
