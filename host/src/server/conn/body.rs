//! The response body wrapper: ends its request when finished or dropped,
//! holds an HTTP/1 body while the socket lags, and counts HTTP/2 streams
//! waiting for the client's flow-control window.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::RequestGuard;

/// A response body that ends its request (for the keep-alive clock and the
/// drain) when it is finished or dropped.
#[derive(Debug)]
pub struct Tracked<B> {
    body: B,
    guard: Option<RequestGuard>,
    /// Counted in `ConnState::h2_waiting`.
    waiting: bool,
}

impl<B> Tracked<B> {
    /// `body`, counted by `guard`.
    pub fn new(body: B, guard: RequestGuard) -> Self {
        Self {
            body,
            guard: Some(guard),
            waiting: false,
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.waiting
            && let Some(g) = &self.guard
        {
            g.0.h2_unwait();
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let Some(guard) = &this.guard else {
            return Pin::new(&mut this.body).poll_frame(cx);
        };
        let state = &guard.0;
        if this.waiting {
            this.waiting = false;
            state.h2_unwait();
        }
        if state.hold_body(cx) {
            return Poll::Pending;
        }
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    state.yielded.fetch_add(data.len() as u64, Ordering::AcqRel);
                    // hyper asks for the next chunk only once the client's
                    // window takes this one; after the last it asks nothing.
                    if state.h2.load(Ordering::Acquire)
                        && !data.is_empty()
                        && !this.body.is_end_stream()
                    {
                        this.waiting = true;
                        state.h2_wait();
                    }
                }
            }
            Poll::Ready(None | Some(Err(_))) => {
                this.guard.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
