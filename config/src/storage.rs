//! The `storage` section's types: where replicas share ACME state. Today one
//! backend, Redis; `cert_cache_dir` stays the single-node file store, and
//! giving both is an error (two sources of truth for the same certificates).
//!
//! A Redis URL may carry a password: it never appears in an error message
//! or a `Debug` rendering ([`RedisUrl`] and [`Secret`] redact it).

use std::path::PathBuf;
use std::time::Duration;

/// How long a replica holds a name's lock without extending it: a replica
/// killed mid-order delays the others at most this long.
pub const DEFAULT_LOCK_LEASE: Duration = Duration::from_secs(60);
pub const DEFAULT_REDIS_PREFIX: &str = "bbproxy:";

/// Shared storage for ACME state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Redis(RedisStorage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStorage {
    /// `redis://` or `rediss://` (TLS).
    pub url: RedisUrl,
    /// Prepended to every key and the notification channel, so several
    /// clusters can share one Redis.
    pub prefix: String,
    /// The password read from `password_env` at load time, if given.
    pub password: Option<Secret>,
    /// Extra root certificates (PEM) trusted for `rediss://`, resolved
    /// against the config file's directory.
    pub ca: Option<PathBuf>,
    /// Lifetime of a name's lock; the holder extends it while it works.
    pub lock_lease: Duration,
}

/// A Redis URL whose password is shown as `***` by `Display` and `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// A URL already checked by the config walker.
    pub(crate) fn new(url: String) -> Self {
        RedisUrl(url)
    }

    /// The URL as written, password included: only for the connection.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the URL carries a password.
    pub fn has_password(&self) -> bool {
        userinfo(&self.0).is_some_and(|u| u.contains(':'))
    }

    /// `rediss://`: TLS to Redis.
    pub fn is_tls(&self) -> bool {
        self.0.starts_with("rediss://")
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({:?})", self.redacted())
    }
}

/// A secret value; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The part between `scheme://` and `@`, if any.
fn userinfo(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    authority.rsplit_once('@').map(|(user, _)| user)
}

pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_the_password_only() {
        assert_eq!(
            redact("redis://:hunter2@r.internal:6379/0"),
            "redis://:***@r.internal:6379/0"
        );
        assert_eq!(
            redact("rediss://app:hunter2@r:6380"),
            "rediss://app:***@r:6380"
        );
        assert_eq!(
            redact("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        let url = RedisUrl("redis://:hunter2@h/1".into());
        assert!(!format!("{url:?} {url}").contains("hunter2"));
        assert!(url.has_password());
        assert!(!format!("{:?}", Secret("hunter2".into())).contains("hunter2"));
    }
}
