//! Answers to ACME validations: HTTP-01 tokens served on `listen.http`, and
//! TLS-ALPN-01 certificates (RFC 8737) served on `listen.https`.
//!
//! With a shared storage every answer is also written there before the CA
//! is told to validate, and a validation that reaches a replica which did
//! not publish it is answered from the storage. Anyone can ask for made-up
//! tokens, so asking must not cost a storage read each: a replica reads
//! every published answer at once, at most once per [`READ_INTERVAL`], and
//! a request waits for the first read sent after it arrived (so an answer
//! published just before the CA's request is never missed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::time::Instant;

use crate::storage::{ChallengeKey, Storage, StorageError};
use crate::tls::{CertStore, ChallengeSource, TlsError};

/// Reads of the storage's answers start at least this far apart: whatever
/// the rate of requests for unknown tokens, a replica sends at most one
/// read per interval, and a validation waits at most about this long more.
const READ_INTERVAL: Duration = Duration::from_millis(200);
/// How long an answer found in a read is reused without reading again (the
/// CA validates from several places within seconds).
const HIT_TTL: Duration = Duration::from_secs(5);
/// Challenge certificates made from stored answers, kept at most.
const CACHE_MAX: usize = 1024;
/// A validation waits at most this long for the storage.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// The storage answers are read from (replaced when the config's storage
/// changes), and the last read of it.
#[derive(Debug, Default)]
pub struct Remote {
    storage: ArcSwapOption<Shared>,
    last: Mutex<Option<Read>>,
    /// Held by the lookup that reads; the others wait for its result.
    reading: tokio::sync::Mutex<()>,
}

/// One read of every answer in the storage.
#[derive(Debug)]
struct Read {
    /// When it was sent: it shows the storage as it was then or later.
    sent: Instant,
    /// `None` if the storage could not be read.
    answers: Option<HashMap<ChallengeKey, String>>,
}

impl Read {
    /// The answer this read gives for `key` to a request that arrived at
    /// `asked`: any read sent after the request arrived is authoritative
    /// (found or not); an older one only for an answer it found.
    fn answer(&self, key: &ChallengeKey, asked: Instant) -> Option<Option<String>> {
        let found = self.answers.as_ref().and_then(|a| a.get(key)).cloned();
        let after = self.sent >= asked;
        let recent_hit = found.is_some() && self.sent + HIT_TTL > asked;
        (after || recent_hit).then_some(found)
    }
}

/// Wrapper so the trait object fits `ArcSwapOption`.
#[derive(Debug)]
struct Shared(Arc<dyn Storage>);

impl Remote {
    /// Reads answers from `storage` from now on (`None`: only local ones).
    pub fn set(&self, storage: Option<Arc<dyn Storage>>) {
        self.storage.store(storage.map(|s| Arc::new(Shared(s))));
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn known(&self, key: &ChallengeKey, asked: Instant) -> Option<Option<String>> {
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.as_ref()?.answer(key, asked)
    }

    async fn get(&self, key: ChallengeKey) -> Option<String> {
        let storage = self.storage.load_full()?;
        let asked = Instant::now();
        if let Some(answer) = self.known(&key, asked) {
            return answer;
        }
        // One read at a time; whoever waited for it uses its result if it
        // was sent after they arrived.
        let _reading = self.reading.lock().await;
        if let Some(answer) = self.known(&key, asked) {
            return answer;
        }
        let previous = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|r| r.sent);
        if let Some(previous) = previous {
            tokio::time::sleep_until(previous + READ_INTERVAL).await;
        }
        let sent = Instant::now();
        let answers = match tokio::time::timeout(LOOKUP_TIMEOUT, storage.0.challenges()).await {
            Ok(Ok(answers)) => Some(answers),
            // Unreachable or slow: answer nothing now, read again later.
            Ok(Err(_)) | Err(_) => None,
        };
        let read = Read { sent, answers };
        let answer = read.answer(&key, asked).flatten();
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(read);
        answer
    }
}

/// HTTP-01 key authorizations by token: those this process published, then
/// those in the shared storage.
#[derive(Debug, Default)]
pub struct Http01Tokens {
    local: Mutex<HashMap<String, String>>,
    remote: Arc<Remote>,
}

impl Http01Tokens {
    /// Tokens answered from `remote` when not published here.
    pub fn new(remote: Arc<Remote>) -> Self {
        Self {
            local: Mutex::default(),
            remote,
        }
    }

    /// The key authorization for `token`.
    pub async fn lookup(&self, token: &str) -> Option<String> {
        if let Some(answer) = self.get(token) {
            return Some(answer);
        }
        self.remote
            .get(ChallengeKey::Http01(token.to_owned()))
            .await
    }

    /// The key authorization for `token` if this process published it.
    pub fn get(&self, token: &str) -> Option<String> {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    fn insert(&self, token: String, key_authorization: String) {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, key_authorization);
    }

    fn remove(&self, token: &str) {
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }
}

/// TLS-ALPN-01 answers published by another replica: the storage holds the
/// digest, and this replica makes its own challenge certificate from it
/// (the CA checks only the name and the digest).
#[derive(Debug)]
pub struct AlpnFromStorage {
    remote: Arc<Remote>,
    made: Mutex<HashMap<(String, String), Arc<CertifiedKey>>>,
}

impl AlpnFromStorage {
    /// Answers from `remote`.
    pub fn new(remote: Arc<Remote>) -> Self {
        Self {
            remote,
            made: Mutex::default(),
        }
    }
}

impl ChallengeSource for AlpnFromStorage {
    fn challenge<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Arc<CertifiedKey>>> + Send + 'a>> {
        Box::pin(async move {
            let name = name.to_ascii_lowercase();
            let hex = self
                .remote
                .get(ChallengeKey::TlsAlpn01(name.clone()))
                .await?;
            let cache_key = (name.clone(), hex.clone());
            if let Some(cert) = self
                .made
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&cache_key)
            {
                return Some(cert.clone());
            }
            let digest = from_hex(&hex)?;
            let cert = alpn_certificate(&name, &digest).ok()?;
            let mut made = self.made.lock().unwrap_or_else(PoisonError::into_inner);
            if made.len() >= CACHE_MAX {
                made.clear();
            }
            made.insert(cache_key, cert.clone());
            Some(cert)
        })
    }
}

/// Challenge answers published for one order; dropping it withdraws them,
/// whether the order succeeded, failed or was cancelled.
#[derive(Debug)]
pub struct Published {
    http01: Arc<Http01Tokens>,
    store: Arc<CertStore>,
    /// Where answers are shared with other replicas, if anywhere.
    shared: Option<Arc<dyn Storage>>,
    ttl: Duration,
    tokens: Vec<String>,
    alpn_names: Vec<String>,
}

impl Published {
    /// Nothing published yet; answers live `ttl` in a shared `storage`.
    pub fn new(
        http01: Arc<Http01Tokens>,
        store: Arc<CertStore>,
        storage: &Arc<dyn Storage>,
        ttl: Duration,
    ) -> Self {
        Self {
            http01,
            store,
            shared: storage.shared().then(|| storage.clone()),
            ttl,
            tokens: Vec::new(),
            alpn_names: Vec::new(),
        }
    }

    /// Serves `key_authorization` at `/.well-known/acme-challenge/<token>`
    /// here and, with a shared storage, on every replica.
    pub async fn http01(
        &mut self,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), StorageError> {
        self.http01
            .insert(token.to_owned(), key_authorization.to_owned());
        self.tokens.push(token.to_owned());
        if let Some(storage) = &self.shared {
            let key = ChallengeKey::Http01(token.to_owned());
            storage
                .publish_challenge(&key, key_authorization, self.ttl)
                .await?;
        }
        Ok(())
    }

    /// Serves the TLS-ALPN-01 certificate for `name`, whose acmeIdentifier
    /// extension carries `digest` (SHA-256 of the key authorization), here
    /// and, with a shared storage, on every replica.
    pub async fn tls_alpn01(&mut self, name: &str, digest: &[u8]) -> Result<(), PublishError> {
        let cert = alpn_certificate(name, digest)?;
        self.store.set_challenge(name, cert);
        self.alpn_names.push(name.to_owned());
        if let Some(storage) = &self.shared {
            let key = ChallengeKey::TlsAlpn01(name.to_ascii_lowercase());
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            storage.publish_challenge(&key, &hex, self.ttl).await?;
        }
        Ok(())
    }
}

/// Why an answer could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The challenge certificate could not be made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The shared storage did not take it.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl Drop for Published {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.http01.remove(token);
        }
        for name in &self.alpn_names {
            self.store.clear_challenge(name);
        }
        let Some(storage) = self.shared.take() else {
            return;
        };
        // The answers expire by themselves; withdrawing them is tidiness,
        // so it runs in the background and may fail.
        let keys: Vec<ChallengeKey> = self
            .tokens
            .drain(..)
            .map(ChallengeKey::Http01)
            .chain(
                self.alpn_names
                    .drain(..)
                    .map(|n| ChallengeKey::TlsAlpn01(n.to_ascii_lowercase())),
            )
            .collect();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for key in keys {
                    let _ = storage.withdraw_challenge(&key).await;
                }
            });
        }
    }
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let fail = |reason: String| TlsError::Generated {
        name: name.to_owned(),
        reason,
    };
    if digest.len() != 32 {
        return Err(fail(format!(
            "TLS-ALPN-01 digest has {} bytes, expected 32",
            digest.len()
        )));
    }
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| fail(e.to_string()))?;
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(digest));
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| fail(e.to_string()))?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    // Not `CertifiedKey::from_der`: its key check parses the certificate
    // with webpki, which refuses the critical acmeIdentifier extension.
    let signer = crate::tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signer,
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trip() {
        assert_eq!(super::from_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(super::from_hex("0"), None);
        assert_eq!(super::from_hex("zz"), None);
    }
}
