//! The server's own HTTP/1.1 loop (`server::h1`) on raw sockets: the
//! requests it answers and those it hands to hyper share one connection in
//! order, and its responses are framed as hyper's are.

use crate::common;

use std::time::Duration;

use common::Proxy;
use common::raw::{PLUGINS, RawBackend, Recorder, read_head, read_until_close};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

async fn proxy_to(domains: &[(&str, std::net::SocketAddr)]) -> Proxy {
    let domains: Vec<String> = domains
        .iter()
        .map(|(name, addr)| {
            format!(r#""{name}": {{"backends": ["{addr}"], "retries": {{"attempts": 1}}}}"#)
        })
        .collect();
    Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{{}}}}}"#,
        domains.join(", ")
    ))
    .await
}

/// The bodies of the `ok <path>` responses in `text`, in order.
fn bodies(text: &str) -> Vec<&str> {
    text.match_indices("ok /")
        .map(|(i, _)| &text[i..i + 5])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_on_both_paths_are_answered_in_order() {
    let backend = Recorder::start().await;
    let proxy = proxy_to(&[("app.test", backend.addr)]).await;
    // One write: a GET the loop answers, a POST with a body it hands to
    // hyper with every byte read ahead, then a GET hyper answers too, the
    // last asking to close.
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(
        b"GET /a HTTP/1.1\r\nhost: app.test\r\n\r\n\
          POST /b HTTP/1.1\r\nhost: app.test\r\ncontent-length: 5\r\n\r\nhello\
          GET /c HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let seen = read_until_close(&mut conn, WAIT).await;
    let text = seen.text();
    assert_eq!(seen.statuses(), [200, 200, 200], "{text}");
    assert_eq!(bodies(&text), ["ok /a", "ok /b", "ok /c"], "{text}");
    assert!(seen.closed, "connection: close is kept: {text}");
    assert!(
        backend.received().contains("hello"),
        "the POST's body went on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_answers_the_loops_requests_one_after_another() {
    let backend = Recorder::start().await;
    let proxy = proxy_to(&[("app.test", backend.addr)]).await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    for path in ["/a", "/b", "/c"] {
        conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: app.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = String::from_utf8(read_head(&mut conn).await.unwrap()).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-length: 5\r\n"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        let mut body = [0u8; 5];
        conn.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, format!("ok {path}").as_bytes());
    }
    // A malformed head after them still gets hyper's 400.
    conn.write_all(b"GET /d HTTP/1.1\r\nbad header\r\n\r\n")
        .await
        .unwrap();
    let seen = read_until_close(&mut conn, WAIT).await;
    assert_eq!(seen.statuses(), [400], "{}", seen.text());
    assert_eq!(backend.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_are_framed_as_hyper_frames_them() {
    let chunked = RawBackend::start(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        Duration::from_secs(30),
    )
    .await;
    let empty =
        RawBackend::start(b"HTTP/1.1 204 No Content\r\n\r\n", Duration::from_secs(30)).await;
    let head = RawBackend::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n",
        Duration::from_secs(30),
    )
    .await;
    let proxy = proxy_to(&[
        ("chunked.test", chunked.addr),
        ("empty.test", empty.addr),
        ("head.test", head.addr),
    ])
    .await;
    // A HEAD says the length and sends no body, the proxy's own answer
    // (a 421 with text for a GET) included; a 204 neither: the request
    // after each is read as the next response, not as a body.
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(
        b"HEAD / HTTP/1.1\r\nhost: nowhere.test\r\n\r\n\
          HEAD / HTTP/1.1\r\nhost: head.test\r\n\r\n\
          GET / HTTP/1.1\r\nhost: empty.test\r\n\r\n\
          GET / HTTP/1.1\r\nhost: chunked.test\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let seen = read_until_close(&mut conn, WAIT).await;
    let text = seen.text();
    assert_eq!(seen.statuses(), [421, 200, 204, 200], "{text}");
    let responses: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    let (own_response, head_response, empty_response, chunked_response) =
        (responses[0], responses[1], responses[2], responses[3]);
    assert!(own_response.contains("\r\ncontent-length: "), "{text}");
    assert!(
        own_response.ends_with("\r\n\r\n"),
        "no body to a HEAD: {text}"
    );
    assert!(
        head_response.contains("\r\ncontent-length: 11\r\n"),
        "{text}"
    );
    assert!(head_response.ends_with("\r\n\r\n"), "no HEAD body: {text}");
    assert!(!empty_response.contains("content-length"), "{text}");
    assert!(empty_response.ends_with("\r\n\r\n"), "no 204 body: {text}");
    // The backend's chunks, of a length nobody knew, go out chunked.
    assert!(
        chunked_response.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{text}"
    );
    let body = chunked_response
        .split("\r\n\r\n")
        .skip(1)
        .collect::<Vec<_>>()
        .join("\r\n\r\n");
    assert_eq!(dechunk(&body), "hello world", "{text}");
    assert!(body.ends_with("0\r\n\r\n"), "{text}");
    assert!(seen.closed);
}

/// The data of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size, 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}
