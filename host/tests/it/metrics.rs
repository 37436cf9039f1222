//! Exact metric values, each test in a process of its own
//! (`in_own_process!`): the recorder and the in-flight gauge are
//! process-wide, so traffic of other tests would blur them. Also: the
//! README's metric table names every metric the host emits.

use crate::common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::prom::{scrape, series};
use common::{Backend, Proxy, client, dead_addr, get, h2c_client_to, wait_for};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IN_FLIGHT: &str = "bbproxy_requests_in_flight";

fn value(m: &BTreeMap<String, f64>, text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let key = if labels.is_empty() {
        name.to_owned()
    } else {
        series(name, labels)
    };
    *m.get(&key)
        .unwrap_or_else(|| panic!("{key} missing from:\n{text}"))
}

async fn in_flight(proxy: &Proxy) -> f64 {
    let (m, _) = scrape(proxy).await;
    m.get(IN_FLIGHT).copied().unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_traffic_gives_exact_totals() {
    common::alone::in_own_process!();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dead = dead_addr().await.to_string();
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    // One worker: backend pools are per worker, and the client may open a
    // second connection (its own pool races the next request), which on a
    // second worker would dial each backend again.
    let proxy = Proxy::start_with(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "circuit_breaker_threshold": 2, "circuit_breaker_timeout": "1m",
            "retries": {{"attempts": 1}},
            "domains": {{"metrics.test": ["{a_addr}", "{b_addr}", "{dead}"]}}}}"#
        ),
        bbproxy::app::Options {
            workers: Some(1),
            ..Default::default()
        },
    )
    .await;
    // The reload thread's start-up check (a save between the first build
    // and the watch) finds nothing new and is counted as `unchanged`, 50 ms
    // after start or later on a busy machine: waited for, so the totals
    // below are final.
    let startup_check = series("bbproxy_reloads_total", &[("result", "unchanged")]);
    wait_for(Duration::from_secs(10), "the start-up check", || async {
        scrape(&proxy).await.0.get(&startup_check) == Some(&1.0)
    })
    .await;
    // The builtin plugins' series are shared by every proxy of the process
    // (the other test here may have run first): count from here.
    let (before, _) = scrape(&proxy).await;
    let calls_before = |name: &str, role: &str| {
        let key = series(name, &[("plugin", "builtin"), ("role", role)]);
        before.get(&key).copied().unwrap_or(0.0)
    };
    let http = client();
    // Round-robin: a b dead a b dead (breaker opens at 2 failures), then a b a.
    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(get(&http, &proxy.url("/"), "metrics.test").await.0.as_u16());
    }
    assert_eq!(statuses, [200, 200, 502, 200, 200, 502, 200, 200, 200]);
    // An unknown host: answered by the router, no domain.
    assert_eq!(
        get(&http, &proxy.url("/"), "nowhere.test").await.0,
        StatusCode::MISDIRECTED_REQUEST
    );
    // A response is done for the proxy a moment after the client has it.
    wait_for(Duration::from_secs(10), "no request in flight", || async {
        in_flight(&proxy).await == 0.0
    })
    .await;

    let (m, text) = scrape(&proxy).await;
    let v = |name: &str, labels: &[(&str, &str)]| value(&m, &text, name, labels);
    let req = "bbproxy_requests_total";
    let classes = ["1xx", "2xx", "3xx", "4xx", "5xx"];
    for (backend, expected) in [
        (a_addr.as_str(), [0.0, 4.0, 0.0, 0.0, 0.0]),
        (b_addr.as_str(), [0.0, 3.0, 0.0, 0.0, 0.0]),
        (dead.as_str(), [0.0, 0.0, 0.0, 0.0, 2.0]),
        // Answers the proxy gave itself for the domain: none.
        ("", [0.0; 5]),
    ] {
        for (class, n) in classes.iter().zip(expected) {
            let labels = [
                ("domain", "metrics.test"),
                ("backend", backend),
                ("class", class),
            ];
            assert_eq!(v(req, &labels), n, "{labels:?}");
        }
    }
    assert_eq!(
        v(req, &[("domain", ""), ("backend", ""), ("class", "4xx")]),
        1.0
    );
    let total: f64 = m
        .iter()
        .filter(|(k, _)| {
            k.starts_with("bbproxy_requests_total{")
                && (k.contains("domain=\"metrics.test\"") || k.contains("domain=\"\""))
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(total, 10.0, "every request counted once:\n{text}");
    assert_eq!(
        v(
            "bbproxy_request_duration_seconds_count",
            &[("domain", "metrics.test")]
        ),
        9.0
    );
    assert_eq!(v(IN_FLIGHT, &[]), 0.0);
    assert_eq!(v("bbproxy_generation", &[]), 1.0);

    for (backend, errors) in [(&a_addr, 0.0), (&b_addr, 0.0), (&dead, 2.0)] {
        let labels = [("backend", backend.as_str())];
        assert_eq!(
            v("bbproxy_upstream_connect_errors_total", &labels),
            errors,
            "{backend}"
        );
        assert_eq!(v("bbproxy_upstream_timeouts_total", &labels), 0.0);
    }
    for (backend, state, opened) in [(&a_addr, 0.0, 0.0), (&b_addr, 0.0, 0.0), (&dead, 2.0, 1.0)] {
        let labels = [("domain", "metrics.test"), ("backend", backend.as_str())];
        assert_eq!(v("bbproxy_breaker_state", &labels), state, "{backend}");
        for (to, n) in [("open", opened), ("half_open", 0.0), ("closed", 0.0)] {
            let mut l = labels.to_vec();
            l.push(("to", to));
            assert_eq!(
                v("bbproxy_breaker_transitions_total", &l),
                n,
                "{backend} to {to}"
            );
        }
    }
    // One pooled connection to each live backend (sequential requests).
    for (backend, open) in [(&a_addr, 1.0), (&b_addr, 1.0), (&dead, 0.0)] {
        let labels = [("backend", backend.as_str())];
        assert_eq!(v("bbproxy_pool_connections_open", &labels), open);
        assert_eq!(v("bbproxy_pool_connections_idle", &labels), open);
    }
    // 10 routes, 9 picks, 9 outcomes: all builtin, no fault. The built-in
    // router said at init that metrics.test (no routes) goes to its own
    // upstream, so the host routed its 9 requests without a call: the
    // router is called for the one request of an unknown host only. The
    // built-in balancer said its upstream is round-robin: the host took
    // the 9 turns. The built-in breaker (contract 0.2.0) leaves the 7
    // responses of closed backends to the host: it is called for the 2
    // connect errors only.
    for (role, calls) in [("router", 1.0), ("balancer", 0.0), ("breaker", 2.0)] {
        let labels = [("plugin", "builtin"), ("role", role)];
        for name in [
            "bbproxy_plugin_calls_total",
            "bbproxy_plugin_call_duration_seconds_count",
        ] {
            assert_eq!(
                v(name, &labels) - calls_before(name, role),
                calls,
                "{name} {role}"
            );
        }
    }
    assert!(
        !m.keys()
            .any(|k| k.starts_with("bbproxy_plugin_faults_total")),
        "plugin faults in:\n{text}"
    );
    // No reload: the start-up check only.
    let reloads: Vec<_> = m
        .iter()
        .filter(|(k, _)| k.starts_with("bbproxy_reloads_total"))
        .collect();
    assert_eq!(reloads, [(&startup_check, &1.0)], "{text}");
    assert!(
        !m.keys()
            .any(|k| k.starts_with("bbproxy_requests_client_closed_total")
                && k.contains("metrics.test")),
        "{text}"
    );
    assert!(text.contains("# HELP bbproxy_requests_total"), "{text}");
    assert!(
        text.contains("# TYPE bbproxy_breaker_state gauge"),
        "{text}"
    );
}

/// A request whose client goes away while the backend is still thinking
/// must not stay "in flight" forever: the handler future is dropped, and
/// dropping it accounts for the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_before_its_response_is_no_longer_in_flight() {
    common::alone::in_own_process!();
    let slow = Backend::start_with_delay("slow", Duration::from_secs(60)).await;
    let backend = slow.addr.to_string();
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "domains": {{"slow.test": ["{backend}"]}}}}"#
    ))
    .await;
    let closed = series(
        "bbproxy_requests_client_closed_total",
        &[("domain", "slow.test"), ("backend", &backend)],
    );
    let base = in_flight(&proxy).await;
    assert_eq!(base, 0.0);

    // HTTP/2: the client resets the stream.
    let h2 = h2c_client_to(proxy.addr);
    let req = Request::get("http://slow.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let pending = tokio::spawn(async move { h2.request(req).await });
    wait_for(
        Duration::from_secs(10),
        "the h2 request at the backend",
        || async { slow.hits() == 1 && in_flight(&proxy).await == 1.0 },
    )
    .await;
    pending.abort();
    wait_for(
        Duration::from_secs(10),
        "in-flight back to 0 after the reset",
        || async { in_flight(&proxy).await == 0.0 },
    )
    .await;
    let (m, text) = scrape(&proxy).await;
    assert_eq!(m.get(&closed), Some(&1.0), "{closed} in:\n{text}");

    // HTTP/1.1: the client closes its connection.
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(10),
        "the HTTP/1.1 request at the backend",
        || async { slow.hits() == 2 && in_flight(&proxy).await == 1.0 },
    )
    .await;
    drop(conn);
    wait_for(
        Duration::from_secs(10),
        "in-flight back to 0 after the close",
        || async { in_flight(&proxy).await == 0.0 },
    )
    .await;
    let (m, text) = scrape(&proxy).await;
    assert_eq!(m.get(&closed), Some(&2.0), "{closed} in:\n{text}");
    // Not answered: not in the answered requests.
    let answered = series(
        "bbproxy_requests_total",
        &[
            ("domain", "slow.test"),
            ("backend", &backend),
            ("class", "5xx"),
        ],
    );
    assert_eq!(m.get(&answered), Some(&0.0), "{text}");
}

/// A backend for the abort tests: `/upload` reads the request body,
/// `/download` streams up to 1 GiB. It counts its open connections, the
/// upload bytes it got, and notes when a request was cancelled under it:
/// the request body failed part-way, or the response body was dropped
/// before its end.
struct Cancellable {
    addr: std::net::SocketAddr,
    open: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    cancelled: Arc<std::sync::Mutex<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Cancellable {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The `/download` body: 64 KiB chunks until `left` runs out; dropped
/// early, it notes the time in `cancelled`.
struct Endless {
    left: u64,
    cancelled: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl futures_core::Stream for Endless {
    type Item = Result<Frame<Bytes>, Infallible>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        const CHUNK: u64 = 64 * 1024;
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(CHUNK);
        self.left -= n;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n as usize])))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        if self.left > 0 {
            self.cancelled
                .lock()
                .unwrap()
                .get_or_insert_with(Instant::now);
        }
    }
}

impl Cancellable {
    async fn start() -> Cancellable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let cancelled = Arc::new(std::sync::Mutex::new(None));
        let (o, r, c) = (open.clone(), received.clone(), cancelled.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                o.fetch_add(1, Ordering::SeqCst);
                let (o, r, c) = (o.clone(), r.clone(), c.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (r, c) = (r.clone(), c.clone());
                        async move {
                            if req.uri().path() == "/download" {
                                let body = Endless {
                                    left: 1 << 30,
                                    cancelled: c,
                                };
                                return Ok::<_, Infallible>(Response::new(
                                    StreamBody::new(body).boxed(),
                                ));
                            }
                            let mut body = req.into_body();
                            while let Some(frame) = body.frame().await {
                                match frame {
                                    Ok(f) => {
                                        let n = f.data_ref().map_or(0, |d| d.len());
                                        r.fetch_add(n as u64, Ordering::SeqCst);
                                    }
                                    Err(_) => {
                                        c.lock().unwrap().get_or_insert_with(Instant::now);
                                        break;
                                    }
                                }
                            }
                            Ok(Response::new(Full::new(Bytes::from("ok")).boxed()))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Cancellable {
            addr,
            open,
            received,
            cancelled,
            task,
        }
    }

    fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }

    fn cancelled(&self) -> Option<Instant> {
        *self.cancelled.lock().unwrap()
    }
}

/// A proxy for `abort.test` in front of `backend`, with nothing in flight
/// and no connection open yet; and the proxy's count of connections open
/// to the backend.
async fn abort_proxy(backend: &Cancellable) -> (Proxy, impl Fn() -> u64 + use<>) {
    let authority = backend.addr.to_string();
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "domains": {{"abort.test": ["{authority}"]}}}}"#
    ))
    .await;
    let pooled = move || bbproxy::upstream::connection_counts().open(&authority);
    assert_eq!(in_flight(&proxy).await, 0.0);
    assert_eq!((pooled(), backend.open()), (0, 0));
    (proxy, pooled)
}

/// After an abort the proxy still serves, and the one connection left is
/// the new request's, idle in the pool.
async fn still_serves_with_one_pooled(
    proxy: &Proxy,
    backend: &Cancellable,
    pooled: impl Fn() -> u64,
) {
    let (status, body) = get(&client(), &proxy.url("/"), "abort.test").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    wait_for(
        Duration::from_secs(10),
        "one idle pooled connection",
        || async { pooled() == 1 && backend.open() == 1 && in_flight(proxy).await == 0.0 },
    )
    .await;
}

/// Research case 21, upload: a client that sends half of a 1 MiB
/// Content-Length body and goes away. The backend sees its request body
/// fail within 1 s, the in-flight gauge returns to 0, and the cut upstream
/// connection is closed, not pooled (the proxy's count and the backend's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_aborting_mid_upload_cancels_the_upstream_request() {
    common::alone::in_own_process!();
    let backend = Cancellable::start().await;
    let (proxy, pooled) = abort_proxy(&backend).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: abort.test\r\ncontent-length: 1048576\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&vec![b'u'; 512 * 1024]).await.unwrap();
    wait_for(
        Duration::from_secs(10),
        "the upload under way at the backend",
        || async { backend.received.load(Ordering::SeqCst) > 0 && in_flight(&proxy).await == 1.0 },
    )
    .await;
    assert_eq!(backend.cancelled(), None);
    let aborted = Instant::now();
    drop(conn);
    assert_cancelled(&proxy, &backend, aborted, "upload").await;
    assert_eq!(pooled(), 0, "the cut upload's connection is not pooled");
    still_serves_with_one_pooled(&proxy, &backend, pooled).await;
}

/// Research case 21, download: a client that reads 256 KiB of a 1 GiB
/// response and goes away. The backend sees its response body dropped
/// within 1 s, the in-flight gauge returns to 0, and the cut upstream
/// connection is closed, not pooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_aborting_mid_download_cancels_the_upstream_request() {
    common::alone::in_own_process!();
    let backend = Cancellable::start().await;
    let (proxy, pooled) = abort_proxy(&backend).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(b"GET /download HTTP/1.1\r\nHost: abort.test\r\n\r\n")
        .await
        .unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let end = Instant::now() + Duration::from_secs(10);
    while got < 256 * 1024 {
        let left = end.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, conn.read(&mut buf))
            .await
            .expect("the download stalled")
            .unwrap();
        assert!(n > 0, "the proxy closed the download after {got} bytes");
        got += n;
    }
    assert_eq!(in_flight(&proxy).await, 1.0);
    assert_eq!(backend.cancelled(), None);
    let aborted = Instant::now();
    drop(conn);
    assert_cancelled(&proxy, &backend, aborted, "download").await;
    assert_eq!(pooled(), 0, "the cut download's connection is not pooled");
    still_serves_with_one_pooled(&proxy, &backend, pooled).await;
}

/// Research case 21 over HTTP/2: a client that reads part of a 1 GiB
/// response and drops it (its stream is reset) cancels the upstream
/// request like a closed HTTP/1 connection does, while its connection goes
/// on serving other streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_resetting_mid_download_cancels_the_upstream_request() {
    common::alone::in_own_process!();
    let backend = Cancellable::start().await;
    let (proxy, pooled) = abort_proxy(&backend).await;
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let get_path = |path: &str| {
        Request::get(format!("http://abort.test{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let resp = h2.send_request(get_path("/download")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0;
    let end = Instant::now() + Duration::from_secs(10);
    while got < 256 * 1024 {
        let left = end.saturating_duration_since(Instant::now());
        let frame = tokio::time::timeout(left, body.frame())
            .await
            .expect("the download stalled")
            .expect("the download ended")
            .unwrap();
        got += frame.data_ref().map_or(0, |d| d.len());
    }
    assert_eq!(in_flight(&proxy).await, 1.0);
    assert_eq!(backend.cancelled(), None);
    let aborted = Instant::now();
    drop(body);
    assert_cancelled(&proxy, &backend, aborted, "HTTP/2 download").await;
    assert_eq!(pooled(), 0, "the cut download's connection is not pooled");
    // The same client connection serves the next stream.
    let resp = h2.send_request(get_path("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    assert!(!conn.is_finished());
}

/// The backend saw the request cancelled within 1 s of `aborted`; then
/// nothing is in flight and the backend has no connection open.
async fn assert_cancelled(proxy: &Proxy, backend: &Cancellable, aborted: Instant, what: &str) {
    wait_for(
        Duration::from_secs(5),
        &format!("{what}: the backend to see the cancel"),
        || async { backend.cancelled().is_some() },
    )
    .await;
    let after = backend.cancelled().unwrap().duration_since(aborted);
    eprintln!("{what}: the backend saw the cancel {after:?} after the client left");
    assert!(
        after < Duration::from_secs(1),
        "{what}: cancelled after {after:?}"
    );
    wait_for(
        Duration::from_secs(5),
        &format!("{what}: in-flight 0 and no backend connection open"),
        || async { in_flight(proxy).await == 0.0 && backend.open() == 0 },
    )
    .await;
}

/// Every `bbproxy_*` name in the host's source must have a row in the
/// README's metrics table, so the table cannot drift from the code.
#[test]
fn every_metric_the_host_emits_is_in_the_readme_table() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let documented: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `bbproxy_"))
        .filter_map(|rest| rest.split('`').next())
        .collect();
    assert!(documented.len() > 20, "table not found: {documented:?}");
    let mut emitted = std::collections::BTreeSet::new();
    for (_, text) in host_sources() {
        emitted.extend(metric_names(&text));
    }
    assert!(emitted.contains("requests_total"), "{emitted:?}");
    // The Prometheus suffixes of a histogram are not names of their own.
    let missing: Vec<&String> = emitted
        .iter()
        .filter(|n| {
            let base = ["_count", "_sum", "_bucket"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n);
            !documented.contains(&n.as_str()) && !documented.contains(&base)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "metrics emitted in host/src but missing from the README table: {missing:?}"
    );
}

/// Each metric name is spelled once, in `telemetry/names.rs`, so the code
/// that emits a metric, the table above and the tests cannot disagree on a
/// spelling. Test code is not counted.
#[test]
fn metric_names_are_spelled_only_in_names_rs() {
    let stray: Vec<(String, Vec<String>)> = host_sources()
        .into_iter()
        .filter(|(file, _)| file != "telemetry/names.rs")
        .map(|(file, text)| (file, metric_names(&crate::layers::without_tests(&text))))
        .filter(|(_, names)| !names.is_empty())
        .collect();
    assert!(
        stray.is_empty(),
        "metric names spelled outside host/src/telemetry/names.rs: {stray:?}"
    );
}

/// Every `.rs` file under `host/src`: its path below `src` (`/`-separated)
/// and its text.
fn host_sources() -> Vec<(String, String)> {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    crate::sizes::rust_files(&src)
        .into_iter()
        .map(|path| {
            let name = path.strip_prefix(&src).unwrap().to_string_lossy();
            let name = name.replace(std::path::MAIN_SEPARATOR, "/");
            (name, std::fs::read_to_string(&path).unwrap())
        })
        .collect()
}

/// The `bbproxy_[a-z_]+` names quoted in `text`, without the prefix
/// (quoted: crate paths such as `bbproxy_config::` are not metrics).
fn metric_names(text: &str) -> Vec<String> {
    text.match_indices("\"bbproxy_")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest.find(|c: char| !(c.is_ascii_lowercase() || c == '_'))?;
            (rest[end..].starts_with('"') || rest[end..].starts_with('{'))
                .then(|| rest[..end].to_owned())
        })
        .collect()
}
