//! `storage`: where replicas share ACME state (today Redis). The URL may
//! hold a password, so no message here ever shows it, only its redacted
//! form.

use std::time::Duration;

use serde_json::{Map, Value};

use super::walk::{Dir, R, check_keys, object, positive_duration, present, show};
use crate::error::Fault;
use crate::storage::{
    DEFAULT_LOCK_LEASE, DEFAULT_REDIS_PREFIX, RedisStorage, RedisUrl, Secret, Storage, redact,
};

const STORAGE_KEYS: &[&str] = &["redis"];
const REDIS_KEYS: &[&str] = &["url", "prefix", "password_env", "ca", "lock_lease"];

/// Reads `storage`; `dir` is the config file's directory, `env` looks up
/// `password_env`.
pub(crate) fn storage(v: &Value, dir: &Dir, env: &dyn Fn(&str) -> Option<String>) -> R<Storage> {
    let map = object(
        v,
        "storage",
        "{\"redis\": {\"url\": \"redis://127.0.0.1:6379/0\"}}",
    )?;
    check_keys(map, "storage", STORAGE_KEYS)?;
    match present(map, "redis") {
        Some(v) => Ok(Storage::Redis(redis(v, dir, env)?)),
        None => Err(Fault::invalid(
            "storage",
            "name a backend: {\"redis\": {\"url\": \"redis://127.0.0.1:6379/0\"}}",
        )),
    }
}

fn redis(v: &Value, dir: &Dir, env: &dyn Fn(&str) -> Option<String>) -> R<RedisStorage> {
    let map: &Map<String, Value> = object(
        v,
        "storage.redis",
        "{\"url\": \"redis://127.0.0.1:6379/0\"}",
    )?;
    check_keys(map, "storage.redis", REDIS_KEYS)?;
    let url = match present(map, "url") {
        Some(v) => url(v)?,
        None => {
            return Err(Fault::invalid(
                "storage.redis.url",
                "is required, e.g. \"redis://127.0.0.1:6379/0\"",
            ));
        }
    };
    let prefix = match present(map, "prefix") {
        Some(Value::String(s)) if !s.chars().any(char::is_whitespace) => s.clone(),
        Some(v) => {
            return Err(Fault::invalid(
                "storage.redis.prefix",
                format!(
                    "expected a key prefix without spaces like \"bbproxy:\", got {}",
                    show(v)
                ),
            ));
        }
        None => DEFAULT_REDIS_PREFIX.to_owned(),
    };
    let password = match present(map, "password_env") {
        Some(Value::String(name)) if !name.is_empty() => {
            if url.has_password() {
                return Err(Fault::invalid(
                    "storage.redis.password_env",
                    "storage.redis.url already has a password; give it in one place only",
                ));
            }
            match env(name) {
                Some(value) if !value.is_empty() => Some(Secret::new(value)),
                _ => {
                    return Err(Fault::invalid(
                        "storage.redis.password_env",
                        format!("the environment variable {name} is not set (or empty)"),
                    ));
                }
            }
        }
        Some(v) => {
            return Err(Fault::invalid(
                "storage.redis.password_env",
                format!(
                    "expected the name of an environment variable like \"BBPROXY_REDIS_PASSWORD\", got {}",
                    show(v)
                ),
            ));
        }
        None => None,
    };
    let ca = match present(map, "ca") {
        Some(Value::String(s)) if !s.is_empty() => {
            if !url.is_tls() {
                return Err(Fault::invalid(
                    "storage.redis.ca",
                    "only applies to a rediss:// (TLS) storage.redis.url",
                ));
            }
            Some(dir.resolve(s))
        }
        Some(v) => {
            return Err(Fault::invalid(
                "storage.redis.ca",
                format!("expected a PEM file path, got {}", show(v)),
            ));
        }
        None => None,
    };
    let lock_lease = match present(map, "lock_lease") {
        Some(v) => {
            let lease = positive_duration(v, "storage.redis.lock_lease")?;
            if lease < Duration::from_secs(3) {
                return Err(Fault::invalid(
                    "storage.redis.lock_lease",
                    "must be at least \"3s\": the holder extends it every third of it",
                ));
            }
            lease
        }
        None => DEFAULT_LOCK_LEASE,
    };
    Ok(RedisStorage {
        url,
        prefix,
        password,
        ca,
        lock_lease,
    })
}

/// `redis://[user[:password]@]host[:port][/db]` or `rediss://...`. The
/// value is never echoed (it may hold a password); only its redacted form.
fn url(v: &Value) -> R<RedisUrl> {
    let bad = |why: &str| {
        let shown = match v {
            Value::String(s) => format!("\"{}\"", redact(s)),
            other => show(other),
        };
        Fault::invalid(
            "storage.redis.url",
            format!(
                "{why}; expected a URL like \"redis://127.0.0.1:6379/0\" or \"rediss://:PASSWORD@redis.internal:6380/0\", got {shown}"
            ),
        )
    };
    let Value::String(s) = v else {
        return Err(bad("not a string"));
    };
    let rest = s
        .strip_prefix("redis://")
        .or_else(|| s.strip_prefix("rediss://"))
        .ok_or_else(|| bad("the scheme must be redis:// or rediss://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (host_port, None),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(bad("no host"));
    }
    if let Some(p) = port
        && p.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(bad("the port must be a number from 1 to 65535"));
    }
    let db = tail.strip_prefix('/').unwrap_or(tail);
    let db = db.split(['?', '#']).next().unwrap_or("");
    if !db.is_empty() && db.parse::<u32>().is_err() {
        return Err(bad("the path must be a database number like /0"));
    }
    Ok(RedisUrl::new(s.clone()))
}

/// `storage` and `cert_cache_dir` (or its alias) both given.
pub(crate) fn conflict(root: &Map<String, Value>) -> R<()> {
    let cache = ["cert_cache_dir", "cert_cache_path"]
        .into_iter()
        .find(|k| present(root, k).is_some_and(|v| v.as_str() != Some("")));
    match (present(root, "storage"), cache) {
        (Some(_), Some(key)) => Err(Fault::invalid(
            "storage",
            format!(
                "storage and {key} are both set; the certificates live in one place: \
                 keep storage for replicas sharing them, or {key} for a single node"
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
