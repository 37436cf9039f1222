//! Forwarding behaviour beyond the plain path: retries (connect failures
//! for any method, resets only for idempotent ones, never a POST whose body
//! went out; bounded by a budget), active health checks, WebSocket-style
//! Upgrade pass-through that survives a reload, HTTP/2 (h2c) to backends,
//! and pool knobs.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::raw::{PLUGINS, RawBackend, Recorder};
use common::{Backend, Proxy, dead_addr, wait_for};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

fn config(backends: &[String], domain_extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"app.test": {{"backends": [{}]{domain_extra}}}}}}}"#,
        list.join(", ")
    )
}

async fn send(
    c: &hyper_util::client::legacy::Client<common::ResolveTo, Full<Bytes>>,
    method: &str,
    body: &'static [u8],
) -> (StatusCode, String) {
    let req = Request::builder()
        .method(method)
        .uri("http://app.test/x")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_are_retried_on_another_backend_for_any_method() {
    let good = Backend::start("good").await;
    let dead = dead_addr().await;
    let p = Proxy::start(&config(&[dead.to_string(), good.addr.to_string()], "")).await;
    let c = common::client_to(p.addr);
    for method in ["GET", "POST", "POST", "GET"] {
        let (status, body) = send(&c, method, b"payload").await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "backend good"),
            "{method}"
        );
    }
    assert_eq!(good.hits(), 4);
}

/// The backend reads the head and closes without answering: a GET goes to
/// the other backend; a POST whose body the proxy started sending is not
/// sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_retry_idempotent_requests_only() {
    let good = Backend::start("good").await;
    let bad = RawBackend::start(b"", Duration::ZERO).await;
    let p = Proxy::start(&config(&[bad.addr.to_string(), good.addr.to_string()], "")).await;
    let c = common::client_to(p.addr);
    for _ in 0..4 {
        let (status, body) = send(&c, "GET", b"").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "backend good"));
    }
    assert!(bad.connections() >= 1, "the bad backend was never tried");
    let good_before = good.hits();
    let mut failed = 0;
    for _ in 0..4 {
        let (status, _) = send(&c, "POST", b"pay me once").await;
        if status == StatusCode::BAD_GATEWAY {
            failed += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert!(failed >= 1, "no POST reached the bad backend");
    assert_eq!(
        good.hits() - good_before,
        4 - failed,
        "a failed POST was retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_retries() {
    let good = Backend::start("good").await;
    let dead = dead_addr().await;
    let p = Proxy::start(&config(
        &[dead.to_string(), good.addr.to_string()],
        r#", "retries": {"attempts": 2, "budget_percent": 0, "budget_min": 1}"#,
    ))
    .await;
    let c = common::client_to(p.addr);
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(send(&c, "GET", b"").await.0);
    }
    // One retry in the bucket and none earned: later hits on the dead
    // backend fail.
    assert!(statuses.contains(&StatusCode::BAD_GATEWAY), "{statuses:?}");
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_a_backend_out_and_bring_it_back() {
    let a = Backend::start("a").await;
    let b_addr = dead_addr().await;
    let p = Proxy::start(&config(
        &[a.addr.to_string(), b_addr.to_string()],
        r#", "retries": {"attempts": 1},
           "health_check": {"path": "/healthz", "interval": "100ms", "timeout": "500ms",
                            "unhealthy_threshold": 2, "healthy_threshold": 2}"#,
    ))
    .await;
    let g = p.generation();
    let b_state = g.upstreams[0].backends[1].state.clone();
    wait_for(WAIT, "b to be marked unhealthy", || async {
        !b_state.health.is_healthy()
    })
    .await;
    let c = common::client_to(p.addr);
    for _ in 0..6 {
        assert_eq!(
            send(&c, "GET", b"").await,
            (StatusCode::OK, "backend a".into())
        );
    }
    let b = Backend::start_on("b", b_addr).await;
    wait_for(WAIT, "b to be healthy again", || async {
        b_state.health.is_healthy()
    })
    .await;
    let mut saw_b = false;
    for _ in 0..6 {
        let (status, body) = send(&c, "GET", b"").await;
        assert_eq!(status, StatusCode::OK);
        saw_b |= body == "backend b";
    }
    assert!(saw_b);
    assert!(b.hits() >= 2);
}

/// A backend that switches to a byte echo on `Upgrade: echo`.
async fn echo_upgrade_backend() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|mut req: Request<Incoming>| async move {
                    let on = hyper::upgrade::on(&mut req);
                    tokio::spawn(async move {
                        if let Ok(up) = on.await {
                            let mut io = TokioIo::new(up);
                            let mut buf = [0u8; 1024];
                            while let Ok(n) = io.read(&mut buf).await {
                                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    });
                    let resp = Response::builder()
                        .status(StatusCode::SWITCHING_PROTOCOLS)
                        .header("connection", "upgrade")
                        .header("upgrade", "echo")
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (addr, task)
}

async fn echo(conn: &mut TcpStream, text: &[u8]) {
    conn.write_all(text).await.unwrap();
    let mut got = vec![0u8; text.len()];
    tokio::time::timeout(WAIT, conn.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_pass_through_both_ways_and_survive_a_reload() {
    let (backend, _task) = echo_upgrade_backend().await;
    let p = Proxy::start(&config(&[backend.to_string()], "")).await;
    let mut conn = TcpStream::connect(p.addr).await.unwrap();
    conn.write_all(
        b"GET /ws HTTP/1.1\r\nhost: app.test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    echo(&mut conn, b"hello through the tunnel").await;

    // A reload to a config without that backend leaves the tunnel alone.
    let other = Backend::start("other").await;
    let running = p.running.as_ref().unwrap();
    let text = config(&[other.addr.to_string()], "");
    let path = p.dir.path().join("config.json");
    std::fs::write(&path, text).unwrap();
    let cfg = Arc::new(bbproxy_config::load(&path).unwrap());
    let rt = running.runtime.clone();
    let next = tokio::task::spawn_blocking(move || {
        bbproxy::generation::Generation::build(2, cfg, &rt, &bbproxy::upstream::Registry::default())
    })
    .await
    .unwrap()
    .unwrap();
    running.generation.store(Arc::new(next));
    let c = common::client_to(p.addr);
    assert_eq!(
        send(&c, "GET", b"").await,
        (StatusCode::OK, "backend other".into())
    );
    echo(&mut conn, b"still here after the reload").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_to_backends_is_selectable_per_domain() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        "{:?}",
                        req.version()
                    )))))
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let p = Proxy::start(&config(&[addr.to_string()], r#", "protocol": "h2c""#)).await;
    let c = common::client_to(p.addr);
    assert_eq!(
        send(&c, "GET", b"").await,
        (StatusCode::OK, "HTTP/2.0".into())
    );
    assert_eq!(
        send(&c, "POST", b"body").await,
        (StatusCode::OK, "HTTP/2.0".into())
    );
    let p1 = Proxy::start(&config(&[addr.to_string()], "")).await;
    let c1 = common::client_to(p1.addr);
    assert_eq!(
        send(&c1, "GET", b"").await,
        (StatusCode::OK, "HTTP/1.1".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_max_idle_zero_opens_a_connection_per_request() {
    for (extra, expected) in [("", 1), (r#", "pool": {"max_idle": 0}"#, 3)] {
        let backend = Recorder::start().await;
        let p = Proxy::start(&config(&[backend.addr.to_string()], extra)).await;
        let c = common::client_to(p.addr);
        for _ in 0..3 {
            assert_eq!(send(&c, "GET", b"").await.0, StatusCode::OK);
        }
        assert_eq!(backend.connections(), expected, "{extra}");
    }
}

/// A backend that dies mid-body: an HTTP/2 client sees that stream fail
/// (never a clean-looking complete response) while another stream on the
/// same connection completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_mid_body_resets_only_that_http2_stream() {
    let dying = RawBackend::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial",
        Duration::ZERO,
    )
    .await;
    let good = Backend::start("good").await;
    let p = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGINS}
            "domains": {{"dying.test": {{"backends": ["{}"], "retries": {{"attempts": 1}}}},
                         "good.test": ["{}"]}}}}"#,
        dying.addr, good.addr
    ))
    .await;
    // One HTTP/2 connection for both hosts.
    let tcp = TcpStream::connect(p.addr).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let get = |host: &str| {
        Request::get(format!("http://{host}/"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let resp = h2.send_request(get("dying.test")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let other = h2.send_request(get("good.test")).await.unwrap();
    assert!(
        resp.into_body().collect().await.is_err(),
        "the cut body looked complete"
    );
    let body = other.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "backend good");
    // The connection is still usable.
    let again = h2.send_request(get("good.test")).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}
