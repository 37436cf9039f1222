//! Certificates and keys in PEM: static files named in the config, and the
//! chains ACME hands back. Every failure names the file.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TlsError;

/// Reads a static certificate chain and its key, checking they belong together.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let chain = parse_chain(&read("certificate", cert)?).map_err(|reason| TlsError::Pem {
        what: "certificate",
        path: cert.to_owned(),
        reason,
    })?;
    let private = parse_key(&read("private key", key)?).map_err(|reason| TlsError::Pem {
        what: "private key",
        path: key.to_owned(),
        reason,
    })?;
    certified(chain, private).map_err(|reason| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    })
}

/// A chain and key from memory (ACME results, the on-disk cache).
pub fn from_pem(name: &str, chain: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let generated = |reason: String| TlsError::Generated {
        name: name.to_owned(),
        reason,
    };
    let chain = parse_chain(chain).map_err(generated)?;
    let key = parse_key(key).map_err(generated)?;
    certified(chain, key).map_err(generated)
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no \"BEGIN CERTIFICATE\" block found".to_owned());
    }
    Ok(chain)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no private key block (PKCS#8, PKCS#1 or SEC1) found".to_owned()
        }
        e => format!("not valid PEM: {e}"),
    })
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<CertifiedKey>, String> {
    let certified =
        CertifiedKey::from_der(chain, key, &super::provider()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "the key's public half is not the certificate's".to_owned()
            }
            e => e.to_string(),
        })?;
    validity(&certified)?;
    Ok(Arc::new(certified))
}

/// When the leaf certificate becomes valid and when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

impl Validity {
    /// The point `fraction` of the way through the lifetime (renewal time).
    pub fn at_fraction(&self, fraction: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or(Duration::ZERO);
        self.not_before + life.mul_f64(fraction.clamp(0.0, 1.0))
    }
}

/// The leaf's issuer as a distinguished name (`CN=..., O=...`), for
/// `/status`.
pub fn issuer(key: &CertifiedKey) -> Option<String> {
    let leaf = key.end_entity_cert().ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    Some(cert.issuer().to_string())
}

/// The leaf's validity window.
pub fn validity(key: &CertifiedKey) -> Result<Validity, String> {
    let leaf = key
        .end_entity_cert()
        .map_err(|_| "empty certificate chain".to_owned())?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("cannot parse the certificate: {e}"))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        match u64::try_from(secs) {
            Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => SystemTime::UNIX_EPOCH,
        }
    };
    Ok(Validity {
        not_before: at(cert.validity().not_before),
        not_after: at(cert.validity().not_after),
    })
}
