//! Where ACME state lives: the account, each name's certificate chain and
//! key, the CA's renewal information, challenge answers, and a lock per
//! name. Replicas pointing at the same storage form a cluster (certmagic's
//! model): one of them orders a name while holding its lock, writes the
//! certificate, and the others load it.
//!
//! Two backends: [`file::FileStorage`] (`cert_cache_dir`, or memory only
//! without it; one process) and [`redis::RedisStorage`] (`storage.redis`,
//! shared). Nothing here is on the request path except the HTTP-01 and
//! TLS-ALPN-01 look-ups of a validation that reached a replica which did
//! not publish its answer.

pub mod file;
pub mod health;
pub mod redis;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use health::Health;

/// A boxed future of a storage operation (the trait is used as `dyn`).
pub type Op<'a, T> = Pin<Box<dyn Future<Output = Result<T, StorageError>> + Send + 'a>>;

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The storage cannot be reached or refused the operation (down,
    /// wrong password, not Redis): retried later, served certificates stay.
    #[error("{0}")]
    Unavailable(String),
    /// A stored value does not parse: reported for that key only.
    #[error("stored {what} is unusable: {reason}")]
    Corrupt {
        /// What the value is (`certificate for a.example`).
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A local file cannot be written (`cert_cache_dir`).
    #[error("cert_cache_dir {path}: {reason}")]
    File {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A certificate as stored: PEM chain (leaf first) and PEM key, with the
/// leaf's notAfter so writes can refuse to go backwards without parsing.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCert {
    /// PEM certificates, leaf first.
    pub chain: String,
    /// PEM private key.
    pub key: String,
    /// The leaf's notAfter, Unix seconds.
    pub not_after: u64,
}

impl std::fmt::Debug for StoredCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("StoredCert")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// What became of a fenced certificate write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored (and announced to the other replicas).
    Stored,
    /// The lock was not ours any more: nothing written.
    LockLost,
    /// A certificate that expires later is already stored: nothing written.
    Older,
}

/// Which challenge answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ChallengeKey {
    /// HTTP-01, by token; the value is the key authorization.
    Http01(String),
    /// TLS-ALPN-01, by name; the value is the hex SHA-256 of the key
    /// authorization.
    TlsAlpn01(String),
}

impl ChallengeKey {
    fn path(&self) -> String {
        match self {
            ChallengeKey::Http01(token) => format!("challenge:http-01:{token}"),
            ChallengeKey::TlsAlpn01(name) => format!("challenge:tls-alpn-01:{name}"),
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        if let Some(token) = path.strip_prefix("challenge:http-01:") {
            return Some(ChallengeKey::Http01(token.to_owned()));
        }
        path.strip_prefix("challenge:tls-alpn-01:")
            .map(|name| ChallengeKey::TlsAlpn01(name.to_owned()))
    }
}

/// A held lock: whoever has the token owns the name until the lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken(pub(crate) String);

impl LockToken {
    fn random() -> Self {
        let a = crate::rand::next_u64();
        let b = crate::rand::next_u64();
        LockToken(format!("{a:016x}{b:016x}"))
    }
}

/// The ACME state store. Implementations are cheap to share and safe for
/// concurrent use; every operation honours cancellation by being dropped.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// `file`, `memory` or `redis`, for `/status` and logs.
    fn kind(&self) -> &'static str;
    /// Where it is (a directory or a redacted URL), for `/status` and logs.
    fn target(&self) -> String;
    /// Whether other processes see what this one writes: then challenge
    /// answers are published to it and other replicas' writes are watched.
    fn shared(&self) -> bool;
    /// Up/down state, error counts, one warning per outage.
    fn health(&self) -> &Arc<Health>;

    /// The account credentials (JSON) for an ACME directory.
    fn account(&self, directory: &str) -> Op<'_, Option<Vec<u8>>>;
    /// Stores the account credentials for a directory.
    fn store_account<'a>(&'a self, directory: &'a str, json: &'a [u8]) -> Op<'a, ()>;
    /// Drops the account of a directory (the CA forgot it).
    fn forget_account<'a>(&'a self, directory: &'a str) -> Op<'a, ()>;

    /// The certificate of `name`, if one is stored.
    fn certificate<'a>(&'a self, name: &'a str) -> Op<'a, Option<StoredCert>>;
    /// The stored certificate of `name` read without waiting, for backends
    /// that have it at hand (files at start-up); `None` otherwise.
    fn certificate_now(&self, name: &str) -> Option<StoredCert> {
        let _ = name;
        None
    }
    /// Stores `cert` for `name` if `lock` still holds the name's lock and
    /// no certificate expiring later is stored; announces it to watchers.
    fn store_certificate<'a>(
        &'a self,
        name: &'a str,
        cert: &'a StoredCert,
        lock: &'a LockToken,
    ) -> Op<'a, Written>;
    /// A cheap version of every stored certificate (name → version): the
    /// periodic check compares it with what is served.
    fn versions(&self) -> Op<'_, Vec<(String, String)>>;

    /// The CA's renewal information for `name` as last stored (JSON).
    fn ari<'a>(&'a self, name: &'a str) -> Op<'a, Option<Vec<u8>>>;
    /// Stores renewal information for `name`.
    fn store_ari<'a>(&'a self, name: &'a str, json: &'a [u8]) -> Op<'a, ()>;

    /// Every published challenge answer that has not expired, in one
    /// read: a replica asked for an answer it did not publish reads them
    /// all, so a flood of made-up tokens costs no more reads than one
    /// validation (see `acme::challenge::Remote`).
    fn challenges(&self) -> Op<'_, HashMap<ChallengeKey, String>>;
    /// Publishes a challenge answer for `ttl` (it is withdrawn sooner when
    /// the order ends).
    fn publish_challenge<'a>(
        &'a self,
        key: &'a ChallengeKey,
        value: &'a str,
        ttl: Duration,
    ) -> Op<'a, ()>;
    /// Withdraws a challenge answer.
    fn withdraw_challenge<'a>(&'a self, key: &'a ChallengeKey) -> Op<'a, ()>;

    /// Takes `name`'s lock for `lease` if nobody holds it.
    fn try_lock<'a>(&'a self, name: &'a str, lease: Duration) -> Op<'a, Option<LockToken>>;
    /// Extends a held lock to `lease` from now; false if it is not ours.
    fn extend_lock<'a>(
        &'a self,
        name: &'a str,
        lock: &'a LockToken,
        lease: Duration,
    ) -> Op<'a, bool>;
    /// Releases a held lock; a no-op if it is not ours any more.
    fn unlock<'a>(&'a self, name: &'a str, lock: &'a LockToken) -> Op<'a, ()>;

    /// Names whose stored certificate another replica changed, as they
    /// are announced (shared backends); `None` if there is no such feed.
    fn watch(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
    /// A round trip, to tell whether the storage is reachable.
    fn ping(&self) -> Op<'_, ()>;
}

/// The storage a config asks for.
pub fn open(config: &bbproxy_config::Config) -> Result<Arc<dyn Storage>, StorageError> {
    match &config.storage {
        Some(bbproxy_config::Storage::Redis(settings)) => {
            Ok(Arc::new(redis::RedisStorage::new(settings)?))
        }
        None => Ok(Arc::new(file::FileStorage::open(
            config.cert_cache_dir.as_deref(),
        )?)),
    }
}

/// The lease of a name's lock (the Redis setting, or for a single process
/// one that only matters if a task dies without releasing).
pub fn lock_lease(config: &bbproxy_config::Config) -> Duration {
    match &config.storage {
        Some(bbproxy_config::Storage::Redis(r)) => r.lock_lease,
        None => bbproxy_config::DEFAULT_LOCK_LEASE,
    }
}

/// Unix seconds of `at` (0 before the epoch).
pub fn unix_secs(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A short, stable version string of a chain (what [`Storage::versions`]
/// lists).
pub fn version_of(chain: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(chain.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}
