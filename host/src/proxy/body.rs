//! The response body type of the proxy: either the backend's streamed body
//! (holding the backend's in-flight guard until it ends) or a short body the
//! proxy wrote itself. An enum instead of a boxed trait object: no allocation
//! per response.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::upstream::InFlight;

/// Body of every response the proxy sends.
#[derive(Debug)]
pub enum ProxyBody {
    /// Streamed from a backend.
    Upstream {
        /// The backend's body.
        body: Incoming,
        /// Keeps the backend's in-flight count until the body ends or the
        /// client goes away.
        guard: Option<InFlight>,
    },
    /// Written by the proxy.
    Local(Full<Bytes>),
}

impl ProxyBody {
    /// A body the proxy writes itself.
    pub fn text(text: impl Into<Bytes>) -> Self {
        ProxyBody::Local(Full::new(text.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        ProxyBody::Local(Full::new(Bytes::new()))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.get_mut() {
            ProxyBody::Upstream { body, guard } => {
                let polled = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(None | Some(Err(_))) = polled {
                    // Finished: the backend is no longer busy with it.
                    guard.take();
                }
                polled
            }
            ProxyBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body, .. } => body.is_end_stream(),
            ProxyBody::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body, .. } => body.size_hint(),
            ProxyBody::Local(full) => full.size_hint(),
        }
    }
}
