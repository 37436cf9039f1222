//! ACME end to end against a real Pebble started by the tests: issuance by
//! HTTP-01 and TLS-ALPN-01, reuse of the cache after a restart, renewal of
//! short-lived certificates with a hot swap, failures that keep the
//! current certificate, are logged, counted and back off, renewal timed by
//! the CA's renewal information (ARI), and the server's Retry-After.
//!
//! Each test runs in a process of its own (`in_own_process!`): they read
//! the process-wide log subscriber and metrics.

use crate::common;

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bbproxy::acme::Tuning;
use bbproxy::app::{Options, Running};
use common::acme_front::AcmeFront;
use common::pebble::{Pebble, PebbleOptions};
use common::tls::{PLUGIN_SLACK, client_config, connect, dns_names, https_get, peer_leaf};
use common::{Backend, wait_for};
use hyper::StatusCode;
use instant_acme::CertificateIdentifier;
use rustls::pki_types::CertificateDer;

const NAMES: [&str; 2] = ["a.proxy.test", "b.proxy.test"];
/// A name added after the start.
const EXTRA: &str = "c.proxy.test";

/// Everything the proxies in this test process logged.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Writes log lines to [`LOG`] and to the test's captured output.
struct Tee;

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        eprint!("{}", String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The log lines so far that contain every one of `parts`.
fn logged(parts: &[&str]) -> Vec<String> {
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    log.lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .map(str::to_owned)
        .collect()
}

/// Starts the proxy on the ports Pebble validates, `NAMES` → `backend`.
async fn start_proxy(
    pebble: &Pebble,
    cache: &Path,
    backend: &Backend,
    challenges: &str,
    tuning: Tuning,
) -> Running {
    start_proxy_at(
        pebble,
        &pebble.directory,
        cache,
        backend,
        challenges,
        tuning,
    )
    .await
}

/// [`start_proxy`] with another ACME directory URL (an [`AcmeFront`]).
async fn start_proxy_at(
    pebble: &Pebble,
    directory: &str,
    cache: &Path,
    backend: &Backend,
    challenges: &str,
    tuning: Tuning,
) -> Running {
    // The proxy's log (ACME errors) is shown with a failed test's output
    // and kept for the tests that check what was logged.
    let _ = tracing_subscriber::fmt()
        .with_writer(|| Tee)
        .with_ansi(false)
        .with_env_filter("bbproxy=info")
        .try_init();
    let domains: Vec<String> = NAMES
        .iter()
        .map(|n| format!(r#""{n}": ["{}"]"#, backend.addr))
        .collect();
    let config = format!(
        r#"{{
          "listen": {{"http": "127.0.0.1:{}", "https": "127.0.0.1:{}", "redirect_http": true}},
          "admin": null,
          "cert_cache_dir": "{}",
          "acme": {{"directory": "{}", "email": "ops@example.com", "ca_root": "{}", "challenges": {challenges}}},
          "domains": {{{}}},
          {PLUGIN_SLACK}
        }}"#,
        pebble.http_port,
        pebble.tls_port,
        cache.display(),
        directory,
        pebble.api_ca.display(),
        domains.join(", ")
    );
    let path = pebble.dir.path().join("proxy.json");
    std::fs::write(&path, config).unwrap();
    let config = bbproxy_config::load(&path).unwrap();
    // For tests that change the domains later: the same config, one more name.
    let more = std::fs::read_to_string(&path).unwrap().replace(
        r#""domains": {"#,
        &format!(r#""domains": {{"{EXTRA}": ["{}"], "#, backend.addr),
    );
    std::fs::write(pebble.dir.path().join("proxy-more.json"), more).unwrap();
    bbproxy::app::start(
        config,
        Options {
            acme: tuning,
            ..Options::default()
        },
    )
    .await
    .unwrap()
}

/// What the process's metrics recorder holds, as `/metrics` renders it
/// (the recorder installed on first use, as the proxy installs it).
fn metrics() -> String {
    bbproxy::telemetry::render()
}

fn tuning() -> Tuning {
    Tuning {
        retry_initial: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
        order_timeout: Duration::from_secs(30),
        ..Tuning::default()
    }
}

/// Waits until every name is served with a certificate that verifies
/// against `root`, and the request reaches the backend.
async fn wait_served(running: &Running, root: &CertificateDer<'static>, deadline: Duration) {
    let addr = running.https.unwrap();
    let config = client_config(std::slice::from_ref(root), &[b"http/1.1"]);
    for name in NAMES {
        wait_for(deadline, &format!("a certificate for {name}"), || {
            let config = config.clone();
            async move { connect(addr, name, config).await.is_ok() }
        })
        .await;
        let (status, body) = https_get(addr, name, config.clone(), "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "backend app"));
    }
}

async fn leaf(
    running: &Running,
    root: &CertificateDer<'static>,
    name: &str,
) -> CertificateDer<'static> {
    let config = client_config(std::slice::from_ref(root), &[]);
    peer_leaf(&connect(running.https.unwrap(), name, config).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http01_issues_for_two_names_and_a_restart_reuses_the_cache() {
    common::alone::in_own_process!();
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let root = pebble.root().await;
    let backend = Backend::start("app").await;
    let cache = pebble.dir.path().join("certs");
    let running = start_proxy(&pebble, &cache, &backend, r#"["http-01"]"#, tuning()).await;
    wait_served(&running, &root, Duration::from_secs(60)).await;
    assert_eq!(running.certs.stats().ok(), 2);
    for name in NAMES {
        assert_eq!(dns_names(&leaf(&running, &root, name).await), [name]);
        for ext in ["crt", "key"] {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(cache.join(format!("{name}.{ext}"))).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}.{ext}");
        }
    }
    let orders = pebble.orders();
    assert!(orders >= 2, "Pebble saw {orders} orders:\n{}", pebble.log());
    let first = leaf(&running, &root, NAMES[0]).await;
    running.shutdown().await;

    // Same cache: served at once from disk, and Pebble sees no new order.
    let running = start_proxy(&pebble, &cache, &backend, r#"["http-01"]"#, tuning()).await;
    wait_served(&running, &root, Duration::from_secs(2)).await;
    assert_eq!(leaf(&running, &root, NAMES[0]).await, first);
    assert_eq!(
        running.certs.stats().ok() + running.certs.stats().failed(),
        0
    );
    assert_eq!(pebble.orders(), orders, "no new order after a restart");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alpn01_issues_for_two_names() {
    common::alone::in_own_process!();
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let root = pebble.root().await;
    let backend = Backend::start("app").await;
    let cache = pebble.dir.path().join("certs");
    let running = start_proxy(&pebble, &cache, &backend, r#"["tls-alpn-01"]"#, tuning()).await;
    wait_served(&running, &root, Duration::from_secs(60)).await;
    assert_eq!(running.certs.stats().ok(), 2);
    // Only tls-alpn-01 was allowed (the client answers nothing else), so
    // Pebble validated over `acme-tls/1` on the HTTPS listener.
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_added_by_an_update_gets_a_certificate_without_restart() {
    common::alone::in_own_process!();
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let root = pebble.root().await;
    let backend = Backend::start("app").await;
    let cache = pebble.dir.path().join("certs");
    let running = start_proxy(&pebble, &cache, &backend, r#"["http-01"]"#, tuning()).await;
    wait_served(&running, &root, Duration::from_secs(60)).await;
    let config = client_config(std::slice::from_ref(&root), &[]);
    assert!(
        connect(running.https.unwrap(), EXTRA, config.clone())
            .await
            .is_err()
    );

    // What a hot reload does with the new config's domains.
    let more = bbproxy_config::load(&pebble.dir.path().join("proxy-more.json")).unwrap();
    running.certs.update_domains(&more).unwrap();
    let addr = running.https.unwrap();
    wait_for(
        Duration::from_secs(60),
        "a certificate for the new name",
        || {
            let config = config.clone();
            async move { connect(addr, EXTRA, config).await.is_ok() }
        },
    )
    .await;
    assert_eq!(dns_names(&leaf(&running, &root, EXTRA).await), [EXTRA]);
    // Only the new name was ordered; the others kept their certificates.
    assert_eq!(running.certs.stats().ok(), 3);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificates_are_renewed_and_swapped_under_open_connections() {
    common::alone::in_own_process!();
    let pebble = Pebble::start(PebbleOptions {
        validity_secs: Some(12),
        ..PebbleOptions::default()
    })
    .await;
    let root = pebble.root().await;
    let backend = Backend::start("app").await;
    let cache = pebble.dir.path().join("certs");
    let running = start_proxy(&pebble, &cache, &backend, r#"["http-01"]"#, tuning()).await;
    wait_served(&running, &root, Duration::from_secs(60)).await;
    let name = NAMES[0];
    let config = client_config(std::slice::from_ref(&root), &[b"http/1.1"]);
    let open = connect(running.https.unwrap(), name, config.clone())
        .await
        .unwrap();
    let first = peer_leaf(&open);
    let io = hyper_util::rt::TokioIo::new(open);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn);
    let get = || {
        hyper::Request::get("/")
            .header(hyper::header::HOST, name)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    assert_eq!(
        send.send_request(get()).await.unwrap().status(),
        StatusCode::OK
    );

    // Renewal at 2/3 of 12 s: a new handshake sees a new certificate.
    wait_for(Duration::from_secs(30), "a renewed certificate", || {
        let (config, first) = (config.clone(), first.clone());
        let addr = running.https.unwrap();
        async move {
            match connect(addr, name, config).await {
                Ok(s) => peer_leaf(&s) != first,
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(
        running.certs.stats().ok() >= 3,
        "two first orders and a renewal"
    );
    // The connection opened before the swap is still served.
    let resp = send.send_request(get()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_failures_keep_the_certificate_are_counted_and_back_off() {
    common::alone::in_own_process!();
    let mut pebble = Pebble::start(PebbleOptions {
        validity_secs: Some(60),
        ..PebbleOptions::default()
    })
    .await;
    let root = pebble.root().await;
    let backend = Backend::start("app").await;
    let cache = pebble.dir.path().join("certs");
    // Renew after 10% of 60 s, so the renewal falls while Pebble is down.
    let tuning = Tuning {
        renew_at: 0.1,
        ..tuning()
    };
    bbproxy::telemetry::install();
    let running = start_proxy(&pebble, &cache, &backend, r#"["http-01"]"#, tuning).await;
    wait_served(&running, &root, Duration::from_secs(60)).await;
    let first = leaf(&running, &root, NAMES[0]).await;
    pebble.stop();

    let stats = || running.certs.stats();
    wait_for(Duration::from_secs(30), "failed renewals", || async {
        stats().failed() >= 4
    })
    .await;
    // Backoff: 200 ms doubling to a 1 s cap, two domains. In 3 s that is at
    // most about 2 × (3 / 1 + 1) attempts; a tight loop would make hundreds.
    let before = stats().failed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = stats().failed() - before;
    assert!((1..=10).contains(&during), "{during} failures in 3 s");
    // Still serving the certificate it had.
    assert_eq!(leaf(&running, &root, NAMES[0]).await, first);
    let warned = logged(&[
        "ACME order failed",
        NAMES[0],
        "serving_old_certificate=true",
    ]);
    assert!(
        !warned.is_empty(),
        "no warning logged for the failed renewals"
    );
    let exported = metrics();
    assert!(
        exported.contains(r#"bbproxy_acme_orders_total{result="error"}"#)
            && exported.contains(r#"bbproxy_acme_orders_total{result="ok"}"#)
            && exported.contains(r#"bbproxy_cert_expiry_timestamp_seconds{domain="a.proxy.test"}"#),
        "{exported}"
    );
    wait_served(&running, &root, Duration::from_secs(1)).await;

    // Pebble back (new roots, no memory of the account): renewal succeeds.
    pebble
        .restart(PebbleOptions {
            validity_secs: Some(60),
            ..PebbleOptions::default()
        })
        .await;
    let new_root = pebble.root().await;
    wait_served(&running, &new_root, Duration::from_secs(30)).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_cache_dir_fails_the_start_with_its_path() {
    common::alone::in_own_process!();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file"), "").unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0", "https": "127.0.0.1:0"}}, "admin": null,
                "cert_cache_dir": "file/certs",
                "acme": {{"directory": "https://127.0.0.1:9/dir"}},
                "domains": {{"a.proxy.test": ["127.0.0.1:9"]}}, {PLUGIN_SLACK}}}"#
        ),
    )
    .unwrap();
    let config = bbproxy_config::load(&path).unwrap();
    let err = bbproxy::app::start(config, Options::default())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cert_cache_dir") && err.contains("file/certs"),
        "{err}"
    );
}

/// The certificate identifier (RFC 9773 §4.1) of what `name` is served with.
async fn served_id(running: &Running, root: &CertificateDer<'static>, name: &str) -> String {
    let leaf = leaf(running, root, name).await;
    CertificateIdentifier::try_from(&leaf).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_information_from_the_ca_decides_when_to_renew() {
    common::alone::in_own_process!();
    // An hour of validity: by lifetime, renewal would come after 40 minutes.
    let pebble = Pebble::start(PebbleOptions {
        validity_secs: Some(3600),
        ..PebbleOptions::default()
    })
    .await;
    let root = pebble.root().await;
    let front = AcmeFront::start(&pebble, None).await;
    let backend = Backend::start("app").await;
    let cache = pebble.dir.path().join("certs");
    // Take the front's Retry-After (1 s) as it is.
    let tuning = Tuning {
        ari_recheck_min: Duration::ZERO,
        ..tuning()
    };
    let running = start_proxy_at(
        &pebble,
        &front.directory,
        &cache,
        &backend,
        r#"["http-01"]"#,
        tuning,
    )
    .await;
    wait_served(&running, &root, Duration::from_secs(60)).await;

    // The CA's window, 30 days out, wins over the lifetime rule.
    let stats = || running.certs.stats();
    let month = SystemTime::now() + Duration::from_secs(29 * 24 * 3600);
    for name in NAMES {
        let id = served_id(&running, &root, name).await;
        wait_for(
            Duration::from_secs(30),
            "a renewal-info request",
            || async { front.ari_requests().contains(&id) },
        )
        .await;
        wait_for(
            Duration::from_secs(30),
            "a renewal in the window",
            || async { stats().renewal_at(name).is_some_and(|at| at > month) },
        )
        .await;
    }
    assert_eq!(stats().ok(), 2, "no renewal before the window");
    let scheduled = logged(&["certificate renewal scheduled", "source=\"ari\""]);
    assert!(!scheduled.is_empty(), "the ARI schedule is not logged");
    let first = [
        served_id(&running, &root, NAMES[0]).await,
        served_id(&running, &root, NAMES[1]).await,
    ];

    // The CA pulls renewal forward (as before a mass revocation): a window
    // that has begun means renew now, 40 minutes early by lifetime.
    let now = SystemTime::now();
    front.set_window(now - Duration::from_secs(60), now + Duration::from_secs(60));
    wait_for(Duration::from_secs(60), "both renewed", || async {
        stats().ok() >= 4
    })
    .await;
    for (name, old) in NAMES.iter().zip(&first) {
        wait_for(
            Duration::from_secs(10),
            "the new certificate served",
            || async { served_id(&running, &root, name).await != *old },
        )
        .await;
    }
    wait_served(&running, &root, Duration::from_secs(1)).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_order_is_retried_only_after_retry_after() {
    common::alone::in_own_process!();
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let front = AcmeFront::start(&pebble, Some(Duration::from_secs(2))).await;
    let backend = Backend::start("app").await;
    let cache = pebble.dir.path().join("certs");
    // Backoff alone would retry after 200 ms, 400 ms, 800 ms, 1 s, ...
    let running = start_proxy_at(
        &pebble,
        &front.directory,
        &cache,
        &backend,
        r#"["http-01"]"#,
        tuning(),
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "three rounds of orders",
        || async { front.orders().len() >= 5 },
    )
    .await;
    let orders = front.orders();
    let first = orders[0];
    let since_first: Vec<Duration> = orders.iter().map(|t| t.duration_since(first)).collect();
    // Each name's first order comes at once; every retry waits out the 2 s.
    let early = since_first
        .iter()
        .filter(|d| **d < Duration::from_millis(1900))
        .count();
    assert!(
        early <= 2,
        "retried before Retry-After: orders at {since_first:?} after the first"
    );
    // The front counts an order when it answers, the proxy its failure
    // once the answer is back: wait for the proxy to catch up.
    wait_for(
        Duration::from_secs(10),
        "a failure counted for each of four rate-limited orders",
        || async { running.certs.stats().failed() >= 4 },
    )
    .await;
    let warned = logged(&["ACME order failed", "too many new orders (test front)"]);
    assert!(!warned.is_empty(), "the rate limit is not logged");
    running.shutdown().await;
}
