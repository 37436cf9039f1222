//! Replicas sharing ACME state through Redis, end to end: a real
//! `redis-server` per test, the real Pebble, and three `bbproxy` processes
//! on 127.0.0.1, 127.0.0.2 and 127.0.0.3, each on Pebble's HTTP-01 and
//! TLS-ALPN-01 ports of its own address, with pebble-challtestsrv's DNS
//! pointing names at whichever replica a test chooses.

use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bbproxy::storage::{ChallengeKey, StoredCert, Written, version_of};
use common::binary::Binary;
use common::pebble::{Pebble, PebbleOptions};
use common::prom::{parse_metrics, series};
use common::redis::RedisServer;
use common::tls::{PLUGIN_SLACK, TestCa, client_config, connect, https_get, peer_leaf};
use common::{Backend, client, get, wait_for};
use hyper::StatusCode;
use rustls::pki_types::CertificateDer;

const LEASE: Duration = Duration::from_secs(6);

/// What a replica's config is made of.
struct Setup<'a> {
    pebble: &'a Pebble,
    redis: &'a RedisServer,
    backend: &'a Backend,
    challenges: &'a str,
}

impl Setup<'_> {
    /// The config of the replica on `ip` serving `names`. Its admin
    /// listener takes any free port of 127.0.0.1, not of `ip`: the
    /// kernel could otherwise hand it the port of `ip` the replica's
    /// HTTPS listener (Pebble's validation port) binds next, which failed
    /// a CI run with "address already in use".
    fn config(&self, ip: &str, names: &[&str]) -> String {
        let mut domains: Vec<String> = names
            .iter()
            .map(|n| format!(r#""{n}": ["{}"]"#, self.backend.addr))
            .collect();
        if names.is_empty() {
            // A replica with no certificate of its own to order.
            domains.push(format!(
                r#""plain.cluster.test": {{"backends": ["{}"], "tls": "off"}}"#,
                self.backend.addr
            ));
        }
        format!(
            r#"{{
              "listen": {{"http": "{ip}:{}", "https": "{ip}:{}"}},
              "admin": "127.0.0.1:0",
              "storage": {{"redis": {{"url": "{}", "lock_lease": "{}s"}}}},
              "acme": {{"directory": "{}", "email": "ops@example.com", "ca_root": "{}", "challenges": {}}},
              "domains": {{{}}},
              {PLUGIN_SLACK}
            }}"#,
            self.pebble.http_port,
            self.pebble.tls_port,
            self.redis.url(),
            LEASE.as_secs(),
            self.pebble.directory,
            self.pebble.api_ca.display(),
            self.challenges,
            domains.join(", ")
        )
    }
}

struct Replica {
    bin: Binary,
    ip: String,
    https: SocketAddr,
    admin: SocketAddr,
}

impl Replica {
    async fn start(setup: &Setup<'_>, ip: &str, names: &[&str]) -> Replica {
        Self::start_config(&setup.config(ip, names), ip).await
    }

    async fn start_config(config: &str, ip: &str) -> Replica {
        Self::from_binary(Binary::start(config, &[]), ip).await
    }

    /// A replica already spawned, once it listens.
    async fn from_binary(mut bin: Binary, ip: &str) -> Replica {
        let admin = bin.addr_after("admin endpoints on http://").await;
        let https = bin.addr_after("serving HTTPS on ").await;
        // The plain listener (HTTP-01 answers) binds after the HTTPS one:
        // a request sent on the HTTPS line alone was once refused.
        bin.addr_after("serving HTTP on ").await;
        Replica {
            bin,
            ip: ip.to_owned(),
            https,
            admin,
        }
    }

    /// The serial of the certificate served for `name`, if any verifies.
    async fn serial(&self, name: &str, root: &CertificateDer<'static>) -> Option<String> {
        let config = client_config(std::slice::from_ref(root), &[]);
        let stream = connect(self.https, name, config).await.ok()?;
        Some(serial_of(&peer_leaf(&stream)))
    }

    async fn admin(&self, path: &str) -> (StatusCode, String) {
        get(&client(), &format!("http://{}{path}", self.admin), "admin").await
    }

    async fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        parse_metrics(&self.admin("/metrics").await.1)
    }

    async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin("/status").await.1).unwrap()
    }

    /// Its log, for a failed assertion.
    fn log(&self) -> String {
        format!(
            "--- {} ---\n{}",
            self.ip,
            self.bin
                .lines_with(|l| !l.contains("bbproxy::access"))
                .join("\n")
        )
    }

    fn logged(&self, parts: &[&str]) -> Vec<String> {
        self.bin.lines_with(|l| parts.iter().all(|p| l.contains(p)))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log());
        }
    }
}

fn serial_of(der: &CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.raw_serial_as_string()
}

/// Waits until every replica serves the same certificate for `name`;
/// returns its serial and how long that took after the first one served it.
async fn same_everywhere(
    replicas: &[&Replica],
    name: &str,
    root: &CertificateDer<'static>,
    deadline: Duration,
) -> (String, Duration) {
    let end = Instant::now() + deadline;
    let mut first_seen: Option<Instant> = None;
    loop {
        let mut serials = Vec::new();
        for r in replicas {
            serials.push(r.serial(name, root).await);
        }
        if first_seen.is_none() && serials.iter().any(Option::is_some) {
            first_seen = Some(Instant::now());
        }
        if let Some(Some(s)) = serials.first()
            && serials.iter().all(|x| x.as_deref() == Some(s.as_str()))
        {
            let spread = first_seen.map_or(Duration::ZERO, |t| t.elapsed());
            return (s.clone(), spread);
        }
        assert!(
            Instant::now() < end,
            "{name} not served alike by every replica within {deadline:?}: {serials:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An L4 load balancer on `listen`: each connection goes to the next of
/// `targets` in turn, skipping one that refuses (a replica not listening
/// yet), as a Kubernetes Service or a TCP balancer in front of replicas.
async fn l4_balancer(listen: SocketAddr, targets: Vec<SocketAddr>) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    tokio::spawn(async move {
        let mut next = 0;
        while let Ok((mut inbound, _)) = listener.accept().await {
            let start = next;
            next = (next + 1) % targets.len();
            let targets = targets.clone();
            tokio::spawn(async move {
                for i in 0..targets.len() {
                    let target = targets[(start + i) % targets.len()];
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    })
}

/// Three replicas started at once for two names, behind an L4 balancer
/// that the CA's validations go through: one account, exactly one order
/// and one certificate per name, and every replica serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_order_each_name_once_and_serve_the_same_certificate() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let root = pebble.root().await;
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let setup = Setup {
        pebble: &pebble,
        redis: &redis,
        backend: &backend,
        challenges: r#"["http-01", "tls-alpn-01"]"#,
    };
    let names = ["a.cluster.test", "b.cluster.test"];
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let mut balancers = Vec::new();
    for port in [pebble.http_port, pebble.tls_port] {
        let targets = ips
            .iter()
            .map(|ip| SocketAddr::new(ip.parse().unwrap(), port))
            .collect();
        balancers.push(l4_balancer(SocketAddr::from(([127, 0, 0, 4], port)), targets).await);
    }
    for name in names {
        pebble.point(name, "127.0.0.4").await;
    }
    let configs: Vec<(String, String)> = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        .iter()
        .map(|ip| (setup.config(ip, &names), ip.to_string()))
        .collect();
    // Started together: their ACME tasks race for the locks.
    let (a, b, c) = tokio::join!(
        Replica::start_config(&configs[0].0, &configs[0].1),
        Replica::start_config(&configs[1].0, &configs[1].1),
        Replica::start_config(&configs[2].0, &configs[2].1),
    );
    let replicas = [&a, &b, &c];
    for name in names {
        let (serial, spread) =
            same_everywhere(&replicas, name, &root, Duration::from_secs(90)).await;
        assert!(
            spread <= Duration::from_secs(10),
            "{name}: {spread:?} between the first replica and the last serving {serial}"
        );
        let (status, body) = https_get(
            c.https,
            name,
            client_config(std::slice::from_ref(&root), &[b"http/1.1"]),
            "/",
        )
        .await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "backend app"));
    }
    assert_eq!(
        pebble.orders(),
        2,
        "one order per name:\n{}\n{}",
        pebble.log(),
        replicas
            .iter()
            .map(|r| r.log())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(pebble.issued(), 2, "one certificate per name");
    assert_eq!(pebble.accounts(), 1, "one account for the cluster");
    // Each installation is logged a moment after it serves.
    let ordered = || -> usize {
        replicas
            .iter()
            .map(|r| r.logged(&["new certificate installed"]).len())
            .sum()
    };
    wait_for(
        Duration::from_secs(10),
        "both installations logged",
        || async { ordered() >= 2 },
    )
    .await;
    assert_eq!(ordered(), 2);
    for r in replicas {
        let status = r.status().await;
        assert_eq!(status["storage"]["kind"], "redis", "{status}");
        assert_eq!(status["storage"]["state"], "up", "{status}");
        let certs = status["certificates"].as_array().unwrap();
        assert_eq!(certs.len(), 2, "{status}");
        assert!(certs.iter().all(|c| c["not_after"].is_number()), "{status}");
        let m = r.metrics().await;
        assert_eq!(m.get("bbproxy_storage_up"), Some(&1.0));
    }

    // A corrupt value for one name is reported for that name; the other
    // name, and what is served, are untouched.
    let _: () = redis
        .cmd(&["SET", "bbproxy:cert:a.cluster.test", "{\"chain\": 1"])
        .await;
    let _: () = redis
        .cmd(&["HSET", "bbproxy:certs", "a.cluster.test", "corrupt"])
        .await;
    wait_for(
        Duration::from_secs(30),
        "the corrupt value reported",
        || async {
            !a.logged(&[
                "a.cluster.test",
                "stored certificate for a.cluster.test is unusable",
            ])
            .is_empty()
        },
    )
    .await;
    let status = a.status().await;
    let row = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "a.cluster.test")
        .unwrap()
        .clone();
    assert!(
        row["last_error"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unusable")),
        "{row}"
    );
    let other = status["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "b.cluster.test")
        .unwrap()
        .clone();
    assert!(other["last_error"].is_null(), "{other}");
    assert_eq!(status["storage"]["state"], "up", "{status}");
    for r in replicas {
        for name in names {
            assert!(r.serial(name, &root).await.is_some(), "{name} on {}", r.ip);
        }
    }
    assert_eq!(pebble.orders(), 2);
}

/// The replica that orders is not the one the CA reaches: the DNS points
/// the names at 127.0.0.2, whose config has no ACME names at all, and the
/// validation is answered there from the storage (HTTP-01 for one name,
/// TLS-ALPN-01 for the other, in two clusters on one Pebble).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_validates_through_a_replica_that_did_not_order() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let root = pebble.root().await;
    let backend = Backend::start("app").await;
    for (challenge, name) in [
        ("http-01", "h.cluster.test"),
        ("tls-alpn-01", "t.cluster.test"),
    ] {
        let redis = RedisServer::start();
        let challenges = format!(r#"["{challenge}"]"#);
        let setup = Setup {
            pebble: &pebble,
            redis: &redis,
            backend: &backend,
            challenges: &challenges,
        };
        pebble.point(name, "127.0.0.2").await;
        let other = Replica::start(&setup, "127.0.0.2", &[]).await;
        let mut orderer = Replica::start(&setup, "127.0.0.1", &[name]).await;
        let (serial, _) = same_everywhere(&[&orderer], name, &root, Duration::from_secs(60)).await;
        // The line follows the installation, so a client can be served the
        // certificate a moment before it is logged.
        let installed = ["new certificate installed", name];
        orderer
            .bin
            .wait_lines(1, Duration::from_secs(10), "the installation", |l| {
                installed.iter().all(|p| l.contains(p))
            })
            .await;
        assert_eq!(orderer.logged(&installed).len(), 1, "{challenge}");
        if challenge == "http-01" {
            // The validation reached the other replica and was answered
            // there (it is access-logged like a request).
            let answered = other.logged(&["/.well-known/acme-challenge/", "200"]);
            assert!(
                !answered.is_empty(),
                "no HTTP-01 answer logged by 127.0.0.2"
            );
        }
        // And the other one serves it as soon as it has the name.
        drop(other);
        let other = Replica::start(&setup, "127.0.0.2", &[name]).await;
        let (again, _) = same_everywhere(&[&other], name, &root, Duration::from_secs(30)).await;
        assert_eq!(again, serial);
        assert!(other.logged(&["new certificate installed"]).is_empty());
        drop((other, orderer));
    }
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    assert_eq!(pebble.issued(), 2);
}

/// Reads of single values or through scripts Redis has answered so far
/// (`GET`, `EVAL`, `EVALSHA` in `INFO commandstats`): what a challenge
/// look-up costs, one way or the other. Commands a script runs are counted
/// apart, under their own names.
async fn redis_reads(redis: &RedisServer) -> u64 {
    let info: String = redis.cmd(&["INFO", "commandstats"]).await;
    info.lines()
        .filter(|l| {
            ["cmdstat_get:", "cmdstat_eval:", "cmdstat_evalsha:"]
                .iter()
                .any(|c| l.starts_with(c))
        })
        .map(|l| {
            l.split(['=', ','])
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap()
        })
        .sum()
}

/// Anyone can ask a replica for `/.well-known/acme-challenge/<token>` with
/// tokens it makes up, and a replica that did not publish a token asks the
/// storage: that must not cost a Redis read per request. 400 distinct
/// made-up tokens (16 at a time) cost at most one read per 200 ms of the
/// flood, plus the replica's own periodic traffic; and an answer published
/// just before a request (as the CA's validation follows the publication)
/// is found, flood or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_challenge_tokens_cost_a_bounded_number_of_storage_reads() {
    const TOKENS: usize = 400;
    const AT_ONCE: usize = 16;
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let setup = Setup {
        pebble: &pebble,
        redis: &redis,
        backend: &backend,
        challenges: r#"["http-01"]"#,
    };
    let replica = Replica::start(&setup, "127.0.0.2", &[]).await;
    let writer = crate::storage::redis_at(&redis.url());
    let base = format!(
        "http://127.0.0.2:{}/.well-known/acme-challenge",
        pebble.http_port
    );
    let http = client();
    let publish_and_ask = |token: &'static str| {
        let (writer, http, base) = (writer.clone(), http.clone(), base.clone());
        async move {
            let key = ChallengeKey::Http01(token.to_owned());
            let answer = format!("{token}.thumbprint");
            writer
                .publish_challenge(&key, &answer, Duration::from_secs(60))
                .await
                .unwrap();
            let (status, body) = get(&http, &format!("{base}/{token}"), "x.cluster.test").await;
            assert_eq!((status, body), (StatusCode::OK, answer), "{token}");
        }
    };
    publish_and_ask("before-the-flood-aaaaaaaaaa").await;

    let before = redis_reads(&redis).await;
    let start = Instant::now();
    let mut asked = 0;
    while asked < TOKENS {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {asked} requests in 120 s"
        );
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..AT_ONCE.min(TOKENS - asked) {
            let token = format!("made-up-{:016x}{:016x}", rand_u64(), rand_u64());
            let (http, url) = (http.clone(), format!("{base}/{token}"));
            batch.spawn(async move { get(&http, &url, "x.cluster.test").await.0 });
            asked += 1;
        }
        while let Some(status) = batch.join_next().await {
            assert_ne!(status.unwrap(), StatusCode::OK);
        }
    }
    let took = start.elapsed();
    let reads = redis_reads(&redis).await - before;
    // One read per 200 ms, the first at once.
    let bound = (took.as_millis() / 200) as u64 + 1;
    eprintln!("{TOKENS} made-up tokens in {took:?}: {reads} Redis reads (bound {bound})");
    assert!(
        reads <= bound,
        "{reads} Redis reads for {TOKENS} made-up tokens in {took:?} (bound {bound})"
    );
    publish_and_ask("after-the-flood-bbbbbbbbbbb").await;
    assert!(replica.logged(&["panicked"]).is_empty());
}

/// A random number for made-up tokens.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// A TCP listener that accepts and never answers: Pebble's validation of a
/// name pointed here hangs, holding its order mid-way.
async fn blackhole(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    })
}

/// The lock holder is SIGKILLed mid-order (its validation hangs): nobody
/// orders again while its lease lasts, then another replica takes over and
/// every live replica serves its certificate within one lease plus the
/// order's time; the killed order never produced a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_holder_killed_mid_order_costs_at_most_one_lease() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let root = pebble.root().await;
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let setup = Setup {
        pebble: &pebble,
        redis: &redis,
        backend: &backend,
        challenges: r#"["http-01"]"#,
    };
    let name = "k.cluster.test";
    let hole = blackhole(SocketAddr::from(([127, 0, 0, 4], pebble.http_port))).await;
    pebble.point(name, "127.0.0.4").await;
    // Spawned together, and the holder is killed as soon as its order is
    // placed: the hung validation (Pebble gives up after about 15 s) must
    // still be pending then, however slowly the other replicas start.
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let mut bins: Vec<(Binary, &str)> = ips
        .iter()
        .map(|ip| (Binary::start(&setup.config(ip, &[name]), &[]), *ip))
        .collect();
    let end = Instant::now() + Duration::from_secs(60);
    let holder = loop {
        let holder = bins.iter().position(|(bin, _)| {
            !bin.lines_with(|l| l.contains("took this name's lock") && l.contains(name))
                .is_empty()
        });
        if let Some(i) = holder
            && pebble.orders() >= 1
        {
            break i;
        }
        assert!(Instant::now() < end, "no order placed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (mut killed, _) = bins.remove(holder);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    let at = Instant::now();
    assert_eq!(
        pebble.issued(),
        0,
        "the holder finished before it was killed"
    );
    pebble.point(name, bins[0].1).await;
    let mut replicas = Vec::new();
    for (bin, ip) in bins {
        replicas.push(Replica::from_binary(bin, ip).await);
    }
    // While its lease lasts nobody orders again (1 s of margin for the
    // time between the lock being taken and the order showing in the log).
    while at.elapsed() < LEASE - Duration::from_secs(1) {
        assert_eq!(pebble.orders(), 1, "ordered again before the lease ran out");
        assert_eq!(pebble.issued(), 0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live: Vec<&Replica> = replicas.iter().collect();
    let (_, _) = same_everywhere(&live, name, &root, Duration::from_secs(60)).await;
    let took = at.elapsed();
    // The order itself took at most this (measured: a few seconds).
    let order_time = Duration::from_secs(20);
    assert!(
        took <= LEASE + order_time,
        "took {took:?} after the kill (lease {LEASE:?})"
    );
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    assert_eq!(pebble.issued(), 1, "one certificate for the name");
    hole.abort();
    eprintln!("takeover after the kill: {took:?} (lease {LEASE:?})");
}

/// Short-lived certificates: each renewal is ordered by exactly one
/// replica, and the others serve the renewed certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_is_done_by_one_replica_and_served_by_all() {
    let pebble = Pebble::start(PebbleOptions {
        validity_secs: Some(30),
        ..PebbleOptions::default()
    })
    .await;
    let root = pebble.root().await;
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let setup = Setup {
        pebble: &pebble,
        redis: &redis,
        backend: &backend,
        challenges: r#"["http-01"]"#,
    };
    let name = "r.cluster.test";
    let a = Replica::start(&setup, "127.0.0.1", &[name]).await;
    let b = Replica::start(&setup, "127.0.0.2", &[name]).await;
    let c = Replica::start(&setup, "127.0.0.3", &[name]).await;
    let replicas = [&a, &b, &c];
    let (first, _) = same_everywhere(&replicas, name, &root, Duration::from_secs(60)).await;
    // Renewal at 2/3 of 30 s.
    let end = Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        let (serial, spread) =
            same_everywhere(&replicas, name, &root, Duration::from_secs(30)).await;
        if serial != first {
            assert!(spread <= Duration::from_secs(10), "{spread:?}");
            break serial;
        }
        assert!(Instant::now() < end, "not renewed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(renewed, first);
    // Each installation is logged a moment after it serves.
    let logged = || -> Vec<usize> {
        replicas
            .iter()
            .map(|r| r.logged(&["renewed certificate installed", name]).len())
            .collect()
    };
    wait_for(Duration::from_secs(10), "every renewal logged", || async {
        logged().iter().sum::<usize>() + 1 >= pebble.issued()
    })
    .await;
    let renewals = logged();
    assert_eq!(
        renewals.iter().sum::<usize>(),
        pebble.issued() - 1,
        "{renewals:?}"
    );
    assert_eq!(pebble.orders(), pebble.issued(), "{}", pebble.log());
    let loaded: usize = replicas
        .iter()
        .map(|r| {
            r.logged(&["certificate loaded from the storage", name])
                .len()
        })
        .sum();
    assert!(loaded >= 2, "{loaded} loads from the storage");
}

/// Redis stops for 20 s under steady HTTPS load on every replica: no
/// request fails, `/readyz` stays ready, the outage is in the metrics and
/// logged once per replica, and ACME work resumes when Redis is back (a
/// name added during the outage gets its certificate then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_under_load_fails_no_request() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let root = pebble.root().await;
    let mut redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let setup = Setup {
        pebble: &pebble,
        redis: &redis,
        backend: &backend,
        challenges: r#"["http-01"]"#,
    };
    let name = "o.cluster.test";
    let added = "added.cluster.test";
    let ips = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
    let a = Replica::start(&setup, ips[0], &[name]).await;
    let b = Replica::start(&setup, ips[1], &[name]).await;
    let c = Replica::start(&setup, ips[2], &[name]).await;
    let replicas = [&a, &b, &c];
    same_everywhere(&replicas, name, &root, Duration::from_secs(60)).await;
    let with_added: Vec<String> = ips
        .iter()
        .map(|ip| setup.config(ip, &[name, added]))
        .collect();

    // Steady load: new TLS connections to every replica, bounded in count
    // and time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for r in replicas {
        let (addr, stop, config) = (
            r.https,
            stop.clone(),
            client_config(std::slice::from_ref(&root), &[b"http/1.1"]),
        );
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let end = Instant::now() + Duration::from_secs(90);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && Instant::now() < end
                && ok < 20_000
            {
                let result = tokio::time::timeout(Duration::from_secs(5), async {
                    let stream = connect(addr, name, config.clone()).await?;
                    Ok::<_, std::io::Error>(common::tls::get_over(stream, name, "/").await)
                })
                .await;
                match result {
                    Ok(Ok((StatusCode::OK, _))) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        }));
    }

    redis.stop();
    let down_at = Instant::now();
    for r in replicas {
        wait_for(Duration::from_secs(15), "the outage noticed", || async {
            r.metrics().await.get("bbproxy_storage_up") == Some(&0.0)
        })
        .await;
    }
    // A name added during the outage: its order waits for the storage.
    for (r, config) in replicas.iter().zip(&with_added) {
        std::fs::write(r.bin.dir.path().join("config.json"), config).unwrap();
        r.bin.signal("HUP");
    }
    for r in replicas {
        let (status, body) = r.admin("/readyz").await;
        assert_eq!(status, StatusCode::OK, "{}: {body}", r.ip);
    }
    while down_at.elapsed() < Duration::from_secs(20) {
        for r in replicas {
            let (status, body) = r.admin("/readyz").await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", r.ip);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(pebble.orders(), 1, "no order while the storage is down");
    for r in replicas {
        let status = r.status().await;
        assert_eq!(status["storage"]["state"], "down", "{status}");
        let m = r.metrics().await;
        let errors: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("bbproxy_storage_errors_total{"))
            .map(|(_, v)| v)
            .sum();
        assert!(errors >= 1.0, "{m:?}");
    }
    redis.resume();
    let back_at = Instant::now();
    for r in replicas {
        wait_for(Duration::from_secs(15), "the storage back", || async {
            r.metrics().await.get("bbproxy_storage_up") == Some(&1.0)
        })
        .await;
    }
    let (_, _) = same_everywhere(&replicas, added, &root, Duration::from_secs(60)).await;
    let resumed = back_at.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (ok, failed) = w.await.unwrap();
        assert!(
            failed.is_empty(),
            "{} failed requests: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        assert!(ok > 50, "only {ok} requests");
        total += ok;
    }
    for r in replicas {
        let warned = r.logged(&["storage unreachable"]);
        assert_eq!(warned.len(), 1, "{}: {warned:?}", r.ip);
        assert_eq!(r.logged(&["storage reachable again"]).len(), 1, "{}", r.ip);
    }
    // The added name was ordered once, after the outage.
    assert_eq!(pebble.orders(), 2, "{}", pebble.log());
    let errors = series("bbproxy_storage_errors_total", &[("op", "versions")]);
    eprintln!(
        "{total} requests during the outage, none failed; the added name was served {resumed:?} after Redis came back; {errors} on 127.0.0.1: {:?}",
        a.metrics().await.get(&errors)
    );
}

/// What goes wrong in the storage settings: each is a clear error or
/// warning naming the key, never a panic, and the password never shows.
/// A replica that starts while Redis is down serves plain HTTP at once and
/// completes its TLS set-up when Redis comes up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_storage_settings_are_named_and_a_replica_waits_for_redis() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let root = pebble.root().await;
    let backend = Backend::start("app").await;
    // `storage` with `cert_cache_dir`: a config error naming both.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"domains": {"a.test": ["127.0.0.1:9"]}, "cert_cache_dir": "certs",
            "storage": {"redis": {"url": "redis://127.0.0.1:6379"}}}"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bbproxy"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("storage")
            && stderr.contains("cert_cache_dir")
            && !stderr.contains("panicked"),
        "{stderr}"
    );

    // Redis with a password; the replica has the wrong one, then a
    // non-Redis port, then an address where nothing listens yet.
    let mut redis = RedisServer::start_with(common::redis::RedisOptions {
        password: Some("right-pass".into()),
        tls: false,
    });
    let setup = Setup {
        pebble: &pebble,
        redis: &redis,
        backend: &backend,
        challenges: r#"["http-01"]"#,
    };
    let name = "w.cluster.test";
    let wrong = setup
        .config("127.0.0.1", &[name])
        .replace("right-pass", "wrong-pass");
    let replica = Replica::start_config(&wrong, "127.0.0.1").await;
    let line = replica
        .bin
        .wait_line(Duration::from_secs(30), "the storage warning", |l| {
            l.contains("storage unreachable")
        });
    assert!(
        line.contains("storage.redis.url") && line.contains("password"),
        "{line}"
    );
    no_password(&replica, "wrong-pass").await;
    assert!(replica.logged(&["panicked"]).is_empty());
    drop(replica);

    let not_redis = setup
        .config("127.0.0.1", &[name])
        .replace(&redis.url(), &format!("redis://{}/0", backend.addr));
    let replica = Replica::start_config(&not_redis, "127.0.0.1").await;
    let line = replica
        .bin
        .wait_line(Duration::from_secs(30), "the storage warning", |l| {
            l.contains("storage unreachable")
        });
    assert!(
        line.contains("Redis protocol") && line.contains("storage.redis.url"),
        "{line}"
    );
    drop(replica);

    // Nothing listens at the URL yet: the replica starts, serves plain
    // HTTP, says it is not ready because of the missing certificate...
    let url = redis.url();
    let config = setup.config("127.0.0.1", &[name]);
    redis.stop();
    let replica = Replica::start_config(&config, "127.0.0.1").await;
    let line = replica
        .bin
        .wait_line(Duration::from_secs(30), "the storage warning", |l| {
            l.contains("storage unreachable")
        });
    assert!(line.contains("storage.redis.url"), "{line}");
    let http = format!("http://127.0.0.1:{}/", pebble.http_port);
    assert_eq!(get(&client(), &http, name).await.0, StatusCode::OK);
    let (status, body) = replica.admin("/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains(name) && body.contains("storage"), "{body}");
    assert!(replica.serial(name, &root).await.is_none());
    // The password is in neither the outage's log lines nor /status or
    // /metrics while Redis cannot be reached.
    no_password(&replica, "right-pass").await;
    // ...and completes its TLS set-up once Redis is there.
    redis.resume();
    assert_eq!(redis.url(), url);
    same_everywhere(&[&replica], name, &root, Duration::from_secs(60)).await;
    wait_for(Duration::from_secs(10), "ready", || async {
        replica.admin("/readyz").await.0 == StatusCode::OK
    })
    .await;
    assert!(replica.logged(&["panicked"]).is_empty());
    no_password(&replica, "right-pass").await;
}

/// `password` is nowhere in the replica's log, `/status` or `/metrics`.
async fn no_password(replica: &Replica, password: &str) {
    let leaked = replica.logged(&[password]);
    assert!(leaked.is_empty(), "{leaked:?}");
    for path in ["/status", "/metrics"] {
        let body = replica.admin(path).await.1;
        assert!(!body.contains(password), "{path}: {body}");
    }
}

/// The serial of the first certificate in a PEM chain.
fn serial_of_pem(chain: &str) -> String {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap();
    serial_of(&CertificateDer::from(pem.contents))
}

/// Waits until every replica serves `cert` for `name`; returns how long
/// that took. `what` names the step in a failure.
async fn all_serve(
    what: &str,
    replicas: &[&Replica],
    name: &str,
    root: &CertificateDer<'static>,
    cert: &StoredCert,
    deadline: Duration,
) -> Duration {
    let want = serial_of_pem(&cert.chain);
    let start = Instant::now();
    loop {
        let mut serials = Vec::new();
        for r in replicas {
            serials.push(r.serial(name, root).await);
        }
        if serials.iter().all(|s| s.as_deref() == Some(want.as_str())) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not every replica serves {want} for {name} within {deadline:?}: {serials:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A certificate another replica stores reaches every replica within
/// 10 s, without a restart: when it is announced (pub/sub), and when the
/// announcement is missed (the periodic check). The replicas here are not
/// waiting for the name's lock (their certificate is decades from
/// renewal), so nothing else would load it. The test is the other
/// replica: it writes through the same storage code, and for the missed
/// announcement writes the keys as that code does, without publishing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_stored_elsewhere_reaches_every_replica_within_10_s() {
    let pebble = Pebble::start(PebbleOptions::default()).await;
    let redis = RedisServer::start();
    let backend = Backend::start("app").await;
    let setup = Setup {
        pebble: &pebble,
        redis: &redis,
        backend: &backend,
        challenges: r#"["http-01"]"#,
    };
    let name = "s.cluster.test";
    let ca = TestCa::new();
    let root = ca.der();
    let writer = crate::storage::redis_at(&redis.url());
    // Each version expires later than the one before, as a renewal does.
    let version = |not_after: i64| {
        let (chain, key) = ca.leaf_until(&[name], not_after);
        StoredCert {
            chain,
            key,
            not_after: not_after as u64,
        }
    };
    let store = |cert: StoredCert| {
        let writer = writer.clone();
        async move {
            let lock = writer.try_lock(name, LEASE).await.unwrap().unwrap();
            let written = writer.store_certificate(name, &cert, &lock).await.unwrap();
            assert_eq!(written, Written::Stored);
            writer.unlock(name, &lock).await.unwrap();
            cert
        }
    };
    let first = store(version(4_000_000_000)).await;
    let a = Replica::start(&setup, "127.0.0.1", &[name]).await;
    let b = Replica::start(&setup, "127.0.0.2", &[name]).await;
    let c = Replica::start(&setup, "127.0.0.3", &[name]).await;
    let replicas = [&a, &b, &c];
    // Loaded at start-up.
    all_serve(
        "loaded at start",
        &replicas,
        name,
        &root,
        &first,
        Duration::from_secs(30),
    )
    .await;

    let second = store(version(4_000_001_000)).await;
    let announced = all_serve(
        "announced",
        &replicas,
        name,
        &root,
        &second,
        Duration::from_secs(10),
    )
    .await;

    let third = version(4_000_002_000);
    let _: () = redis
        .cmd(&[
            "SET",
            &format!("bbproxy:cert:{name}"),
            &serde_json::to_string(&third).unwrap(),
        ])
        .await;
    let _: () = redis
        .cmd(&["HSET", "bbproxy:certs", name, &version_of(&third.chain)])
        .await;
    let missed = all_serve(
        "announcement missed",
        &replicas,
        name,
        &root,
        &third,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(pebble.orders(), 0, "{}", pebble.log());
    eprintln!(
        "stored elsewhere, served by all three replicas: announced {announced:?}, announcement missed {missed:?}"
    );
}
