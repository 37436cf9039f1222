//! The HTTP client instant-acme talks through: rustls with the webpki roots
//! plus `acme.ca_root` (a test CA such as Pebble's), and a record of the
//! last `Retry-After` the server sent with a 429 or 503, so the renewal loop
//! can wait at least that long.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{BodyWrapper, BytesResponse, HttpClient};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::AcmeError;

/// When the server last asked us to come back, if it did.
#[derive(Debug, Default)]
pub struct RetryAfter(Mutex<Option<SystemTime>>);

impl RetryAfter {
    /// The recorded time, if it is still in the future. Not consumed: a
    /// rate limit holds for every domain of the account.
    pub fn peek(&self) -> Option<SystemTime> {
        let at = (*self.0.lock().unwrap_or_else(PoisonError::into_inner))?;
        (at > SystemTime::now()).then_some(at)
    }

    fn set(&self, at: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }
}

/// The client; cheap to share.
pub struct AcmeHttp {
    inner: Client<HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>,
    retry_after: Arc<RetryAfter>,
}

impl AcmeHttp {
    /// A client trusting the webpki roots and the PEM certificates in
    /// `ca_root`.
    pub fn new(ca_root: Option<&Path>, retry_after: Arc<RetryAfter>) -> Result<Self, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_root {
            let fail = |reason: String| AcmeError::CaRoot {
                path: path.to_owned(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(format!("not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(fail("no \"BEGIN CERTIFICATE\" block found".to_owned()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| fail(e.to_string()))?;
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| AcmeError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(Self {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            retry_after,
        })
    }
}

impl HttpClient for AcmeHttp {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let fut = self.inner.request(req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let rsp = fut
                .await
                .map_err(|e| instant_acme::Error::Other(Box::new(e)))?;
            if matches!(
                rsp.status(),
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            ) && let Some(at) = rsp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after)
            {
                retry_after.set(at);
            }
            Ok(BytesResponse::from(rsp))
        })
    }
}

/// `Retry-After: 120` or an HTTP date.
fn parse_retry_after(value: &str) -> Option<SystemTime> {
    match value.trim().parse::<u64>() {
        Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value.trim()).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let at = parse_retry_after("120").unwrap();
        let secs = at.duration_since(SystemTime::now()).unwrap().as_secs();
        assert!((118..=120).contains(&secs), "{secs}");
        let date = parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            date.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            1_445_412_480
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
