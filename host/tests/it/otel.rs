//! OpenTelemetry traces against a real OTLP/HTTP receiver the test starts
//! (`common::otlp`, which decodes the protobuf with `opentelemetry-proto`):
//! a server span per request continuing the client's `traceparent`, a
//! client span per attempt (a retry shows two), the backend receiving the
//! attempt's span as its parent, the sample ratio, an unreachable collector
//! failing no request, and with tracing off the trace headers untouched.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::binary::Binary;
use common::otlp::{Collector, Received, Stalled};
use common::raw::PLUGINS;
use common::{Proxy, dead_addr};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(20);

/// A backend that keeps the headers of every request it gets.
struct HeaderBackend {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HeaderBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HeaderBackend {
    async fn start() -> HeaderBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        s.lock().unwrap().push(req.headers().clone());
                        async move {
                            Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                                Bytes::from_static(b"traced"),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        HeaderBackend { addr, seen, task }
    }

    fn seen(&self) -> Vec<HeaderMap> {
        self.seen.lock().unwrap().clone()
    }
}

fn config(backends: &[String], tracing: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS} {tracing}
            "domains": {{"trace.test": {{"backends": [{}]}}}}}}"#,
        list.join(", ")
    )
}

fn tracing_key(endpoint: &str, ratio: f64) -> String {
    format!(
        r#""tracing": {{"otlp_endpoint": "{endpoint}", "sample_ratio": {ratio}, "service_name": "edge-test"}},"#
    )
}

async fn send(
    c: &hyper_util::client::legacy::Client<common::ResolveTo, Full<Bytes>>,
    headers: &[(&str, &str)],
) -> StatusCode {
    let mut req = Request::get("http://trace.test/orders/7");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = c
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await.unwrap();
    status
}

/// Exports what the proxy's batch processor holds now.
async fn flush(p: &Proxy) {
    let running = p.running.as_ref().unwrap();
    let tracing = running.shared.observer.tracing().unwrap().clone();
    tokio::task::spawn_blocking(move || tracing.flush())
        .await
        .unwrap();
}

fn of_trace<'a>(spans: &'a [Received], trace: &str) -> Vec<&'a Received> {
    spans.iter().filter(|s| s.trace_id() == trace).collect()
}

/// The client's trace continues through the proxy: the server span is the
/// child of the client's `traceparent`, each attempt is a client span under
/// it (a connect failure and its retry: two), and the backend gets the
/// successful attempt's span as its parent plus the client's `tracestate`.
/// No flush: the batch processor's own schedule delivers the spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_continues_the_clients_trace_with_two_client_spans() {
    let collector = Collector::start().await;
    let backend = HeaderBackend::start().await;
    let dead = dead_addr().await;
    let p = Proxy::start(&config(
        &[dead.to_string(), backend.addr.to_string()],
        &tracing_key(&collector.endpoint(), 1.0),
    ))
    .await;
    let c = common::client_to(p.addr);
    // Round robin from the first backend: the first request meets the dead
    // one first and is retried; later ones may not be.
    let mut traces = Vec::new();
    for i in 0..3u8 {
        let trace = format!("4bf92f3577b34da6a3ce929d0e0e47{i:02x}");
        let parent = format!("00f067aa0ba902b{i}");
        let traceparent = format!("00-{trace}-{parent}-01");
        let status = send(
            &c,
            &[
                ("traceparent", &traceparent),
                ("tracestate", "vendor=abc,other=1"),
            ],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        traces.push((trace, parent));
    }
    // A host no domain serves: the span keeps the method alone (the Host
    // header is the client's to choose, not a low-cardinality name).
    let stray = "6bf92f3577b34da6a3ce929d0e0e4736";
    let req = Request::get("http://stray.test/")
        .header("traceparent", format!("00-{stray}-00f067aa0ba902b7-01"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_ne!(resp.status(), StatusCode::OK);
    let _ = resp.into_body().collect().await.unwrap();
    let spans = collector
        .wait_for(WAIT, |spans| {
            of_trace(spans, stray).iter().any(|s| s.is_server())
                && traces.iter().all(|(t, _)| {
                    let mine = of_trace(spans, t);
                    mine.iter().any(|s| s.is_server())
                        && mine
                            .iter()
                            .any(|s| s.is_client() && s.attr("http.response.status_code").is_some())
                })
        })
        .await;
    assert_eq!(collector.undecodable(), 0);
    let unrouted = of_trace(&spans, stray);
    assert_eq!(unrouted.len(), 1, "{unrouted:#?}");
    assert_eq!(unrouted[0].span.name, "GET");
    assert_eq!(unrouted[0].attr("bbproxy.domain"), None);

    let (retried, _) = traces
        .iter()
        .find(|(t, _)| of_trace(&spans, t).iter().filter(|s| s.is_client()).count() == 2)
        .unwrap_or_else(|| panic!("no request shows a retry as two client spans: {spans:#?}"));
    for (trace, parent) in &traces {
        let mine = of_trace(&spans, trace);
        let servers: Vec<_> = mine.iter().filter(|s| s.is_server()).collect();
        assert_eq!(servers.len(), 1, "{mine:#?}");
        let server = servers[0];
        assert_eq!(server.service, "edge-test");
        assert_eq!(
            server.parent_id(),
            *parent,
            "the server span continues the client's"
        );
        assert_eq!(
            server.span.name, "GET trace.test",
            "named by method and domain"
        );
        assert_eq!(server.attr("http.request.method").as_deref(), Some("GET"));
        assert_eq!(server.attr("url.path").as_deref(), Some("/orders/7"));
        assert_eq!(server.attr("server.address").as_deref(), Some("trace.test"));
        assert_eq!(
            server.attr("http.response.status_code").as_deref(),
            Some("200")
        );
        assert_eq!(server.attr("bbproxy.domain").as_deref(), Some("trace.test"));
        assert_eq!(
            server.attr("bbproxy.backend"),
            Some(backend.addr.to_string())
        );
        let events = server.events();
        assert!(
            events.contains(&"router".to_owned()) && events.contains(&"balancer".to_owned()),
            "plugin decisions as events: {events:?}"
        );
        let clients: Vec<_> = mine.iter().filter(|s| s.is_client()).collect();
        for c in &clients {
            assert_eq!(
                c.parent_id(),
                server.span_id(),
                "attempts are children of the server span"
            );
            assert_eq!(c.attr("server.address").as_deref(), Some("127.0.0.1"));
            assert!(
                c.events().contains(&"breaker".to_owned()),
                "{:?}",
                c.events()
            );
        }
        let ok = clients
            .iter()
            .find(|c| c.attr("http.response.status_code").as_deref() == Some("200"))
            .expect("the successful attempt");
        assert_eq!(
            ok.attr("server.port"),
            Some(backend.addr.port().to_string())
        );
        if trace == retried {
            let failed = clients
                .iter()
                .find(|c| c.attr("http.response.status_code").is_none())
                .expect("the failed attempt");
            assert_eq!(failed.attr("server.port"), Some(dead.port().to_string()));
            assert_eq!(failed.attr("error.type").as_deref(), Some("connect_error"));
            assert_eq!(failed.span.status.as_ref().map(|s| s.code), Some(2));
            assert_eq!(ok.attr("http.request.resend_count").as_deref(), Some("1"));
            assert!(failed.span.start_time_unix_nano <= ok.span.start_time_unix_nano);
        }
        // What the backend got: the successful attempt as parent, the
        // client's tracestate.
        let seen = backend.seen();
        let got = seen
            .iter()
            .find(|h| {
                h.get("traceparent")
                    .is_some_and(|v| v.to_str().unwrap().contains(trace.as_str()))
            })
            .expect("the backend got the trace");
        assert_eq!(
            got.get("traceparent").unwrap(),
            format!("00-{trace}-{}-01", ok.span_id()).as_str()
        );
        assert_eq!(got.get_all("traceparent").iter().count(), 1);
        assert_eq!(got.get("tracestate").unwrap(), "vendor=abc,other=1");
    }
}

/// `sample_ratio` 0.25 over 400 new traces: the share recorded is within
/// ±4.6 standard deviations of 100 (60..=140), every recorded trace has its
/// server and client span, and the backend's `traceparent` says sampled for
/// exactly the recorded ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_ratio_holds_within_tolerance() {
    let collector = Collector::start().await;
    let backend = HeaderBackend::start().await;
    let p = Proxy::start(&config(
        &[backend.addr.to_string()],
        &tracing_key(&collector.endpoint(), 0.25),
    ))
    .await;
    let c = common::client_to(p.addr);
    const N: usize = 400;
    for _ in 0..N {
        assert_eq!(send(&c, &[]).await, StatusCode::OK);
    }
    flush(&p).await;
    let seen = backend.seen();
    assert_eq!(seen.len(), N);
    let sampled: Vec<String> = seen
        .iter()
        .map(|h| {
            h.get("traceparent")
                .expect("every request gets a traceparent")
                .to_str()
                .unwrap()
                .to_owned()
        })
        .filter(|tp| tp.ends_with("-01"))
        .map(|tp| tp[3..35].to_owned())
        .collect();
    let spans = collector
        .wait_for(WAIT, |spans| {
            spans.iter().filter(|s| s.is_server()).count() >= sampled.len()
        })
        .await;
    let servers: Vec<&Received> = spans.iter().filter(|s| s.is_server()).collect();
    assert!(
        (60..=140).contains(&servers.len()),
        "{} of {N} traces recorded at ratio 0.25",
        servers.len()
    );
    assert_eq!(
        servers.len(),
        sampled.len(),
        "sampled flag sent == traces recorded"
    );
    for s in &servers {
        assert!(sampled.contains(&s.trace_id()));
        assert!(
            s.parent_id().is_empty() || s.parent_id() == "0000000000000000",
            "a new trace is a root"
        );
        assert_eq!(
            of_trace(&spans, &s.trace_id())
                .iter()
                .filter(|c| c.is_client())
                .count(),
            1
        );
    }
}

/// A collector nobody listens on: every request still succeeds, none waits
/// on the exporter, and the failed exports are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_fails_no_request_and_is_counted() {
    let backend = HeaderBackend::start().await;
    let nowhere = dead_addr().await;
    let p = Proxy::start(&config(
        &[backend.addr.to_string()],
        &tracing_key(&format!("http://{nowhere}"), 1.0),
    ))
    .await;
    let c = common::client_to(p.addr);
    let mut slowest = Duration::ZERO;
    for i in 0..200 {
        let t = std::time::Instant::now();
        // Bounded: an exporter that blocked the request path would hang it.
        let status = tokio::time::timeout(Duration::from_secs(5), send(&c, &[]))
            .await
            .unwrap_or_else(|_| panic!("request {i} still unanswered after 5 s"));
        assert_eq!(status, StatusCode::OK);
        slowest = slowest.max(t.elapsed());
    }
    // An export waiting on the request path would cost at least a connect
    // retry's backoff; requests here take milliseconds.
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    flush(&p).await;
    let tracing = p
        .running
        .as_ref()
        .unwrap()
        .shared
        .observer
        .tracing()
        .unwrap()
        .clone();
    common::wait_for(WAIT, "a failed export to be counted", || {
        let t = tracing.clone();
        async move {
            let c = t.counts();
            c.failed_exports >= 1 && c.ended >= 400
        }
    })
    .await;
    let counts = tracing.counts();
    assert_eq!(counts.exported, 0);
    assert!(counts.failed >= 1, "{counts:?}");
    assert!(common::counter("bbproxy_trace_export_failures_total", &[]) >= 1);
}

/// Tracing off (the default): `traceparent` and `tracestate` reach the
/// backend exactly as the client sent them, and none is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tracing_off_trace_headers_pass_through_untouched() {
    let backend = HeaderBackend::start().await;
    let p = Proxy::start(&config(&[backend.addr.to_string()], "")).await;
    assert!(
        p.running
            .as_ref()
            .unwrap()
            .shared
            .observer
            .tracing()
            .is_none()
    );
    let c = common::client_to(p.addr);
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let tracestate = "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7";
    assert_eq!(
        send(
            &c,
            &[("traceparent", traceparent), ("tracestate", tracestate)]
        )
        .await,
        StatusCode::OK
    );
    assert_eq!(send(&c, &[]).await, StatusCode::OK);
    let seen = backend.seen();
    assert_eq!(seen[0].get("traceparent").unwrap(), traceparent);
    assert_eq!(seen[0].get("tracestate").unwrap(), tracestate);
    assert!(seen[1].get("traceparent").is_none() && seen[1].get("tracestate").is_none());
}

/// Through the real binary: spans still queued when it gets SIGTERM reach
/// the collector before it exits. The batch schedule is set to ten minutes
/// (`OTEL_BSP_SCHEDULE_DELAY`), so only the shutdown export can deliver
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exports_queued_spans_when_it_stops() {
    let collector = Collector::start().await;
    let backend = HeaderBackend::start().await;
    let mut bin = Binary::start_with_env(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "shutdown_grace": "2s",
                {} "domains": {{"trace.test": ["{}"]}}}}"#,
            tracing_key(&collector.endpoint(), 1.0),
            backend.addr
        ),
        &[("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    let addr = bin.addr_after("serving HTTP on ").await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let c = common::client_to(addr);
    let status = send(
        &c,
        &[("traceparent", &format!("00-{trace}-00f067aa0ba902b7-01"))],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    drop(c);
    assert!(collector.spans().is_empty(), "exported before the stop");
    bin.signal("TERM");
    let end = std::time::Instant::now() + WAIT;
    while bin.is_running() {
        assert!(
            std::time::Instant::now() < end,
            "bbproxy did not exit within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(bin.child.wait().unwrap().success());
    let spans = collector.spans();
    let mine = of_trace(&spans, trace);
    assert!(
        mine.iter().any(|s| s.is_server()) && mine.iter().any(|s| s.is_client()),
        "the queued spans were not exported at shutdown: {spans:#?}"
    );
}

/// A collector that accepts connections and never answers: the export
/// waits out its 10 s limit on the SDK's thread while requests keep being
/// answered at once, the spans wait in the bounded queue, and the timed-out
/// batch is counted as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_collector_slows_no_request() {
    let stalled = Stalled::start().await;
    let backend = HeaderBackend::start().await;
    let p = Proxy::start(&config(
        &[backend.addr.to_string()],
        &tracing_key(&stalled.endpoint(), 1.0),
    ))
    .await;
    let tracing = p
        .running
        .as_ref()
        .unwrap()
        .shared
        .observer
        .tracing()
        .unwrap()
        .clone();
    let c = common::client_to(p.addr);
    // 600 requests, 1,200 spans: past the 512-span batch that starts an
    // export at once, so most of them are answered while it hangs.
    let mut slowest = Duration::ZERO;
    for i in 0..600 {
        let t = std::time::Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(5), send(&c, &[]))
            .await
            .unwrap_or_else(|_| panic!("request {i} still unanswered after 5 s"));
        assert_eq!(status, StatusCode::OK);
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    assert_eq!(tracing.counts().exported, 0);
    common::wait_for(
        Duration::from_secs(30),
        "the stalled export to time out",
        || {
            let t = tracing.clone();
            async move { t.counts().failed_exports >= 1 }
        },
    )
    .await;
    assert_eq!(tracing.counts().exported, 0);
}

/// A full queue drops, never waits, and every drop is counted: with
/// `queue_size` 4 and a collector that never answers, the first four spans
/// are held by the hanging export and the rest of 100 are dropped while
/// every request is answered at once; the count is the same in the
/// exporter's stats, `/status` and `bbproxy_trace_spans_dropped_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_spans_without_waiting_and_counts_them() {
    let stalled = Stalled::start().await;
    let backend = HeaderBackend::start().await;
    let key = format!(
        r#""tracing": {{"otlp_endpoint": "{}", "queue_size": 4}},"#,
        stalled.endpoint()
    );
    let p = Proxy::start(&config(&[backend.addr.to_string()], &key)).await;
    let running = p.running.as_ref().unwrap();
    let tracing = running.shared.observer.tracing().unwrap().clone();
    let metric_before = common::counter("bbproxy_trace_spans_dropped_total", &[]);
    let c = common::client_to(p.addr);
    const N: u64 = 50;
    let mut slowest = Duration::ZERO;
    for i in 0..N {
        let t = std::time::Instant::now();
        let status = tokio::time::timeout(Duration::from_secs(5), send(&c, &[]))
            .await
            .unwrap_or_else(|_| panic!("request {i} still unanswered after 5 s"));
        assert_eq!(status, StatusCode::OK);
        slowest = slowest.max(t.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request {slowest:?}"
    );
    // Both spans of the last request have ended once its body is read.
    common::wait_for(WAIT, "every span to end", || {
        let t = tracing.clone();
        async move { t.counts().ended == 2 * N }
    })
    .await;
    let c = tracing.counts();
    assert_eq!(c.exported, 0, "{c:?}");
    // Held for export: what neither went out, failed nor was dropped. The
    // export hangs for 10 s, so normally the first four stay held and 96
    // are dropped; a loop slower than that frees the four once.
    let held = c.ended - c.dropped - c.failed;
    assert!((1..=4).contains(&held), "{held} spans held: {c:?}");
    assert!(c.dropped >= 2 * N - 4 * (1 + c.failed_exports), "{c:?}");
    let status = bbproxy::admin::status(&running.shared);
    assert_eq!(status["tracing"]["queue_size"], 4);
    assert_eq!(status["tracing"]["spans_dropped"], c.dropped, "{status}");
    assert!(
        common::counter("bbproxy_trace_spans_dropped_total", &[]) - metric_before >= c.dropped,
        "the metric counts every drop"
    );
}

/// Thread per core: spans ended on every worker go to the one batch
/// processor and out through the one exporter. 32 connections spread over
/// two workers (each shown to hold some), one traced request on each: all
/// 32 traces arrive with their server and client span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_from_every_worker_reach_the_collector() {
    let collector = Collector::start().await;
    let backend = HeaderBackend::start().await;
    let p = Proxy::start_with(
        &config(
            &[backend.addr.to_string()],
            &tracing_key(&collector.endpoint(), 1.0),
        ),
        bbproxy::app::Options {
            workers: Some(2),
            ..Default::default()
        },
    )
    .await;
    const CONNECTIONS: usize = 32;
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        conns.push(send);
    }
    let mut traces = Vec::new();
    for (i, sender) in conns.iter_mut().enumerate() {
        let trace = format!("7bf92f3577b34da6a3ce929d0e0e47{i:02x}");
        let req = Request::get("/")
            .header(hyper::header::HOST, "trace.test")
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        sender.ready().await.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let _ = resp.into_body().collect().await.unwrap();
        traces.push(trace);
    }
    let status = bbproxy::admin::status(&p.running.as_ref().unwrap().shared);
    let open: Vec<u64> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["connections_open"].as_u64().unwrap())
        .collect();
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(open.iter().all(|n| *n > 0), "one worker has none: {open:?}");
    flush(&p).await;
    collector
        .wait_for(WAIT, |spans| {
            traces.iter().all(|t| {
                let mine = of_trace(spans, t);
                mine.iter().any(|s| s.is_server()) && mine.iter().any(|s| s.is_client())
            })
        })
        .await;
    drop(conns);
}
