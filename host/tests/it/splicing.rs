//! Response bodies spliced from backend to client sockets (`crate::splice`):
//! every byte arrives in order on plain HTTP/1.1 keep-alive connections on
//! both sides, HTTP/2 clients still get copies, and a backend that stops
//! short or pauses cuts the response as on the copying path.

use crate::common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::raw::{PLUGINS, RawBackend, read_head};
use common::{Proxy, pattern};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);
const SPLICED: &str = bbproxy::telemetry::names::SPLICED_BYTES;

/// A backend answering `/<n>` with `n` bytes of [`pattern`] and a
/// `Content-Length` (and with `?pad=<m>`, an `x-pad` field of `m` bytes in
/// its head); counts the connections it accepted.
async fn sized_backend() -> (
    std::net::SocketAddr,
    Arc<AtomicU64>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let n: usize = req.uri().path()[1..].parse().unwrap_or(0);
                    let mut resp = Response::new(Full::new(Bytes::from(pattern(n))));
                    if let Some(pad) = req.uri().query().and_then(|q| q.strip_prefix("pad=")) {
                        let pad = "p".repeat(pad.parse().unwrap_or(0));
                        resp.headers_mut().insert("x-pad", pad.parse().unwrap());
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, accepted, task)
}

fn config(backend: std::net::SocketAddr, extra: &str) -> String {
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS} {extra}
            "domains": {{"app.test": ["{backend}"]}}}}"#
    )
}

/// One GET on a keep-alive connection: the response's status line and its
/// body, read to its `Content-Length`.
async fn get(conn: &mut TcpStream, path: &str) -> (String, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: app.test\r\n\r\n");
    conn.write_all(request.as_bytes()).await.unwrap();
    get_response(conn).await
}

/// The next response on `conn`: its status line and its body, read to its
/// `Content-Length`.
async fn get_response(conn: &mut TcpStream) -> (String, Vec<u8>) {
    let head = read_head(conn).await.unwrap();
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap_or_else(|| panic!("no content-length: {head}"))
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).await.unwrap();
    (head.lines().next().unwrap_or("").to_owned(), body)
}

/// Bodies around every edge of the splicing path (below, at and above its
/// 16 KiB floor and the pipe's 64 KiB), small ones between them, and one
/// behind a 12 KB head, arrive byte for byte,
/// one after the other on one client connection; the backend connection
/// is reused throughout, so each spliced body ended where its framing
/// said; and the large ones went through the pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_bodies_are_spliced_whole_on_keep_alive_connections() {
    let (backend, accepted, _task) = sized_backend().await;
    let p = Proxy::start(&config(backend, "")).await;
    let before = common::counter(SPLICED, &[]);
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    let sizes = [
        13,
        16 * 1024 - 1,
        16 * 1024,
        16 * 1024 + 1,
        13,
        65_536,
        65_537,
        100_003,
        1 << 20,
        0,
        300_001,
        13,
    ];
    let paths = sizes
        .iter()
        .map(|n| (*n, format!("/{n}")))
        .chain([(100_003, "/100003?pad=12000".to_owned())]);
    for (n, path) in paths {
        let (status, body) = tokio::time::timeout(WAIT, get(&mut conn, &path))
            .await
            .unwrap_or_else(|_| panic!("no answer for {n} bytes in {WAIT:?}"));
        assert_eq!(status, "http/1.1 200 ok", "{n} bytes");
        assert_eq!(body.len(), n);
        assert!(body == pattern(n), "the body of {n} bytes differs");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a backend connection was not reused"
    );
    let spliced = common::counter(SPLICED, &[]) - before;
    assert!(
        spliced >= 1 << 20,
        "only {spliced} bytes were spliced: the large bodies were copied"
    );
}

/// A chunked body's large chunks are spliced too (their size lines and
/// ends still parsed): the backend's 10 MiB in 64 KiB chunks arrive whole,
/// re-chunked by the proxy, and most of them through the pipe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_large_chunks_of_a_chunked_body_are_spliced() {
    let backend = common::Backend::start("chunked").await;
    let p = Proxy::start(&config(backend.addr, "")).await;
    let before = common::counter(SPLICED, &[]);
    let req = Request::get("http://app.test/download")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(WAIT, common::client_to(p.addr).request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.version(), hyper::Version::HTTP_11);
    assert!(resp.headers().get("content-length").is_none());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        body == pattern(common::DOWNLOAD_BYTES),
        "the chunked body differs"
    );
    let spliced = common::counter(SPLICED, &[]) - before;
    assert!(
        spliced >= common::DOWNLOAD_BYTES as u64 / 2,
        "only {spliced} bytes were spliced"
    );
}

/// HTTP/2 clients get their bodies copied into frames (a hole would arrive
/// as zeros), and HTTP/1.1 clients on the same listener still splice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_the_bytes_not_the_holes() {
    let (backend, _accepted, _task) = sized_backend().await;
    let p = Proxy::start(&config(backend, "")).await;
    let h2 = common::h2c_client_to(p.addr);
    for n in [65_536, 300_001] {
        let req = Request::get(format!("http://app.test/{n}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = tokio::time::timeout(WAIT, h2.request(req))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(body == pattern(n), "the HTTP/2 body of {n} bytes differs");
    }
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    let (_, body) = tokio::time::timeout(WAIT, get(&mut conn, "/300001"))
        .await
        .expect("no HTTP/1.1 answer");
    assert!(body == pattern(300_001), "the HTTP/1.1 body differs");
}

/// A backend that declares 1 MiB, sends 200,000 bytes and closes: the
/// client gets (some of) those bytes, unaltered, and then the close, short
/// of the declared length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spliced_body_the_backend_cuts_short_closes_the_client_connection() {
    let sent = 200_000;
    let backend = RawBackend::start(cut_response(1 << 20, sent), Duration::ZERO).await;
    let p = Proxy::start(&config(backend.addr, "")).await;
    let seen =
        common::raw::exchange(p.addr, b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n", WAIT).await;
    assert!(seen.closed, "the connection stayed open");
    // What was still queued when the body failed may be lost with the
    // connection; what came is the backend's.
    assert_short(&seen.bytes, sent);
}

/// A backend that sends 200,000 of its 1 MiB and then pauses: the
/// response is cut at `timeouts.upstream_idle`, as a copied one is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spliced_body_the_backend_pauses_is_cut_at_upstream_idle() {
    let sent = 200_000;
    let backend = RawBackend::start(cut_response(1 << 20, sent), Duration::from_secs(60)).await;
    let p = Proxy::start(&config(
        backend.addr,
        r#""timeouts": {"upstream_idle": "300ms"},"#,
    ))
    .await;
    let cut = common::counter(bbproxy::telemetry::names::UPSTREAM_BODY_TIMEOUTS, &[]);
    let seen =
        common::raw::exchange(p.addr, b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n", WAIT).await;
    assert!(seen.closed, "the response was not cut within {WAIT:?}");
    // Everything that came before the pause went out before the cut.
    assert_eq!(assert_short(&seen.bytes, sent), sent);
    assert!(common::counter(bbproxy::telemetry::names::UPSTREAM_BODY_TIMEOUTS, &[]) > cut);
}

/// A response head declaring `declared` bytes and the first `sent` of them.
fn cut_response(declared: usize, sent: usize) -> &'static [u8] {
    let mut response =
        format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n").into_bytes();
    response.extend_from_slice(&pattern(sent));
    Box::leak(response.into_boxed_slice())
}

/// `bytes` are a 200 whose body is the start of the pattern, at most
/// `sent` bytes of it; its length.
fn assert_short(bytes: &[u8], sent: usize) -> usize {
    let at = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no response head");
    let head = String::from_utf8_lossy(&bytes[..at]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = &bytes[at + 4..];
    assert!(body.len() <= sent, "{} bytes, of {sent} sent", body.len());
    assert!(
        body == &pattern(sent)[..body.len()],
        "the bytes that came differ"
    );
    body.len()
}

/// A backend that answers with `len` bytes of [`pattern`] and a
/// `Content-Length`, written `piece` bytes at a time, `gap` apart.
async fn trickling_backend(
    len: usize,
    piece: usize,
    gap: Duration,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Made before the head goes out: building 24 MiB in a debug build on
    // a busy machine took longer than the proxy's `upstream_idle`, which
    // rightly cut the response before its first piece (CI, 2026-12-07).
    let body = pattern(len);
    let task = tokio::spawn(async move {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(request) = read_head(&mut stream).await else {
            return;
        };
        // The request's body read whole: closing with unread bytes resets
        // the connection, which may cut the response's last bytes.
        let sent = String::from_utf8_lossy(&request)
            .to_ascii_lowercase()
            .lines()
            .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok())
            .unwrap_or(0);
        if stream.read_exact(&mut vec![0; sent]).await.is_err() {
            return;
        }
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for chunk in body.chunks(piece) {
            if stream.write_all(chunk).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    (addr, task)
}

/// A client that pauses while a small spliced piece waits for its socket
/// is the slow one, not the backend. hyper's writer (this request has a
/// body, so the server's own loop hands the connection to hyper) keeps
/// asking the body for its next piece while the last one waits for the
/// socket, under the connection's body hold as long as the pieces are small
/// (a backend trickling 8 KiB): the body sees a pause that is the client's.
/// The response is not cut at `upstream_idle` (1 s) during the client's
/// 3 s pause (its `client_write` is 10 s), and every byte arrives once the
/// client reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piece_waiting_for_a_paused_client_is_not_the_backend_going_idle() {
    paused_client_gets_it_all(b"POST / HTTP/1.1\r\nhost: app.test\r\ncontent-length: 2\r\n\r\nhi")
        .await;
}

/// The same pause on the server's own loop, whose writer asks for the next
/// piece only once the socket has taken the last one: the body is not
/// polled during the pause, and its idle clock starts again with each
/// piece (kept from the first pause, it cuts the response here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_client_on_the_own_loop_gets_the_whole_trickled_body() {
    paused_client_gets_it_all(b"GET / HTTP/1.1\r\nhost: app.test\r\n\r\n").await;
}

/// Sends `request` for 24 MiB trickled by the backend, pauses 3 s (with
/// `upstream_idle` at 1 s), then reads the whole response.
async fn paused_client_gets_it_all(request: &[u8]) {
    const LEN: usize = 24 << 20;
    let (backend, _task) = trickling_backend(LEN, 8192, Duration::from_millis(1)).await;
    let p = Proxy::start(&config(
        backend,
        r#""timeouts": {"upstream_idle": "1s", "client_write": "10s"},"#,
    ))
    .await;
    let before = common::counter(SPLICED, &[]);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut conn = socket.connect(p.addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    // The client's pause: what the test is about, not a wait for anything.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), get_response(&mut conn))
        .await
        .expect("the response did not finish");
    assert_eq!(status, "http/1.1 200 ok");
    assert_eq!(body.len(), LEN, "the response was cut");
    assert!(body == pattern(LEN), "the body differs");
    let spliced = common::counter(SPLICED, &[]) - before;
    assert!(
        spliced > (LEN / 2) as u64,
        "only {spliced} bytes were spliced"
    );
}
