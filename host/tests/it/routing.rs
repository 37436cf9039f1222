//! Host routing by the default router plugin, and a custom plugin loaded by
//! path proving that decisions come from Wasm.

use crate::common;

use common::{Backend, Proxy, addrs, client, example_plugin, get};
use hyper::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_route_to_their_domains_wildcards_and_unknown_hosts_get_421() {
    let (a, b, w) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("w").await,
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "domains": {{"a.test": {}, "b.test": {}, "*.wild.test": {}}}}}"#,
        addrs(&[&a]),
        addrs(&[&b]),
        addrs(&[&w])
    ))
    .await;
    let http = client();
    assert_eq!(
        get(&http, &proxy.url("/"), "a.test").await,
        (StatusCode::OK, "backend a".into())
    );
    assert_eq!(
        get(&http, &proxy.url("/"), "B.Test:8080").await,
        (StatusCode::OK, "backend b".into())
    );
    assert_eq!(
        get(&http, &proxy.url("/"), "x.wild.test").await,
        (StatusCode::OK, "backend w".into())
    );
    assert_eq!(
        get(&http, &proxy.url("/"), "y.x.wild.test").await,
        (StatusCode::OK, "backend w".into())
    );
    let (status, body) = get(&http, &proxy.url("/"), "wild.test").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(body.contains("wild.test"), "{body}");
    let (status, body) = get(&http, &proxy.url("/"), "other.test").await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert!(body.contains("no route for host \"other.test\""), "{body}");
    assert_eq!((a.hits(), b.hits(), w.hits()), (1, 1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_domain_takes_unknown_hosts() {
    let a = Backend::start("a").await;
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "default_domain": "a.test",
            "domains": {{"a.test": {}}}}}"#,
        addrs(&[&a])
    ))
    .await;
    assert_eq!(
        get(&client(), &proxy.url("/"), "nope.test").await,
        (StatusCode::OK, "backend a".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_balancer_loaded_by_path_decides() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let plugin = example_plugin("rust_last_backend.wasm");
    assert!(
        plugin.exists(),
        "{} was built by build.rs",
        plugin.display()
    );
    let proxy = Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
            "plugins": {{"balancer": {{"path": "{}"}}}},
            "domains": {{"app.test": {}}}}}"#,
        plugin.display(),
        addrs(&[&a, &b, &c])
    ))
    .await;
    let http = client();
    for _ in 0..20 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await,
            (StatusCode::OK, "backend c".into())
        );
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (0, 0, 20));
    assert_eq!(
        proxy.generation().balancer.primary.name(),
        plugin.display().to_string()
    );
}
