//! Limits: URI length (414), header count and size (431), request body size
//! (413, before reading when Content-Length is known), client connections
//! (extra ones refused at once), connections per backend with a bounded
//! queue (503).

use crate::common;

use common::raw::PLUGINS;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{RawBackend, Recorder, exchange, read_until_close};
use common::{Backend, Proxy, wait_for};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

// Every test here runs in a process of its own (`in_own_process!`): some
// assert a delta of a process-global counter, and one the process's
// descriptor count, which no other test may move meanwhile.

fn rejected(status: &str) -> u64 {
    common::counter("bbproxy_requests_rejected_total", &[("status", status)])
}

async fn proxy(addr: std::net::SocketAddr, limits: &str, domain_extra: &str) -> Proxy {
    Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS} "limits": {{{limits}}},
            "domains": {{"app.test": {{"backends": ["{addr}"]{domain_extra}}}}}}}"#
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uri_and_header_limits_answer_414_and_431() {
    common::alone::in_own_process!();
    let (before_414, before_431) = (rejected("414"), rejected("431"));
    let backend = Recorder::start().await;
    let p = proxy(
        backend.addr,
        r#""max_uri_length": 100, "max_headers": 10, "max_header_bytes": "8KiB""#,
        "",
    )
    .await;
    let long_uri = format!(
        "GET /{} HTTP/1.1\r\nhost: app.test\r\n\r\n",
        "a".repeat(100)
    );
    let seen = exchange(p.addr, long_uri.as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [414], "{}", seen.text());

    let ok_uri = format!(
        "GET /{} HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
        "a".repeat(98)
    );
    assert_eq!(
        exchange(p.addr, ok_uri.as_bytes(), WAIT).await.statuses(),
        [200]
    );

    let mut many = String::from("GET / HTTP/1.1\r\nhost: app.test\r\n");
    for i in 0..11 {
        many += &format!("x-h{i}: 1\r\n");
    }
    many += "\r\n";
    let seen = exchange(p.addr, many.as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [431], "{}", seen.text());

    let big = format!(
        "GET / HTTP/1.1\r\nhost: app.test\r\nx-big: {}\r\n\r\n",
        "b".repeat(9000)
    );
    let seen = exchange(p.addr, big.as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [431], "{}", seen.text());
    assert!(seen.closed);
    assert_eq!(backend.requests(), 1);

    // HTTP/2 goes through the same limits.
    let h2 = common::h2c_client_to(p.addr);
    let req = Request::get(format!("http://app.test/{}", "a".repeat(150)))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        h2.request(req).await.unwrap().status(),
        StatusCode::URI_TOO_LONG
    );
    let mut req = Request::get("http://app.test/")
        .body(Full::new(Bytes::new()))
        .unwrap();
    for i in 0..11 {
        req.headers_mut().insert(
            format!("x-h{i}")
                .parse::<hyper::header::HeaderName>()
                .unwrap(),
            "1".parse().unwrap(),
        );
    }
    assert_eq!(
        h2.request(req).await.unwrap().status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // Both 414s are the proxy's own check. On HTTP/1 hyper's parser answers
    // 431 before the proxy sees the request, so only the HTTP/2 431 counts.
    assert_eq!(rejected("414") - before_414, 2);
    assert_eq!(rejected("431") - before_431, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_domain_limit_gets_413() {
    common::alone::in_own_process!();
    let before_413 = rejected("413");
    let backend = Recorder::start().await;
    let p = proxy(backend.addr, "", r#", "limits": {"max_body_size": 1000}"#).await;

    // Declared too large: answered before a byte of body is sent.
    let start = Instant::now();
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(b"POST /up HTTP/1.1\r\nhost: app.test\r\ncontent-length: 1001\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_close(&mut conn, WAIT).await;
    assert_eq!(seen.statuses(), [413], "{}", seen.text());
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(backend.requests(), 0);
    // Only a declared length is rejected before forwarding; the chunked one
    // below is cut while streaming, an upstream body fault.
    assert_eq!(rejected("413") - before_413, 1);

    // Chunked, no length: cut when the count passes the limit.
    let mut chunked =
        String::from("POST /up HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n");
    for _ in 0..3 {
        chunked += &format!("190\r\n{}\r\n", "c".repeat(400));
    }
    chunked += "0\r\n\r\n";
    let seen = exchange(p.addr, chunked.as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [413], "{}", seen.text());

    // At the limit: fine.
    let c = common::client_to(p.addr);
    let req = Request::post("http://app.test/up")
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Descriptors this process has open (the proxy runs in it).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Sends a keep-alive `GET /` on `conn` and reads the one response
/// (`backend a`, 9 bytes); its status, or 0 if it did not come whole.
async fn get_on(conn: &mut TcpStream) -> u16 {
    conn.write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .unwrap();
    let end = Instant::now() + WAIT;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"\r\n\r\nbackend a") {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return 0,
        }
    }
    let text = String::from_utf8_lossy(&got);
    text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Case 16: with `max_connections` 200 and 250 connections opened, the 50
/// extra ones get a 503 and a close at once; the 200 keep working (a
/// request on each before and after the refusals); once they close, new
/// connections are served and the process's descriptor count is back to
/// where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_and_others_keep_working() {
    const LIMIT: usize = 200;
    const OPENED: usize = 250;
    common::alone::in_own_process!(alone);
    common::need_open_files_for(OPENED);
    let refused = || common::counter("bbproxy_connections_refused_total", &[]);
    let before = refused();
    let backend = Backend::start("a").await;
    // No idle backend connections: each worker thread keeps a pool of its
    // own, so which workers the kernel hands the connections below to
    // would decide how many pooled backend connections stay open above the
    // descriptor baseline.
    let p = proxy(
        backend.addr,
        &format!(r#""max_connections": {LIMIT}"#),
        r#", "pool": {"max_idle": 0}"#,
    )
    .await;
    let get_close = b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";
    // One request first, so whatever a first request allocates for good is
    // in the baseline.
    assert_eq!(exchange(p.addr, get_close, WAIT).await.statuses(), [200]);
    let baseline = open_fds();
    let mut held = Vec::with_capacity(LIMIT);
    for i in 0..LIMIT {
        let mut conn = TcpStream::connect(p.addr).await.unwrap();
        assert_eq!(get_on(&mut conn).await, 200, "held connection {i}");
        held.push(conn);
    }
    // The extra 50, all open at once: each is turned away with a 503 (or
    // a bare close) well within a second, and never reaches the backend.
    let hits = backend.hits();
    let mut extra = Vec::with_capacity(OPENED - LIMIT);
    for _ in LIMIT..OPENED {
        extra.push((Instant::now(), TcpStream::connect(p.addr).await.unwrap()));
    }
    let peak = open_fds();
    for (i, (opened, mut conn)) in extra.into_iter().enumerate() {
        let _ = conn.write_all(get_close).await;
        let seen = read_until_close(&mut conn, WAIT).await;
        let took = opened.elapsed();
        assert!(seen.closed, "extra connection {i} left open");
        assert!(
            took < Duration::from_secs(1),
            "extra connection {i} closed after {took:?}"
        );
        assert!(
            seen.statuses().iter().all(|s| *s == 503),
            "extra connection {i}: {}",
            seen.text()
        );
    }
    assert_eq!(backend.hits(), hits);
    assert_eq!(refused() - before, (OPENED - LIMIT) as u64);
    // The held ones are served again.
    for (i, conn) in held.iter_mut().enumerate() {
        assert_eq!(
            get_on(conn).await,
            200,
            "held connection {i} after the refusals"
        );
    }
    // Once they are gone, new connections are served again and the
    // descriptors are released.
    drop(held);
    wait_for(WAIT, "a new connection to be served", || async {
        exchange(p.addr, get_close, WAIT).await.statuses() == [200]
    })
    .await;
    wait_for(
        WAIT,
        "the descriptor count back to its baseline",
        || async { open_fds() <= baseline },
    )
    .await;
    eprintln!(
        "connection limit: {baseline} descriptors before, {peak} with {OPENED} connections open, {} after",
        open_fds()
    );
    // Both ends of the held connections were counted.
    assert!(
        peak >= baseline + 2 * LIMIT,
        "{peak} descriptors at the peak, {baseline} before"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_backend_limit_queues_then_refuses_with_503() {
    common::alone::in_own_process!();
    let before = queue_rejected();
    let backend = Backend::start_with_delay("slow", Duration::from_millis(700)).await;
    let p = proxy(
        backend.addr,
        "",
        r#", "limits": {"max_connections_per_backend": 1, "backend_queue": 1, "backend_queue_timeout": "10s"}"#,
    )
    .await;
    let c = common::client_to(p.addr);
    let send = || {
        let c = c.clone();
        async move {
            let req = Request::get("http://app.test/")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = c.request(req).await.unwrap();
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            status
        }
    };
    let first = tokio::spawn(send());
    wait_for(WAIT, "the first request at the backend", || async {
        backend.hits() == 1
    })
    .await;
    let second = tokio::spawn(send());
    let g = p.generation();
    let limiter = &g.upstreams[0].backends[0].state.queue;
    wait_for(WAIT, "the second request queued", || async {
        limiter.waiting() == 1
    })
    .await;
    // The third finds the slot taken and the queue full.
    let start = Instant::now();
    assert_eq!(send().await, StatusCode::SERVICE_UNAVAILABLE);
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(second.await.unwrap(), StatusCode::OK);
    assert!(backend.hits() >= 2);
    assert_eq!(queue_rejected() - before, 1);
}

fn queue_rejected() -> u64 {
    common::counter("bbproxy_backend_queue_rejected_total", &[])
}

/// A queued request that waits out `backend_queue_timeout` gets 503 after
/// about that time, not at once and not when the slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_gets_503_at_the_queue_timeout() {
    common::alone::in_own_process!();
    let before = queue_rejected();
    let backend = Backend::start_with_delay("slow", Duration::from_secs(3)).await;
    let p = proxy(
        backend.addr,
        "",
        r#", "limits": {"max_connections_per_backend": 1, "backend_queue": 4, "backend_queue_timeout": "400ms"}, "retries": {"attempts": 1}"#,
    )
    .await;
    let c = common::client_to(p.addr);
    let send = || {
        let c = c.clone();
        async move {
            let req = Request::get("http://app.test/")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let resp = c.request(req).await.unwrap();
            let status = resp.status();
            let _ = resp.into_body().collect().await;
            status
        }
    };
    let first = tokio::spawn(send());
    wait_for(WAIT, "the first request at the backend", || async {
        backend.hits() == 1
    })
    .await;
    let start = Instant::now();
    assert_eq!(send().await, StatusCode::SERVICE_UNAVAILABLE);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(380) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    assert_eq!(queue_rejected() - before, 1);
    assert_eq!(backend.hits(), 1);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
}

/// Case 11 at the default limits (none in the config): 100 header fields
/// pass and 101 get 431, a head over 64 KiB gets 431, an 8 KiB target
/// passes and one byte more gets 414; every rejection closes the
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limits_are_100_headers_64_kib_heads_and_8_kib_uris() {
    common::alone::in_own_process!();
    // A raw backend: a hyper one would itself refuse 100 fields plus the
    // forwarding headers the proxy adds.
    let backend = RawBackend::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        Duration::ZERO,
    )
    .await;
    let p = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"app.test": {{"backends": ["{}"]}}}}}}"#,
        backend.addr
    ))
    .await;
    let with_headers = |total: usize, close: bool| {
        let mut head = String::from("GET / HTTP/1.1\r\nhost: app.test\r\n");
        let mut fields = 1;
        if close {
            head += "connection: close\r\n";
            fields += 1;
        }
        for i in fields..total {
            head += &format!("x-h{i}: 1\r\n");
        }
        head + "\r\n"
    };
    let seen = exchange(p.addr, with_headers(100, true).as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [200], "{}", seen.text());
    let seen = exchange(p.addr, with_headers(101, false).as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [431], "{}", seen.text());
    assert!(seen.closed);

    let big = format!(
        "GET / HTTP/1.1\r\nhost: app.test\r\nx-big: {}\r\n\r\n",
        "b".repeat(64 * 1024)
    );
    let seen = exchange(p.addr, big.as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [431], "{}", seen.text());
    assert!(seen.closed);

    let target = |len: usize| format!("/{}", "a".repeat(len - 1));
    let ok = format!(
        "GET {} HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
        target(8192)
    );
    let seen = exchange(p.addr, ok.as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [200], "{}", seen.text());
    let long = format!("GET {} HTTP/1.1\r\nhost: app.test\r\n\r\n", target(8193));
    let seen = exchange(p.addr, long.as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [414], "{}", seen.text());
    assert!(seen.closed);
    assert_eq!(backend.connections(), 2);
}
