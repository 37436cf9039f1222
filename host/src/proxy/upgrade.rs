//! HTTP/1.1 Upgrade pass-through (WebSocket and friends): the request keeps
//! its `Connection: upgrade` and `Upgrade` headers; when the backend answers
//! 101 the two connections are joined byte for byte. The tunnel belongs to
//! no generation (a reload does not touch it) and is counted by the
//! [`Drain`], so shutdown waits for it within the grace period and closes
//! it after.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::drain::{Drain, Phase};

/// The protocol an HTTP/1.1 request asks to switch to.
pub fn requested(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !wants {
        return None;
    }
    headers.get(header::UPGRADE).cloned()
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
    metrics::counter!("bbproxy_upgrades_total").increment(1);
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
