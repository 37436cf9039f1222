//! The client side of TLS: connections to `https://` backends, verified
//! against the webpki roots plus the domain's `backend_ca`, if any.

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::Path;

use super::TlsError;

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

/// A connector trusting `roots` for `https://` backends and passing
/// `http://` through; backends get HTTP/1.1 over TLS (ALPN `h2` to backends
/// is not offered yet).
pub fn connector(
    roots: rustls::RootCertStore,
    http: HttpConnector,
) -> HttpsConnector<HttpConnector> {
    let tls = rustls::ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::VERSIONS)
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    let tls = match tls {
        Ok(tls) => tls,
        // Unreachable with ring's provider, which has both versions; fall
        // back to rustls's own defaults rather than fail.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}
