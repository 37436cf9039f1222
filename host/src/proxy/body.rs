//! The response body type of the proxy: the backend's streamed body or a
//! short body the proxy wrote itself, plus what must happen when the
//! response is finished (body ended or client gone): the backend's
//! in-flight count drops, the in-flight gauge drops, and the access log line
//! is written with the bytes actually sent. An enum inside, not a boxed
//! trait object: no allocation per response for the body itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;

use super::observe::Finish;
use crate::upstream::InFlight;

#[derive(Debug)]
enum Inner {
    Upstream(Incoming),
    Local(Full<Bytes>),
}

/// Body of every response the proxy sends.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
    guard: Option<InFlight>,
    finish: Option<Finish>,
    bytes: u64,
}

impl ProxyBody {
    /// A backend's body; `guard` keeps the backend's in-flight count until
    /// the body ends.
    pub fn upstream(body: Incoming, guard: InFlight) -> Self {
        Self {
            inner: Inner::Upstream(body),
            guard: Some(guard),
            finish: None,
            bytes: 0,
        }
    }

    /// A body the proxy writes itself.
    pub fn text(text: impl Into<Bytes>) -> Self {
        Self {
            inner: Inner::Local(Full::new(text.into())),
            guard: None,
            finish: None,
            bytes: 0,
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::text(Bytes::new())
    }

    /// Runs `finish` once the body is done.
    pub(super) fn on_finish(&mut self, finish: Finish) {
        self.finish = Some(finish);
    }

    fn done(&mut self) {
        self.guard.take();
        if let Some(f) = self.finish.take() {
            f.complete(self.bytes);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // The client went away (or hyper dropped an unread body): still
        // account for the request.
        self.done();
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.done(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Local(full) => full.size_hint(),
        }
    }
}
