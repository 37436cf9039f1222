//! `plugins.cache_dir`: compiled plugins kept on disk, so a restart loads
//! them instead of compiling them again, and a directory that cannot be
//! used costs nothing but the compile.

use serde_json::Value;

use crate::common::{Backend, Proxy, client, get};

fn config(backend: &Backend, cache_dir: &std::path::Path) -> String {
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "domains": {{"a.test": ["{}"]}},
            "plugins": {{"cache_dir": {}, "balancer": {{"path": "lb.wasm"}}}}}}"#,
        backend.addr,
        Value::from(cache_dir.display().to_string())
    )
}

/// A plugin of one's own: the bundled balancer with a custom section
/// appended, the same code in other bytes. (The bundle itself comes
/// precompiled in the binary and never reaches the cache.)
fn own_balancer() -> Vec<u8> {
    let (name, payload) = (b"bbproxy-test".as_slice(), b"own copy".as_slice());
    let mut bytes = bbproxy::plugin::bundle::BALANCER.to_vec();
    // Section id 0 (custom), its size, the name's size: each under 128, so
    // one LEB128 byte.
    bytes.extend([0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

/// In `dir`, with the config's `lb.wasm`.
async fn start(backend: &Backend, cache_dir: &std::path::Path) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lb.wasm"), own_balancer()).unwrap();
    Proxy::start_in(dir, &config(backend, cache_dir)).await
}

fn plugin_cache(proxy: &Proxy) -> Value {
    let shared = &proxy.running.as_ref().unwrap().shared;
    bbproxy::admin::status(shared)["plugin_cache"].clone()
}

/// The first start compiles the config's own plugin and writes it; a
/// second process on the same directory (a restart) loads it from there
/// and serves with it. The default router and breaker come precompiled,
/// so neither start counts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_the_compiled_plugins_from_the_cache_dir() {
    let backend = Backend::start("a").await;
    let cache = tempfile::tempdir().unwrap();
    let dir = cache.path().join("plugins");

    let mut first = start(&backend, &dir).await;
    let stats = plugin_cache(&first);
    assert_eq!(stats["hits"], 0, "{stats}");
    assert_eq!(stats["misses"], 1, "{stats}");
    first.running.take().unwrap().shutdown().await;
    // wasmtime writes the file before the compile returns.
    let files = walk(&dir);
    assert!(files >= 1, "{files} files in the cache dir");

    let second = start(&backend, &dir).await;
    let stats = plugin_cache(&second);
    assert_eq!(stats["hits"], 1, "{stats}");
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

    let proxy = start(&backend, &file.join("plugins")).await;
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

/// Loading the default router reads its embedded bytes (hashed, compared,
/// its precompiled code deserialized); afterwards none of their whole
/// pages stays mapped in the process (5-6 MiB of an idle proxy's RSS for
/// the whole bundle), and they still read back the same. In a process of
/// its own: another test loading the bundle meanwhile would map them again.
#[test]
#[cfg(target_os = "linux")]
fn loading_the_bundle_leaves_its_embedded_pages_unmapped() {
    use bbproxy::plugin::{Runtime, bundle};
    crate::common::alone::in_own_process!();
    let checksum = |b: &[u8]| {
        b.iter()
            .fold(0u64, |a, &x| a.wrapping_mul(31) ^ u64::from(x))
    };
    let before = checksum(bundle::ROUTER);
    let (mapped, pages) = mapped_pages(bundle::ROUTER);
    assert!(pages > 100, "the router is over 400 KiB: {pages} pages");
    assert_eq!(mapped, pages, "every page was just read");
    let rt = Runtime::new().unwrap();
    rt.compile("router", bundle::ROUTER).unwrap();
    assert_eq!(mapped_pages(bundle::ROUTER), (0, pages));
    assert_eq!(checksum(bundle::ROUTER), before);
    // A copy of the bundled bytes (a bundled file loaded from disk) is the
    // same component: the embedded pages it was compared with go too.
    let copy = bundle::ROUTER.to_vec();
    rt.compile("router copy", &copy).unwrap();
    assert_eq!(mapped_pages(bundle::ROUTER), (0, pages));
}

/// (mapped, all) of the whole pages inside `bytes`, from the present bit
/// of /proc/self/pagemap (readable without privileges).
#[cfg(target_os = "linux")]
fn mapped_pages(bytes: &[u8]) -> (usize, usize) {
    use std::io::{Read, Seek, SeekFrom};
    const PAGE: usize = 4096;
    let start = bytes.as_ptr() as usize;
    let (first, last) = (start.div_ceil(PAGE), (start + bytes.len()) / PAGE);
    let mut map = std::fs::File::open("/proc/self/pagemap").unwrap();
    let mut mapped = 0;
    for p in first..last {
        let mut entry = [0u8; 8];
        map.seek(SeekFrom::Start(p as u64 * 8)).unwrap();
        map.read_exact(&mut entry).unwrap();
        if u64::from_le_bytes(entry) >> 63 == 1 {
            mapped += 1;
        }
    }
    (mapped, last.saturating_sub(first))
}
