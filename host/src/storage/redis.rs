//! The shared storage: one Redis (redis-rs connection manager, which
//! reconnects by itself). Keys under `storage.redis.prefix`:
//!
//! | key | value |
//! | --- | --- |
//! | `account:<hash of the directory URL>` | account credentials (JSON) |
//! | `cert:<name>` | [`StoredCert`] as JSON |
//! | `certs` | hash: name → version of `cert:<name>`, for the periodic check |
//! | `ari:<name>` | the CA's renewal information (JSON) |
//! | `challenges` | hash: `challenge:<type>:<token or name>` → `<expiry, Unix ms> <answer>` |
//! | `lock:<name>` | the lock holder's token, with a TTL (the lease) |
//!
//! and the channel `<prefix>certs`, on which a replica that stored a
//! certificate publishes its name. A lock is `SET NX PX`, extended and
//! released by scripts that compare the token; a certificate write is a
//! script that checks the token (fencing: a replica whose lease ran out
//! writes nothing) and never replaces a certificate that expires later.
//! Challenge answers share one hash so that a replica reads them all in one
//! command (the number of reads must not follow the number of tokens a
//! client makes up); each carries its expiry, checked against Redis's
//! clock, and the hash itself expires with its longest-lived answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bbproxy_config::RedisStorage as Settings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ErrorKind, RedisError, Script};
use tokio::sync::broadcast;

use super::file::account_file;
use super::{
    ChallengeKey, Health, LockToken, Op, Storage, StorageError, StoredCert, Written, version_of,
};

/// Each Redis command gives up after this long: a storage that does not
/// answer is down, and nothing waits on it for longer.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection attempt gives up after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Between attempts to resubscribe to announcements.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(500);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(5);
/// What the announcement feed sends after (re)subscribing: announcements
/// may have been missed, compare everything.
pub const RESYNC: &str = "*";

const STORE_CERT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local old = redis.call('GET', KEYS[2])
if old then
  local ok, decoded = pcall(cjson.decode, old)
  if ok and type(decoded) == 'table' then
    local stored = tonumber(decoded['not_after'])
    if stored and stored > tonumber(ARGV[3]) then return -1 end
  end
end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[4])
return 1
";

/// Adds an answer (ARGV: field, answer, TTL in ms) and drops expired ones.
const PUBLISH_CHALLENGE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local expiry = tonumber(string.match(fields[i + 1], '^(%d+) '))
  if not expiry or expiry <= now then redis.call('HDEL', KEYS[1], fields[i]) end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d', now + ttl) .. ' ' .. ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
";

/// The answers that have not expired, as field, answer, field, answer...
const CHALLENGES: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fields = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #fields, 2 do
  local expiry, answer = string.match(fields[i + 1], '^(%d+) (.*)$')
  if expiry and tonumber(expiry) > now then
    out[#out + 1] = fields[i]
    out[#out + 1] = answer
  end
end
return out
";

const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// ACME state in Redis.
pub struct RedisStorage {
    prefix: String,
    client: redis::Client,
    conn: ConnectionManager,
    health: Arc<Health>,
    announcements: broadcast::Sender<String>,
    subscriber: tokio::task::JoinHandle<()>,
    target: String,
    scripts: Scripts,
}

struct Scripts {
    store_cert: Script,
    publish_challenge: Script,
    challenges: Script,
    extend: Script,
    unlock: Script,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The target is the redacted URL; the client holds the password.
        f.debug_struct("RedisStorage")
            .field("target", &self.target)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStorage {
    fn drop(&mut self) {
        self.subscriber.abort();
    }
}

impl RedisStorage {
    /// A storage for `settings`. Connects lazily: a Redis that is down at
    /// start is an outage like any other, not a failed start. Must run
    /// inside the tokio runtime (it spawns the announcement subscriber).
    pub fn new(settings: &Settings) -> Result<Self, StorageError> {
        let target = settings.url.redacted();
        let config_error = |what: &str, e: &dyn std::fmt::Display| {
            StorageError::Unavailable(format!("storage.redis.{what} ({target}): {e}"))
        };
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.url.expose())
            .map_err(|e| config_error("url", &e))?;
        if let Some(password) = &settings.password {
            let redis = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(redis);
        }
        let client = match &settings.ca {
            Some(ca) => {
                let pem = std::fs::read(ca)
                    .map_err(|e| config_error("ca", &format!("{}: {e}", ca.display())))?;
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
            None => redis::Client::open(info),
        }
        .map_err(|e| config_error("url", &e))?;
        let conn = client
            .get_connection_manager_lazy(
                ConnectionManagerConfig::new()
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    // Fail fast and let the caller's backoff decide when to
                    // try again: an outage must not stall ACME tasks in
                    // the driver's own retry loop.
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(100))
                    .set_max_delay(Duration::from_secs(1)),
            )
            .map_err(|e| config_error("url", &e))?;
        let health = Arc::new(Health::new("redis", target.clone(), "storage.redis.url"));
        let (announcements, _) = broadcast::channel(256);
        let channel = format!("{}certs", settings.prefix);
        let subscriber = tokio::spawn(subscribe(
            client.clone(),
            channel,
            announcements.clone(),
            health.clone(),
        ));
        Ok(Self {
            prefix: settings.prefix.clone(),
            client,
            conn,
            health,
            announcements,
            subscriber,
            target,
            scripts: Scripts {
                store_cert: Script::new(STORE_CERT),
                publish_challenge: Script::new(PUBLISH_CHALLENGE),
                challenges: Script::new(CHALLENGES),
                extend: Script::new(EXTEND),
                unlock: Script::new(UNLOCK),
            },
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Runs `op` on a clone of the connection, recording the outcome in
    /// the health state under the operation's name.
    fn run<'a, T, F, Fut>(&'a self, op: &'static str, f: F) -> Op<'a, T>
    where
        T: Send + 'a,
        F: FnOnce(ConnectionManager) -> Fut + Send + 'a,
        Fut: std::future::Future<Output = Result<T, RedisError>> + Send + 'a,
    {
        let conn = self.conn.clone();
        Box::pin(async move {
            match f(conn).await {
                Ok(value) => {
                    self.health.ok();
                    Ok(value)
                }
                Err(e) => {
                    let error = StorageError::Unavailable(describe(&e, &self.target));
                    self.health.failed(op, &error);
                    Err(error)
                }
            }
        })
    }

    /// The client, for tests that reach past the storage (corrupt values).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }
}

/// A Redis error as an operator reads it, naming the key to fix. Never
/// the URL as written (it may hold the password).
fn describe(e: &RedisError, target: &str) -> String {
    let text = e.to_string();
    let auth = e.kind() == ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH");
    if auth {
        format!(
            "Redis at {target} refused the password (check the password in storage.redis.url or storage.redis.password_env): {text}"
        )
    } else if e.kind() == ErrorKind::Parse {
        format!(
            "{target} does not answer in the Redis protocol (is storage.redis.url the Redis port?): {text}"
        )
    } else if e.is_timeout() {
        format!("Redis at {target} did not answer in time: {text}")
    } else {
        format!("Redis at {target}: {text}")
    }
}

/// Follows the announcement channel for as long as the storage lives,
/// resubscribing after a lost connection and then telling the listeners to
/// compare everything ([`RESYNC`]), since announcements may have been
/// missed meanwhile.
async fn subscribe(
    client: redis::Client,
    channel: String,
    out: broadcast::Sender<String>,
    health: Arc<Health>,
) {
    use futures_util::StreamExt;
    let mut wait = RESUBSCRIBE_MIN;
    loop {
        let subscribed = async {
            let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| None)?
                .map_err(Some)?;
            pubsub.subscribe(&channel).await.map_err(Some)?;
            Ok::<_, Option<RedisError>>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                wait = RESUBSCRIBE_MIN;
                let _ = out.send(RESYNC.to_owned());
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(name) = msg.get_payload::<String>() {
                        let _ = out.send(name);
                    }
                }
                tracing::debug!("storage announcements: connection lost, resubscribing");
            }
            Err(e) => {
                // Outages are reported by the operations; this only waits.
                if let Some(e) = e
                    && health.is_up()
                {
                    tracing::debug!("storage announcements: cannot subscribe: {e}");
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RESUBSCRIBE_MAX);
            }
        }
    }
}

impl Storage for RedisStorage {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn target(&self) -> String {
        self.target.clone()
    }

    fn shared(&self) -> bool {
        true
    }

    fn health(&self) -> &Arc<Health> {
        &self.health
    }

    fn account(&self, directory: &str) -> Op<'_, Option<Vec<u8>>> {
        let key = self.key(&format!("account:{}", account_file(directory)));
        self.run("account", move |mut c| async move { c.get(key).await })
    }

    fn store_account<'a>(&'a self, directory: &'a str, json: &'a [u8]) -> Op<'a, ()> {
        let key = self.key(&format!("account:{}", account_file(directory)));
        self.run("store_account", move |mut c| async move {
            c.set::<_, _, ()>(key, json).await
        })
    }

    fn forget_account<'a>(&'a self, directory: &'a str) -> Op<'a, ()> {
        let key = self.key(&format!("account:{}", account_file(directory)));
        self.run("forget_account", move |mut c| async move {
            c.del::<_, ()>(key).await
        })
    }

    fn certificate<'a>(&'a self, name: &'a str) -> Op<'a, Option<StoredCert>> {
        let key = self.key(&format!("cert:{name}"));
        let read = self.run("certificate", move |mut c| async move {
            c.get::<_, Option<Vec<u8>>>(key).await
        });
        Box::pin(async move {
            let Some(bytes) = read.await? else {
                return Ok(None);
            };
            serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                let error = StorageError::Corrupt {
                    what: format!("certificate for {name}"),
                    reason: format!("not a certificate record: {e}"),
                };
                self.health.failed("certificate", &error);
                error
            })
        })
    }

    fn store_certificate<'a>(
        &'a self,
        name: &'a str,
        cert: &'a StoredCert,
        lock: &'a LockToken,
    ) -> Op<'a, Written> {
        let keys = [
            self.key(&format!("lock:{name}")),
            self.key(&format!("cert:{name}")),
            self.key("certs"),
        ];
        let value = serde_json::to_string(cert).unwrap_or_default();
        let channel = self.key("certs");
        let version = version_of(&cert.chain);
        let script = &self.scripts.store_cert;
        self.run("store_certificate", move |mut c| async move {
            let code: i64 = script
                .key(&keys[0])
                .key(&keys[1])
                .key(&keys[2])
                .arg(&lock.0)
                .arg(value)
                .arg(cert.not_after)
                .arg(name)
                .arg(version)
                .arg(channel)
                .invoke_async(&mut c)
                .await?;
            Ok(match code {
                1 => Written::Stored,
                -1 => Written::Older,
                _ => Written::LockLost,
            })
        })
    }

    fn versions(&self) -> Op<'_, Vec<(String, String)>> {
        let key = self.key("certs");
        self.run("versions", move |mut c| async move { c.hgetall(key).await })
    }

    fn ari<'a>(&'a self, name: &'a str) -> Op<'a, Option<Vec<u8>>> {
        let key = self.key(&format!("ari:{name}"));
        self.run("ari", move |mut c| async move { c.get(key).await })
    }

    fn store_ari<'a>(&'a self, name: &'a str, json: &'a [u8]) -> Op<'a, ()> {
        let key = self.key(&format!("ari:{name}"));
        self.run("store_ari", move |mut c| async move {
            c.set::<_, _, ()>(key, json).await
        })
    }

    fn challenges(&self) -> Op<'_, HashMap<ChallengeKey, String>> {
        let key = self.key("challenges");
        let script = &self.scripts.challenges;
        self.run("challenges", move |mut c| async move {
            let flat: Vec<String> = script.key(key).invoke_async(&mut c).await?;
            Ok(flat
                .chunks_exact(2)
                .filter_map(|pair| Some((ChallengeKey::from_path(&pair[0])?, pair[1].clone())))
                .collect())
        })
    }

    fn publish_challenge<'a>(
        &'a self,
        key: &'a ChallengeKey,
        value: &'a str,
        ttl: Duration,
    ) -> Op<'a, ()> {
        let hash = self.key("challenges");
        let field = key.path();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let script = &self.scripts.publish_challenge;
        self.run("publish_challenge", move |mut c| async move {
            script
                .key(hash)
                .arg(field)
                .arg(value)
                .arg(ms)
                .invoke_async::<()>(&mut c)
                .await
        })
    }

    fn withdraw_challenge<'a>(&'a self, key: &'a ChallengeKey) -> Op<'a, ()> {
        let hash = self.key("challenges");
        let field = key.path();
        self.run("withdraw_challenge", move |mut c| async move {
            c.hdel::<_, _, ()>(hash, field).await
        })
    }

    fn try_lock<'a>(&'a self, name: &'a str, lease: Duration) -> Op<'a, Option<LockToken>> {
        let key = self.key(&format!("lock:{name}"));
        let token = LockToken::random();
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        self.run("lock", move |mut c| async move {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(&token.0)
                .arg("NX")
                .arg("PX")
                .arg(ms)
                .query_async(&mut c)
                .await?;
            Ok(set.map(|_| token))
        })
    }

    fn extend_lock<'a>(
        &'a self,
        name: &'a str,
        lock: &'a LockToken,
        lease: Duration,
    ) -> Op<'a, bool> {
        let key = self.key(&format!("lock:{name}"));
        let ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let script = &self.scripts.extend;
        self.run("extend_lock", move |mut c| async move {
            let extended: i64 = script
                .key(key)
                .arg(&lock.0)
                .arg(ms)
                .invoke_async(&mut c)
                .await?;
            Ok(extended == 1)
        })
    }

    fn unlock<'a>(&'a self, name: &'a str, lock: &'a LockToken) -> Op<'a, ()> {
        let key = self.key(&format!("lock:{name}"));
        let script = &self.scripts.unlock;
        self.run("unlock", move |mut c| async move {
            script
                .key(key)
                .arg(&lock.0)
                .invoke_async::<()>(&mut c)
                .await
        })
    }

    fn watch(&self) -> Option<broadcast::Receiver<String>> {
        Some(self.announcements.subscribe())
    }

    fn ping(&self) -> Op<'_, ()> {
        self.run("ping", move |mut c| async move {
            redis::cmd("PING").query_async::<()>(&mut c).await
        })
    }
}
