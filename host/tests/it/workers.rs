//! Two worker threads: client connections spread over both, and a reload,
//! a graceful drain and a faulting plugin behave the same on each. Which
//! worker holds a connection is read from `/status` (`workers`), so each
//! test first shows that both workers hold some of its connections.

use crate::common;

use std::time::Duration;

use bytes::Bytes;
use common::{Backend, wait_for};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Connections each test opens: with the kernel spreading them over two
/// sockets, all on one worker would happen once in 2^31 runs.
const CONNECTIONS: usize = 32;

fn two_workers() -> bbproxy::app::Options {
    bbproxy::app::Options {
        workers: Some(2),
        ..Default::default()
    }
}

/// `(accepted, open)` per worker, from `/status`.
fn workers(proxy: &common::Proxy) -> Vec<(u64, u64)> {
    let shared = &proxy.running.as_ref().unwrap().shared;
    let status = bbproxy::admin::status(shared);
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["connections_accepted"].as_u64().unwrap(),
                w["connections_open"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// A keep-alive connection of its own to `proxy`.
async fn connect(proxy: &common::Proxy) -> SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    send
}

async fn get(send: &mut SendRequest<Full<Bytes>>, host: &str) -> (StatusCode, String) {
    send.ready().await.unwrap();
    let req = hyper::Request::get("/")
        .header(hyper::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Opens [`CONNECTIONS`] connections and waits until the proxy has them
/// all; asserts that each worker holds some.
async fn spread(proxy: &common::Proxy) -> Vec<SendRequest<Full<Bytes>>> {
    let mut conns = Vec::new();
    for _ in 0..CONNECTIONS {
        conns.push(connect(proxy).await);
    }
    wait_for(
        Duration::from_secs(10),
        "the proxy to accept them",
        || async { workers(proxy).iter().map(|w| w.1).sum::<u64>() == CONNECTIONS as u64 },
    )
    .await;
    let w = workers(proxy);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w.iter().all(|(_, open)| *open > 0),
        "one worker has none: {w:?}"
    );
    conns
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_workers_serve_and_a_reload_reaches_both() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let config = |to: &Backend| common::app_test_config(to.addr, "null");
    let proxy = common::Proxy::start_with(&config(&a), two_workers()).await;
    assert_eq!(proxy.running.as_ref().unwrap().workers, 2);
    let mut conns = spread(&proxy).await;
    for c in &mut conns {
        assert_eq!(
            get(c, "app.test").await,
            (StatusCode::OK, "backend a".into())
        );
    }
    std::fs::write(proxy.dir.path().join("config.json"), config(&b)).unwrap();
    wait_for(Duration::from_secs(10), "the reload", || async {
        proxy.generation().id == 2
    })
    .await;
    // The same connections, on both workers, now reach the new backend.
    for c in &mut conns {
        assert_eq!(
            get(c, "app.test").await,
            (StatusCode::OK, "backend b".into())
        );
    }
    assert_eq!(
        (a.hits(), b.hits()),
        (CONNECTIONS as u64, CONNECTIONS as u64)
    );
    let w = workers(&proxy);
    assert_eq!(
        w.iter().map(|w| w.0).sum::<u64>(),
        CONNECTIONS as u64,
        "{w:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_requests_in_flight_on_both_workers() {
    let slow = Backend::start_with_delay("slow", Duration::from_millis(700)).await;
    let mut proxy = common::Proxy::start_with(
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "shutdown_grace": "20s", "domains": {{"app.test": ["{}"]}}}}"#,
            slow.addr
        ),
        two_workers(),
    )
    .await;
    let conns = spread(&proxy).await;
    let addr = proxy.addr;
    let in_flight: Vec<_> = conns
        .into_iter()
        .map(|mut c| tokio::spawn(async move { get(&mut c, "app.test").await }))
        .collect();
    wait_for(
        Duration::from_secs(10),
        "every request at the backend",
        || async { slow.hits() == CONNECTIONS as u64 },
    )
    .await;
    let running = proxy.running.take().unwrap();
    let stopped = tokio::spawn(running.shutdown());
    // Draining: the listeners of both workers are closed at once.
    wait_for(
        Duration::from_secs(5),
        "new connections to be refused",
        || async { tokio::net::TcpStream::connect(addr).await.is_err() },
    )
    .await;
    for r in in_flight {
        assert_eq!(r.await.unwrap(), (StatusCode::OK, "backend slow".into()));
    }
    tokio::time::timeout(Duration::from_secs(10), stopped)
        .await
        .expect("shutdown did not finish after the last response")
        .unwrap();
}

/// A balancer that traps on every tenth call, counted in the shared state
/// every worker sees: with fail-closed exactly a tenth of the requests fail,
/// whichever worker runs them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_fault_is_contained_on_both_workers() {
    let backend = Backend::start("good").await;
    let dir = common::dir_with(&[(
        common::fixture("hostile_balancer.wasm"),
        "hostile_balancer.wasm",
    )]);
    // The fixture misbehaves only for upstream 1.
    let proxy = common::Proxy::start_in_with(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"other.test": ["{0}"], "app.test": ["{0}"]}},
                "plugins": {{"balancer": {{"path": "hostile_balancer.wasm",
                    "config": {{"mode": "every-10th"}}, "on_fault": "fail-closed",
                    "fault_backoff": {{"after": 1000}}}}}}}}"#,
            backend.addr
        ),
        two_workers(),
    )
    .await;
    let mut conns = spread(&proxy).await;
    let mut failed = 0;
    for round in 0..5 {
        for c in &mut conns {
            let (status, body) = get(c, "app.test").await;
            match status {
                StatusCode::OK => {}
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert!(body.contains("balancer plugin fault (trap)"), "{body}");
                    failed += 1;
                }
                other => panic!("round {round}: {other} {body}"),
            }
        }
    }
    let calls = (5 * CONNECTIONS) as u64;
    assert_eq!(failed, calls / 10);
    assert_eq!(proxy.generation().balancer.primary.faults(), calls / 10);
    assert_eq!(backend.hits(), calls - calls / 10);
}
