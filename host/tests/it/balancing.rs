//! Load balancing and circuit breaking through the embedded default plugins,
//! against real backends on 127.0.0.1.

use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::binary::Binary;
use common::{Backend, Proxy, addrs, client, dead_addr, get, wait_for};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// A backend that answers `status` after `delay` (but 200 at once on
/// `/healthz`), and records how many requests it was serving as each one
/// arrived, the new one included.
struct Tracked {
    addr: SocketAddr,
    hits: Arc<AtomicU64>,
    concurrency: Arc<Mutex<Vec<u32>>>,
    first_hit: Arc<Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Tracked {
    async fn start(addr: SocketAddr, status: u16, delay: Duration) -> Tracked {
        common::revive(addr);
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let concurrency = Arc::new(Mutex::new(Vec::new()));
        let in_flight = Arc::new(AtomicU32::new(0));
        let first_hit = Arc::new(Mutex::new(None));
        let (h, c, t) = (hits.clone(), concurrency.clone(), first_hit.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, c, f, t) = (h.clone(), c.clone(), in_flight.clone(), t.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (h, c, f, t) = (h.clone(), c.clone(), f.clone(), t.clone());
                        async move {
                            if req.uri().path() == "/healthz" {
                                return Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())));
                            }
                            t.lock().unwrap().get_or_insert_with(Instant::now);
                            let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                            c.lock().unwrap().push(now);
                            h.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(delay).await;
                            f.fetch_sub(1, Ordering::SeqCst);
                            let mut resp = Response::new(Full::new(Bytes::from("tracked")));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Tracked {
            addr,
            hits,
            concurrency,
            first_hit,
            task,
        }
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    fn first_hit(&self) -> Option<Instant> {
        *self.first_hit.lock().unwrap()
    }

    fn concurrency(&self) -> Vec<u32> {
        self.concurrency.lock().unwrap().clone()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `bbproxy_upstream_retries_total` for `upstream` from the admin
/// endpoint, 0 when the series does not exist yet.
async fn retries_counted(admin: &str, upstream: &str) -> f64 {
    let (status, text) = get(&client(), &format!("http://{admin}/metrics"), "admin").await;
    assert_eq!(status, StatusCode::OK);
    let label = format!("upstream=\"{upstream}\"");
    text.lines()
        .filter(|l| l.starts_with("bbproxy_upstream_retries_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_sends_exactly_a_third_to_each_of_three_backends() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {}}}}}"#,
        addrs(&[&a, &b, &c])
    ))
    .await;
    let http = client();
    for _ in 0..300 {
        let (status, _) = get(&http, &proxy.url("/"), "app.test").await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (100, 100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {{
                "balancer": "weighted-round-robin",
                "backends": [{{"address": "{}", "weight": 3}}, {{"address": "{}", "weight": 1}}]}}}}}}"#,
        a.addr, b.addr
    ))
    .await;
    let http = client();
    for _ in 0..400 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.0,
            StatusCode::OK
        );
    }
    assert_eq!((a.hits(), b.hits()), (300, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_prefers_the_idle_backend_when_one_is_slow() {
    let slow = Backend::start_with_delay("slow", Duration::from_millis(300)).await;
    let fast = Backend::start("fast").await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {{"balancer": "least-request", "backends": {}}}}}}}"#,
        addrs(&[&slow, &fast])
    ))
    .await;
    // Four clients, ten requests each. Round-robin would give the slow
    // backend 20; least-request gives it only what arrives while it is idle.
    let url = proxy.url("/");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            for _ in 0..10 {
                assert_eq!(get(&http, &url, "app.test").await.0, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(slow.hits() + fast.hits(), 40);
    assert!(slow.hits() <= 8, "slow backend got {} of 40", slow.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_after_threshold_and_closes_when_the_backend_returns() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dead = dead_addr().await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "circuit_breaker_threshold": 3, "circuit_breaker_timeout": "2s",
            "retries": {{"attempts": 1}},
            "domains": {{"app.test": ["{}", "{}", "{dead}"]}}}}"#,
        a.addr, b.addr
    ))
    .await;
    let http = client();
    // Retries off, so clients see each failure. Round-robin reaches the
    // dead backend every third request: three 502s open its breaker, after
    // which the other two take everything.
    let mut bad = 0;
    for _ in 0..30 {
        let (status, body) = get(&http, &proxy.url("/"), "app.test").await;
        if status == StatusCode::BAD_GATEWAY {
            assert!(
                body.contains(&dead.to_string()),
                "502 body names the backend: {body}"
            );
            bad += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert_eq!(
        bad, 3,
        "exactly threshold failures before the breaker opens"
    );
    assert_eq!(a.hits() + b.hits(), 27);

    // Bring it back: after the open period a probe reaches it, succeeds,
    // and it takes traffic again.
    let revived = Backend::start_on("revived", dead).await;
    wait_for(
        Duration::from_secs(10),
        "the revived backend to get traffic",
        || async {
            let (status, _) = get(&http, &proxy.url("/"), "app.test").await;
            assert_eq!(status, StatusCode::OK, "no 502 once the backend is back");
            revived.hits() >= 3
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_open_answers_503() {
    // One backend whose breaker opens (500s count, threshold 1), one that
    // fails its health checks: the log line and the body name each, with
    // its own reason.
    let failing = Tracked::start("127.0.0.1:0".parse().unwrap(), 500, Duration::ZERO).await;
    let dead = dead_addr().await;
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "retries": {{"attempts": 1}},
                "plugins": {{"breaker": {{"config": {{"threshold": 1, "timeout_ms": 60000,
                                                     "failure_on_5xx": true}}}}}},
                "domains": {{"app.test": {{"backends": ["{}", "{dead}"],
                    "health_check": {{"path": "/healthz", "interval": "50ms", "timeout": "1s",
                                      "unhealthy_threshold": 1, "healthy_threshold": 1}}}}}}}}"#,
            failing.addr
        ),
        &[],
    );
    // Health checks may start before the listener binds: wait for both.
    let (mut addr, mut unhealthy) = (None, false);
    bin.wait_line(
        Duration::from_secs(60),
        "the listen address and the dead backend failing its health check",
        |l| {
            if let Some(a) = l.split("serving HTTP on ").nth(1) {
                addr = Some(a.trim().to_owned());
            }
            unhealthy |= l.contains("backend unhealthy") && l.contains(&dead.to_string());
            addr.is_some() && unhealthy
        },
    );
    let addr = addr.unwrap();
    let http = client();
    let url = format!("http://{addr}/");
    let (status, _) = get(&http, &url, "app.test").await;
    assert_eq!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "the 500 opens it"
    );
    let (status, body) = get(&http, &url, "app.test").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("app.test"), "{body}");
    let lines = bin.lines_until(Duration::from_secs(10), "the 503's access log", |l| {
        l.contains("bbproxy::access") && l.contains("status=503")
    });
    let warn: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("WARN") && l.contains("no backend available"))
        .collect();
    assert_eq!(warn.len(), 1, "{lines:#?}");
    let (open, unhealthy) = (
        format!("{} circuit open", failing.addr),
        format!("{dead} fails its health check"),
    );
    for text in [warn[0].as_str(), body.as_str()] {
        assert!(text.contains(&open), "{text}");
        assert!(text.contains(&unhealthy), "{text}");
    }
    assert_eq!(failing.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_backend_logs_one_true_line_and_counts_no_retry() {
    let dead = dead_addr().await;
    // Retries on (3 attempts) but nowhere else to go.
    let bin = Binary::start(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
                "retries": {{"attempts": 3}},
                "domains": {{"one.test": ["{dead}"]}}}}"#
        ),
        &[],
    );
    let start = bin.lines_until(Duration::from_secs(60), "the listen address", |l| {
        l.contains("serving HTTP on")
    });
    let admin = start
        .iter()
        .find_map(|l| l.split("admin endpoints on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_owned();
    let addr = start
        .last()
        .unwrap()
        .rsplit("serving HTTP on ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let (status, body) = get(&client(), &format!("http://{addr}/"), "one.test").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let lines = bin.lines_until(Duration::from_secs(10), "the 502's access log", |l| {
        l.contains("bbproxy::access")
    });
    let warn: Vec<&String> = lines.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warn.len(), 1, "exactly one warning: {lines:#?}");
    assert!(warn[0].contains(&dead.to_string()), "{}", warn[0]);
    assert!(
        warn[0].to_lowercase().contains("connection refused"),
        "{}",
        warn[0]
    );
    assert!(
        !lines.iter().any(|l| l.contains("retrying")),
        "no retry logged: {lines:#?}"
    );
    assert_eq!(retries_counted(&admin, "one.test").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_on_5xx_opens_the_breaker_on_500s_and_only_with_the_key() {
    let http = client();
    for (strict, breaker) in [
        (
            true,
            r#"{"config": {"threshold": 2, "failure_on_5xx": true}}"#,
        ),
        (false, r#"{"config": {"threshold": 2}}"#),
    ] {
        let failing = Tracked::start("127.0.0.1:0".parse().unwrap(), 500, Duration::ZERO).await;
        let proxy = Proxy::start(&format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "circuit_breaker_timeout": "1m",
                "plugins": {{"breaker": {breaker}}},
                "domains": {{"app.test": ["{}"]}}}}"#,
            failing.addr
        ))
        .await;
        let mut statuses = Vec::new();
        for _ in 0..6 {
            statuses.push(get(&http, &proxy.url("/"), "app.test").await.0.as_u16());
        }
        if strict {
            assert_eq!(statuses, [500, 500, 503, 503, 503, 503]);
            assert_eq!(failing.hits(), 2);
        } else {
            assert_eq!(statuses, [500; 6]);
            assert_eq!(failing.hits(), 6);
        }
    }
}

/// Sends requests one after another until `stop(502s so far)` holds or the
/// deadline passes; returns when each request answered 502 was sent and
/// when its answer came back.
async fn drive(
    proxy: &Proxy,
    stop: impl Fn(usize) -> bool,
    deadline: Duration,
) -> Vec<(Instant, Instant)> {
    let http = client();
    let end = Instant::now() + deadline;
    let mut bad = Vec::new();
    while !stop(bad.len()) && Instant::now() < end {
        let sent = Instant::now();
        let status = get(&http, &proxy.url("/"), "app.test").await.0;
        if status == StatusCode::BAD_GATEWAY {
            bad.push((sent, Instant::now()));
        } else {
            assert_eq!(status, StatusCode::OK);
        }
        // Pacing, not synchronisation: keeps the loop from spinning.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bad
}

const BREAKER_TIMEOUT: Duration = Duration::from_millis(300);
/// The proxy's clock counts whole milliseconds.
const CLOCK_SLACK: Duration = Duration::from_millis(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_probe_before_the_timeout_and_a_failed_probe_reopens_for_a_full_timeout() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "300ms",
            "retries": {{"attempts": 1}},
            "domains": {{"app.test": ["{}", "{dead}"]}}}}"#,
        a.addr
    ))
    .await;
    // The first 502 opens it; each later one is a probe that failed and
    // reopened it. A probe goes out no sooner than a full timeout after the
    // request that (re)opened it was sent.
    let bad = drive(&proxy, |n| n >= 4, Duration::from_secs(5)).await;
    assert_eq!(bad.len(), 4, "502s in 5s: {bad:?}");
    for pair in bad.windows(2) {
        let ((opened_by, _), (_, probed_by)) = (pair[0], pair[1]);
        let gap = probed_by - opened_by;
        assert!(
            gap + CLOCK_SLACK >= BREAKER_TIMEOUT,
            "a probe went out {gap:?} after the backend (re)opened: {bad:?}"
        );
    }
    assert!(a.hits() > 20, "traffic went on meanwhile: {}", a.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_admits_one_probe_at_a_time_under_concurrent_clients() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await;
    let proxy = Arc::new(
        Proxy::start(&format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "300ms",
                "retries": {{"attempts": 1}},
                "plugins": {{"breaker": {{"config": {{"half_open_probes": 1, "success_threshold": 3}}}}}},
                "domains": {{"app.test": ["{}", "{dead}"]}}}}"#,
            a.addr
        ))
        .await,
    );
    let http = client();
    let mut opened = None;
    for _ in 0..2 {
        let sent = Instant::now();
        if get(&http, &proxy.url("/"), "app.test").await.0 == StatusCode::BAD_GATEWAY {
            opened = Some(sent);
        }
    }
    let opened = opened.expect("round-robin reached the dead backend once");
    let ready = opened + BREAKER_TIMEOUT;
    // Back, but slow: a probe stays in flight long enough for the other
    // clients to want it too.
    let revived = Arc::new(Tracked::start(dead, 200, Duration::from_millis(150)).await);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (proxy, revived) = (proxy.clone(), revived.clone());
        tasks.push(tokio::spawn(async move {
            let bad = drive(&proxy, |_| revived.hits() >= 10, Duration::from_secs(10)).await;
            assert!(bad.is_empty(), "no 502 once it is back: {bad:?}");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let closed = proxy.generation().upstreams[0].backends[1]
        .state
        .breaker
        .transitions_to(bbproxy::plugin::BreakerState::Closed);
    assert_eq!(closed, 1, "it closed again");
    let seen = revived.concurrency();
    assert!(seen.len() >= 10, "{seen:?}");
    // Three probes (success_threshold 3), one at a time; then closed, it
    // takes concurrent requests, which shows the clients were concurrent.
    assert_eq!(seen[..3], [1, 1, 1], "probes overlapped: {seen:?}");
    assert!(
        seen[3..].iter().any(|&n| n >= 2),
        "closed, it should serve concurrent clients: {seen:?}"
    );
    let first = revived.first_hit().unwrap();
    assert!(
        first + CLOCK_SLACK >= ready,
        "the first probe came {:?} before the timeout ended",
        ready - first
    );
}

/// Research case 22: one of three backends fails (answers 500, or never
/// answers within the response timeout) under load from several clients.
/// Once its breaker has opened, at least 99% of the requests succeed (the
/// only failures left are the probes, one per cool-down); after the load
/// the breaker half-opens within its cool-down, and failed probes came no
/// more often than one per cool-down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_a_failing_backend_costs_under_one_percent_once_its_breaker_opens() {
    const COOL_DOWN: Duration = Duration::from_secs(1);
    // (what, the failing backend's status and delay, extra top-level
    // config, the status clients get for its failures)
    let variants = [
        ("500s", 500, Duration::ZERO, "", 500),
        (
            "no answer in time",
            200,
            Duration::from_secs(30),
            r#""timeouts": {"upstream_response_headers": "200ms"},"#,
            504,
        ),
    ];
    for (what, status, delay, extra, expected) in variants {
        let ok = [
            Tracked::start("127.0.0.1:0".parse().unwrap(), 200, Duration::ZERO).await,
            Tracked::start("127.0.0.1:0".parse().unwrap(), 200, Duration::ZERO).await,
        ];
        let failing = Tracked::start("127.0.0.1:0".parse().unwrap(), status, delay).await;
        let proxy = Arc::new(
            Proxy::start(&format!(
                r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0", {extra}
                    "retries": {{"attempts": 1}},
                    "plugins": {{"breaker": {{"config": {{"threshold": 3, "timeout_ms": {},
                        "failure_on_5xx": true}}}}}},
                    "domains": {{"app.test": ["{}", "{}", "{}"]}}}}"#,
                COOL_DOWN.as_millis(),
                ok[0].addr,
                failing.addr,
                ok[1].addr
            ))
            .await,
        );
        let load = run_load(&proxy, 2000, Duration::from_secs(4)).await;
        let after_open = load.after_open_ok + load.after_open_failed;
        eprintln!(
            "{what}: {} requests, {} failed before the breaker opened, {} of {after_open} after",
            load.before_open_ok + load.before_open_failed + after_open,
            load.before_open_failed,
            load.after_open_failed,
        );
        assert!(after_open >= 200, "{what}: too little load: {load:?}");
        assert!(
            load.after_open_ok * 100 >= after_open * 99,
            "{what}: under 99% succeeded once the breaker opened: {load:?}"
        );
        // Every failure reached the failing backend; before it opened, at
        // most the threshold plus what the other clients had in flight.
        assert!(load.before_open_failed <= 3 + CLIENTS, "{what}: {load:?}");
        // Each failure is the failing backend's (a 504 may time out before
        // the backend even counted the request).
        assert_eq!(
            load.failures.keys().copied().collect::<Vec<_>>(),
            [expected],
            "{what}: {load:?}"
        );
        assert!(
            failing.hits() <= load.before_open_failed + load.after_open_failed,
            "{what}: {load:?}"
        );

        // A failed probe reopens it for a full cool-down, so the probes
        // that failed are at most one per cool-down of load.
        let probes_allowed = (load.took.as_millis() / COOL_DOWN.as_millis()) as u64 + 1;
        assert!(
            load.after_open_failed <= probes_allowed,
            "{what}: more failed probes than cool-downs: {load:?}"
        );
        // Its last probe failed: it half-opens again within a cool-down.
        let ended = Instant::now();
        wait_for(
            COOL_DOWN + Duration::from_secs(1),
            &format!("{what}: the breaker to half-open"),
            || async { breaker_of(&proxy, failing.addr).await == "half_open" },
        )
        .await;
        eprintln!("{what}: half-open {:?} after the load", ended.elapsed());
    }
}

const CLIENTS: u64 = 8;

/// Outcomes of [`run_load`], split by whether the request was sent before
/// or after the failing backend's breaker first opened.
#[derive(Debug, Default)]
struct Load {
    before_open_ok: u64,
    before_open_failed: u64,
    after_open_ok: u64,
    after_open_failed: u64,
    took: Duration,
    /// Status of each failure.
    failures: std::collections::BTreeMap<u16, u64>,
}

/// [`CLIENTS`] keep-alive clients send GETs until `requests` were sent or
/// `limit` passed. Any 2xx is a success; anything else a failure.
async fn run_load(proxy: &Arc<Proxy>, requests: u64, limit: Duration) -> Load {
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + limit;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (proxy, sent) = (proxy.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            let mut load = Load::default();
            while sent.fetch_add(1, Ordering::SeqCst) < requests && Instant::now() < end {
                let opened = proxy.generation().upstreams[0].backends.iter().any(|b| {
                    b.state
                        .breaker
                        .transitions_to(bbproxy::plugin::BreakerState::Open)
                        > 0
                });
                let status = get(&http, &proxy.url("/"), "app.test").await.0;
                let ok = status.is_success();
                if !ok {
                    *load.failures.entry(status.as_u16()).or_default() += 1;
                }
                let slot = match (opened, ok) {
                    (false, true) => &mut load.before_open_ok,
                    (false, false) => &mut load.before_open_failed,
                    (true, true) => &mut load.after_open_ok,
                    (true, false) => &mut load.after_open_failed,
                };
                *slot += 1;
            }
            load
        }));
    }
    let mut total = Load::default();
    for t in tasks {
        let l = t.await.unwrap();
        total.before_open_ok += l.before_open_ok;
        total.before_open_failed += l.before_open_failed;
        total.after_open_ok += l.after_open_ok;
        total.after_open_failed += l.after_open_failed;
        for (status, n) in l.failures {
            *total.failures.entry(status).or_default() += n;
        }
    }
    total.took = start.elapsed();
    total
}

/// The breaker state `/status` reports for `backend`.
async fn breaker_of(proxy: &Proxy, backend: SocketAddr) -> String {
    let admin = proxy.running.as_ref().unwrap().admin.unwrap();
    let (_, body) = get(&client(), &format!("http://{admin}/status"), "admin").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["domains"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == backend.to_string())
        .map(|b| b["breaker"].as_str().unwrap().to_owned())
        .unwrap()
}
