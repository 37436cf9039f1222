//! Hot reload under load: 50 config rewrites and 50 balancer swaps, with
//! every save style, while clients keep sending requests: nothing fails, no
//! reload fails, and each change is swapped in within 1 s. Both balancer
//! versions are loaded once in a warm-up before the timed phase (compiling
//! a component this process has never seen is Cranelift's time, not the
//! reload path's; the warm-up is asserted on its own), and the timed phase
//! must not compile anything. In a process of its own, with no other child
//! beside it (`in_own_process!(alone)`): it asserts that the process-wide
//! reload error counter stays 0, and its 1 s bound must not share the CPUs
//! with another test's proxies.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, Proxy, client, example_plugin, get, wait_for};
use hyper::StatusCode;

/// How a file gets saved.
#[derive(Debug, Clone, Copy)]
enum Style {
    /// Truncate and write the file itself.
    InPlace,
    /// Write a temp file, rename it over (vim, most editors).
    Rename,
    /// Kubernetes ConfigMap: files live in `..vN/`, reached through a
    /// `..data` symlink that is swapped atomically.
    Symlink,
}

/// A config directory laid out for one save style.
struct Files {
    dir: PathBuf,
    style: Style,
    version: u32,
}

impl Files {
    fn new(dir: &Path, style: Style, config: &str, wasm: &[u8]) -> Files {
        let mut f = Files {
            dir: dir.to_path_buf(),
            style,
            version: 0,
        };
        match style {
            Style::InPlace | Style::Rename => {
                std::fs::write(dir.join("config.json"), config).unwrap();
                std::fs::write(dir.join("balancer.wasm"), wasm).unwrap();
            }
            Style::Symlink => {
                f.new_version(config, wasm);
                std::os::unix::fs::symlink("..data/config.json", dir.join("config.json")).unwrap();
                std::os::unix::fs::symlink("..data/balancer.wasm", dir.join("balancer.wasm"))
                    .unwrap();
            }
        }
        f
    }

    /// Kubernetes style: a fresh versioned dir, then the `..data` swap.
    fn new_version(&mut self, config: &str, wasm: &[u8]) {
        self.version += 1;
        let name = format!("..v{}", self.version);
        let vdir = self.dir.join(&name);
        std::fs::create_dir(&vdir).unwrap();
        std::fs::write(vdir.join("config.json"), config).unwrap();
        std::fs::write(vdir.join("balancer.wasm"), wasm).unwrap();
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Saves one file with this layout's style; `current` holds the other
    /// file's current content (the symlink style replaces both at once).
    fn save(&mut self, name: &str, content: &[u8], config: &str, wasm: &[u8]) {
        match self.style {
            Style::InPlace => std::fs::write(self.dir.join(name), content).unwrap(),
            Style::Rename => {
                let tmp = self.dir.join(format!(".{name}.tmp"));
                std::fs::write(&tmp, content).unwrap();
                std::fs::rename(&tmp, self.dir.join(name)).unwrap();
            }
            Style::Symlink => self.new_version(config, wasm),
        }
    }
}

fn config_for(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": "127.0.0.1:0",
            "plugins": {{"balancer": {{"path": "balancer.wasm"}}}},
            "domains": {{"app.test": [{}]}}}}"#,
        list.join(", ")
    )
}

/// Which backends answered `n` requests.
async fn sample(http: &common::HttpClient, proxy: &Proxy, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (status, body) = get(http, &proxy.url("/"), "app.test").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        out.push(body);
    }
    out
}

async fn under_load(style: Style, changes: usize) {
    let (a, b, c, d) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    );
    let last = std::fs::read(example_plugin("rust_last_backend.wasm")).unwrap();
    let round_robin = bbproxy::plugin::bundle::BALANCER.to_vec();
    let configs = [config_for(&[&a, &b]), config_for(&[&c, &d])];
    let wasms = [last, round_robin];
    let dir = tempfile::tempdir().unwrap();
    let mut files = Files::new(dir.path(), style, &configs[0], &wasms[0]);
    let cfg = bbproxy_config::load(&files.config_path()).unwrap();
    let running = bbproxy::app::start(cfg, bbproxy::app::Options::default())
        .await
        .unwrap();
    let proxy = Proxy {
        addr: running.http.unwrap(),
        running: Some(running),
        dir,
    };

    // Load: four clients, each bounded in count and by the stop flag.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failed, url) = (stop.clone(), ok.clone(), failed.clone(), proxy.url("/"));
        clients.push(tokio::spawn(async move {
            let http = client();
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = hyper::Request::get(&url)
                    .header("host", "app.test")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                match http.request(req).await {
                    Ok(r) if r.status() == StatusCode::OK => {
                        let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }

    let http = client();
    let (mut set, mut version) = (0usize, 0usize);
    let runtime = proxy.running.as_ref().unwrap().runtime.clone();

    // Warm-up: swap to the other balancer and back, so both are compiled.
    let warm_up = Instant::now();
    for v in [1, 0] {
        let before = proxy.generation().id;
        let (cfg, wasm) = (configs[set].clone(), wasms[v].clone());
        files.save("balancer.wasm", &wasm, &cfg, &wasm);
        wait_for(
            Duration::from_secs(10),
            &format!("warm-up swap to balancer {v} ({style:?})"),
            || async { proxy.generation().id > before },
        )
        .await;
    }
    let compiles = runtime.compiles();
    eprintln!(
        "{style:?}: warm-up (two swaps, one compile) took {:?}",
        warm_up.elapsed()
    );

    let mut slowest = Duration::ZERO;
    let mut took: Vec<(Duration, usize)> = Vec::new();
    for i in 0..changes {
        let before = proxy.generation().id;
        // Alternate: even steps change the backend set, odd steps the wasm.
        if i % 2 == 0 {
            set = 1 - set;
            let (cfg, wasm) = (configs[set].clone(), wasms[version].clone());
            files.save("config.json", cfg.as_bytes(), &cfg, &wasm);
        } else {
            version = 1 - version;
            let (cfg, wasm) = (configs[set].clone(), wasms[version].clone());
            files.save("balancer.wasm", &wasm, &cfg, &wasm);
        }
        let written = Instant::now();
        // Taking effect = the new generation serves new requests: poll the
        // swap itself, then check what requests see.
        wait_for(
            Duration::from_secs(5),
            &format!("change {i} ({style:?}) to be swapped in"),
            || async { proxy.generation().id > before },
        )
        .await;
        let elapsed = written.elapsed();
        slowest = slowest.max(elapsed);
        took.push((elapsed, i));
        let names: [&str; 2] = if set == 0 {
            ["backend a", "backend b"]
        } else {
            ["backend c", "backend d"]
        };
        wait_for(
            Duration::from_secs(5),
            &format!("change {i} ({style:?}) to take effect"),
            || async {
                let seen = sample(&http, &proxy, 4).await;
                let in_set = seen.iter().all(|s| names.contains(&s.as_str()));
                let all_last = seen.iter().all(|s| s == names[1]);
                // last-backend: only the second backend; round-robin: both.
                in_set && (if version == 0 { all_last } else { !all_last })
            },
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "{style:?}: {changes} changes, {ok} requests ok, {failed} failed, slowest change {slowest:?}"
    );
    assert_eq!(failed, 0, "requests failed during reloads");
    assert_eq!(
        runtime.compiles(),
        compiles,
        "a timed change compiled a component"
    );
    let running = proxy.running.as_ref().unwrap();
    let error = running
        .shared
        .last_reload_error
        .lock()
        .unwrap()
        .as_ref()
        .map(|f| f.message.clone());
    assert_eq!(error, None, "a reload failed");
    let admin = running.admin.unwrap();
    let (_, metrics) = get(&http, &format!("http://{admin}/metrics"), "admin").await;
    assert!(
        !metrics.lines().any(|l| {
            l.starts_with("bbproxy_reloads_total{result=\"error\"}") && !l.ends_with(" 0")
        }),
        "reload errors were counted:\n{metrics}"
    );
    assert!(ok > 100, "the load ran ({ok} requests)");
    took.sort_unstable_by(|a, b| b.cmp(a));
    assert!(
        slowest < Duration::from_secs(1),
        "slowest change took {slowest:?}; slowest five (time, change number; odd = wasm): {:?}",
        &took[..took.len().min(5)]
    );
    let g = proxy.generation();
    assert!(
        g.id > changes as u64 / 2,
        "generation {} after {changes} changes",
        g.id
    );
}

/// 50 config rewrites and 50 balancer swaps in all, spread over the three
/// save styles, one style at a time so the proxies do not compete for CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_save_style_reloads_under_load_without_failures() {
    common::alone::in_own_process!(alone);
    // Each reload's build time (`build_ms`) shows with a failure's output.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("bbproxy::reload=info")
        .try_init();
    under_load(Style::InPlace, 34).await;
    under_load(Style::Rename, 34).await;
    under_load(Style::Symlink, 32).await;
}
