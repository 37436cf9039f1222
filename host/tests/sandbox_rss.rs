//! Memory stays bounded while hostile plugins fault 10,000 times each: every
//! faulting instance is discarded and replaced, and nothing of it stays
//! behind. Its own test binary, because RSS is per process and other tests
//! would move it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bbproxy::plugin::{
    Backend, Backoff, BalancerWorld, BreakerState, Limits, Plugin, RequestView, RouterWorld,
    Runtime, Upstream, World, bundle,
};

const FAULTS: u64 = 10_000;
/// Faults before the baseline is taken: allocator arenas, the compile
/// cache and the instance pool have reached their working size by then.
const WARMUP: u64 = 500;
/// Allowed growth of RSS from the baseline to the end.
const MAX_GROWTH_KIB: u64 = 48 * 1024;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn view(host: &str) -> Option<RequestView> {
    let (parts, ()) = http::Request::get("/")
        .header("host", host)
        .body(())
        .unwrap()
        .into_parts();
    Some(RequestView {
        parts,
        host: host.to_owned(),
        client: "127.0.0.1:9".parse().unwrap(),
    })
}

fn upstreams() -> Arc<[Upstream]> {
    ["good.test", "bad.test"]
        .into_iter()
        .map(|name| Upstream {
            name: name.into(),
            balancer: "round-robin".into(),
            backends: 1,
        })
        .collect()
}

fn candidates() -> [Backend; 1] {
    [Backend {
        id: 0,
        weight: 1,
        in_flight: 0,
        consecutive_failures: 0,
        consecutive_successes: 0,
        latency_ewma_us: 0,
        requests: 0,
        breaker: BreakerState::Closed,
    }]
}

fn load<W: World>(runtime: &Runtime, file: &str, mode: &str) -> Plugin<W> {
    let path = std::path::Path::new(bundle::FIXTURES_DIR).join(file);
    let limits = Limits {
        // Short deadline and small cap: the test is about what is left
        // behind, not about how long each fault takes.
        timeout: Duration::from_millis(1),
        memory: 8 << 20,
        backoff: Backoff {
            after: u32::MAX,
            ..Backoff::default()
        },
    };
    Plugin::<W>::load(
        runtime,
        &format!("{mode}.wasm"),
        &std::fs::read(path).unwrap(),
        format!(r#"{{"mode": "{mode}"}}"#),
        limits,
        upstreams(),
    )
    .unwrap()
}

/// Drives `fault` until the plugin has faulted `FAULTS` times; returns the
/// RSS growth after warm-up, in KiB.
fn drive(faults: impl Fn() -> u64, mut step: impl FnMut()) -> u64 {
    while faults() < WARMUP {
        step();
    }
    let base = rss_kib();
    while faults() < FAULTS {
        step();
    }
    rss_kib().saturating_sub(base)
}

#[test]
fn rss_stays_bounded_over_ten_thousand_faults_per_fixture() {
    let runtime = Runtime::new().unwrap();
    let mut report = Vec::new();
    for mode in [
        "loop",
        "recurse",
        "grow",
        "every-10th",
        "out-of-range",
        "log-flood",
        "sleep",
        "print",
    ] {
        let started = Instant::now();
        let plugin = load::<BalancerWorld>(&runtime, "hostile_balancer.wasm", mode);
        let growth = drive(
            || plugin.faults(),
            || {
                let _ = plugin.pick(&mut view("bad.test"), 1, &candidates());
            },
        );
        report.push((mode, growth, started.elapsed()));
        assert_eq!(plugin.faults(), FAULTS);
        // The plugin still serves its good path after all that.
        assert_eq!(
            plugin
                .pick(&mut view("good.test"), 0, &candidates())
                .unwrap(),
            0
        );
    }
    for mode in ["huge-name", "huge-body"] {
        let started = Instant::now();
        let plugin = load::<RouterWorld>(&runtime, "hostile_router.wasm", mode);
        let growth = drive(
            || plugin.faults(),
            || {
                let _ = plugin.route(&mut view("bad.test"));
            },
        );
        report.push((mode, growth, started.elapsed()));
        assert!(plugin.route(&mut view("good.test")).is_ok());
    }
    for (mode, growth, took) in &report {
        eprintln!("{mode}: {FAULTS} faults in {took:?}, RSS growth after warm-up {growth} KiB");
    }
    for (mode, growth, _) in report {
        assert!(
            growth < MAX_GROWTH_KIB,
            "{mode}: RSS grew by {growth} KiB over {FAULTS} faults"
        );
    }
}
