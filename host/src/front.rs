//! What a listener puts in front of the proxy: on plain HTTP, answers to
//! ACME HTTP-01 validations and (with `listen.redirect_http`) a 308 to HTTPS
//! for everything else (both counted and access-logged like proxied requests);
//! on every listener, then, the proxy itself. A token
//! this process did not publish goes on to the proxy (or the redirect), so a
//! backend can run its own ACME client behind a proxy without certificates.

use std::convert::Infallible;
use std::sync::Arc;

use crate::upstream::request_body::ClientBody;
use http::{HeaderValue, Request, Response, StatusCode, header};

use crate::acme::Http01Tokens;
use crate::proxy::{Client, Proxy, ProxyBody, Scheme};
use crate::splice::SpliceTarget;

/// The path prefix of HTTP-01 validations (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The request handler of one listener.
#[derive(Debug)]
pub struct Front {
    proxy: Arc<Proxy>,
    scheme: Scheme,
    http01: Option<Arc<Http01Tokens>>,
    /// The HTTPS port to redirect plain HTTP to.
    redirect_to: Option<u16>,
}

impl Front {
    /// Only the proxy.
    pub fn new(proxy: Arc<Proxy>, scheme: Scheme) -> Self {
        Self {
            proxy,
            scheme,
            http01: None,
            redirect_to: None,
        }
    }

    /// Also answers HTTP-01 validations from `tokens`.
    pub fn with_http01(mut self, tokens: Arc<Http01Tokens>) -> Self {
        self.http01 = Some(tokens);
        self
    }

    /// Redirects every other request to HTTPS on `port`.
    pub fn redirecting_to(mut self, port: u16) -> Self {
        self.redirect_to = Some(port);
        self
    }

    /// The proxy behind it.
    pub fn proxy(&self) -> &Arc<Proxy> {
        &self.proxy
    }

    /// Answers one request. It comes boxed, so each future of its chain
    /// holds a pointer to it rather than its own copy (see
    /// `upstream::h1::send`). `splice`: see [`Proxy::handle`].
    pub async fn handle(
        &self,
        req: Box<Request<ClientBody>>,
        client: Client,
        splice: Option<SpliceTarget>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        if let Some(tokens) = &self.http01
            && let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE_PREFIX)
            && let Some(key_authorization) = tokens.lookup(token).await
        {
            let mut resp = Response::new(ProxyBody::text(key_authorization));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            return Ok(self.proxy.record_local(&req, resp));
        }
        if let Some(port) = self.redirect_to {
            let resp = redirect(&req, port);
            return Ok(self.proxy.record_local(&req, resp));
        }
        self.proxy.handle(req, client, self.scheme, splice).await
    }
}

fn status(code: StatusCode, text: &'static str) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::text(text));
    *resp.status_mut() = code;
    resp
}

/// 308 keeps the method and body, unlike 301.
fn redirect(req: &Request<ClientBody>, port: u16) -> Response<ProxyBody> {
    let host = req
        .uri()
        .host()
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
        .map(strip_port)
        .unwrap_or("");
    if host.is_empty() {
        return status(StatusCode::BAD_REQUEST, "missing Host header\n");
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut resp = status(StatusCode::PERMANENT_REDIRECT, "");
            resp.headers_mut().insert(header::LOCATION, value);
            resp
        }
        Err(_) => status(StatusCode::BAD_REQUEST, "invalid Host header\n"),
    }
}

/// `example.com:80` → `example.com`, `[::1]:80` → `[::1]`.
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') && authority[..i].matches(':').count() == 0 => {
            &authority[..i]
        }
        Some(i) if authority.starts_with('[') && authority[..i].ends_with(']') => &authority[..i],
        _ => authority,
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("a.test:80"), "a.test");
        assert_eq!(strip_port("a.test"), "a.test");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
