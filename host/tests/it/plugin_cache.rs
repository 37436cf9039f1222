//! `plugins.cache_dir`: compiled plugins kept on disk, so a restart loads
//! them instead of compiling them again, and a directory that cannot be
//! used costs nothing but the compile.

use serde_json::Value;

use crate::common::{Backend, Proxy, client, get};

fn config(backend: &Backend, cache_dir: &std::path::Path) -> String {
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "domains": {{"a.test": ["{}"]}},
            "plugins": {{"cache_dir": {}}}}}"#,
        backend.addr,
        Value::from(cache_dir.display().to_string())
    )
}

fn plugin_cache(proxy: &Proxy) -> Value {
    let shared = &proxy.running.as_ref().unwrap().shared;
    bbproxy::admin::status(shared)["plugin_cache"].clone()
}

/// The default bundle is three components: the first start compiles and
/// writes all three, a second process on the same directory (a restart)
/// loads all three from it and serves with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_the_compiled_plugins_from_the_cache_dir() {
    let backend = Backend::start("a").await;
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("plugins");

    let mut first = Proxy::start(&config(&backend, &dir)).await;
    let stats = plugin_cache(&first);
    assert_eq!(stats["hits"], 0, "{stats}");
    assert_eq!(stats["misses"], 3, "{stats}");
    first.running.take().unwrap().shutdown().await;
    // wasmtime writes the file before the compile returns.
    let files = walk(&dir);
    assert!(files >= 3, "{files} files in the cache dir");

    let second = Proxy::start(&config(&backend, &dir)).await;
    let stats = plugin_cache(&second);
    assert_eq!(stats["hits"], 3, "{stats}");
    assert_eq!(stats["misses"], 0, "{stats}");
    let (status, body) = get(&client(), &second.url("/"), "a.test").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "backend a"));
}

/// A path that cannot be a directory (a file is in the way) is logged and
/// the proxy starts and serves, compiling as without a cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_cache_dir_does_not_stop_the_start() {
    let backend = Backend::start("a").await;
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();

    let proxy = Proxy::start(&config(&backend, &file.join("plugins"))).await;
    assert_eq!(plugin_cache(&proxy), Value::Null);
    let (status, body) = get(&client(), &proxy.url("/"), "a.test").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "backend a"));
}

/// Files under `dir`, recursively (wasmtime shards the cache in folders).
fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { walk(&path) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}
