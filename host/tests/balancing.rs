//! Load balancing and circuit breaking through the embedded default plugins,
//! against real backends on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{Backend, Proxy, addrs, client, dead_addr, get, wait_for};
use hyper::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_sends_exactly_a_third_to_each_of_three_backends() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {}}}}}"#,
        addrs(&[&a, &b, &c])
    ))
    .await;
    let http = client();
    for _ in 0..300 {
        let (status, _) = get(&http, &proxy.url("/"), "app.test").await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (100, 100, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_weights() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {{
                "balancer": "weighted-round-robin",
                "backends": [{{"address": "{}", "weight": 3}}, {{"address": "{}", "weight": 1}}]}}}}}}"#,
        a.addr, b.addr
    ))
    .await;
    let http = client();
    for _ in 0..400 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.0,
            StatusCode::OK
        );
    }
    assert_eq!((a.hits(), b.hits()), (300, 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_prefers_the_idle_backend_when_one_is_slow() {
    let slow = Backend::start_with_delay("slow", Duration::from_millis(300)).await;
    let fast = Backend::start("fast").await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {{"balancer": "least-request", "backends": {}}}}}}}"#,
        addrs(&[&slow, &fast])
    ))
    .await;
    // Four clients, ten requests each. Round-robin would give the slow
    // backend 20; least-request gives it only what arrives while it is idle.
    let url = proxy.url("/");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let http = client();
            for _ in 0..10 {
                assert_eq!(get(&http, &url, "app.test").await.0, StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(slow.hits() + fast.hits(), 40);
    assert!(slow.hits() <= 8, "slow backend got {} of 40", slow.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_after_threshold_and_closes_when_the_backend_returns() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dead = dead_addr().await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "circuit_breaker_threshold": 3, "circuit_breaker_timeout": "2s",
            "retries": {{"attempts": 1}},
            "domains": {{"app.test": ["{}", "{}", "{dead}"]}}}}"#,
        a.addr, b.addr
    ))
    .await;
    let http = client();
    // Retries off, so clients see each failure. Round-robin reaches the
    // dead backend every third request: three 502s open its breaker, after
    // which the other two take everything.
    let mut bad = 0;
    for _ in 0..30 {
        let (status, body) = get(&http, &proxy.url("/"), "app.test").await;
        if status == StatusCode::BAD_GATEWAY {
            assert!(
                body.contains(&dead.to_string()),
                "502 body names the backend: {body}"
            );
            bad += 1;
        } else {
            assert_eq!(status, StatusCode::OK);
        }
    }
    assert_eq!(
        bad, 3,
        "exactly threshold failures before the breaker opens"
    );
    assert_eq!(a.hits() + b.hits(), 27);

    // Bring it back: after the open period a probe reaches it, succeeds,
    // and it takes traffic again.
    let revived = Backend::start_on("revived", dead).await;
    wait_for(
        Duration::from_secs(10),
        "the revived backend to get traffic",
        || async {
            let (status, _) = get(&http, &proxy.url("/"), "app.test").await;
            assert_eq!(status, StatusCode::OK, "no 502 once the backend is back");
            revived.hits() >= 3
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_open_answers_503() {
    let dead = dead_addr().await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "circuit_breaker_threshold": 1, "circuit_breaker_timeout": "1m",
            "domains": {{"app.test": ["{dead}"]}}}}"#
    ))
    .await;
    let http = client();
    assert_eq!(
        get(&http, &proxy.url("/"), "app.test").await.0,
        StatusCode::BAD_GATEWAY
    );
    let (status, body) = get(&http, &proxy.url("/"), "app.test").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("app.test"), "{body}");
}
