//! The built-in balancer's `consistent-hash` and `first` kinds through the
//! real proxy, against backends on 127.0.0.1.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::switchable::Switchable;
use common::{Backend, HttpClient, Proxy, addrs, client, get, wait_for};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};

/// GET / for `app.test` as user `user` (header `x-user`, none if `None`).
async fn as_user(http: &HttpClient, proxy: &Proxy, user: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::get(proxy.url("/")).header(hyper::header::HOST, "app.test");
    if let Some(user) = user {
        req = req.header("x-user", user);
    }
    let resp = http
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Which backend each of `users` reaches, asserting 200s.
async fn placement(http: &HttpClient, proxy: &Proxy, users: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(users.len());
    for u in users {
        let (status, body) = as_user(http, proxy, Some(u)).await;
        assert_eq!(status, StatusCode::OK, "{u}: {body}");
        out.push(body);
    }
    out
}

fn users(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i}")).collect()
}

/// The same `x-user` always reaches the same backend, different users
/// spread over all three, and a request without the header goes
/// round-robin (exactly a third each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_each_user_on_one_backend_and_round_robins_the_rest() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {{"backends": {},
                "balancer": {{"kind": "consistent-hash", "hash_on": "header:x-user"}}}}}}}}"#,
        addrs(&[&a, &b, &c])
    ))
    .await;
    let http = client();
    let users = users(60);
    let first = placement(&http, &proxy, &users).await;
    for _ in 0..4 {
        assert_eq!(placement(&http, &proxy, &users).await, first);
    }
    let mut spread: HashMap<&str, usize> = HashMap::new();
    for body in &first {
        *spread.entry(body.as_str()).or_default() += 1;
    }
    assert_eq!(
        spread.len(),
        3,
        "60 users reach all three backends: {spread:?}"
    );

    let before = (a.hits(), b.hits(), c.hits());
    for _ in 0..30 {
        assert_eq!(as_user(&http, &proxy, None).await.0, StatusCode::OK);
    }
    assert_eq!(
        (
            a.hits() - before.0,
            b.hits() - before.1,
            c.hits() - before.2
        ),
        (10, 10, 10),
        "requests without the key go round-robin"
    );
}

/// A backend whose breaker opens lends each of its users to another
/// backend (the same one on every request) while the other users stay
/// put, and gets its users back once a probe closes its breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_moves_an_open_backends_keys_and_takes_them_back() {
    let backends = [
        Switchable::start("a").await,
        Switchable::start("b").await,
        Switchable::start("c").await,
    ];
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "circuit_breaker_timeout": "3s", "retries": {{"attempts": 1}},
            "plugins": {{"breaker": {{"config": {{"threshold": 1, "failure_on_5xx": true}}}}}},
            "domains": {{"app.test": {{"backends": [{}],
                "balancer": {{"kind": "consistent-hash", "hash_on": "header:x-user"}}}}}}}}"#,
        list.join(", ")
    ))
    .await;
    let http = client();
    let users = users(30);
    let home = placement(&http, &proxy, &users).await;
    let victim_name = home[0].clone();
    let victim = ["a", "b", "c"]
        .iter()
        .position(|n| format!("backend {n}") == victim_name)
        .map(|i| &backends[i])
        .unwrap();

    // One 500 opens its breaker (threshold 1, no retries).
    victim.failing.store(true, Ordering::SeqCst);
    let (status, _) = as_user(&http, &proxy, Some(&users[0])).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    // Within the 3 s open period: its users answered elsewhere, each by
    // one backend; everyone else where they were.
    let lent = placement(&http, &proxy, &users).await;
    assert_eq!(placement(&http, &proxy, &users).await, lent);
    for (i, (was, now)) in home.iter().zip(&lent).enumerate() {
        if *was == victim_name {
            assert_ne!(*now, victim_name, "{}", users[i]);
        } else {
            assert_eq!(
                now, was,
                "{} moved off a backend that stayed closed",
                users[i]
            );
        }
    }

    // Healthy again: after the open period a probe of one of its users
    // reaches it and closes the breaker; then all its users are back.
    victim.failing.store(false, Ordering::SeqCst);
    wait_for(
        Duration::from_secs(15),
        "the victim's user to come back",
        || async { as_user(&http, &proxy, Some(&users[0])).await.1 == victim_name },
    )
    .await;
    assert_eq!(placement(&http, &proxy, &users).await, home);
}

/// `first`: everything to the first backend; with it failing its breaker,
/// the standby takes the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sends_everything_to_the_active_backend_and_fails_over_to_the_standby() {
    let (active, standby) = (
        Switchable::start("active").await,
        Switchable::start("standby").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "circuit_breaker_timeout": "1m", "retries": {{"attempts": 1}},
            "plugins": {{"breaker": {{"config": {{"threshold": 1, "failure_on_5xx": true}}}}}},
            "domains": {{"app.test": {{"backends": ["{}", "{}"], "balancer": "first"}}}}}}"#,
        active.addr, standby.addr
    ))
    .await;
    let http = client();
    for _ in 0..10 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.1,
            "backend active"
        );
    }
    active.failing.store(true, Ordering::SeqCst);
    assert_eq!(
        get(&http, &proxy.url("/"), "app.test").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    for _ in 0..10 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.1,
            "backend standby"
        );
    }
}

/// With unequal weights each backend gets its weight's share of the keys
/// through the proxy: the host tells the balancer the weights differ, and
/// only then does a pick read every candidate's weight (otherwise just
/// their ids). 400 users over weights 3 and 1: about 300 on the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_follows_unequal_weights() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"app.test": {{
                "backends": [{{"address": "{}", "weight": 3}}, {{"address": "{}", "weight": 1}}],
                "balancer": {{"kind": "consistent-hash", "hash_on": "header:x-user"}}}}}}}}"#,
        a.addr, b.addr
    ))
    .await;
    let http = client();
    let placed = placement(&http, &proxy, &users(400)).await;
    let on_a = a.hits();
    assert_eq!(on_a + b.hits(), 400);
    assert!(
        (260..=340).contains(&on_a),
        "weight 3 of 4 took {on_a} of 400"
    );
    // Stable: the same users land on the same backends again.
    assert_eq!(placement(&http, &proxy, &users(400)).await, placed);
}
