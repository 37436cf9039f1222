//! TLS termination: the rustls server configuration (TLS 1.2 and 1.3 only,
//! ALPN `h2` and `http/1.1`), a certificate store that can be swapped while
//! connections are open, the SNI resolver over it, and static cert/key files.
//!
//! Unknown SNI: a name with no certificate (or no SNI at all) gets the
//! default domain's certificate when `default_domain` has one; otherwise the
//! handshake is refused with a fatal alert. No certificate is ever invented.

mod accept;
pub mod backend;
pub mod files;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

pub use accept::{Accepted, TlsTerminator};
pub use store::CertStore;

/// Challenge certificates this process did not make itself: another
/// replica's TLS-ALPN-01 answers, from the shared storage. Asked only for a
/// handshake that offers `acme-tls/1` and has no local answer.
pub trait ChallengeSource: Send + Sync + std::fmt::Debug {
    /// The challenge certificate for `name`, if one is published.
    fn challenge<'a>(
        &'a self,
        name: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<Arc<rustls::sign::CertifiedKey>>> + Send + 'a>>;
}

/// The ALPN protocol of the ACME TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} file {path}: {source}")]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file holds no usable PEM item.
    #[error("{what} file {path}: {reason}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls rejected it.
    #[error("private key {key} does not fit certificate {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// A certificate generated in memory (ACME, TLS-ALPN-01) is unusable.
    #[error("certificate for {name}: {reason}")]
    Generated {
        /// The domain.
        name: String,
        /// What went wrong.
        reason: String,
    },
}

/// The crypto provider of every TLS configuration in the process.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Makes `aws-lc-rs` the process default, for libraries (the ACME client) that
/// build their own rustls configuration. Harmless if one is already set.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// TLS 1.2 and 1.3: rustls has no older versions; the list is explicit so a
/// feature change upstream cannot widen it silently.
const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Whether returning clients may resume a TLS session instead of a full
/// handshake (`listen.tls_session_resumption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumption {
    /// Session tickets (TLS 1.3 and 1.2) and a session-ID cache (TLS 1.2).
    On,
    /// Every connection is a full handshake; no ticket is sent.
    Off,
}

/// Sessions the TLS 1.2 session-ID cache holds (rustls's default is 256).
/// TLS 1.3 resumption uses the stateless tickets and never fills it; an
/// entry is a few hundred bytes, so a full cache stays near 1 MiB.
const SESSION_CACHE: usize = 4096;

/// The provider the listeners use: aws-lc-rs with the server's order of
/// cipher suites, AES-128-GCM first in each TLS version.
///
/// Why not the client's order: most clients (OpenSSL, browsers on x86)
/// list AES-256-GCM-SHA384 first, and a TLS 1.3 handshake with a SHA-384
/// suite runs its transcript and its key schedule (some 25 HMACs) on
/// SHA-512, which no CPU accelerates; SHA-256 has SHA-NI. A full
/// handshake's SHA-512 was 7 % of its CPU here (perf, bench tls-new).
/// AES-128-GCM is TLS 1.3's mandatory suite, 128-bit secure, and also
/// cheaper per record (10 AES rounds against 14). ChaCha20-Poly1305 stays
/// offered, last: a client without AES hardware still gets a suite it
/// supports (every TLS 1.3 client has AES-128-GCM).
fn server_provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // Stable: equal-rank suites keep the library's order.
    provider
        .cipher_suites
        .sort_by_key(|suite| suite_rank(suite.suite()));
    Arc::new(provider)
}

/// A suite's place in the server's preference: AES-128-GCM, then
/// AES-256-GCM, then ChaCha20-Poly1305 (within TLS 1.3 and within TLS 1.2).
fn suite_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as S;
    match suite {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
        _ => 5,
    }
}

fn server_config(
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
    alpn: &[&[u8]],
    resumption: Resumption,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(server_provider())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // The server's order decides (see server_provider).
    config.ignore_client_order = true;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    match resumption {
        Resumption::On => {
            // Stateless tickets, encrypted with a key rustls rotates every
            // 6 hours; a ticket is only good for this process, so a client
            // that lands on another replica does a full handshake.
            config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
            config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        }
        Resumption::Off => {
            config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
    }
    Ok(Arc::new(config))
}
