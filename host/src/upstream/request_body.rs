//! The request body on its way to a backend: the client's streamed body with
//! an idle timeout between pieces and a size cap, behind a lazy slot. The
//! slot is what makes retries safe: the client's body moves into the upstream
//! request only when hyper first polls it, so after a failed attempt the
//! proxy knows whether any byte could have been sent — and if none was, takes
//! the body back for the next attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

/// A client's request body as the server hands it to the proxy: hyper's,
/// or none at all (a bodiless request read by the server's own HTTP/1.1
/// loop, `server::h1`, which hands every request with a body to hyper).
#[derive(Debug)]
pub enum ClientBody {
    /// Read by hyper's server.
    Hyper(Incoming),
    /// No body.
    Empty,
}

impl From<Incoming> for ClientBody {
    fn from(body: Incoming) -> Self {
        ClientBody::Hyper(body)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Hyper(b) => Pin::new(b).poll_frame(cx),
            ClientBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(b) => b.is_end_stream(),
            ClientBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(b) => b.size_hint(),
            ClientBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Why the proxy stopped reading a request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    /// The client paused longer than `timeouts.client_body`.
    #[error("the client sent no request body data for {0:?}")]
    Idle(Duration),
    /// More than `limits.max_body_size` bytes.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(u64),
    /// The client connection failed mid-body.
    #[error("the client's request body failed")]
    Client,
}

const OK: u8 = 0;
const IDLE: u8 = 1;
const TOO_LARGE: u8 = 2;
const CLIENT: u8 = 3;

/// The client's body until an attempt starts sending it, and what became of
/// it.
#[derive(Debug)]
pub struct BodySlot {
    body: Mutex<Option<ClientBody>>,
    fault: AtomicU8,
    idle: Duration,
    limit: u64,
    end: bool,
    hint: SizeHint,
    opened: Instant,
    /// Milliseconds after `opened` of the last body progress.
    progress_ms: std::sync::atomic::AtomicU64,
}

thread_local! {
    /// The slot of every bodiless request on this thread (see
    /// [`BodySlot::new`]).
    static EMPTY: Arc<BodySlot> = Arc::new(BodySlot {
        body: Mutex::new(None),
        fault: AtomicU8::new(OK),
        idle: Duration::ZERO,
        limit: 0,
        end: true,
        hint: SizeHint::with_exact(0),
        opened: Instant::now(),
        progress_ms: std::sync::atomic::AtomicU64::new(0),
    });
}

impl BodySlot {
    /// Holds `body`; `idle` (zero: none) and `limit` (zero: none) apply when
    /// it is read.
    pub fn new(body: ClientBody, idle: Duration, limit: u64) -> Arc<Self> {
        let end = body.is_end_stream();
        if end {
            // Nothing to read, take back or time: the bodiless requests of
            // this thread (most requests) share one slot, which saves each
            // an allocation and a clock reading. No attempt reads it (its
            // body is done from the start), so no fault is ever set on it,
            // and its `last_progress` is older than any request's start,
            // which the response timeout counts from instead.
            return EMPTY.with(Arc::clone);
        }
        let hint = body.size_hint();
        Arc::new(Self {
            body: Mutex::new(Some(body)),
            fault: AtomicU8::new(OK),
            idle,
            limit,
            end,
            hint,
            opened: Instant::now(),
            progress_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// A body for the next attempt, or `None` when an earlier attempt took
    /// the client's body (some of it may have been sent: no retry).
    pub fn attempt(self: &Arc<Self>) -> Option<RequestBody> {
        if !self.end && self.lock().is_none() {
            return None;
        }
        Some(RequestBody {
            slot: self.clone(),
            inner: None,
            sleep: None,
            read: 0,
            done: self.end,
        })
    }

    /// Whether an attempt has taken the client's body (bodiless requests
    /// never do).
    pub fn taken(&self) -> bool {
        !self.end && self.lock().is_none()
    }

    /// Why reading stopped, if it did.
    pub fn fault(&self) -> Option<BodyFault> {
        match self.fault.load(Ordering::Acquire) {
            IDLE => Some(BodyFault::Idle(self.idle)),
            TOO_LARGE => Some(BodyFault::TooLarge(self.limit)),
            CLIENT => Some(BodyFault::Client),
            _ => None,
        }
    }

    /// When the body last made progress (a piece read, or its end); the
    /// response-header timeout counts from here, so a slow upload is
    /// limited by the body idle timeout, not by the response timeout.
    pub fn last_progress(&self) -> Instant {
        self.opened + Duration::from_millis(self.progress_ms.load(Ordering::Acquire))
    }

    fn progressed(&self) {
        let ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.progress_ms.store(ms, Ordering::Release);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ClientBody>> {
        self.body.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, fault: u8) -> BodyFault {
        self.fault.store(fault, Ordering::Release);
        self.fault().unwrap_or(BodyFault::Client)
    }
}

/// One attempt's view of the request body.
#[derive(Debug)]
pub struct RequestBody {
    slot: Arc<BodySlot>,
    inner: Option<ClientBody>,
    sleep: Option<Pin<Box<Sleep>>>,
    read: u64,
    done: bool,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.inner.is_none() {
            this.inner = this.slot.lock().take();
        }
        let Some(inner) = this.inner.as_mut() else {
            this.done = true;
            return Poll::Ready(Some(Err(this.slot.fail(CLIENT))));
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read = this.read.saturating_add(data.len() as u64);
                    if this.slot.limit > 0 && this.read > this.slot.limit {
                        this.done = true;
                        return Poll::Ready(Some(Err(this.slot.fail(TOO_LARGE))));
                    }
                }
                this.sleep = None;
                this.slot.progressed();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => {
                this.done = true;
                Poll::Ready(Some(Err(this.slot.fail(CLIENT))))
            }
            Poll::Ready(None) => {
                this.done = true;
                this.slot.progressed();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.slot.idle.is_zero() {
                    return Poll::Pending;
                }
                let idle = this.slot.idle;
                let sleep = this
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                if sleep.as_mut().poll(cx).is_ready() {
                    this.done = true;
                    return Poll::Ready(Some(Err(this.slot.fail(IDLE))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
            || match &self.inner {
                Some(b) => b.is_end_stream(),
                None => self.slot.end,
            }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(b) => b.size_hint(),
            None => self.slot.hint,
        }
    }
}

#[cfg(test)]
impl RequestBody {
    /// A body that only declares whether it has ended and its size, for
    /// tests of how a request is framed.
    pub(crate) fn declaring(end: bool, hint: SizeHint) -> Self {
        let slot = Arc::new(BodySlot {
            body: Mutex::new(None),
            fault: AtomicU8::new(OK),
            idle: Duration::ZERO,
            limit: 0,
            end,
            hint,
            opened: Instant::now(),
            progress_ms: std::sync::atomic::AtomicU64::new(0),
        });
        RequestBody {
            slot,
            inner: None,
            sleep: None,
            read: 0,
            done: end,
        }
    }
}
