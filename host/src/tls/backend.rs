//! The client side of TLS: connections to `https://` backends, verified
//! against the webpki roots plus the domain's `backend_ca`, if any.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;

use super::TlsError;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The webpki roots plus the certificates in `extra` (a PEM file).
pub fn roots(extra: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let Some(path) = extra else {
        return Ok(roots);
    };
    let pem = |reason: String| TlsError::Pem {
        what: "backend CA",
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "backend CA",
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem("no \"BEGIN CERTIFICATE\" block found".to_owned()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| pem(e.to_string()))?;
    }
    Ok(roots)
}

/// The connector every upstream pool uses.
pub type BackendConnector = RequireH2<HttpsConnector<HttpConnector>>;

/// A connector trusting `roots` for `https://` backends and passing
/// `http://` through. With `h2`, TLS offers only ALPN `h2` and a backend
/// that does not pick it is refused at connect time (see [`RequireH2`]);
/// otherwise TLS offers no ALPN and backends get HTTP/1.1.
pub fn connector(roots: rustls::RootCertStore, http: HttpConnector, h2: bool) -> BackendConnector {
    let tls = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::VERSIONS)
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let tls = match tls {
        Ok(tls) => tls,
        // Unreachable with aws-lc-rs's provider, which has both versions; fall
        // back to rustls's own defaults rather than fail.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let inner = if h2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    RequireH2 { inner, h2 }
}

/// A backend that completed the TLS handshake without choosing ALPN `h2`
/// (it offers only HTTP/1.1, or ignores ALPN). Sending it the HTTP/2
/// preface anyway would end in a protocol error at best and a hang at worst.
#[derive(Debug, thiserror::Error)]
#[error(
    "backend did not agree to HTTP/2: TLS ALPN did not select \"h2\" (protocol \"h2\" needs a backend that offers h2 over TLS)"
)]
pub struct NoH2;

/// Wraps a TLS connector; when `h2` is set, fails any connection on which
/// ALPN did not select `h2`, so hyper never speaks HTTP/2 to a server that
/// did not agree to it.
#[derive(Debug, Clone)]
pub struct RequireH2<C> {
    inner: C,
    h2: bool,
}

impl<C> tower_service::Service<Uri> for RequireH2<C>
where
    C: tower_service::Service<Uri, Error = BoxError> + Send,
    C::Response: Connection + Send + 'static,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let h2 = self.h2;
        Box::pin(async move {
            let io = connecting.await?;
            if h2 && !io.connected().is_negotiated_h2() {
                return Err(Box::new(NoH2) as BoxError);
            }
            Ok(io)
        })
    }
}
