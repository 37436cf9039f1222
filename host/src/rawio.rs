//! The hot path's socket reads and writes as direct system calls (rustix),
//! not through glibc. In a process with more than one thread (the reload
//! and ticker threads make this one so), glibc wraps `recv` and `writev`
//! in the thread-cancellation bookkeeping of POSIX cancellation points
//! (`__pthread_enable_asynccancel` and its pair), which nothing here uses:
//! about 0.17 µs of every proxied HTTP/1.1 request's 13 (bench/README.md,
//! 2026-12-07). Callers keep tokio's readiness handling (`try_io`): only
//! the call itself changes, with the same arguments and errors.

use std::io;
use std::os::fd::AsFd;
use std::task::{Context, Poll, ready};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// `recv(2)` into `dst`, no flags: the bytes read.
pub fn recv(fd: impl AsFd, dst: &mut [u8]) -> io::Result<usize> {
    // rustix also gives the datagram's full length, the same for a stream.
    let (read, _) = rustix::net::recv(fd, dst, rustix::net::RecvFlags::empty())?;
    Ok(read)
}

/// `writev(2)` of `bufs`.
pub fn writev(fd: impl AsFd, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
    rustix::io::writev(fd, bufs).map_err(io::Error::from)
}

/// Writes `bufs` to `tcp` with one [`writev`], when tokio says the socket
/// takes data, as its `TcpStream::poll_write_vectored` does.
pub fn poll_writev(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        match tcp.try_io(Interest::WRITABLE, || writev(tcp, bufs)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return Poll::Ready(other),
        }
    }
}
