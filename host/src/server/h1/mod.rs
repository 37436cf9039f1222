//! The server's own HTTP/1.1 loop: one task per client connection reads
//! each request head, runs the proxy on it and writes the response head and
//! body itself, without hyper's dispatcher between them. It answers the
//! common request (HTTP/1.1 keep-alive, no body, no upgrade); the first
//! other one (a body, an upgrade, HTTP/1.0, HTTP/2's preface, a malformed
//! head) hands the connection, with the bytes read ahead, to hyper's server
//! for the rest of its life, so every answer hyper gives (400, 414, 431,
//! 100-continue, bodies, upgrades, HTTP/2) stays hyper's.
//!
//! The loop reads and writes through the same `TrackedIo` hyper would, so
//! the driver (`server::conn::drive`) sees the same phases: the head wait
//! and its 408, the keep-alive, the write timeout and the drain.

mod encode;
mod parse;
mod rewind;
mod write;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

pub use parse::Limits;
use parse::Parsed;
pub use rewind::Rewind;

use super::conn::{ConnState, RequestGuard, Tracked, TrackedIo};
use crate::proxy::ProxyBody;
use crate::upstream::request_body::ClientBody;

/// The least spare room a read offers.
const READ_ROOM: usize = 4096;

/// The least spare room a read made while a request is answered offers.
const READ_AHEAD_ROOM: usize = 1024;

/// How the loop ended.
pub enum Ended<T> {
    /// The connection is done (closed by either side, or failed).
    Closed(Result<(), BoxError>),
    /// hyper takes over the stream with these bytes read ahead.
    HandOver(TrackedIo<T>, Bytes),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The loop's future, boxed: it holds the connection's buffers and its
/// request's future across awaits.
type Loop<'a, T> = Pin<Box<dyn Future<Output = Ended<T>> + Send + 'a>>;

/// hyper's connection after a hand-over.
type Hyper<'a, T, S> =
    Pin<Box<auto::UpgradeableConnection<'a, TokioIo<Rewind<TrackedIo<T>>>, S, TokioExecutor>>>;

/// The response the loop writes for each request it answers.
pub type Answer = Response<Tracked<ProxyBody>>;

/// One client connection: the own loop, then hyper's server if the loop
/// handed the connection over.
pub struct Conn<'a, T, S>
where
    S: hyper::service::HttpService<Incoming>,
{
    state: Arc<ConnState>,
    own: Option<Loop<'a, T>>,
    hyper: Option<Hyper<'a, T, S>>,
    builder: &'a auto::Builder<TokioExecutor>,
    service: Option<S>,
}

impl<'a, T, S, B> Conn<'a, T, S>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Unpin + Send + 'a,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serves `io` with `respond` for the requests the loop answers and
    /// with `service` under `builder` after a hand-over.
    pub fn new<R, F>(
        io: TrackedIo<T>,
        state: Arc<ConnState>,
        limits: Limits,
        respond: R,
        builder: &'a auto::Builder<TokioExecutor>,
        service: S,
    ) -> Self
    where
        R: Fn(Box<Request<ClientBody>>, RequestGuard) -> F + Send + 'a,
        F: Future<Output = Answer> + Send + 'a,
    {
        let own = Box::pin(serve(io, state.clone(), limits, respond));
        Self {
            state,
            own: Some(own),
            hyper: None,
            builder,
            service: Some(service),
        }
    }

    /// Closes once idle: after the response in progress (HTTP/1), or with
    /// hyper's graceful shutdown after a hand-over (HTTP/2: GOAWAY).
    pub fn graceful(self: Pin<&mut Self>) {
        let this = self.get_mut();
        this.state.close_when_idle();
        if let Some(h) = this.hyper.as_mut() {
            h.as_mut().graceful_shutdown();
        }
    }

    fn hand_over(&mut self, io: TrackedIo<T>, read: Bytes) -> Result<(), BoxError> {
        let service = self
            .service
            .take()
            .ok_or("the connection was handed to hyper twice")?;
        let io = TokioIo::new(Rewind::new(io, read));
        let mut conn = Box::pin(self.builder.serve_connection_with_upgrades(io, service));
        if self.state.closing() {
            conn.as_mut().graceful_shutdown();
        }
        self.hyper = Some(conn);
        Ok(())
    }
}

impl<'a, T, S, B> Future for Conn<'a, T, S>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Unpin + Send + 'a,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<(), BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(own) = this.own.as_mut() {
            match std::task::ready!(own.as_mut().poll(cx)) {
                Ended::Closed(result) => {
                    this.own = None;
                    return Poll::Ready(result);
                }
                Ended::HandOver(io, read) => {
                    this.own = None;
                    this.hand_over(io, read)?;
                }
            }
        }
        match this.hyper.as_mut() {
            Some(conn) => conn.as_mut().poll(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// The loop: reads a head, answers it, writes the response, again, until
/// the connection closes or a request is hyper's.
async fn serve<T, R, F>(
    mut io: TrackedIo<T>,
    state: Arc<ConnState>,
    limits: Limits,
    respond: R,
) -> Ended<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
    R: Fn(Box<Request<ClientBody>>, RequestGuard) -> F,
    F: Future<Output = Answer>,
{
    let mut buf = BytesMut::with_capacity(READ_ROOM);
    let mut spans = Vec::new();
    let mut head = Vec::with_capacity(512);
    loop {
        let (req, keep_alive) = loop {
            if !buf.is_empty() {
                match parse::parse(&mut buf, limits, &mut spans) {
                    Parsed::Request { req, keep_alive } => break (req, keep_alive),
                    Parsed::Partial => {}
                    Parsed::HandOver => return Ended::HandOver(io, buf.freeze()),
                }
            }
            match read(&mut io, &mut buf, &state).await {
                Ok(Read::Data) => {}
                // The client closed between requests, or the driver asked
                // to close while none was in progress.
                Ok(Read::Idle) => return Ended::Closed(shutdown(&mut io).await),
                // A head cut short: hyper reports it as it would have.
                Ok(Read::Eof) => return Ended::HandOver(io, buf.freeze()),
                Err(e) => return Ended::Closed(Err(e.into())),
            }
        };
        let method = req.method().clone();
        // Pinned where it is made: the request's future is some 1.8 KiB,
        // and moved into `unless_gone`'s it was copied once a request.
        let answered = std::pin::pin!(respond(req, state.begin()));
        let Some(resp) = unless_gone(&mut io, &mut buf, answered).await else {
            // The client left: the request's future is dropped, which
            // cancels its upstream exchange and logs it as 499.
            return Ended::Closed(Ok(()));
        };
        match write::send(&mut io, resp, &method, &mut head).await {
            Ok(last) if last || !keep_alive || state.closing() => {
                return Ended::Closed(shutdown(&mut io).await);
            }
            Ok(_) => {}
            Err(e) => return Ended::Closed(Err(e.into())),
        }
    }
}

/// `answered`'s output, or `None` when the client closes (or its socket
/// fails) first. As hyper's server does, the socket is read while the
/// answer is awaited only when nothing is read ahead: a pipelined request
/// waits in `buf` unread further.
async fn unless_gone<T, F>(
    io: &mut TrackedIo<T>,
    buf: &mut BytesMut,
    mut answered: Pin<&mut F>,
) -> Option<F::Output>
where
    T: AsyncRead + Unpin,
    F: Future,
{
    poll_fn(|cx| {
        if let Poll::Ready(out) = answered.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if buf.is_empty() {
            // The request being answered still shares the buffer's
            // allocation (its head's bytes), so a reserve here would
            // allocate a new buffer for every request: what the last head
            // left is enough to see a close or a pipelined head's start,
            // and `read` reclaims the whole buffer once the request is gone.
            if buf.capacity() < READ_AHEAD_ROOM {
                buf.reserve(READ_ROOM);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                // Read ahead: the next request's, parsed after this one.
                Poll::Ready(Ok(_)) | Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// What a read brought.
enum Read {
    /// Bytes.
    Data,
    /// Nothing, and no request is under way: the client closed, or the
    /// connection is to close.
    Idle,
    /// The end of the stream with part of a head read.
    Eof,
}

/// Reads more of the client's bytes into `buf`; between requests it
/// returns `Idle` once the driver asks the connection to close (the driver
/// polls the connection right after asking).
async fn read<T: AsyncRead + Unpin>(
    io: &mut TrackedIo<T>,
    buf: &mut BytesMut,
    state: &ConnState,
) -> std::io::Result<Read> {
    if buf.capacity() - buf.len() < READ_ROOM {
        buf.reserve(READ_ROOM);
    }
    let idle = buf.is_empty();
    let n = poll_fn(|cx| {
        if idle && state.closing() {
            return Poll::Ready(Ok(None));
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf).map_ok(Some)
    })
    .await?;
    Ok(match n {
        None => Read::Idle,
        Some(0) if idle => Read::Idle,
        Some(0) => Read::Eof,
        Some(_) => Read::Data,
    })
}

/// Ends the connection's writing side (under TLS, its close_notify).
async fn shutdown<T: AsyncWrite + Unpin>(io: &mut TrackedIo<T>) -> Result<(), BoxError> {
    poll_fn(|cx| Pin::new(&mut *io).poll_shutdown(cx)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    /// While a request is answered its head's bytes still share the read
    /// buffer; the read ahead made meanwhile goes into what the buffer has
    /// left, not into a new buffer each request.
    #[tokio::test]
    async fn the_read_ahead_while_a_request_is_answered_keeps_the_buffer() {
        let (mut client, server) = tokio::io::duplex(4096);
        let state = Arc::new(ConnState::default());
        let mut io = TrackedIo::new(server, state.clone());
        let mut buf = BytesMut::with_capacity(READ_ROOM);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
        let head = buf.split_to(buf.len()).freeze();
        let block = head.as_ptr() as usize..head.as_ptr() as usize + READ_ROOM;
        client.write_all(b"GET /next").await.unwrap();
        let answered = async {
            tokio::task::yield_now().await;
            "answer"
        };
        let out = unless_gone(&mut io, &mut buf, std::pin::pin!(answered)).await;
        assert_eq!(out, Some("answer"));
        assert_eq!(&buf[..], b"GET /next");
        assert!(
            block.contains(&(buf.as_ptr() as usize)),
            "the read ahead went into a new buffer"
        );
        // Once the request is gone the next read starts the buffer over.
        drop(head);
        let next = buf.split_to(buf.len()).freeze();
        drop(next);
        client.write_all(b" HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(matches!(
            read(&mut io, &mut buf, &state).await,
            Ok(Read::Data)
        ));
        assert_eq!(
            buf.as_ptr() as usize,
            block.start,
            "the buffer was not reclaimed"
        );
    }
}
