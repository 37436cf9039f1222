//! `storage`: where replicas share ACME state (today Redis). The URL may
//! hold a password, so no message here ever shows it, only its redacted
//! form.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::walk::{Dir, Fields, Kept, R, keep, object, positive_duration, set, show};
use crate::error::Fault;
use crate::storage::{
    DEFAULT_LOCK_LEASE, DEFAULT_REDIS_PREFIX, RedisStorage, RedisUrl, Secret, Storage, redact,
};

/// Reads `storage`; `dir` is the config file's directory, `env` looks up
/// `password_env`.
pub(crate) fn storage(v: &Value, dir: &Dir, env: &dyn Fn(&str) -> Option<String>) -> R<Storage> {
    let map = object(
        v,
        "storage",
        "{\"redis\": {\"url\": \"redis://127.0.0.1:6379/0\"}}",
    )?;
    let mut storage = None;
    Fields::new(map, "storage")
        .key("redis", |v, p| {
            set(
                &mut storage,
                redis(v, p, dir, env).map(Storage::Redis).map(Some),
            )
        })
        .read()?;
    storage.ok_or_else(|| {
        Fault::invalid(
            "storage",
            "name a backend: {\"redis\": {\"url\": \"redis://127.0.0.1:6379/0\"}}",
        )
    })
}

fn redis(
    v: &Value,
    path: &str,
    dir: &Dir,
    env: &dyn Fn(&str) -> Option<String>,
) -> R<RedisStorage> {
    let map: &Map<String, Value> = object(v, path, "{\"url\": \"redis://127.0.0.1:6379/0\"}")?;
    let mut url = None;
    let mut prefix = DEFAULT_REDIS_PREFIX.to_owned();
    let (mut password_env, mut ca): (Kept, Kept) = (None, None);
    let mut lock_lease = DEFAULT_LOCK_LEASE;
    // The password and the CA are read once the URL is known: whether the
    // URL has a password or TLS decides what they may be.
    Fields::new(map, path)
        .key("url", |v, p| set(&mut url, self::url(v, p).map(Some)))
        .key("prefix", |v, p| set(&mut prefix, key_prefix(v, p)))
        .key("password_env", keep(&mut password_env))
        .key("ca", keep(&mut ca))
        .key("lock_lease", |v, p| set(&mut lock_lease, lease(v, p)))
        .read()?;
    let Some(url) = url else {
        return Err(Fault::invalid(
            format!("{path}.url"),
            "is required, e.g. \"redis://127.0.0.1:6379/0\"",
        ));
    };
    let password = match password_env {
        Some((v, p)) => Some(password(v, &p, &url, env)?),
        None => None,
    };
    let ca = match ca {
        Some((v, p)) => Some(ca_file(v, &p, &url, dir)?),
        None => None,
    };
    Ok(RedisStorage {
        url,
        prefix,
        password,
        ca,
        lock_lease,
    })
}

fn key_prefix(v: &Value, path: &str) -> R<String> {
    match v {
        Value::String(s) if !s.chars().any(char::is_whitespace) => Ok(s.clone()),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a key prefix without spaces like \"bbproxy:\", got {}",
                show(v)
            ),
        )),
    }
}

/// `password_env`: the password comes from the named variable, and only
/// if the URL has none.
fn password(
    v: &Value,
    path: &str,
    url: &RedisUrl,
    env: &dyn Fn(&str) -> Option<String>,
) -> R<Secret> {
    let Some(name) = v.as_str().filter(|name| !name.is_empty()) else {
        return Err(not_a_variable(v, path));
    };
    if url.has_password() {
        return Err(Fault::invalid(
            path,
            "storage.redis.url already has a password; give it in one place only",
        ));
    }
    match env(name) {
        Some(value) if !value.is_empty() => Ok(Secret::new(value)),
        _ => Err(Fault::invalid(
            path,
            format!("the environment variable {name} is not set (or empty)"),
        )),
    }
}

fn not_a_variable(v: &Value, path: &str) -> Fault {
    Fault::invalid(
        path,
        format!(
            "expected the name of an environment variable like \"BBPROXY_REDIS_PASSWORD\", got {}",
            show(v)
        ),
    )
}

/// `ca`: a PEM file, only for a `rediss://` URL.
fn ca_file(v: &Value, path: &str, url: &RedisUrl, dir: &Dir) -> R<PathBuf> {
    match v {
        Value::String(s) if !s.is_empty() => {
            if !url.is_tls() {
                return Err(Fault::invalid(
                    path,
                    "only applies to a rediss:// (TLS) storage.redis.url",
                ));
            }
            Ok(dir.resolve(s))
        }
        _ => Err(Fault::invalid(
            path,
            format!("expected a PEM file path, got {}", show(v)),
        )),
    }
}

fn lease(v: &Value, path: &str) -> R<Duration> {
    let lease = positive_duration(v, path)?;
    if lease < Duration::from_secs(3) {
        return Err(Fault::invalid(
            path,
            "must be at least \"3s\": the holder extends it every third of it",
        ));
    }
    Ok(lease)
}

/// `redis://[user[:password]@]host[:port][/db]` or `rediss://...`. The
/// value is never echoed (it may hold a password); only its redacted form.
fn url(v: &Value, path: &str) -> R<RedisUrl> {
    let bad = |why: &str| {
        let shown = match v {
            Value::String(s) => format!("\"{}\"", redact(s)),
            other => show(other),
        };
        Fault::invalid(
            path,
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

/// `storage` and `cert_cache_dir` (or its alias) both given (the top
/// level's kept values).
pub(crate) fn conflict(storage: &Kept, caches: [&Kept; 2]) -> R<()> {
    let cache = caches
        .into_iter()
        .flatten()
        .find(|(v, _)| v.as_str() != Some(""));
    match (storage, cache) {
        (Some((_, path)), Some((_, key))) => Err(Fault::invalid(
            path,
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
