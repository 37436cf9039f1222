//! Metric handles of one domain and one backend, resolved once per
//! generation: a request then costs a few atomic increments, not label
//! hashing. The generation holds them; the request path records into them.

use metrics::{Counter, Histogram, counter, histogram};

use super::names::{CONNECT_ERRORS, REQUEST_DURATION, REQUESTS, UPSTREAM_TIMEOUTS};

/// The `class` label values, in status order.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index into [`CLASSES`] of `status` (out-of-range statuses count as
/// the nearest class).
pub fn class_index(status: u16) -> usize {
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

    /// Counts a response with `status` from this backend.
    pub fn count(&self, status: u16) {
        self.requests[class_index(status)].increment(1);
    }
}

/// Metric handles of one domain.
#[derive(Debug)]
pub struct DomainMetrics {
    name: String,
    duration: Histogram,
    /// Answers the proxy gave itself for this domain (no backend).
    local: [Counter; 5],
}

impl DomainMetrics {
    /// Handles for `domain`.
    pub fn new(domain: &str) -> Self {
        Self {
            name: domain.to_owned(),
            duration: histogram!(REQUEST_DURATION, "domain" => domain.to_owned()),
            local: CLASSES.map(|class| {
                counter!(REQUESTS, "domain" => domain.to_owned(), "backend" => "", "class" => class)
            }),
        }
    }

    /// The domain's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts an answer with `status` the proxy gave itself for this domain.
    pub fn count_local(&self, status: u16) {
        self.local[class_index(status)].increment(1);
    }

    /// Records the time to response headers of one of its requests.
    pub fn record_duration(&self, elapsed: std::time::Duration) {
        self.duration.record(elapsed);
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
