//! Request smuggling probes on raw sockets (research list cases 1-8, 10):
//! a recording backend shows the exact bytes that reached it, and the
//! smuggled request must never be among them.

use crate::common;

use common::raw::PLUGINS;

use std::time::Duration;

use common::raw::{RawBackend, Recorder, exchange, read_until_close};
use common::{Proxy, wait_for};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

async fn proxy_to(addr: std::net::SocketAddr) -> Proxy {
    Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"app.test": {{"backends": ["{addr}"], "retries": {{"attempts": 1}}}}}}}}"#
    ))
    .await
}

/// Envoy's six CL+TE variants, each followed by a smuggled request. hyper
/// drops the Content-Length, reads the body as chunked and closes the
/// connection after the response; the proxy forwards one chunked request
/// without Content-Length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_never_smuggles() {
    let variants: [&str; 6] = [
        "content-length: 0\r\ntransfer-encoding: chunked\r\n",
        "content-length: 36\r\ntransfer-encoding: chunked\r\n",
        "content-length: 36\r\n\ttransfer-encoding: chunked\r\n",
        "transfer-encoding: chunked \r\ncontent-length: 36\r\n",
        "transfer-encoding: identity,chunked\r\ncontent-length: 36\r\n",
        "transfer-encoding: identity\r\ncontent-length: 36\r\ntransfer-encoding: chunked\r\n",
    ];
    let backend = Recorder::start().await;
    let proxy = proxy_to(backend.addr).await;
    for (i, framing) in variants.iter().enumerate() {
        let before = backend.requests();
        let request = format!(
            "POST /first HTTP/1.1\r\nhost: app.test\r\n{framing}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: app.test\r\n\r\n"
        );
        let seen = exchange(proxy.addr, request.as_bytes(), WAIT).await;
        let statuses = seen.statuses();
        eprintln!("CL+TE variant {i}: {statuses:?}");
        assert!(
            seen.closed,
            "variant {i}: connection must close: {}",
            seen.text()
        );
        assert!(
            statuses == [400] || statuses == [200],
            "variant {i}: one response, 400 or 200: {}",
            seen.text()
        );
        let got = backend.received().to_ascii_lowercase();
        assert!(!got.contains("/smuggled"), "variant {i}: smuggled: {got}");
        assert!(
            !(got.contains("content-length") && got.contains("transfer-encoding")),
            "variant {i}: both framings forwarded: {got}"
        );
        assert!(backend.requests() <= before + 1, "variant {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_framing_and_malformed_heads_get_400_and_reach_nobody() {
    let backend = Recorder::start().await;
    let proxy = proxy_to(backend.addr).await;
    let probes: &[&[u8]] = &[
        // Differing duplicate Content-Length.
        b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhelloX",
        // Invalid Content-Length values.
        b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: +5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 0x5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 1.5\r\n\r\nh",
        b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 99999999999999999999\r\n\r\n",
        // An empty Content-Length value.
        b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length:\r\n\r\nhello",
        // Transfer-Encoding that does not end in chunked, and TE in HTTP/1.0.
        b"POST / HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: identity\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: gzip\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.0\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        // obs-fold, bare CR, NUL, space before colon, no colon.
        b"GET / HTTP/1.1\r\nhost: app.test\r\nx-a: 1\r\n 2\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: app.test\r\nx-a: 1\r2\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: app.test\r\nx-a: 1\x002\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: app.test\r\nx-a : 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nhost: app.test\r\nx-a\r\n\r\n",
        // A non-token character in a header name.
        b"GET / HTTP/1.1\r\nhost: app.test\r\nx(a): 1\r\n\r\n",
        // Two Host headers; absolute-form target naming another host.
        b"GET / HTTP/1.1\r\nhost: app.test\r\nhost: other.test\r\n\r\n",
        b"GET http://other.test/ HTTP/1.1\r\nhost: app.test\r\n\r\n",
        b"GET http://other.test/ HTTP/1.0\r\nhost: app.test\r\n\r\n",
        // An empty Host; none at all on HTTP/1.1.
        b"GET / HTTP/1.1\r\nhost: \r\n\r\n",
        b"GET / HTTP/1.1\r\nx-a: 1\r\n\r\n",
    ];
    for (i, probe) in probes.iter().enumerate() {
        let seen = exchange(proxy.addr, probe, WAIT).await;
        assert_eq!(
            seen.statuses(),
            [400],
            "probe {i} {:?}: {}",
            String::from_utf8_lossy(probe),
            seen.text()
        );
        assert!(seen.closed, "probe {i}: connection must close");
    }
    assert_eq!(backend.requests(), 0, "{}", backend.received());
    // Accepted framings: RFC 9110 lets identical Content-Length values
    // merge into one, and `chunked, chunked` ends in chunked. hyper reads
    // both with one framing and the proxy re-frames what it forwards, so the
    // backend sees the body once under one framing, then the pipelined
    // request as its own request.
    let accepted: [(&[u8], &str); 2] = [
        (
            b"POST /dup HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\nhello",
            "content-length: 5\r\n",
        ),
        (
            b"POST /dup HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "transfer-encoding: chunked\r\n",
        ),
    ];
    for (i, (probe, framing)) in accepted.into_iter().enumerate() {
        let before = backend.bytes.lock().unwrap().len();
        let requests = backend.requests();
        let mut request = probe.to_vec();
        request.extend_from_slice(
            b"GET /next HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
        );
        let seen = exchange(proxy.addr, &request, WAIT).await;
        assert_eq!(seen.statuses(), [200, 200], "accepted {i}: {}", seen.text());
        assert!(seen.closed, "accepted {i}: connection: close was ignored");
        let text = seen.text();
        let dup = text
            .find("ok /dup")
            .unwrap_or_else(|| panic!("accepted {i}: {text}"));
        assert!(text[dup..].contains("ok /next"), "accepted {i}: {text}");
        assert_eq!(backend.requests(), requests + 2, "accepted {i}");
        let got =
            String::from_utf8_lossy(&backend.bytes.lock().unwrap()[before..]).to_ascii_lowercase();
        let (head, rest) = got
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("accepted {i}: {got}"));
        assert_eq!(
            format!("{head}\r\n").matches(framing).count(),
            1,
            "accepted {i}: one {framing:?}: {head}"
        );
        assert!(
            !head.contains("content-length") || !head.contains("transfer-encoding"),
            "accepted {i}: {head}"
        );
        assert_eq!(
            got.matches("hello").count(),
            1,
            "accepted {i}: body once: {got}"
        );
        let body_end = rest
            .find("get /next http/1.1\r\n")
            .unwrap_or_else(|| panic!("accepted {i}: {got}"));
        let body = &rest[..body_end];
        assert!(
            body == "hello" || body == "5\r\nhello\r\n0\r\n\r\n",
            "accepted {i}: body {body:?}"
        );
    }
}

/// Chunk framing errors with a pipelined request behind them: the backend
/// may see the start of the body, never the pipelined request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunks_never_let_the_next_request_through() {
    let probes: &[&str] = &[
        "f0000000000000003\r\nabc\r\n0\r\n\r\n",
        "zz\r\nabc\r\n0\r\n\r\n",
        "4\r\nabcdefgh\r\n0\r\n\r\n",
        "3\nabc\n0\n\n",
        "3;ext\nx\r\nabc\r\n0\r\n\r\n",
    ];
    let backend = Recorder::start().await;
    let proxy = proxy_to(backend.addr).await;
    for (i, chunks) in probes.iter().enumerate() {
        let request = format!(
            "POST /upload HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n{chunks}GET /sneaky HTTP/1.1\r\nhost: app.test\r\n\r\n"
        );
        let seen = exchange(proxy.addr, request.as_bytes(), WAIT).await;
        assert!(seen.closed, "probe {i}: {}", seen.text());
        let statuses = seen.statuses();
        assert!(
            statuses.len() <= 1 && statuses.iter().all(|s| *s >= 400),
            "probe {i}: {}",
            seen.text()
        );
        assert!(!backend.received().contains("/sneaky"), "probe {i}");
    }
    // A truncated last chunk, then the client half-closes: the backend may
    // see the bytes that came, never a chunked body that ends as if whole.
    let before = backend.bytes.lock().unwrap().len();
    let requests = backend.requests();
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(
        b"POST /truncated HTTP/1.1\r\nhost: app.test\r\ntransfer-encoding: chunked\r\n\r\n3\r\nab",
    )
    .await
    .unwrap();
    conn.shutdown().await.unwrap();
    let seen = read_until_close(&mut conn, WAIT).await;
    assert_eq!(seen.statuses(), [400], "truncated: {}", seen.text());
    assert!(seen.closed, "truncated: connection must close");
    assert!(backend.requests() <= requests + 1, "truncated");
    let got = String::from_utf8_lossy(&backend.bytes.lock().unwrap()[before..]).into_owned();
    let body = got.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(
        !body.contains("0\r\n\r\n"),
        "truncated body forwarded as complete: {got:?}"
    );
    assert!(
        !body.contains("abc") && body.len() <= "2\r\nab\r\n".len(),
        "truncated: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_never_reach_the_backend() {
    let backend = Recorder::start().await;
    let proxy = proxy_to(backend.addr).await;
    let seen = exchange(
        proxy.addr,
        b"GET /hop HTTP/1.1\r\nhost: app.test\r\nconnection: close, x-foo\r\nx-foo: secret\r\nkeep-alive: timeout=5\r\nte: gzip\r\nupgrade: h2c\r\nproxy-connection: keep-alive\r\nx-kept: yes\r\n\r\n",
        WAIT,
    )
    .await;
    assert_eq!(seen.statuses(), [200], "{}", seen.text());
    let got = backend.received().to_ascii_lowercase();
    for h in ["x-foo", "keep-alive", "te:", "upgrade", "proxy-connection"] {
        assert!(!got.contains(h), "{h} forwarded: {got}");
    }
    assert!(got.contains("x-kept: yes"), "{got}");
}

/// Pipelined requests are answered in order, each reaching the backend once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let backend = Recorder::start().await;
    let proxy = proxy_to(backend.addr).await;
    let mut request = String::new();
    for i in 0..10 {
        if i % 2 == 0 {
            request += &format!("GET /p{i} HTTP/1.1\r\nhost: app.test\r\n\r\n");
        } else {
            request += &format!(
                "POST /p{i} HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\n\r\nbody{i}"
            );
        }
    }
    request += "GET /last HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";
    let seen = exchange(proxy.addr, request.as_bytes(), WAIT).await;
    assert_eq!(seen.statuses(), [200; 11], "{}", seen.text());
    let text = seen.text();
    let mut at = 0;
    for i in 0..10 {
        let needle = format!("ok /p{i}");
        let found = text[at..]
            .find(&needle)
            .unwrap_or_else(|| panic!("{needle} in {text}"));
        at += found;
    }
    assert_eq!(backend.requests(), 11);
}

/// A backend that frames its response badly, or sends a head larger than
/// the upstream read limit, gets a 502, and its connection is not reused:
/// the next request opens a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_response_framing_is_502_and_the_connection_is_discarded() {
    let mut oversized = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    oversized.extend(std::iter::repeat_n(
        b'a',
        bbproxy::upstream::pool::UPSTREAM_READ_BUFFER,
    ));
    oversized.extend_from_slice(b"\r\ncontent-length: 2\r\n\r\nok");
    let oversized: &'static [u8] = Box::leak(oversized.into_boxed_slice());
    for response in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"[..],
        &b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 2\r\n\r\nok"[..],
        &b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\nok"[..],
        oversized,
    ] {
        let backend = RawBackend::start(response, Duration::from_secs(30)).await;
        let proxy = proxy_to(backend.addr).await;
        for round in 1..=2u64 {
            let seen = exchange(
                proxy.addr,
                b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
                WAIT,
            )
            .await;
            assert_eq!(
                seen.statuses(),
                [502],
                "{:?}: {}",
                String::from_utf8_lossy(&response[..response.len().min(80)]),
                seen.text().chars().take(200).collect::<String>()
            );
            wait_for(WAIT, "a fresh backend connection", || async {
                backend.connections() == round
            })
            .await;
        }
    }
}
