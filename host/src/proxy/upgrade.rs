//! HTTP/1.1 Upgrade pass-through (WebSocket and friends): the request keeps
//! its `Connection: upgrade` and `Upgrade` headers; when the backend answers
//! 101 the two connections are joined byte for byte. An HTTP/2 extended
//! CONNECT (RFC 8441) reaches the backend as the equivalent HTTP/1.1
//! upgrade, and its tunnel is the HTTP/2 stream. The tunnel belongs to
//! no generation (a reload does not touch it) and is counted by the
//! [`Drain`], so shutdown waits for it within the grace period and closes
//! it after.

use std::sync::Arc;

use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::drain::{Drain, Phase};

/// A client's request to switch protocols.
#[derive(Debug, Clone)]
pub struct Requested {
    /// The upgrade token (`websocket`, ...), sent to the backend as
    /// `Upgrade`.
    pub protocol: HeaderValue,
    /// An HTTP/2 extended CONNECT (RFC 8441): the backend gets an HTTP/1.1
    /// `GET` with `Upgrade`, and its 101 becomes the client's 200.
    pub extended_connect: bool,
}

/// What the request asks to switch to: an HTTP/1.1 `Connection: upgrade`
/// with `Upgrade`, or an HTTP/2 CONNECT with the `:protocol` pseudo-header.
pub fn requested<B>(req: &Request<B>) -> Option<Requested> {
    if req.version() == Version::HTTP_2 && req.method() == Method::CONNECT {
        let protocol = req.extensions().get::<hyper::ext::Protocol>()?;
        return Some(Requested {
            protocol: HeaderValue::from_str(protocol.as_str()).ok()?,
            extended_connect: true,
        });
    }
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let headers = req.headers();
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !wants {
        return None;
    }
    Some(Requested {
        protocol: headers.get(header::UPGRADE)?.clone(),
        extended_connect: false,
    })
}

impl Requested {
    /// Turns the (hop-by-hop stripped) request head into the backend's
    /// HTTP/1.1 upgrade request.
    pub fn apply(&self, method: &mut Method, headers: &mut HeaderMap) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, self.protocol.clone());
        if !self.extended_connect {
            return;
        }
        *method = Method::GET;
        // RFC 8441 clients send no key (HTTP/2 has no use for it); an
        // HTTP/1.1 WebSocket server refuses a handshake without one.
        if self.is_websocket() && !headers.contains_key(header::SEC_WEBSOCKET_KEY) {
            headers.insert(header::SEC_WEBSOCKET_KEY, websocket_key());
        }
    }

    /// The client's side of the backend's 101: unchanged for HTTP/1.1; for
    /// an extended CONNECT a 200 without the HTTP/1.1 handshake headers,
    /// which mean nothing (or are forbidden) in HTTP/2.
    pub fn client_response(&self, parts: &mut http::response::Parts) {
        if !self.extended_connect {
            return;
        }
        parts.status = StatusCode::OK;
        parts.version = Version::HTTP_2;
        for name in [
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_ACCEPT,
            header::CONTENT_LENGTH,
            header::TRANSFER_ENCODING,
        ] {
            parts.headers.remove(name);
        }
    }

    fn is_websocket(&self) -> bool {
        self.protocol.as_bytes().eq_ignore_ascii_case(b"websocket")
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1).
/// It only proves the server speaks WebSocket, so a fast non-cryptographic
/// source is enough.
fn websocket_key() -> HeaderValue {
    let mut nonce = [0u8; 16];
    nonce[..8].copy_from_slice(&crate::rand::next_u64().to_le_bytes());
    nonce[8..].copy_from_slice(&crate::rand::next_u64().to_le_bytes());
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&key)
        .unwrap_or_else(|_| HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="))
}

/// Once the backend has switched protocols, joins its connection to the
/// client's in a task of its own; `keep` lives as long as the tunnel.
pub fn tunnel<K: Send + 'static>(
    client: OnUpgrade,
    upstream: OnUpgrade,
    keep: K,
    drain: &Arc<Drain>,
    backend: String,
) {
    let guard = drain.tunnel();
    let mut phase = drain.subscribe();
    metrics::counter!(crate::telemetry::names::UPGRADES).increment(1);
    tokio::spawn(async move {
        let _guard = guard;
        let _keep = keep;
        let (c, b) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(backend, "upgrade failed: {e}");
                return;
            }
        };
        let (mut c, mut b) = (TokioIo::new(c), TokioIo::new(b));
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut c, &mut b) => {
                if let Err(e) = copied {
                    tracing::debug!(backend, "tunnel ended: {e}");
                }
            }
            _ = phase.wait_for(|p| *p == Phase::Abort) => {
                tracing::debug!(backend, "tunnel closed: shutdown grace period over");
            }
        }
    });
}
