//! The response body type of the proxy: either the backend's streamed body
//! (holding the backend's in-flight guard and connection slot until it ends,
//! and cut when the backend pauses longer than `timeouts.upstream_idle`) or
//! a short body the proxy wrote itself; plus what must happen when the
//! response is finished (body ended or client gone): the in-flight gauge
//! drops and the access log line is written with the bytes actually sent.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::time::Sleep;

use super::observe::Finish;
use crate::upstream::InFlight;
use crate::upstream::backend_queue::Permit;
use crate::upstream::h1::UpstreamBody;

/// The error a client connection sees when a response body fails.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// The backend paused longer than the upstream idle timeout mid-body.
#[derive(Debug, thiserror::Error)]
#[error("backend sent no response data for {0:?}")]
pub struct UpstreamIdle(pub Duration);

/// A backend's body on its way to the client.
#[derive(Debug)]
pub struct Streamed {
    body: UpstreamBody,
    guard: Option<(InFlight, Permit)>,
    idle: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

#[derive(Debug)]
enum Inner {
    /// Streamed from a backend.
    Upstream(Box<Streamed>),
    /// Written by the proxy.
    Local(Full<Bytes>),
}

/// Body of every response the proxy sends.
#[derive(Debug)]
pub struct ProxyBody {
    inner: Inner,
    finish: Option<Finish>,
    bytes: u64,
}

impl ProxyBody {
    /// A backend's body; `guard` is held until it ends or the client goes
    /// away; `idle` (zero: none) bounds the pause between pieces.
    pub fn upstream(body: UpstreamBody, guard: (InFlight, Permit), idle: Duration) -> Self {
        Self::new(Inner::Upstream(Box::new(Streamed {
            body,
            guard: Some(guard),
            idle,
            sleep: None,
        })))
    }

    /// A body the proxy writes itself.
    pub fn text(text: impl Into<Bytes>) -> Self {
        Self::new(Inner::Local(Full::new(text.into())))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::text(Bytes::new())
    }

    fn new(inner: Inner) -> Self {
        Self {
            inner,
            finish: None,
            bytes: 0,
        }
    }

    /// Runs `finish` once the body is done.
    pub(super) fn on_finish(&mut self, finish: Finish) {
        self.finish = Some(finish);
    }

    fn done(&mut self) {
        if let Inner::Upstream(s) = &mut self.inner {
            s.guard.take();
        }
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
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = match &mut this.inner {
            Inner::Upstream(s) => poll_upstream(s, cx),
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
            Inner::Upstream(s) => s.body.is_end_stream(),
            Inner::Local(full) => full.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(s) => s.body.size_hint(),
            Inner::Local(full) => full.size_hint(),
        }
    }
}

fn poll_upstream(
    s: &mut Streamed,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    match Pin::new(&mut s.body).poll_frame(cx) {
        Poll::Ready(Some(Ok(frame))) => {
            s.sleep = None;
            Poll::Ready(Some(Ok(frame)))
        }
        Poll::Ready(None) => {
            // Finished: the backend is no longer busy with it.
            s.guard.take();
            Poll::Ready(None)
        }
        Poll::Ready(Some(Err(e))) => {
            s.guard.take();
            Poll::Ready(Some(Err(e)))
        }
        Poll::Pending => {
            // A spliced piece still on its way to the client: the backend
            // is not the one that is slow (the client's write timeout
            // covers that). hyper's writer asks for the next piece while
            // one waits for the socket; the server's own loop does not.
            if s.idle.is_zero() || s.body.waits_for_client() {
                s.sleep = None;
                return Poll::Pending;
            }
            let idle = s.idle;
            let sleep = s
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
            if sleep.as_mut().poll(cx).is_ready() {
                s.guard.take();
                metrics::counter!(crate::telemetry::names::UPSTREAM_BODY_TIMEOUTS).increment(1);
                return Poll::Ready(Some(Err(UpstreamIdle(idle).into())));
            }
            Poll::Pending
        }
    }
}
