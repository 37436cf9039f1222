//! The built-in balancer's `sticky-cookie` kind through the real proxy,
//! against backends on 127.0.0.1: the proxy sets the cookie on the first
//! response, later requests with it reach the same backend, and a cookie
//! that cannot be honoured (breaker open, tried already, removed by a
//! reload, garbage) falls back to round-robin and is replaced.

use crate::common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::switchable::Switchable;
use common::{Backend, Proxy, addrs, dead_addr, wait_for};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::Connect;
use hyper_util::rt::TokioIo;

/// What a client sees of one response.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    /// `backend NAME`.
    body: String,
    /// Every `Set-Cookie` value.
    set_cookie: Vec<String>,
}

impl Answer {
    /// The `name=value` of the `Set-Cookie` for `name`, which must be the
    /// only one.
    fn cookie(&self, name: &str) -> Option<String> {
        let mine: Vec<&String> = self
            .set_cookie
            .iter()
            .filter(|c| c.starts_with(&format!("{name}=")))
            .collect();
        assert!(mine.len() <= 1, "{self:?}");
        mine.first()
            .map(|c| c.split(';').next().unwrap_or("").to_owned())
    }
}

/// GET `path` for `host` with one `Cookie` field per entry of `cookies`.
async fn send<C>(http: &Client<C, Full<Bytes>>, url: &str, host: &str, cookies: &[&str]) -> Answer
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let mut req = Request::get(url).header(hyper::header::HOST, host);
    for c in cookies {
        req = req.header(hyper::header::COOKIE, *c);
    }
    let resp = http
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let set_cookie = resp
        .headers()
        .get_all(hyper::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        set_cookie,
    }
}

fn sticky_config(backends: &str, extra: &str) -> String {
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {extra}
            "domains": {{"app.test": {{"backends": {backends},
                "balancer": {{"kind": "sticky-cookie", "cookie": "bb_srv"}}}}}}}}"#
    )
}

/// A client without the cookie gets one naming the backend that answered
/// (`Path=/; HttpOnly; SameSite=Lax`, no `Secure` over plain HTTP); with
/// it, 20 requests reach that backend and get no new cookie, also when an
/// HTTP/2 client sends it in a `cookie` field of its own after another.
/// Requests without cookies go round-robin, each told where it went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_is_set_once_and_keeps_the_client_on_its_backend() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = Proxy::start(&sticky_config(&addrs(&[&a, &b, &c]), "")).await;
    let http = common::client();
    let url = proxy.url("/page");

    let first = send(&http, &url, "app.test", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.set_cookie.len(), 1, "{first:?}");
    let cookie = first.cookie("bb_srv").unwrap();
    let token = cookie.strip_prefix("bb_srv=").unwrap();
    assert_eq!(token.len(), 16, "{cookie}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{cookie}");
    assert_eq!(
        first.set_cookie[0],
        format!("{cookie}; Path=/; HttpOnly; SameSite=Lax")
    );
    for _ in 0..20 {
        let again = send(&http, &url, "app.test", &["theme=dark", &cookie]).await;
        assert_eq!((again.status, &again.body), (StatusCode::OK, &first.body));
        assert!(again.set_cookie.is_empty(), "{again:?}");
    }
    let h2 = common::h2c_client_to(proxy.addr);
    for _ in 0..5 {
        let again = send(&h2, "http://app.test/page", "app.test", &["x=1", &cookie]).await;
        assert_eq!((again.status, &again.body), (StatusCode::OK, &first.body));
        assert!(again.set_cookie.is_empty(), "{again:?}");
    }

    // Without cookies: round-robin, a third each, and each response names
    // the backend that gave it.
    let before = (a.hits(), b.hits(), c.hits());
    let mut cookies: HashMap<String, String> = HashMap::new();
    for _ in 0..30 {
        let fresh = send(&http, &url, "app.test", &[]).await;
        assert_eq!(fresh.status, StatusCode::OK);
        let cookie = fresh
            .cookie("bb_srv")
            .expect("a cookie for every new client");
        if let Some(was) = cookies.insert(fresh.body.clone(), cookie.clone()) {
            assert_eq!(was, cookie, "one token per backend");
        }
    }
    assert_eq!(
        (
            a.hits() - before.0,
            b.hits() - before.1,
            c.hits() - before.2
        ),
        (10, 10, 10),
        "requests without the cookie go round-robin"
    );
    assert_eq!(cookies.len(), 3);
    assert_eq!(cookies[&first.body], cookie);
}

/// A client whose backend's breaker opens is answered by another backend
/// and given a cookie for it, which it then keeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_for_a_backend_whose_breaker_opened_falls_back_and_is_replaced() {
    let backends = [
        Switchable::start("a").await,
        Switchable::start("b").await,
        Switchable::start("c").await,
    ];
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    let proxy = Proxy::start(&sticky_config(
        &format!("[{}]", list.join(", ")),
        r#""circuit_breaker_timeout": "1m", "retries": {"attempts": 1},
           "plugins": {"breaker": {"config": {"threshold": 1, "failure_on_5xx": true}}},"#,
    ))
    .await;
    let http = common::client();
    let url = proxy.url("/");
    let first = send(&http, &url, "app.test", &[]).await;
    let cookie = first.cookie("bb_srv").unwrap();
    let victim = ["a", "b", "c"]
        .iter()
        .position(|n| format!("backend {n}") == first.body)
        .map(|i| &backends[i])
        .unwrap();

    // One 500 opens its breaker (threshold 1, no retries); the backend
    // answered, as the cookie said: nothing to set.
    victim.failing.store(true, Ordering::SeqCst);
    let failed = send(&http, &url, "app.test", &[&cookie]).await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.body, first.body);
    assert!(failed.set_cookie.is_empty(), "{failed:?}");

    let moved = send(&http, &url, "app.test", &[&cookie]).await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_ne!(moved.body, first.body, "the open backend was picked");
    let new_cookie = moved
        .cookie("bb_srv")
        .expect("a cookie for the new backend");
    assert_ne!(new_cookie, cookie);
    for _ in 0..10 {
        let again = send(&http, &url, "app.test", &[&new_cookie]).await;
        assert_eq!((again.status, &again.body), (StatusCode::OK, &moved.body));
        assert!(again.set_cookie.is_empty(), "{again:?}");
    }
}

/// A cookie for a backend that refuses connections: tried first, then
/// retried on another, which the response's new cookie names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_for_a_backend_tried_and_failed_is_replaced_by_the_retrys() {
    let live = Backend::start("live").await;
    let dead = dead_addr().await;
    // A high threshold keeps the dead backend's breaker closed: the
    // cookie's backend is a candidate, and fails.
    let proxy = Proxy::start(&sticky_config(
        &format!(r#"["{dead}", "{}"]"#, live.addr),
        r#""circuit_breaker_threshold": 100, "retries": {"attempts": 2},"#,
    ))
    .await;
    let generation = proxy.generation();
    let slot = &generation.upstreams[generation.upstream_index("app.test").unwrap() as usize];
    let tokens = slot.sticky.as_ref().unwrap().tokens().to_vec();
    let dead_state = &slot.backends[0].state;
    let http = common::client();
    for _ in 0..3 {
        let attempts = dead_state.requests();
        let answer = send(
            &http,
            &proxy.url("/"),
            "app.test",
            &[&format!("bb_srv={}", tokens[0])],
        )
        .await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "backend live")
        );
        assert!(
            dead_state.requests() > attempts,
            "the cookie's backend was tried first"
        );
        assert_eq!(
            answer.cookie("bb_srv"),
            Some(format!("bb_srv={}", tokens[1]))
        );
    }
}

/// Tokens are made from addresses, not positions: across a reload that
/// removes the first backend (so the second moves up) and adds another, a
/// client of the remaining one stays on it, and a client of the removed one is balanced anew
/// and given a cookie for where it went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_for_a_backend_removed_by_a_reload_falls_back_and_is_replaced() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let proxy = Proxy::start(&sticky_config(&addrs(&[&a, &b]), "")).await;
    let http = common::client();
    let url = proxy.url("/");
    // Round-robin: a then b, each with its cookie.
    let mut cookie_of: HashMap<String, String> = HashMap::new();
    for _ in 0..2 {
        let answer = send(&http, &url, "app.test", &[]).await;
        cookie_of.insert(answer.body.clone(), answer.cookie("bb_srv").unwrap());
    }
    let (cookie_a, cookie_b) = (
        cookie_of["backend a"].clone(),
        cookie_of["backend b"].clone(),
    );

    std::fs::write(
        proxy.dir.path().join("config.json"),
        sticky_config(&addrs(&[&b, &c]), ""),
    )
    .unwrap();
    wait_for(Duration::from_secs(5), "the reload", || async {
        proxy.generation().id == 2
    })
    .await;

    for _ in 0..5 {
        let stays = send(&http, &url, "app.test", &[&cookie_b]).await;
        assert_eq!(stays.body, "backend b", "{stays:?}");
        assert!(stays.set_cookie.is_empty(), "{stays:?}");
    }
    let mut went = HashMap::new();
    for _ in 0..4 {
        let moved = send(&http, &url, "app.test", &[&cookie_a]).await;
        assert_eq!(moved.status, StatusCode::OK);
        assert_ne!(moved.body, "backend a");
        let new_cookie = moved.cookie("bb_srv").expect("a cookie after the reload");
        assert_ne!(new_cookie, cookie_a);
        went.insert(moved.body, new_cookie);
    }
    // Balanced round-robin over the two that are left.
    assert_eq!(went.len(), 2, "{went:?}");
    assert_eq!(went["backend b"], cookie_b);
}

/// On a pool reached through a route: a garbage value, an empty one or
/// one for another cookie name falls back round-robin and is replaced by
/// a cookie for the backend that answered; the domain's own backends,
/// balanced round-robin, set no cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_cookie_value_on_a_pool_falls_back_and_is_replaced() {
    let (a, b, site) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("site").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "upstreams": {{"api": {{"backends": {},
                "balancer": {{"kind": "sticky-cookie", "cookie": "bb_api"}}}}}},
            "domains": {{"app.test": {{"backends": {},
                "routes": [{{"match": {{"path_prefix": "/api"}}, "upstream": "api"}}]}}}}}}"#,
        addrs(&[&a, &b]),
        addrs(&[&site])
    ))
    .await;
    let http = common::client();
    let api = proxy.url("/api/x");
    let mut counts: HashMap<String, usize> = HashMap::new();
    for garbage in [
        "bb_api=garbage",
        "bb_api=",
        "bb_api=0123456789abcdef",
        "bb_srv=0123456789abcdef",
    ] {
        for _ in 0..2 {
            let answer = send(&http, &api, "app.test", &[garbage]).await;
            assert_eq!(answer.status, StatusCode::OK);
            let cookie = answer.cookie("bb_api").expect("a cookie");
            *counts.entry(answer.body.clone()).or_default() += 1;
            // The new cookie holds.
            let again = send(&http, &api, "app.test", &[&cookie]).await;
            assert_eq!(again.body, answer.body);
            assert!(again.set_cookie.is_empty(), "{again:?}");
        }
    }
    assert_eq!(counts.len(), 2, "round-robin over both: {counts:?}");
    let plain = send(&http, &proxy.url("/"), "app.test", &[]).await;
    assert_eq!(plain.body, "backend site");
    assert!(plain.set_cookie.is_empty(), "{plain:?}");
}

/// Over HTTPS the cookie is also `Secure`; over plain HTTP to the same
/// domain it is not (a browser would drop a `Secure` cookie set there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_for_clients_on_https() {
    use common::tls::{PLUGIN_SLACK, TestCa, client_config, connect};
    let ca = TestCa::new();
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    ca.write_leaf(dir.path(), "app.test");
    let proxy = Proxy::start_in(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0", "https": "127.0.0.1:0"}}, "admin": null, {PLUGIN_SLACK},
                "domains": {{"app.test": {{"backends": {},
                    "tls": {{"cert": "app.test.pem", "key": "app.test.key"}},
                    "balancer": {{"kind": "sticky-cookie", "cookie": "bb_srv"}}}}}}}}"#,
            addrs(&[&a])
        ),
    )
    .await;
    let https = proxy.running.as_ref().unwrap().https.unwrap();
    let stream = connect(
        https,
        "app.test",
        client_config(&[ca.der()], &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(
            Request::get("/")
                .header(hyper::header::HOST, "app.test")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let set: Vec<&str> = resp
        .headers()
        .get_all(hyper::header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(
        set[0].starts_with("bb_srv=")
            && set[0].ends_with("; Path=/; HttpOnly; SameSite=Lax; Secure"),
        "{set:?}"
    );

    let plain = send(&common::client(), &proxy.url("/"), "app.test", &[]).await;
    assert_eq!(
        plain.set_cookie,
        [set[0].trim_end_matches("; Secure").to_owned()]
    );
}
