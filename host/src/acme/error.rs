//! Why certificates could not be set up or obtained.

use std::path::PathBuf;

use crate::storage::StorageError;
use crate::tls::TlsError;

/// Why certificates could not be set up or obtained.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// A static certificate or key file, or an issued chain, is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The storage (`cert_cache_dir` or `storage`) cannot be used now.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Another replica holds the name's lock.
    #[error("lost the lock of {name} while ordering; the certificate was not stored")]
    LockLost {
        /// The domain.
        name: String,
    },
    /// `acme.ca_root` cannot be used.
    #[error("acme.ca_root {path}: {reason}")]
    CaRoot {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The HTTP client for the ACME server could not be built.
    #[error("ACME client: {0}")]
    Client(String),
    /// The ACME server refused or could not be reached.
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// The server offers no challenge this configuration can answer.
    #[error("ACME offers no usable challenge for {name} (allowed: {allowed})")]
    NoChallenge {
        /// The domain.
        name: String,
        /// `acme.challenges` after removing what has no listener.
        allowed: String,
    },
    /// An authorization or order ended in a state other than valid.
    #[error("ACME {what} for {name} is {status}{detail}")]
    Failed {
        /// `authorization` or `order`.
        what: &'static str,
        /// The domain.
        name: String,
        /// The final status.
        status: String,
        /// The server's explanation, if any.
        detail: String,
    },
}

impl AcmeError {
    /// Whether the server no longer knows the account.
    pub(super) fn account_gone(&self) -> bool {
        matches!(
            self,
            AcmeError::Protocol(instant_acme::Error::Api(problem))
                if problem.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist")
        )
    }
}
