//! The TLS side of a connection: read the ClientHello first, then pick the
//! configuration. A TLS-ALPN-01 validation (ALPN `acme-tls/1` only) gets
//! the challenge certificate and is closed after the handshake; everything
//! else gets the served certificates and HTTP.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::store::{ChallengeResolver, FixedResolver, ServedResolver};
use super::{ACME_TLS_ALPN, CertStore, ChallengeSource, Resumption, server_config};

/// A handshake that does not finish in this time is dropped, so half-open
/// connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished handshake turned into.
#[derive(Debug)]
pub enum Accepted<IO> {
    /// A TLS connection to serve HTTP on.
    Http(Box<TlsStream<IO>>),
    /// An ACME TLS-ALPN-01 validation, already answered.
    Challenge,
}

/// Terminates TLS with the certificates of a [`CertStore`].
#[derive(Debug, Clone)]
pub struct TlsTerminator {
    served: Arc<rustls::ServerConfig>,
    challenge: Arc<rustls::ServerConfig>,
    store: Arc<CertStore>,
    /// Answers published by other replicas.
    remote: Option<Arc<dyn ChallengeSource>>,
}

impl TlsTerminator {
    /// A terminator over `store`; later changes to the store apply to the
    /// next handshake. `resumption` applies to the served certificates (a
    /// TLS-ALPN-01 validation is one handshake, never resumed).
    pub fn new(store: Arc<CertStore>, resumption: Resumption) -> Result<Self, rustls::Error> {
        Ok(Self {
            served: server_config(
                Arc::new(ServedResolver(store.clone())),
                &[b"h2", b"http/1.1"],
                resumption,
            )?,
            challenge: server_config(
                Arc::new(ChallengeResolver(store.clone())),
                &[ACME_TLS_ALPN],
                Resumption::Off,
            )?,
            store,
            remote: None,
        })
    }

    /// Also answers TLS-ALPN-01 validations from `source` when this process
    /// has no answer of its own.
    pub fn with_challenges(mut self, source: Arc<dyn ChallengeSource>) -> Self {
        self.remote = Some(source);
        self
    }

    /// Runs the server side of the handshake on `io`.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<Accepted<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(io))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }

    async fn handshake<IO>(&self, io: IO) -> io::Result<Accepted<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
        let hello = start.client_hello();
        // RFC 8737: the validation offers exactly `acme-tls/1`.
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
        let sni = hello.server_name().map(str::to_owned);
        if acme {
            let mut config = self.challenge.clone();
            if let (Some(remote), Some(name)) = (&self.remote, sni)
                && !self.store.has_challenge(&name)
                && let Some(cert) = remote.challenge(&name).await
            {
                config = server_config(
                    Arc::new(FixedResolver(cert)),
                    &[ACME_TLS_ALPN],
                    Resumption::Off,
                )
                .map_err(io::Error::other)?;
            }
            let mut stream = start.into_stream(config).await?;
            let _ = stream.shutdown().await;
            return Ok(Accepted::Challenge);
        }
        let stream = start.into_stream(self.served.clone()).await?;
        Ok(Accepted::Http(Box::new(stream)))
    }
}
