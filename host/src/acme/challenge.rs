//! Answers to ACME validations: HTTP-01 tokens served on `listen.http`, and
//! TLS-ALPN-01 certificates (RFC 8737) served on `listen.https`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::sign::CertifiedKey;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::tls::{CertStore, TlsError};

/// HTTP-01 key authorizations by token, present only while an order is
/// being validated.
#[derive(Debug, Default)]
pub struct Http01Tokens(Mutex<HashMap<String, String>>);

impl Http01Tokens {
    /// The key authorization for `token`.
    pub fn get(&self, token: &str) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    fn insert(&self, token: String, key_authorization: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token, key_authorization);
    }

    fn remove(&self, token: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
    }
}

/// Challenge answers published for one order; dropping it withdraws them,
/// whether the order succeeded, failed or was cancelled.
#[derive(Debug)]
pub struct Published {
    http01: Arc<Http01Tokens>,
    store: Arc<CertStore>,
    tokens: Vec<String>,
    alpn_names: Vec<String>,
}

impl Published {
    /// Nothing published yet.
    pub fn new(http01: Arc<Http01Tokens>, store: Arc<CertStore>) -> Self {
        Self {
            http01,
            store,
            tokens: Vec::new(),
            alpn_names: Vec::new(),
        }
    }

    /// Serves `key_authorization` at `/.well-known/acme-challenge/<token>`.
    pub fn http01(&mut self, token: &str, key_authorization: &str) {
        self.http01
            .insert(token.to_owned(), key_authorization.to_owned());
        self.tokens.push(token.to_owned());
    }

    /// Serves the TLS-ALPN-01 certificate for `name`, whose acmeIdentifier
    /// extension carries `digest` (SHA-256 of the key authorization).
    pub fn tls_alpn01(&mut self, name: &str, digest: &[u8]) -> Result<(), TlsError> {
        let cert = alpn_certificate(name, digest)?;
        self.store.set_challenge(name, cert);
        self.alpn_names.push(name.to_owned());
        Ok(())
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        for token in &self.tokens {
            self.http01.remove(token);
        }
        for name in &self.alpn_names {
            self.store.clear_challenge(name);
        }
    }
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
