//! The storage contract, run against each backend: a real `redis-server`
//! started by the test (two storage instances stand for two replicas) and
//! the single-node file store. Locks: one of two contenders wins, a lease
//! that is extended outlives its length, an expired one is taken over and
//! its old holder's write is refused (fencing), a non-owner's release does
//! nothing. Certificates never go backwards, challenge answers are readable
//! at once from the other instance, a stored certificate is announced.
//! Then what goes wrong: a corrupt value, a wrong password, a port that is
//! not Redis, an unreachable server that comes back, and TLS.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use bbproxy::storage::file::FileStorage;
use bbproxy::storage::redis::RedisStorage;
use bbproxy::storage::{ChallengeKey, Storage, StorageError, StoredCert, Written};
use common::redis::{RedisOptions, RedisServer};

/// The `storage.redis` settings of a config with `redis` as its value.
fn settings(redis: &str) -> bbproxy_config::RedisStorage {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        format!(r#"{{"domains": {{"a.test": ["127.0.0.1:9"]}}, "storage": {{"redis": {redis}}}}}"#),
    )
    .unwrap();
    match bbproxy_config::load(&path).unwrap().storage {
        Some(bbproxy_config::Storage::Redis(r)) => r,
        other => panic!("no redis storage: {other:?}"),
    }
}

pub(crate) fn redis_at(url: &str) -> Arc<dyn Storage> {
    Arc::new(RedisStorage::new(&settings(&format!(r#"{{"url": "{url}"}}"#))).unwrap())
}

/// A real (self-signed) certificate for n.test valid until `not_after`:
/// the file store reads notAfter from the chain itself.
fn cert(not_after: u64) -> StoredCert {
    let mut params = rcgen::CertificateParams::new(vec!["n.test".to_owned()]).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after as i64).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    StoredCert {
        chain: cert.pem(),
        key: key.serialize_pem(),
        not_after,
    }
}

/// Two handles on one store: two replicas of one Redis, or one process's
/// `cert_cache_dir` (kept alive by the returned directory).
async fn pair(
    redis: Option<&RedisServer>,
) -> (
    Arc<dyn Storage>,
    Arc<dyn Storage>,
    Option<tempfile::TempDir>,
) {
    match redis {
        Some(server) => (redis_at(&server.url()), redis_at(&server.url()), None),
        None => {
            let dir = tempfile::tempdir().unwrap();
            let one: Arc<dyn Storage> = Arc::new(FileStorage::open(Some(dir.path())).unwrap());
            (one.clone(), one, Some(dir))
        }
    }
}

async fn locks_and_fenced_writes(redis: Option<&RedisServer>) {
    let (a, b, _dir) = pair(redis).await;
    let lease = Duration::from_millis(600);
    // Two contenders at once: exactly one wins.
    let (x, y) = tokio::join!(a.try_lock("n.test", lease), b.try_lock("n.test", lease));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x.is_some() != y.is_some(), "{x:?} {y:?}");
    let (holder, other, token) = match x {
        Some(t) => (&a, &b, t),
        None => (&b, &a, y.unwrap()),
    };
    // The lease is extended across "a long order" three times its length.
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(holder.extend_lock("n.test", &token, lease).await.unwrap());
        assert_eq!(other.try_lock("n.test", lease).await.unwrap(), None);
    }
    // A release by someone who does not hold it changes nothing.
    let foreign = other.try_lock("other.test", lease).await.unwrap().unwrap();
    other.unlock("n.test", &foreign).await.unwrap();
    assert_eq!(other.try_lock("n.test", lease).await.unwrap(), None);
    assert_eq!(
        holder
            .store_certificate("n.test", &cert(2_000_000_000), &token)
            .await
            .unwrap(),
        Written::Stored
    );
    // Not extended: the lease runs out and the other takes over.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let taken = loop {
        if let Some(t) = other.try_lock("n.test", lease).await.unwrap() {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "never taken over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The old holder can neither extend nor write any more.
    assert!(!holder.extend_lock("n.test", &token, lease).await.unwrap());
    assert_eq!(
        holder
            .store_certificate("n.test", &cert(2_100_000_000), &token)
            .await
            .unwrap(),
        Written::LockLost
    );
    // Nor can the new holder go backwards in time.
    assert_eq!(
        other
            .store_certificate("n.test", &cert(1_900_000_000), &taken)
            .await
            .unwrap(),
        Written::Older
    );
    let stored = a.certificate("n.test").await.unwrap().unwrap();
    assert_eq!(stored.not_after, 2_000_000_000);
    assert_eq!(
        other
            .store_certificate("n.test", &cert(2_200_000_000), &taken)
            .await
            .unwrap(),
        Written::Stored
    );
    assert_eq!(
        holder
            .certificate("n.test")
            .await
            .unwrap()
            .unwrap()
            .not_after,
        2_200_000_000
    );
    // Released by its holder: free at once.
    other.unlock("n.test", &taken).await.unwrap();
    assert!(holder.try_lock("n.test", lease).await.unwrap().is_some());
}

async fn challenges_accounts_and_ari(redis: Option<&RedisServer>) {
    let (a, b, _dir) = pair(redis).await;
    let key = ChallengeKey::Http01("tok".into());
    let alpn = ChallengeKey::TlsAlpn01("n.test".into());
    a.publish_challenge(&key, "tok.thumb", Duration::from_secs(30))
        .await
        .unwrap();
    a.publish_challenge(&alpn, "00ff", Duration::from_secs(30))
        .await
        .unwrap();
    // Read-after-write from the other handle, every answer in one read.
    let all = b.challenges().await.unwrap();
    assert_eq!(all.get(&key).map(String::as_str), Some("tok.thumb"));
    assert_eq!(all.get(&alpn).map(String::as_str), Some("00ff"));
    assert_eq!(all.len(), 2, "{all:?}");
    a.withdraw_challenge(&key).await.unwrap();
    let all = b.challenges().await.unwrap();
    assert_eq!(all.get(&key), None);
    assert_eq!(all.get(&alpn).map(String::as_str), Some("00ff"));
    if redis.is_some() {
        // An answer whose order died with its replica expires by itself.
        let brief = ChallengeKey::Http01("brief".into());
        a.publish_challenge(&brief, "gone soon", Duration::from_millis(1500))
            .await
            .unwrap();
        common::wait_for(
            Duration::from_secs(10),
            "the brief answer to expire",
            || {
                let b = b.clone();
                let brief = brief.clone();
                async move { !b.challenges().await.unwrap().contains_key(&brief) }
            },
        )
        .await;
        assert!(b.challenges().await.unwrap().contains_key(&alpn));
    }
    a.store_account("https://ca.test/dir", b"{\"id\":1}")
        .await
        .unwrap();
    assert_eq!(
        b.account("https://ca.test/dir").await.unwrap(),
        Some(b"{\"id\":1}".to_vec())
    );
    assert_eq!(b.account("https://other.test/dir").await.unwrap(), None);
    a.store_ari("n.test", b"{}").await.unwrap();
    assert_eq!(b.ari("n.test").await.unwrap(), Some(b"{}".to_vec()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_locks_and_fenced_writes() {
    let server = RedisServer::start();
    locks_and_fenced_writes(Some(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_locks_and_fenced_writes() {
    locks_and_fenced_writes(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_challenges_accounts_and_ari() {
    let server = RedisServer::start();
    challenges_accounts_and_ari(Some(&server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_challenges_accounts_and_ari() {
    challenges_accounts_and_ari(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_certificate_is_announced_and_listed() {
    let server = RedisServer::start();
    let (a, b, _dir) = pair(Some(&server)).await;
    let mut feed = b.watch().unwrap();
    // Both handles have subscribed (announcements have no history: one
    // sent before that is lost, which the periodic check covers). The
    // subscriber may have announced itself ("*", a resync) before `feed`
    // existed, so that one is not waited for.
    common::wait_for(Duration::from_secs(10), "two subscribers", || async {
        let reply: Vec<redis::Value> = server.cmd(&["PUBSUB", "NUMSUB", "bbproxy:certs"]).await;
        matches!(reply.get(1), Some(redis::Value::Int(n)) if *n >= 2)
    })
    .await;
    let lock = a
        .try_lock("n.test", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    a.store_certificate("n.test", &cert(2_000_000_000), &lock)
        .await
        .unwrap();
    let name = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match feed.recv().await.unwrap() {
                resync if resync == "*" => continue,
                name => break name,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(name, "n.test");
    let versions = b.versions().await.unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    assert_eq!(versions[0].0, "n.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_value_is_an_error_for_that_name_only() {
    let server = RedisServer::start();
    let store = redis_at(&server.url());
    let lock = store
        .try_lock("good.test", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    store
        .store_certificate("good.test", &cert(2_000_000_000), &lock)
        .await
        .unwrap();
    let _: () = server
        .cmd(&["SET", "bbproxy:cert:bad.test", "{not json"])
        .await;
    let err = store.certificate("bad.test").await.unwrap_err();
    assert!(matches!(err, StorageError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("bad.test"), "{err}");
    assert!(store.certificate("good.test").await.unwrap().is_some());
    // Still up: one bad value is not an outage.
    assert!(store.health().is_up());
    // A corrupt value does not block a new certificate for that name.
    let lock = store
        .try_lock("bad.test", Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .store_certificate("bad.test", &cert(1), &lock)
            .await
            .unwrap(),
        Written::Stored
    );
}

/// Every error names the key to fix, never shows the password, and turns
/// the storage down (one state change, however many operations fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_non_redis_port_and_unreachable_are_clear_errors() {
    let server = RedisServer::start_with(RedisOptions {
        password: Some("s3cret-right".into()),
        tls: false,
    });
    let wrong = format!("redis://:s3cret-wrong@127.0.0.1:{}/0", server.port);
    let store = redis_at(&wrong);
    let err = store.ping().await.unwrap_err().to_string();
    assert!(
        err.contains("password") && err.contains("storage.redis"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    assert!(!store.health().is_up());
    let snapshot = store.health().snapshot();
    assert!(!snapshot.target.contains("s3cret"), "{}", snapshot.target);
    assert!(!format!("{store:?}").contains("s3cret"));
    // The right one works.
    let right = redis_at(&server.url());
    right.ping().await.unwrap();

    // An HTTP server is not Redis.
    let http = common::Backend::start("not redis").await;
    let store = redis_at(&format!("redis://{}/0", http.addr));
    let err = store.ping().await.unwrap_err().to_string();
    assert!(
        err.contains("storage.redis.url") && err.contains("Redis protocol"),
        "{err}"
    );

    // Nothing listening: unreachable, and back once a server is there.
    let mut later = RedisServer::start();
    let url = later.url();
    later.stop();
    let store = redis_at(&url);
    let err = store.ping().await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{}", later.port)), "{err}");
    assert!(!store.health().is_up());
    later.resume();
    common::wait_for(Duration::from_secs(20), "the storage back up", || async {
        store.ping().await.is_ok()
    })
    .await;
    assert!(store.health().is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca() {
    bbproxy::tls::install_default_provider();
    let server = RedisServer::start_with(RedisOptions {
        password: None,
        tls: true,
    });
    let ca = server.ca.clone().unwrap();
    let store: Arc<dyn Storage> = Arc::new(
        RedisStorage::new(&settings(&format!(
            r#"{{"url": "{}", "ca": "{}"}}"#,
            server.url(),
            ca.display()
        )))
        .unwrap(),
    );
    store.ping().await.unwrap();
    // Without the CA the server's certificate is not trusted.
    let untrusted = redis_at(&server.url());
    let err = untrusted.ping().await.unwrap_err().to_string();
    assert!(
        err.contains("storage.redis") || err.contains("Redis at"),
        "{err}"
    );
}
