//! One request and its response on a backend connection: the request body
//! written as it comes from the client, the response head read and parsed,
//! then the response body read as the client takes it. Both directions
//! are driven by whoever polls (the request's task for the head, the
//! client's connection for the body), as hyper's dispatcher drives both
//! for its connection task: a backend that answers while it still reads
//! the upload (an echo, a stream) is served in both directions at once.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body::{Body, Frame};

use super::conn::Conn;
use super::error::{BoxError, Broken};
use super::framing::{Left, Piece};
use super::wire::{self, Framing, Upload};
use crate::splice::{Filled, SpliceTarget};
use crate::upstream::request_body::RequestBody;

/// The request body still to be written.
struct Uploading {
    body: RequestBody,
    chunked: bool,
    /// For a sized body: what it declared and what is left of it.
    declared: u64,
    left: u64,
}

/// A request in flight on a connection.
pub struct Exchange {
    pub(super) conn: Box<Conn>,
    /// Boxed: most requests have none, and the exchange moves with the
    /// response body.
    upload: Option<Box<Uploading>>,
    /// The request's header map, emptied, for the response's fields (as
    /// hyper's client reuses it): no allocation for them.
    spare: HeaderMap,
    /// A write failed (the backend closed or reset): nothing more is
    /// written and the connection is not reused; reported if no response
    /// comes.
    write_error: Option<std::io::Error>,
}

impl Exchange {
    /// An exchange whose head is queued or written on `conn`, its body
    /// `body` framed as `upload` says.
    /// `sent` bytes of it are queued already (with the head). `spare` is a
    /// header map to fill with the response's (its fields are dropped).
    pub fn new(
        conn: Box<Conn>,
        body: RequestBody,
        upload: Upload,
        sent: u64,
        spare: HeaderMap,
    ) -> Self {
        let upload = match upload {
            Upload::None => None,
            Upload::Length(n) => Some(Box::new(Uploading {
                body,
                chunked: false,
                declared: n,
                left: n.saturating_sub(sent),
            })),
            Upload::Chunked => Some(Box::new(Uploading {
                body,
                chunked: true,
                declared: 0,
                left: 0,
            })),
        };
        Self {
            conn,
            upload,
            spare,
            write_error: None,
        }
    }

    /// Whether the request went out whole.
    fn uploaded(&self) -> bool {
        self.upload.is_none() && self.write_error.is_none() && self.conn.flushed()
    }

    /// Writes what it can of the request: ready once it is all written
    /// or writing failed (the response may still come); an error when the
    /// client's body failed or broke its length.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        loop {
            if self.write_error.is_some() {
                return Poll::Ready(Ok(()));
            }
            if !self.conn.flushed() {
                if let Err(e) = ready!(self.conn.poll_write_queued(cx)) {
                    self.upload = None;
                    self.write_error = Some(e);
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            let Some(up) = &mut self.upload else {
                return Poll::Ready(Ok(()));
            };
            if !up.chunked && up.left == 0 && up.body.is_end_stream() {
                self.upload = None;
                continue;
            }
            match ready!(Pin::new(&mut up.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Trailers of a request are not forwarded (hyper's
                    // client sent them only when `Trailer` named them).
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if !up.chunked {
                        let len = data.len() as u64;
                        if len > up.left {
                            return Poll::Ready(Err(Broken::Length {
                                declared: up.declared,
                                actual: up.declared - up.left + len,
                            }
                            .into()));
                        }
                        up.left -= len;
                    }
                    let chunked = up.chunked;
                    self.conn.queue_data(data, chunked);
                }
                Some(Err(fault)) => return Poll::Ready(Err(fault.into())),
                None => {
                    if !up.chunked && up.left > 0 {
                        return Poll::Ready(Err(Broken::Length {
                            declared: up.declared,
                            actual: up.declared - up.left,
                        }
                        .into()));
                    }
                    if up.chunked {
                        self.conn.queue_last_chunk();
                    }
                    self.upload = None;
                }
            }
        }
    }

    /// Writes the request and reads until its response head is in.
    pub fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        method: &Method,
        max: usize,
    ) -> Poll<Result<wire::Head, BoxError>> {
        if let Poll::Ready(Err(e)) = self.poll_upload(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            if !self.conn.buf.is_empty()
                && let Some(head) =
                    wire::parse_response(&mut self.conn.buf, method, max, &mut self.spare)?
            {
                return Poll::Ready(Ok(head));
            }
            match ready!(self.conn.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(Err(match self.write_error.take() {
                        Some(e) => e.into(),
                        None => Broken::NoResponse.into(),
                    }));
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
    }
}

/// What polling a body for its next piece gives.
type PolledFrame = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// A sized body, or a chunk, with at least this much left (none of it read
/// yet) is spliced where it can be: below it, one copy costs less than the
/// two extra system calls.
const SPLICE_MIN: u64 = 16 * 1024;

/// A response body being read off its connection.
pub struct Reading {
    pub(super) ex: Exchange,
    pub(super) left: Left,
    keep_alive: bool,
    /// Where the body may be spliced to instead of read (see `crate::splice`).
    splice: Option<SpliceTarget>,
}

impl Reading {
    /// The body of `ex`'s response, framed as `framing`.
    pub fn new(ex: Exchange, framing: Framing, keep_alive: bool) -> Self {
        Self {
            ex,
            left: Left::new(framing),
            keep_alive: keep_alive && framing != Framing::Close,
            splice: None,
        }
    }

    /// Splices what it can of the body to `target` (a plain HTTP/1
    /// client), when the backend's connection is plain TCP.
    pub fn splice_to(&mut self, target: &SpliceTarget) {
        if self.ex.conn.plain_tcp().is_some() {
            self.splice = Some(target.clone());
        }
    }

    /// Whether the body waits for the client to take a spliced piece
    /// (not for the backend).
    pub fn waits_for_client(&self) -> bool {
        self.splice.as_ref().is_some_and(SpliceTarget::holds)
    }

    /// The next piece spliced, when the body (or the chunk) is one to
    /// splice and nothing of it is buffered; `None`: read it.
    fn poll_splice(&mut self, cx: &mut Context<'_>) -> Option<PolledFrame> {
        let n = match &self.left {
            Left::Length(n) => *n,
            Left::Chunked(c) => c.data_left()?,
            Left::Close => return None,
        };
        if n < SPLICE_MIN || !self.ex.conn.buf.is_empty() {
            return None;
        }
        let target = self.splice.as_ref()?;
        let tcp = self.ex.conn.plain_tcp()?;
        Some(match target.poll_fill(cx, tcp, n) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Filled::Piece(hole))) => {
                metrics::counter!(crate::telemetry::names::SPLICED_BYTES)
                    .increment(hole.len() as u64);
                match &mut self.left {
                    Left::Chunked(c) => c.skipped(hole.len() as u64),
                    left => *left = Left::Length(n - hole.len() as u64),
                }
                Poll::Ready(Some(Ok(Frame::data(hole))))
            }
            Poll::Ready(Ok(Filled::Eof)) => Poll::Ready(match self.left.closed() {
                Ok(()) => None,
                Err(e) => Some(Err(e.into())),
            }),
            Poll::Ready(Ok(Filled::Unavailable)) => {
                self.splice = None;
                return None;
            }
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e.into()))),
        })
    }

    /// The next piece of the body; `None` at its end.
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> PolledFrame {
        if let Poll::Ready(Err(e)) = self.ex.poll_upload(cx) {
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            match self.left.next(&mut self.ex.conn.buf) {
                Ok(Piece::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(Piece::End) => return Poll::Ready(None),
                Ok(Piece::More) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
            if let Some(spliced) = self.poll_splice(cx) {
                return spliced;
            }
            match ready!(self.ex.conn.poll_fill(cx)) {
                Ok(0) => {
                    return Poll::Ready(match self.left.closed() {
                        Ok(()) => None,
                        Err(e) => Some(Err(e.into())),
                    });
                }
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    /// The connection, once the body has ended, when it may carry another
    /// request: the request went out whole, the response allowed it, and
    /// the backend sent nothing past the response. One that ended whole
    /// but may not be reused is closed normally; anything else is reset
    /// (see `Conn`'s drop).
    pub fn into_reusable(self) -> Option<Box<Conn>> {
        let Reading {
            ex,
            left,
            keep_alive,
            ..
        } = self;
        let whole = left.ended() && ex.uploaded();
        let mut conn = ex.conn;
        conn.clean = whole;
        (whole && keep_alive && conn.buf.is_empty()).then_some(conn)
    }
}
