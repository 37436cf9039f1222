//! Timeouts: slow request heads (408), idle keep-alive, slow request bodies
//! (408), upstream connect (504 within the timeout, a breaker failure),
//! upstream response headers (504), upstream idle mid-body (cut), refused
//! backends (502).

mod common;

use common::raw::PLUGINS;

use std::time::{Duration, Instant};

use common::raw::{RawBackend, exchange, read_until_close};
use common::{Backend, Proxy, dead_addr};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

async fn proxy(addr: std::net::SocketAddr, timeouts: &str, domain_extra: &str) -> Proxy {
    Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS} "timeouts": {{{timeouts}}},
            "domains": {{"app.test": {{"backends": ["{addr}"]{domain_extra}}}}}}}"#
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_gets_408_and_a_close() {
    let b = Backend::start("a").await;
    let p = proxy(
        b.addr,
        r#""client_header": "300ms", "keep_alive": "10s""#,
        "",
    )
    .await;
    let start = Instant::now();
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: app")
        .await
        .unwrap();
    // Trickle bytes: activity does not reset the head deadline.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = conn.write_all(b".").await;
    }
    let seen = read_until_close(&mut conn, WAIT).await;
    assert_eq!(seen.statuses(), [408], "{}", seen.text());
    assert!(seen.closed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(b.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_is_closed_and_is_not_the_header_timeout() {
    let b = Backend::start("a").await;
    let p = proxy(
        b.addr,
        r#""client_header": "200ms", "keep_alive": "1500ms""#,
        "",
    )
    .await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    let get = b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n";
    conn.write_all(get).await.unwrap();
    let first = read_until_close(&mut conn, Duration::from_millis(500)).await;
    assert_eq!(first.statuses(), [200]);
    assert!(!first.closed);
    // Idle for longer than the header timeout: still open.
    tokio::time::sleep(Duration::from_millis(600)).await;
    conn.write_all(get).await.unwrap();
    let second = read_until_close(&mut conn, Duration::from_millis(500)).await;
    assert_eq!(second.statuses(), [200], "{}", second.text());
    assert!(!second.closed);
    // Then idle past keep_alive: closed without a response.
    let start = Instant::now();
    let rest = read_until_close(&mut conn, WAIT).await;
    assert!(rest.closed);
    assert!(rest.bytes.is_empty(), "{}", rest.text());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

/// The header timeout of a later request on a kept-alive connection runs
/// from that head's first byte, not from the end of the keep-alive period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_second_head_on_a_kept_alive_connection_gets_408_on_time() {
    let b = Backend::start("a").await;
    let p = proxy(
        b.addr,
        r#""client_header": "300ms", "keep_alive": "30s""#,
        "",
    )
    .await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .unwrap();
    let first = read_until_close(&mut conn, Duration::from_millis(500)).await;
    assert_eq!(first.statuses(), [200]);
    assert!(!first.closed);
    let start = Instant::now();
    conn.write_all(b"GET / HTTP/1.1\r\nhost: app")
        .await
        .unwrap();
    let seen = read_until_close(&mut conn, WAIT).await;
    assert_eq!(seen.statuses(), [408], "{}", seen.text());
    assert!(seen.closed);
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_gets_408() {
    let b = Backend::start("a").await;
    let p = proxy(b.addr, "", r#", "timeouts": {"client_body": "300ms"}"#).await;
    let start = Instant::now();
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(
        b"POST /upload HTTP/1.1\r\nhost: app.test\r\ncontent-length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let seen = read_until_close(&mut conn, WAIT).await;
    assert_eq!(seen.statuses(), [408], "{}", seen.text());
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backend_is_502_at_once() {
    let dead = dead_addr().await;
    let p = proxy(dead, "", r#", "retries": {"attempts": 1}"#).await;
    let start = Instant::now();
    let seen = exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(seen.statuses(), [502], "{}", seen.text());
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// A listener whose accept queue is full drops further SYNs: a connect to
/// it hangs like one to a blackholed address.
fn blackhole() -> (
    socket2::Socket,
    Vec<std::net::TcpStream>,
    std::net::SocketAddr,
) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => fill.push(c),
            Err(_) => break,
        }
    }
    (s, fill, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_is_504_and_a_breaker_failure() {
    let (_listener, _fill, addr) = blackhole();
    let p = proxy(
        addr,
        "",
        r#", "timeouts": {"upstream_connect": "400ms"}, "retries": {"attempts": 1}"#,
    )
    .await;
    let start = Instant::now();
    let seen = exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    let took = start.elapsed();
    assert_eq!(seen.statuses(), [504], "{}", seen.text());
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let g = p.generation();
    assert_eq!(g.upstreams[0].backends[0].state.consecutive_failures(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_answers_is_504() {
    let silent = RawBackend::start(b"", Duration::from_secs(30)).await;
    let p = proxy(
        silent.addr,
        "",
        r#", "timeouts": {"upstream_response_headers": "400ms"}, "retries": {"attempts": 1}"#,
    )
    .await;
    let start = Instant::now();
    let seen = exchange(
        p.addr,
        b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(seen.statuses(), [504], "{}", seen.text());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        p.generation().upstreams[0].backends[0]
            .state
            .consecutive_failures(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_stalling_mid_body_is_cut_at_the_idle_timeout() {
    let stall = RawBackend::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst ten.",
        Duration::from_secs(30),
    )
    .await;
    let p = proxy(
        stall.addr,
        "",
        r#", "timeouts": {"upstream_idle": "400ms"}"#,
    )
    .await;
    let start = Instant::now();
    let seen = exchange(p.addr, b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n", WAIT).await;
    // Headers and the first piece arrive; then the connection is cut short
    // of the declared length, never a clean-looking complete response.
    assert_eq!(seen.statuses(), [200], "{}", seen.text());
    assert!(seen.closed);
    assert!(seen.text().ends_with("first ten."), "{}", seen.text());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_header_timeout() {
    let b = Backend::start("a").await;
    let p = proxy(
        b.addr,
        r#""client_header": "300ms", "keep_alive": "30s""#,
        "",
    )
    .await;
    let start = Instant::now();
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    let seen = read_until_close(&mut conn, WAIT).await;
    assert!(seen.closed);
    assert!(seen.bytes.is_empty(), "{}", seen.text());
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

/// A client that goes away mid-request cancels the upstream request: the
/// backend sees its connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_abort_cancels_the_upstream_request() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut buf)
                .await
                .unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        // Never answer; report when the proxy closes its side.
        loop {
            match tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let _ = tx.send(Instant::now());
    });
    let p = proxy(addr, "", "").await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(b"GET /slow HTTP/1.1\r\nhost: app.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let aborted = Instant::now();
    drop(conn);
    let closed = tokio::time::timeout(Duration::from_secs(2), rx)
        .await
        .expect("the backend connection stayed open after the client left")
        .unwrap();
    assert!(closed.duration_since(aborted) < Duration::from_secs(1));
}

/// 200 slowloris connections trickling bytes do not starve normal clients,
/// and each is closed at the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_flood_does_not_starve_normal_clients() {
    let b = Backend::start("a").await;
    let p = proxy(b.addr, r#""client_header": "1s""#, "").await;
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut c = TcpStream::connect(p.addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: app.test\r\nx-a: ")
            .await
            .unwrap();
        slow.push(c);
    }
    let flood_start = Instant::now();
    let trickle = tokio::spawn(async move {
        let mut closed = 0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            for c in &mut slow {
                let _ = c.write_all(b"a").await;
            }
        }
        for c in &mut slow {
            let seen = read_until_close(c, Duration::from_secs(3)).await;
            if seen.closed && seen.statuses() == [408] {
                closed += 1;
            }
        }
        (closed, flood_start.elapsed())
    });
    let c = common::client();
    let mut latencies = Vec::new();
    for _ in 0..50 {
        let start = Instant::now();
        let (status, _) = common::get(&c, &p.url("/"), "app.test").await;
        assert_eq!(status, hyper::StatusCode::OK);
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100 - 1];
    eprintln!(
        "normal GETs during a 200-connection slowloris: p50 {:?}, p99 {:?}",
        latencies[25], p99
    );
    assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    let (closed, took) = trickle.await.unwrap();
    eprintln!("{closed} of 200 slow connections got 408 and a close; last after {took:?}");
    assert_eq!(closed, 200);
}
