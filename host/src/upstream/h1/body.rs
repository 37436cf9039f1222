//! A backend's response body as the proxy forwards it: read off its
//! HTTP/1.1 connection by whoever polls it, the connection parked for the
//! next request when the body ends cleanly; or, for HTTP/2 backends and
//! upgrades, hyper's body read by hyper-util's connection task.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::H1Pool;
use super::error::BoxError;
use super::exchange::Reading;
use super::framing::Left;
use crate::upstream::BackendState;

/// A backend's response body.
#[derive(Debug)]
pub struct UpstreamBody(Inner);

enum Inner {
    /// Read off a connection of the HTTP/1.1 path; `None` once ended.
    Owned(Option<Owned>),
    /// Read by a connection task of its own (hyper-util's client).
    Elsewhere(Incoming),
}

/// A body on the owned path and where its connection goes back.
struct Owned {
    reading: Reading,
    pool: Arc<H1Pool>,
    backend: Arc<BackendState>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Inner::Owned(Some(o)) => f
                .debug_struct("Owned")
                .field("backend", &o.backend.authority)
                .finish(),
            Inner::Owned(None) => f.write_str("Ended"),
            Inner::Elsewhere(b) => b.fmt(f),
        }
    }
}

impl UpstreamBody {
    /// A body read by a connection task of its own (hyper-util's client).
    pub fn driven_elsewhere(body: Incoming) -> Self {
        Self(Inner::Elsewhere(body))
    }

    /// The body of an exchange on `pool`'s connection to `backend`. One
    /// with nothing to read (HEAD, 204, 304, `Content-Length: 0`) gives
    /// its connection back at once.
    pub(super) fn owned(reading: Reading, pool: Arc<H1Pool>, backend: Arc<BackendState>) -> Self {
        let mut body = Self(Inner::Owned(Some(Owned {
            reading,
            pool,
            backend,
        })));
        if body.is_end_stream() {
            body.end();
        }
        body
    }

    /// The body has ended: its connection goes back when reusable.
    fn end(&mut self) {
        if let Inner::Owned(owned) = &mut self.0
            && let Some(owned) = owned.take()
        {
            let Owned {
                reading,
                pool,
                backend,
            } = owned;
            if let Some(conn) = reading.into_reusable() {
                pool.checkin(&backend.base, conn);
            }
        }
    }
}

impl UpstreamBody {
    /// Whether a pause of the body is the client's, not the backend's: a
    /// spliced piece waits for the client socket to take it.
    pub fn waits_for_client(&self) -> bool {
        match &self.0 {
            Inner::Owned(Some(owned)) => owned.reading.waits_for_client(),
            _ => false,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let owned = match &mut this.0 {
            Inner::Elsewhere(body) => return Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inner::Owned(None) => return Poll::Ready(None),
            Inner::Owned(Some(owned)) => owned,
        };
        let polled = owned.reading.poll_frame(cx);
        match &polled {
            // hyper stops polling a body that says it has ended, so the
            // end is taken as soon as the last piece is out.
            Poll::Ready(None) => this.end(),
            Poll::Ready(Some(Ok(_))) if owned.reading.left.ended() => this.end(),
            // A failed body leaves its connection unusable (reset).
            Poll::Ready(Some(Err(_))) => this.0 = Inner::Owned(None),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Owned(Some(owned)) => owned.reading.left.ended(),
            Inner::Owned(None) => true,
            Inner::Elsewhere(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Owned(Some(owned)) => match owned.reading.left {
                Left::Length(n) => SizeHint::with_exact(n),
                _ => SizeHint::default(),
            },
            Inner::Owned(None) => SizeHint::with_exact(0),
            Inner::Elsewhere(body) => body.size_hint(),
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body without data (204, 304, a HEAD's answer) is never polled,
        // and hyper stops polling one that says it has ended: both are
        // still clean ends. Any other body dropped early takes its
        // connection with it (reset).
        if self.is_end_stream() {
            self.end();
        }
    }
}
