//! One backend connection of the HTTP/1.1 path: the socket (plain or TLS),
//! the bytes read from it and not yet taken, and the bytes queued to be
//! written. It has no task of its own: whoever holds it (the request's
//! task sending, then the response body being read) drives it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::Uri;
use hyper::rt::Write;
use hyper_util::rt::TokioIo;
use tower_service::Service;

use super::super::connector::Counted;
use crate::tls::backend::BackendConnector;

/// The connection under the codec.
pub type Io = Counted<<BackendConnector as Service<Uri>>::Response>;

/// The first read buffer; a read that fills it doubles the next, up to
/// the pool's limit (`UPSTREAM_READ_BUFFER`: larger reads cost a stalled
/// client's response more memory), so a large body comes in large reads.
const FIRST_READ: usize = 8 * 1024;
/// Below this much free space, the buffer grows before a read.
const MIN_SPARE: usize = 2 * 1024;

/// A backend connection.
pub struct Conn {
    io: TokioIo<Io>,
    /// Read and not yet taken: a response head being parsed, body bytes
    /// not yet handed on. Taken pieces leave as slices of it (no copies).
    pub buf: BytesMut,
    read_size: usize,
    max_read: usize,
    /// Queued to be written: `ctl[ctl_at..]`, then `data`, then `tail`
    /// (a head; or a chunk's size line, its data and its CR LF).
    ctl: Vec<u8>,
    ctl_at: usize,
    data: Bytes,
    tail: &'static [u8],
    /// Whether the last exchange ended with both messages complete; a
    /// connection dropped otherwise is reset (see the drop).
    pub clean: bool,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.buf.len())
            .field("clean", &self.clean)
            .finish()
    }
}

impl Drop for Conn {
    /// A connection dropped in the middle of an exchange (the response
    /// given up at a timeout, its body dropped unread, an error) is reset,
    /// not closed: a backend streaming to a full window would otherwise
    /// learn of the close only from a zero-window probe, backed off to
    /// seconds, and go on producing a response nobody reads (HAProxy's
    /// `nolinger` on an abort does the same). A closed socket that still
    /// holds unread data is reset by the kernel anyway; this covers the
    /// one whose receive queue happened to be empty. A connection whose
    /// exchange ended cleanly closes normally.
    fn drop(&mut self) {
        if !self.clean {
            let _ = socket2::SockRef::from(tcp(self.io.inner().get_ref()))
                .set_linger(Some(Duration::ZERO));
        }
    }
}

/// The TCP socket under a backend connection, plain or TLS.
fn tcp(io: &<BackendConnector as Service<Uri>>::Response) -> &tokio::net::TcpStream {
    match io {
        hyper_rustls::MaybeHttpsStream::Http(io) => io.inner(),
        hyper_rustls::MaybeHttpsStream::Https(tls) => tls.inner().get_ref().0.inner().inner(),
    }
}

/// The TCP socket of a plain (not TLS) backend connection, written to
/// directly (see `crate::rawio`).
fn plain(io: &<BackendConnector as Service<Uri>>::Response) -> Option<&tokio::net::TcpStream> {
    match io {
        hyper_rustls::MaybeHttpsStream::Http(io) => Some(io.inner()),
        hyper_rustls::MaybeHttpsStream::Https(_) => None,
    }
}

impl Conn {
    /// A new connection, between exchanges, reading at most `max_read`
    /// at once.
    pub fn new(io: Io, max_read: usize) -> Self {
        Self {
            io: TokioIo::new(io),
            buf: BytesMut::new(),
            read_size: FIRST_READ.min(max_read),
            max_read,
            ctl: Vec::new(),
            ctl_at: 0,
            data: Bytes::new(),
            tail: b"",
            clean: true,
        }
    }

    /// The socket, when the connection is plain TCP (not TLS).
    pub fn plain_tcp(&self) -> Option<&tokio::net::TcpStream> {
        match self.io.inner().get_ref() {
            hyper_rustls::MaybeHttpsStream::Http(io) => Some(io.inner()),
            hyper_rustls::MaybeHttpsStream::Https(_) => None,
        }
    }

    /// Reads what the socket has into `buf`: the number of bytes, zero when
    /// the backend has closed.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let spare = self.buf.capacity() - self.buf.len();
        if spare < MIN_SPARE.min(self.read_size) {
            self.buf.reserve(self.read_size);
        }
        let spare = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if n == spare && self.read_size < self.max_read {
            self.read_size = (self.read_size * 2).min(self.max_read);
        }
        Poll::Ready(Ok(n))
    }

    /// Whether it can take a request: nothing read from it is waiting and
    /// the backend has neither closed it nor sent anything since. Asked
    /// without waiting (a socket with nothing to read costs no system
    /// call: tokio remembers that its last read drained it).
    pub fn idle_and_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_fill(&mut cx).is_pending()
    }

    /// The buffer the next head is written into (cleared by the writer;
    /// kept from one request to the next, so a head costs no allocation).
    pub fn head_buf(&mut self) -> &mut Vec<u8> {
        &mut self.ctl
    }

    /// Queues the head written into [`head_buf`](Self::head_buf).
    pub fn queue_head(&mut self) {
        self.ctl_at = 0;
        self.data = Bytes::new();
        self.tail = b"";
    }

    /// Queues the head written into [`head_buf`](Self::head_buf) and the
    /// body's first piece behind it (one write for both, as hyper's client
    /// did with a body that was there already).
    pub fn queue_head_with(&mut self, data: Bytes, chunked: bool) {
        self.ctl_at = 0;
        if chunked {
            self.ctl
                .extend_from_slice(super::chunked::SizeLine::new(data.len()).as_bytes());
            self.tail = b"\r\n";
        } else {
            self.tail = b"";
        }
        self.data = data;
    }

    /// Queues one piece of a request body: `data` alone, or as a chunk.
    pub fn queue_data(&mut self, data: Bytes, chunked: bool) {
        self.ctl.clear();
        self.queue_head_with(data, chunked);
    }

    /// Queues the last chunk of a chunked body.
    pub fn queue_last_chunk(&mut self) {
        self.ctl.clear();
        self.ctl.extend_from_slice(b"0\r\n\r\n");
        self.ctl_at = 0;
        self.data = Bytes::new();
        self.tail = b"";
    }

    /// Whether everything queued has been written.
    pub fn flushed(&self) -> bool {
        self.ctl_at == self.ctl.len() && self.data.is_empty() && self.tail.is_empty()
    }

    /// Writes what is queued, in one `writev` when the socket takes it.
    pub fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.flushed() {
            let slices = [
                io::IoSlice::new(&self.ctl[self.ctl_at..]),
                io::IoSlice::new(&self.data),
                io::IoSlice::new(self.tail),
            ];
            let mut n = match plain(self.io.inner().get_ref()) {
                Some(tcp) => ready!(crate::rawio::poll_writev(tcp, cx, &slices))?,
                None => ready!(Pin::new(self.io.inner_mut()).poll_write_vectored(cx, &slices))?,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let ctl = (self.ctl.len() - self.ctl_at).min(n);
            self.ctl_at += ctl;
            n -= ctl;
            let data = self.data.len().min(n);
            self.data.advance(data);
            n -= data;
            self.tail = &self.tail[n.min(self.tail.len())..];
        }
        // TLS keeps records it could not write yet until flushed.
        Pin::new(self.io.inner_mut()).poll_flush(cx)
    }
}
