//! Plugin instances are made once and reused: `init` runs per instance, not
//! per request.

use crate::common;

use common::{Backend, Proxy, client, get};
use hyper::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_is_initialised_once_not_per_request() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let dir = common::dir_with(&[(common::fixture("hostile_balancer.wasm"), "balancer.wasm")]);
    let proxy = Proxy::start_in(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null,
                "domains": {{"app.test": ["{}", "{}"]}},
                "plugins": {{"balancer": {{"path": "balancer.wasm", "config": {{"mode": "good"}}}}}}}}"#,
            a.addr, b.addr
        ),
    )
    .await;
    let running = proxy.running.as_ref().unwrap();
    let inits = running.runtime.shared().counter("fixture.balancer.inits");
    let read = || inits.load(std::sync::atomic::Ordering::SeqCst);
    let after_load = read();
    let http = client();
    for _ in 0..100 {
        assert_eq!(
            get(&http, &proxy.url("/"), "app.test").await.0,
            StatusCode::OK
        );
    }
    // The fixture picks candidate 0 of upstream 0: every request went to a,
    // so the answers really came from this plugin.
    assert_eq!((a.hits(), b.hits()), (100, 0));
    // One request at a time needs one instance; the load may have made it
    // already (then no init at all), or the first request makes it.
    let made = read() - after_load;
    assert!(
        made <= 1,
        "100 sequential requests ran init {made} times (after {after_load} at load)"
    );
    assert!(read() >= 1, "init ran at least once");
}
