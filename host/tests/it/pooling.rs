//! HTTP/1.1 backend connections driven by the request's own task
//! (`upstream/h1.rs`): parked in the worker's pool when a response ends
//! cleanly and reused, and never parked, or dropped from the pool, when
//! they cannot carry another request.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::raw::{PLUGINS, RawBackend, Recorder};
use common::{Proxy, wait_for};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// A proxy whose only domain, `app.test`, is `domain` (its config.json
/// value), started in `dir`. One worker, so the test thread (worker 0's
/// index) sees the pool the requests use.
async fn proxy_in(dir: tempfile::TempDir, domain: &str) -> Proxy {
    let config = format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"app.test": {domain}}}}}"#
    );
    Proxy::start_in_with(
        dir,
        &config,
        bbproxy::app::Options {
            workers: Some(1),
            ..Default::default()
        },
    )
    .await
}

/// [`proxy_in`] a fresh directory.
async fn proxy_of(domain: &str) -> Proxy {
    proxy_in(tempfile::tempdir().unwrap(), domain).await
}

/// A one-worker proxy for `backend`, the domain in the original list form.
async fn proxy(backend: std::net::SocketAddr) -> Proxy {
    proxy_of(&format!(r#"["{backend}"]"#)).await
}

/// Idle connections in the proxy's pool for its only domain.
fn idle(p: &Proxy) -> usize {
    let g = p.generation();
    let pool = g.upstreams[0].clients.get().h1.clone();
    pool.expect("an HTTP/1.1 domain has an owned pool").idle()
}

async fn get(p: &Proxy) -> (StatusCode, String) {
    common::get(&common::client(), &p.url("/x"), "app.test").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_share_one_parked_connection() {
    let backend = Recorder::start().await;
    let p = proxy(backend.addr).await;
    for i in 0..10 {
        assert_eq!(
            get(&p).await,
            (StatusCode::OK, "ok /x".into()),
            "request {i}"
        );
        // Parked when the body ended, before the client had all of it.
        assert_eq!(idle(&p), 1, "after request {i}");
    }
    assert_eq!(backend.connections(), 1);
    assert_eq!(backend.requests(), 10);
}

/// A backend that answers each request with `answer` and keeps reading,
/// or closes the connection that long after its first answer (`hang_up`,
/// as a backend's keep-alive timeout would); counts
/// the connections it accepted, those the proxy closed (cleanly, or with a
/// reset) and those it closed itself.
struct Answering {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicU64>,
    closed_by_proxy: Arc<AtomicU64>,
    reset_by_proxy: Arc<AtomicU64>,
    hung_up: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Answering {
    /// Waits until the proxy has ended `n` connections, cleanly or with a
    /// reset.
    async fn wait_ended(&self, n: u64) {
        wait_for(
            WAIT,
            "the backend to see the proxy end its connections",
            || async {
                self.reset_by_proxy.load(Ordering::SeqCst)
                    + self.closed_by_proxy.load(Ordering::SeqCst)
                    == n
            },
        )
        .await;
    }

    async fn start(answer: &'static [u8], hang_up: Option<Duration>) -> Answering {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let closed_by_proxy = Arc::new(AtomicU64::new(0));
        let hung_up = Arc::new(AtomicU64::new(0));
        let reset_by_proxy = Arc::new(AtomicU64::new(0));
        let (a, c, h, r) = (
            accepted.clone(),
            closed_by_proxy.clone(),
            hung_up.clone(),
            reset_by_proxy.clone(),
        );
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let (c, h, r) = (c.clone(), h.clone(), r.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match stream.read(&mut buf).await {
                            Ok(0) => break,
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                                r.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                            Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            head.clear();
                            let _ = stream.write_all(answer).await;
                            if let Some(after) = hang_up {
                                tokio::time::sleep(after).await;
                                drop(stream);
                                h.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Answering {
            addr,
            accepted,
            closed_by_proxy,
            reset_by_proxy,
            hung_up,
            task,
        }
    }
}

/// Each way a backend may frame its answer, read by the proxy's own
/// HTTP/1.1 codec: the body arrives whole, and the connection is parked
/// for the next request only when the framing and the response allow
/// another exchange on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_framing_arrives_whole_and_parks_only_what_can_carry_another_request() {
    // What, the backend's answer, when it hangs up, the body, parked.
    type Case = (
        &'static str,
        &'static [u8],
        Option<Duration>,
        &'static str,
        bool,
    );
    let cases: [Case; 7] = [
        (
            "chunked, extensions and trailers",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
            None,
            "hello world",
            true,
        ),
        (
            "informational answers first",
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            None,
            "ok",
            true,
        ),
        (
            "HTTP/1.0 with keep-alive",
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok",
            None,
            "ok",
            true,
        ),
        (
            "HTTP/1.0",
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
            None,
            "ok",
            false,
        ),
        (
            "a length beside chunked",
            b"HTTP/1.1 200 OK\r\ncontent-length: 50\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            None,
            "ok",
            false,
        ),
        (
            "bytes past the response",
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\n",
            None,
            "ok",
            false,
        ),
        (
            "a body delimited by the close",
            b"HTTP/1.1 200 OK\r\n\r\nuntil the close",
            Some(Duration::ZERO),
            "until the close",
            false,
        ),
    ];
    for (what, answer, hang_up, body, parked) in cases {
        let backend = Answering::start(answer, hang_up).await;
        let p = proxy(backend.addr).await;
        for i in 1..=2 {
            assert_eq!(
                get(&p).await,
                (StatusCode::OK, body.into()),
                "{what}, request {i}"
            );
            assert_eq!(idle(&p), usize::from(parked), "{what}, request {i}");
        }
        let connections = if parked { 1 } else { 2 };
        assert_eq!(
            backend.accepted.load(Ordering::SeqCst),
            connections,
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_close_answer_is_not_parked_and_its_socket_closes() {
    let backend = Answering::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
        None,
    )
    .await;
    let p = proxy(backend.addr).await;
    for _ in 0..2 {
        assert_eq!(get(&p).await, (StatusCode::OK, "ok".into()));
        assert_eq!(idle(&p), 0);
    }
    // The backend kept its side open: the proxy closed each connection.
    wait_for(WAIT, "the proxy to close both connections", || async {
        backend.closed_by_proxy.load(Ordering::SeqCst) == 2
    })
    .await;
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 2);
}

/// The backend closes each connection right after its response (no
/// `Connection: close`): the parked connection is found closed and
/// dropped (by the pool's sweeper within about a second, or by the next
/// checkout), and the next request goes out on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_backend_closed_while_parked_is_dropped_and_replaced() {
    let backend = RawBackend::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        Duration::ZERO,
    )
    .await;
    let p = proxy(backend.addr).await;
    assert_eq!(get(&p).await, (StatusCode::OK, "ok".into()));
    // The sweeper takes the connection off the idle list under the pool's
    // lock and closes it after (a close is a system call): the open count
    // can still read 1 for a moment after the list reads empty.
    let open = || bbproxy::upstream::connection_counts().open(&backend.addr.to_string());
    wait_for(
        WAIT,
        "the sweeper to drop the closed connection and close it",
        || async { idle(&p) == 0 && open() == 0 },
    )
    .await;
    assert_eq!(get(&p).await, (StatusCode::OK, "ok".into()));
    assert_eq!(backend.connections(), 2);
}

/// The backend hangs up a parked connection and the next request comes at
/// once, before the sweeper looks: the checkout reads the close before the
/// request is written, and the request goes out on a new connection (no
/// error, no retry of the proxy's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_checked_out_onto_a_closed_connection_goes_out_on_a_new_one() {
    let backend = Answering::start(OK, Some(Duration::from_millis(50))).await;
    let p = proxy(backend.addr).await;
    for i in 1..=3 {
        assert_eq!(get(&p).await, (StatusCode::OK, "ok".into()), "request {i}");
        assert_eq!(idle(&p), 1, "parked after request {i}");
        wait_for(WAIT, "the backend to hang up", || async {
            backend.hung_up.load(Ordering::SeqCst) == i
        })
        .await;
    }
    assert_eq!(backend.accepted.load(Ordering::SeqCst), 3);
    let g = p.generation();
    assert_eq!(g.upstreams[0].backends[0].state.requests(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_connections_end_at_the_idle_timeout() {
    let backend = Answering::start(OK, None).await;
    let config = format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"app.test": {{"backends": ["{}"],
                "pool": {{"idle_timeout": "200ms"}}}}}}}}"#,
        backend.addr
    );
    let p = Proxy::start_with(
        &config,
        bbproxy::app::Options {
            workers: Some(1),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(get(&p).await, (StatusCode::OK, "ok".into()));
    assert_eq!(idle(&p), 1);
    let parked = std::time::Instant::now();
    wait_for(WAIT, "the proxy to close the idle connection", || async {
        backend.closed_by_proxy.load(Ordering::SeqCst) == 1
    })
    .await;
    let after = parked.elapsed();
    assert!(
        after >= Duration::from_millis(200),
        "closed after {after:?}"
    );
    assert_eq!(idle(&p), 0);
    assert_eq!(backend.reset_by_proxy.load(Ordering::SeqCst), 0);
}

/// A one-worker proxy for `backend` with `extra` keys on its domain.
async fn proxy_with(backend: std::net::SocketAddr, extra: &str) -> Proxy {
    proxy_of(&format!(r#"{{"backends": ["{backend}"], {extra}}}"#)).await
}

/// A response given up at the header timeout: its connection is reset,
/// so the backend stops working on it at once. The backend sent nothing,
/// so without the reset the proxy's close would be a plain FIN (the
/// kernel resets a closed socket only when it holds unread data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_given_up_at_the_header_timeout_resets_its_connection() {
    let backend = Answering::start(b"", None).await;
    let p = proxy_with(
        backend.addr,
        r#""timeouts": {"upstream_response_headers": "200ms"}, "retries": {"attempts": 1}"#,
    )
    .await;
    assert_eq!(get(&p).await.0, StatusCode::GATEWAY_TIMEOUT);
    backend.wait_ended(1).await;
    assert_eq!(
        backend.reset_by_proxy.load(Ordering::SeqCst),
        1,
        "closed without a reset"
    );
}

/// A body abandoned halfway (the backend stalls past `upstream_idle`)
/// resets its connection too; a backend that streams into a full window
/// would otherwise see the close only at its next zero-window probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_abandoned_halfway_resets_its_connection() {
    let backend = Answering::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst ten.",
        None,
    )
    .await;
    let p = proxy_with(backend.addr, r#""timeouts": {"upstream_idle": "200ms"}"#).await;
    let req = hyper::Request::get(p.url("/x"))
        .header(hyper::header::HOST, "app.test")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = common::client().request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let cut = http_body_util::BodyExt::collect(resp.into_body()).await;
    assert!(cut.is_err(), "a cut body reads as complete");
    backend.wait_ended(1).await;
    assert_eq!(
        backend.reset_by_proxy.load(Ordering::SeqCst),
        1,
        "closed without a reset"
    );
}

/// The same over TLS: the reset reaches the TCP socket under the TLS
/// session (no `close_notify`, no FIN).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_response_given_up_at_the_header_timeout_resets_its_connection() {
    use common::tls::{TestCa, backend_server_config, tls_listener};
    let ca = TestCa::new();
    let (reset, ended) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, e) = (reset.clone(), ended.clone());
    // Reads the request head, never answers, and reports how the
    // connection ended.
    let (addr, _task) = tls_listener(
        backend_server_config(&ca, &[b"http/1.1"]),
        Arc::new(AtomicU64::new(0)),
        move |mut tls| {
            let (r, e) = (r.clone(), e.clone());
            async move {
                let mut buf = [0u8; 4096];
                let outcome = loop {
                    match tls.read(&mut buf).await {
                        Ok(0) => break None,
                        Ok(_) => {}
                        Err(err) => break Some(err.kind()),
                    }
                };
                if outcome == Some(std::io::ErrorKind::ConnectionReset) {
                    r.fetch_add(1, Ordering::SeqCst);
                }
                e.fetch_add(1, Ordering::SeqCst);
            }
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend-ca.pem"), ca.pem()).unwrap();
    let p = proxy_in(
        dir,
        &format!(
            r#"{{"backends": ["https://{addr}"], "backend_ca": "backend-ca.pem",
                "timeouts": {{"upstream_response_headers": "200ms"}}, "retries": {{"attempts": 1}}}}"#
        ),
    )
    .await;
    assert_eq!(get(&p).await.0, StatusCode::GATEWAY_TIMEOUT);
    wait_for(WAIT, "the backend to see its connection end", || async {
        ended.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(reset.load(Ordering::SeqCst), 1, "closed without a reset");
}

/// With no idle connections kept, each connection of a complete exchange
/// is closed cleanly, never reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complete_exchange_closes_its_connection_cleanly_when_none_are_kept() {
    let backend = Answering::start(OK, None).await;
    let p = proxy_with(backend.addr, r#""pool": {"max_idle": 0}"#).await;
    for i in 1..=3 {
        assert_eq!(get(&p).await, (StatusCode::OK, "ok".into()), "request {i}");
    }
    backend.wait_ended(3).await;
    assert_eq!(backend.reset_by_proxy.load(Ordering::SeqCst), 0);
    assert_eq!(idle(&p), 0);
}
