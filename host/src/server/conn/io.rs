//! The client socket: [`SharedTcp`] reads what recent reads needed and is
//! shared with the driver (for the 408); [`TrackedIo`] tells the
//! connection's state when bytes arrive and when writes stall or progress.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::ConnState;

/// The most a client read asks the kernel for (see `SharedTcp`).
const READ_CHUNK: usize = 16 * 1024;
/// The least: a request head of a typical client fits.
const MIN_READ: usize = 2 * 1024;

/// A TCP stream shared between hyper (through [`TrackedIo`]) and the
/// driver, which writes the 408 after hyper has let go of the connection.
#[derive(Debug, Clone)]
pub struct SharedTcp {
    tcp: Arc<TcpStream>,
    /// What the next read offers the kernel: doubled after a read that
    /// filled it, halved after one that used under a quarter.
    offer: usize,
}

impl SharedTcp {
    /// Wraps `tcp`, shared with whoever else needs the socket.
    pub fn new(tcp: Arc<TcpStream>) -> Self {
        Self {
            tcp,
            offer: MIN_READ,
        }
    }

    /// The next read's size after one that read `n` of `offered` bytes.
    fn adapt(offer: usize, n: usize) -> usize {
        if n == offer {
            (offer * 2).min(READ_CHUNK)
        } else if n < offer / 4 {
            (offer / 2).max(MIN_READ)
        } else {
            offer
        }
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // hyper hands over its whole spare buffer, uninitialised, on every
        // read, and a safe read must zero what it offers the kernel (memset
        // was 4 % of the proxy's CPU with a fixed 16 KiB): offer what recent
        // reads needed, growing while reads fill it (uploads), so a small
        // request does not pay for zeroing a large buffer each time.
        let offer = buf.remaining().min(self.offer);
        loop {
            ready!(self.tcp.poll_read_ready(cx))?;
            match self.tcp.try_read(buf.initialize_unfilled_to(offer)) {
                Ok(n) => {
                    buf.advance(n);
                    let this = self.get_mut();
                    // Only a read that hyper's buffer did not cut short says
                    // something about what the client sends.
                    if offer == this.offer {
                        this.offer = Self::adapt(offer, n);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            match self.tcp.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(&*self.tcp).shutdown(std::net::Shutdown::Write))
    }
}

/// A client socket that tells [`ConnState`] when bytes arrive.
#[derive(Debug)]
pub struct TrackedIo<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> TrackedIo<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, state: Arc<ConnState>) -> Self {
        Self { inner, state }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.state.on_read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T> TrackedIo<T> {
    fn wrote(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Pending => self.state.on_write_blocked(),
            Poll::Ready(Ok(n)) if *n > 0 => self.state.on_written(*n),
            Poll::Ready(_) => {}
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, data);
        this.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    /// hyper and h2 flush only once their buffers are written, so a
    /// finished flush is progress (under TLS it writes the last records).
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        match polled {
            Poll::Pending => this.state.on_write_blocked(),
            Poll::Ready(Ok(())) => this.state.on_write_progress(),
            Poll::Ready(Err(_)) => {}
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        if polled.is_pending() {
            this.state.on_write_blocked();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offer_what_recent_reads_needed() {
        // Small heads keep the offer at the floor.
        assert_eq!(SharedTcp::adapt(MIN_READ, 300), MIN_READ);
        // A read that fills the offer doubles it, up to the cap.
        let mut offer = MIN_READ;
        for _ in 0..10 {
            offer = SharedTcp::adapt(offer, offer);
        }
        assert_eq!(offer, READ_CHUNK);
        // Back to small requests: halved per short read, down to the floor.
        assert_eq!(SharedTcp::adapt(READ_CHUNK, 100), READ_CHUNK / 2);
        for _ in 0..10 {
            offer = SharedTcp::adapt(offer, 100);
        }
        assert_eq!(offer, MIN_READ);
        // A read between a quarter and all of the offer keeps it.
        assert_eq!(SharedTcp::adapt(8192, 4096), 8192);
    }
}
