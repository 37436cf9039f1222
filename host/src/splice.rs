//! Response bodies moved from a backend's socket to a client's without
//! passing through the proxy's memory: `splice(2)` from the backend socket
//! into a pipe, and from the pipe into the client socket, as HAProxy's
//! `option splice-response` does. The kernel hands the pages on instead of
//! copying them out to the proxy and back in: on a 64 KiB response that was
//! two 64 KiB copies a request, most of the proxy's `recvfrom` and a good
//! part of its `writev` (bench/README.md).
//!
//! The body still goes through the server's HTTP/1 writer (its own loop's,
//! `server::h1::write`, or hyper's after a hand-over), which frames it and
//! writes it in order with the head: the piece that lies in the pipe is
//! handed to the writer as a *hole*, a slice of [`HOLE`] as long as the
//! piece. Both writers pass body pieces on without copying them (hyper's
//! vectored write strategy, which the server sets for these connections),
//! so the hole reaches the client socket's `poll_write_vectored` as the
//! same pointer;
//! there [`SpliceTarget::poll_drain`] splices the pipe's bytes where the
//! hole's would have gone. Only plain HTTP/1 connections get a target (TLS
//! must encrypt the bytes; HTTP/2 copies them into frames), and only plain
//! backends' bodies: a `Content-Length` body, or the data of a large chunk
//! (the size lines and chunk ends between are read and checked as ever).
//!
//! A connection has at most one piece in its pipe: the body waits until the
//! socket has taken it before it splices the next, so a client that stops
//! reading holds one pipe's worth (64 KiB of the kernel's pages), as the
//! copying path holds its read buffers.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The most one splice moves: a pipe's default capacity (16 pages).
pub const HOLE_LEN: usize = 64 * 1024;

/// What a piece in the pipe looks like to hyper: never written anywhere, only
/// recognised by its address (see the module's comment).
static HOLE: [u8; HOLE_LEN] = [0; HOLE_LEN];

/// Set when `splice(2)` turned out not to work here (a sandbox that
/// forbids it, a kernel without it): no body is spliced again.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Whether `splice(2)` failing with `e` says it cannot work here, rather
/// than that this connection failed.
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Unsupported | io::ErrorKind::InvalidInput | io::ErrorKind::PermissionDenied
    )
}

/// Idle pipes a worker keeps for the next spliced body; more are closed.
const POOLED_PIPES: usize = 32;

thread_local! {
    static PIPES: std::cell::RefCell<Vec<Pipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A pipe, both ends non-blocking.
#[derive(Debug)]
struct Pipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
}

impl Pipe {
    /// One from this worker's pool, or a new one (`None`: the system has
    /// none to give, and the body is copied instead).
    fn take() -> Option<Pipe> {
        if UNSUPPORTED.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
            return Some(p);
        }
        if !cfg!(any(target_os = "linux", target_os = "android")) {
            return None;
        }
        use rustix::pipe::{PipeFlags, pipe_with};
        let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK).ok()?;
        Some(Pipe { read, write })
    }

    /// Back to the pool; only an empty pipe may be given back.
    fn give_back(self) {
        PIPES.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOLED_PIPES {
                p.push(self);
            }
        });
    }
}

/// The state of one connection's pipe.
#[derive(Debug, Default)]
struct Slot {
    /// The pipe while it holds a piece.
    pipe: Option<Pipe>,
    /// Bytes in the pipe the client socket has not taken.
    held: usize,
    /// The body waiting for the pipe to empty.
    waker: Option<Waker>,
}

/// Where a client connection's spliced body pieces wait between the
/// backend's socket and its own: shared by the connection's socket (which
/// drains it) and the response body being read (which fills it).
#[derive(Debug, Clone, Default)]
pub struct SpliceTarget(Arc<Mutex<Slot>>);

/// What [`SpliceTarget::poll_fill`] got.
#[derive(Debug)]
pub enum Filled {
    /// A piece of this many bytes is in the pipe: hand hyper this hole.
    Piece(Bytes),
    /// The backend closed its side.
    Eof,
    /// No pipe could be had: read and copy this body instead.
    Unavailable,
}

impl SpliceTarget {
    /// A target of its own, for one client connection.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self) -> io::Result<std::sync::MutexGuard<'_, Slot>> {
        self.0
            .lock()
            .map_err(|_| io::Error::other("a splice slot's lock was poisoned"))
    }

    /// Whether a piece waits in the pipe for the client socket.
    pub fn holds(&self) -> bool {
        self.0.lock().is_ok_and(|s| s.held > 0)
    }

    /// Moves up to `max` bytes from `backend` into the pipe, once the
    /// previous piece has gone to the client.
    pub fn poll_fill(
        &self,
        cx: &mut Context<'_>,
        backend: &TcpStream,
        max: u64,
    ) -> Poll<io::Result<Filled>> {
        let mut slot = self.slot()?;
        if slot.held > 0 {
            slot.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if slot.pipe.is_none() {
            match Pipe::take() {
                Some(p) => slot.pipe = Some(p),
                None => return Poll::Ready(Ok(Filled::Unavailable)),
            }
        }
        let len = usize::try_from(max).unwrap_or(HOLE_LEN).min(HOLE_LEN);
        let Some(pipe) = &slot.pipe else {
            return Poll::Ready(Ok(Filled::Unavailable));
        };
        let n = loop {
            ready!(backend.poll_read_ready(cx))?;
            // An empty pipe takes at least one page, so WouldBlock can only
            // mean the socket has nothing: `try_io` clears its readiness.
            match backend.try_io(Interest::READABLE, || splice(backend, &pipe.write, len)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // Nothing moved: the body can still be read and copied.
                Err(e) if unsupported(&e) => {
                    if !UNSUPPORTED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "splice(2) failed ({e}): response bodies are copied from now on"
                        );
                    }
                    return Poll::Ready(Ok(Filled::Unavailable));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        if n == 0 {
            if let Some(p) = slot.pipe.take() {
                p.give_back();
            }
            return Poll::Ready(Ok(Filled::Eof));
        }
        slot.held = n;
        Poll::Ready(Ok(Filled::Piece(Bytes::from_static(&HOLE[..n]))))
    }

    /// Writes `bufs` to `client`, the pipe's piece where a hole is: the
    /// slices before the first hole, then the hole's bytes from the pipe.
    /// `None` when `bufs` holds no hole (an ordinary write).
    pub fn poll_write(
        &self,
        cx: &mut Context<'_>,
        client: &TcpStream,
        bufs: &[io::IoSlice<'_>],
    ) -> Option<Poll<io::Result<usize>>> {
        let at = bufs.iter().position(|b| is_hole(b))?;
        let before = &bufs[..at];
        let total: usize = before.iter().map(|b| b.len()).sum();
        let mut written = 0;
        if total > 0 {
            written = loop {
                match client.poll_write_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                    Poll::Pending => return Some(Poll::Pending),
                }
                // More follows at once: the kernel holds these bytes for
                // the pipe's, one segment and one wake-up of the client
                // for both.
                match client.try_io(Interest::WRITABLE, || send_more(client, before)) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Some(Poll::Ready(Err(e))),
                }
            };
            if written < total {
                return Some(Poll::Ready(Ok(written)));
            }
        }
        match self.poll_drain(cx, client, bufs[at].len()) {
            Poll::Ready(Ok(n)) => Some(Poll::Ready(Ok(written + n))),
            Poll::Ready(Err(e)) => Some(Poll::Ready(Err(e))),
            Poll::Pending if written > 0 => Some(Poll::Ready(Ok(written))),
            Poll::Pending => Some(Poll::Pending),
        }
    }

    /// Splices the pipe's piece into `client`, of which `hole` bytes are
    /// still to go (hyper's count, which must be the pipe's).
    fn poll_drain(
        &self,
        cx: &mut Context<'_>,
        client: &TcpStream,
        hole: usize,
    ) -> Poll<io::Result<usize>> {
        let mut slot = self.slot()?;
        let Some(pipe) = &slot.pipe else {
            return Poll::Ready(Err(io::Error::other(
                "a spliced body piece has no pipe behind it",
            )));
        };
        if hole != slot.held {
            return Poll::Ready(Err(io::Error::other(format!(
                "a spliced body piece of {hole} bytes, but the pipe holds {}",
                slot.held
            ))));
        }
        let n = loop {
            ready!(client.poll_write_ready(cx))?;
            match client.try_io(Interest::WRITABLE, || splice(&pipe.read, client, hole)) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        slot.held -= n;
        if slot.held == 0 {
            if let Some(p) = slot.pipe.take() {
                p.give_back();
            }
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
        Poll::Ready(Ok(n))
    }
}

/// Whether `buf` is (part of) a hole: a piece that lies in the pipe.
pub fn is_hole(buf: &[u8]) -> bool {
    let start = HOLE.as_ptr() as usize;
    let at = buf.as_ptr() as usize;
    !buf.is_empty() && at >= start && at + buf.len() <= start + HOLE_LEN
}

/// `bufs` written with `MSG_MORE`.
fn send_more(client: &TcpStream, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg};
    sendmsg(
        client,
        bufs,
        &mut SendAncillaryBuffer::default(),
        SendFlags::MORE | SendFlags::NOSIGNAL,
    )
    .map_err(io::Error::from)
}

/// One non-blocking `splice(2)` of up to `len` bytes.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn splice(
    from: impl std::os::fd::AsFd,
    to: impl std::os::fd::AsFd,
    len: usize,
) -> io::Result<usize> {
    use rustix::pipe::SpliceFlags;
    let flags = SpliceFlags::NONBLOCK | SpliceFlags::MOVE;
    rustix::pipe::splice(from, None, to, None, len, flags).map_err(io::Error::from)
}

/// No `splice(2)` here: [`Pipe::take`] gives none, so this is never called.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn splice(_: impl std::os::fd::AsFd, _: impl std::os::fd::AsFd, _: usize) -> io::Result<usize> {
    Err(io::ErrorKind::Unsupported.into())
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use std::future::poll_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Both ends of a loopback TCP connection.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (far, _) = listener.accept().await.unwrap();
        (near, far)
    }

    /// The next piece `target` splices from `backend`, at most `max`.
    async fn fill(target: &SpliceTarget, backend: &TcpStream, max: u64) -> Bytes {
        match poll_fn(|cx| target.poll_fill(cx, backend, max))
            .await
            .unwrap()
        {
            Filled::Piece(hole) => hole,
            other => panic!("nothing spliced: {other:?}"),
        }
    }

    /// Writes `head`, then `hole`'s piece, through `target` to `client`,
    /// however many writes it takes; the pipe is empty after.
    async fn write_through(target: &SpliceTarget, client: &TcpStream, head: &[u8], hole: &[u8]) {
        let mut written = 0;
        while written < head.len() + hole.len() {
            let rest = [
                io::IoSlice::new(&head[written.min(head.len())..]),
                io::IoSlice::new(&hole[written.saturating_sub(head.len())..]),
            ];
            let bufs: Vec<_> = rest.into_iter().filter(|b| !b.is_empty()).collect();
            written += poll_fn(|cx| target.poll_write(cx, client, &bufs).unwrap())
                .await
                .unwrap();
        }
        assert!(!target.holds());
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// A piece splices from the backend socket into the pipe, and from the
    /// pipe into the client socket where its hole is, after the slices
    /// before it; the next piece waits until the pipe is empty.
    #[tokio::test]
    async fn a_piece_moves_from_socket_to_socket_where_its_hole_is() {
        let (backend, mut origin) = pair().await;
        let (client, mut reader) = pair().await;
        let sent = data(100_000);
        origin.write_all(&sent).await.unwrap();
        let target = SpliceTarget::new();
        let hole = fill(&target, &backend, 100_000).await;
        let n = hole.len();
        assert!(n > 0 && n <= HOLE_LEN);
        assert!(is_hole(&hole) && target.holds());
        // The pipe holds a piece: the next waits.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(target.poll_fill(&mut cx, &backend, 100_000).is_pending());

        let mut out = b"head ".to_vec();
        write_through(&target, &client, &out, &hole).await;
        let mut got = vec![0u8; 5 + n];
        reader.read_exact(&mut got).await.unwrap();
        out.extend_from_slice(&sent[..n]);
        assert!(got == out, "the client got other bytes");
        // Emptied: the next piece comes, and it is the next bytes.
        let next = fill(&target, &backend, 100_000).await;
        let m = next.len();
        write_through(&target, &client, b"", &next).await;
        let mut got = vec![0u8; m];
        reader.read_exact(&mut got).await.unwrap();
        assert!(got == sent[n..n + m]);
    }

    /// hyper's count of a hole's bytes and the pipe's must agree: a hole
    /// of another length fails the write instead of sending other bytes.
    #[tokio::test]
    async fn a_hole_that_does_not_match_the_pipe_fails_the_write() {
        let (backend, mut origin) = pair().await;
        let (client, _reader) = pair().await;
        origin.write_all(&data(1000)).await.unwrap();
        let target = SpliceTarget::new();
        let hole = fill(&target, &backend, 1000).await;
        let short = &hole[1..];
        let err = poll_fn(|cx| {
            target
                .poll_write(cx, &client, &[io::IoSlice::new(short)])
                .unwrap()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("the pipe holds"), "{err}");
        // A write without a hole is not the target's.
        let mut cx = Context::from_waker(Waker::noop());
        assert!(
            target
                .poll_write(&mut cx, &client, &[io::IoSlice::new(b"x")])
                .is_none()
        );
    }

    /// The backend's close is the end, not an empty piece.
    #[tokio::test]
    async fn a_closed_backend_is_the_end() {
        let (backend, origin) = pair().await;
        drop(origin);
        let target = SpliceTarget::new();
        let filled = poll_fn(|cx| target.poll_fill(cx, &backend, 1000))
            .await
            .unwrap();
        assert!(matches!(filled, Filled::Eof), "{filled:?}");
        assert!(!target.holds());
    }

    /// A kernel or sandbox without `splice(2)` (ENOSYS, EINVAL, EPERM)
    /// means copying instead; a connection's own failure is its error.
    #[test]
    fn only_an_unusable_splice_falls_back_to_copying() {
        use rustix::io::Errno;
        for e in [Errno::NOSYS, Errno::INVAL, Errno::PERM, Errno::OPNOTSUPP] {
            assert!(unsupported(&io::Error::from(e)), "{e:?}");
        }
        for e in [Errno::CONNRESET, Errno::PIPE, Errno::NOMEM] {
            assert!(!unsupported(&io::Error::from(e)), "{e:?}");
        }
    }

    #[test]
    fn only_slices_of_the_hole_are_holes() {
        assert!(is_hole(&HOLE[..]));
        assert!(is_hole(&HOLE[100..200]));
        assert!(!is_hole(&HOLE[..0]));
        let other = vec![0u8; 16];
        assert!(!is_hole(&other));
    }
}
