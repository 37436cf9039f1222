//! Histograms kept as fixed buckets of atomic counters. The Prometheus
//! exporter's own histogram keeps every sample in a queue until an upkeep
//! (or a scrape) folds the queue into buckets: at 40,000 requests a second,
//! with a request duration and two plugin call durations each, a 5 s upkeep
//! held 5 to 8 MB of samples and freed them at once on a worker thread
//! (heaptrack: 41 % of the proxy's peak heap under `bench/run.sh`'s h1
//! load). Here a sample is three atomic adds into counters allocated when
//! the histogram is registered, so memory does not grow with traffic and a
//! scrape only reads.
//!
//! [`Recorder`] wraps the exporter's recorder: counters and gauges go to
//! it, every histogram comes here, and [`Registry::render`] writes them in
//! the exporter's text format.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;

/// One histogram: a counter per bucket (not cumulative: a sample adds to
/// one), the last one for samples above every bound, and the sum of the
/// samples in nanoseconds (values are seconds; an integer sum is one atomic
/// add where a float sum would be a compare-and-swap loop).
#[derive(Debug)]
pub struct Buckets {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Buckets {
    /// Empty, with these upper bounds (ascending, in seconds).
    pub fn new(bounds: &'static [f64]) -> Self {
        Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// The cumulative count of each bound (`le`, as Prometheus counts: a
    /// sample equal to a bound is in its bucket), the total count and the
    /// sum in seconds. Read bucket by bucket while samples may arrive, as
    /// any scrape of live counters is.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut running = 0u64;
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            running += count.load(Ordering::Relaxed);
            cumulative.push((*bound, running));
        }
        let total = running + self.counts.last().map_or(0, |c| c.load(Ordering::Relaxed));
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        (cumulative, total, sum)
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        // NaN and negative values (no duration is either) count in the
        // first bucket and add nothing to the sum.
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        // Rounded by adding a half before `as` truncates (`f64::round` is
        // a libm call on this target's baseline). `as` saturates: NaN and
        // negatives give 0, an absurd value the largest sum, never a wrap.
        self.sum_ns
            .fetch_add((value * 1e9 + 0.5) as u64, Ordering::Relaxed);
    }
}

/// Every histogram registered, by key (name and labels), with its
/// family's description.
#[derive(Debug)]
pub struct Registry {
    bounds: fn(&str) -> &'static [f64],
    histograms: Mutex<BTreeMap<Key, Arc<Buckets>>>,
    help: Mutex<HashMap<String, String>>,
}

impl Registry {
    /// Empty; a histogram named `n` gets the bounds `bounds(n)`.
    pub fn new(bounds: fn(&str) -> &'static [f64]) -> Self {
        Registry {
            bounds,
            histograms: Mutex::default(),
            help: Mutex::default(),
        }
    }

    /// The histogram of `key`, made on first use: registering the same
    /// key again (a reload's new handles) continues its counts.
    pub fn histogram(&self, key: &Key) -> Arc<Buckets> {
        let mut all = self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.entry(key.clone())
            .or_insert_with(|| Arc::new(Buckets::new((self.bounds)(key.name()))))
            .clone()
    }

    fn describe(&self, name: &str, help: &str) {
        self.help
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert_with(|| help.to_owned());
    }

    /// The Prometheus text exposition of every histogram, grouped by name
    /// (sorted), as the exporter writes its own.
    pub fn render(&self) -> String {
        let all = self
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect::<Vec<_>>();
        let help = self.help.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        let mut family = None;
        for (key, hist) in &all {
            let name = key.name();
            if family != Some(name) {
                family = Some(name);
                if let Some(h) = help.get(name) {
                    let _ = writeln!(out, "# HELP {name} {}", one_line(h));
                }
                let _ = writeln!(out, "# TYPE {name} histogram");
            }
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}=\"{}\"", l.key(), escape(l.value())))
                .collect();
            let with = |extra: Option<String>| -> String {
                let all: Vec<&str> = labels
                    .iter()
                    .map(String::as_str)
                    .chain(extra.as_deref())
                    .collect();
                match all.is_empty() {
                    true => String::new(),
                    false => format!("{{{}}}", all.join(",")),
                }
            };
            let (cumulative, count, sum) = hist.snapshot();
            for (le, n) in cumulative {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {n}",
                    with(Some(format!("le=\"{le}\"")))
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {count}",
                with(Some("le=\"+Inf\"".into()))
            );
            let _ = writeln!(out, "{name}_sum{} {sum}", with(None));
            let _ = writeln!(out, "{name}_count{} {count}", with(None));
        }
        out
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

/// A description as a `# HELP` line takes it: backslashes and newlines
/// escaped.
fn one_line(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// The process's recorder: counters and gauges in the exporter's
/// recorder, histograms in a [`Registry`].
#[derive(Debug)]
pub struct Recorder {
    /// The exporter's recorder.
    pub inner: PrometheusRecorder,
    /// Where the histograms are.
    pub histograms: Arc<Registry>,
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.inner.describe_gauge(key, unit, description);
    }

    /// The unit is left out: every histogram's name already ends in it
    /// (`_seconds`), which is all the exporter would have done with it.
    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.histograms.describe(key.as_str(), &description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.inner.register_counter(key, metadata)
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.inner.register_gauge(key, metadata)
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.histograms.histogram(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [f64; 3] = [0.001, 0.01, 1.0];

    #[test]
    fn a_sample_equal_to_a_bound_is_in_its_bucket_and_counts_are_cumulative() {
        let h = Buckets::new(&BOUNDS);
        for v in [0.0005, 0.001, 0.002, 0.01, 0.5, 2.0, 60.0, f64::NAN, -1.0] {
            h.record(v);
        }
        let (cumulative, count, sum) = h.snapshot();
        // NaN and -1 in the first bucket with 0.0005 and 0.001.
        assert_eq!(cumulative, vec![(0.001, 4), (0.01, 6), (1.0, 7)]);
        assert_eq!(count, 9);
        let want = 0.0005 + 0.001 + 0.002 + 0.01 + 0.5 + 2.0 + 60.0;
        assert!((sum - want).abs() < 1e-9, "{sum} != {want}");
    }

    #[test]
    fn a_million_samples_are_counted_in_place() {
        let h = Buckets::new(&BOUNDS);
        for i in 0..1_000_000u32 {
            h.record(f64::from(i % 4) * 0.004);
        }
        let (cumulative, count, sum) = h.snapshot();
        assert_eq!(
            cumulative,
            vec![(0.001, 250_000), (0.01, 750_000), (1.0, 1_000_000)]
        );
        assert_eq!(count, 1_000_000);
        assert!((sum - 6_000.0).abs() < 1e-6, "{sum}");
    }

    #[test]
    fn families_render_as_the_exporter_writes_them() {
        let registry = Registry::new(|name| match name {
            "b_seconds" => &BOUNDS[..1],
            _ => &BOUNDS,
        });
        let key = |name: &'static str, labels: &[(&'static str, &str)]| {
            let labels: Vec<metrics::Label> = labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.to_string()))
                .collect();
            Key::from_parts(name, labels)
        };
        registry.describe("b_seconds", "Time of b,\nin seconds.");
        registry
            .histogram(&key("b_seconds", &[("domain", "q\"x")]))
            .record(0.5);
        let a = key("a_seconds", &[]);
        registry.histogram(&a).record(0.001);
        // Registered again, as a reload does: the same counters.
        registry.histogram(&a).record(0.002);
        assert_eq!(
            registry.render(),
            "# TYPE a_seconds histogram\n\
             a_seconds_bucket{le=\"0.001\"} 1\n\
             a_seconds_bucket{le=\"0.01\"} 2\n\
             a_seconds_bucket{le=\"1\"} 2\n\
             a_seconds_bucket{le=\"+Inf\"} 2\n\
             a_seconds_sum 0.003\n\
             a_seconds_count 2\n\
             # HELP b_seconds Time of b,\\nin seconds.\n\
             # TYPE b_seconds histogram\n\
             b_seconds_bucket{domain=\"q\\\"x\",le=\"0.001\"} 0\n\
             b_seconds_bucket{domain=\"q\\\"x\",le=\"+Inf\"} 1\n\
             b_seconds_sum{domain=\"q\\\"x\"} 0.5\n\
             b_seconds_count{domain=\"q\\\"x\"} 1\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a.test:80"), "a.test:80");
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
