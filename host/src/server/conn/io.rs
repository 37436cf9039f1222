//! The client socket: [`SharedTcp`] reads what recent reads needed and is
//! shared with the driver (for the 408); [`TrackedIo`] tells the
//! connection's state when bytes arrive and when writes stall or progress.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::ConnState;
use crate::splice::SpliceTarget;

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
    /// Where spliced response body pieces wait (plain HTTP/1).
    splice: Option<SpliceTarget>,
}

impl SharedTcp {
    /// Wraps `tcp`, shared with whoever else needs the socket.
    pub fn new(tcp: Arc<TcpStream>) -> Self {
        Self {
            tcp,
            offer: MIN_READ,
            splice: None,
        }
    }

    /// Writes the pieces of `splice` where their holes are.
    pub fn splicing(mut self, splice: SpliceTarget) -> Self {
        self.splice = Some(splice);
        self
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
            match read_draining(&self.tcp, buf.initialize_unfilled_to(offer)) {
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

/// One read of `tcp` into `dst`. A read that returns less than `dst` holds
/// has emptied the socket's receive queue, so the socket's readiness is
/// cleared with it, as tokio's own `TcpStream` reads do: otherwise the next
/// read (hyper's, for the next request on a keep-alive connection) is a
/// `recvfrom` that fails with EAGAIN, one wasted syscall per request. The
/// readiness is cleared inside `try_io` with the event seen before the
/// read, so data that arrived since still wakes the connection.
fn read_draining(tcp: &TcpStream, dst: &mut [u8]) -> io::Result<usize> {
    let len = dst.len();
    let mut short = None;
    let read = tcp.try_io(Interest::READABLE, || {
        let n = crate::rawio::recv(tcp, dst)?;
        if n > 0 && n < len {
            // WouldBlock makes `try_io` clear the readiness; the bytes are
            // handed back below.
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match (read, short) {
        (_, Some(n)) => Ok(n),
        (read, None) => read,
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(splice) = &self.splice
            && let Some(polled) = splice.poll_write(cx, &self.tcp, &[io::IoSlice::new(data)])
        {
            return polled;
        }
        crate::rawio::poll_writev(&self.tcp, cx, &[io::IoSlice::new(data)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(splice) = &self.splice
            && let Some(polled) = splice.poll_write(cx, &self.tcp, bufs)
        {
            return polled;
        }
        crate::rawio::poll_writev(&self.tcp, cx, bufs)
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_short_read_clears_readiness_so_the_next_read_waits_without_a_syscall() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let tcp = Arc::new(listener.accept().await.unwrap().0);
        let mut shared = SharedTcp::new(tcp.clone());
        peer.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = shared.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        // Readiness is clear: tokio answers WouldBlock without reading.
        let mut called = false;
        let probe = tcp.try_io(tokio::io::Interest::READABLE, || {
            called = true;
            Ok(())
        });
        assert_eq!(probe.unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(
            !called,
            "the socket was still marked readable after a short read"
        );
        // And new data still wakes the reader.
        peer.write_all(b"more").await.unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), shared.read(&mut buf))
            .await
            .expect("the next bytes wake the reader")
            .unwrap();
        assert_eq!(&buf[..n], b"more");
        // A read that fills the buffer leaves readiness alone (more may wait).
        peer.write_all(&[b'x'; 64]).await.unwrap();
        let mut small = [0u8; 16];
        tokio::time::timeout(std::time::Duration::from_secs(5), tcp.readable())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_draining(&tcp, &mut small).unwrap(), 16);
        assert_eq!(read_draining(&tcp, &mut [0u8; 128]).unwrap(), 48);
        // End of stream is a read of 0, not a cleared readiness.
        drop(peer);
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), shared.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 0);
    }

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
