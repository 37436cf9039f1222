//! A connector wrapper that counts open connections per backend address, for
//! the pool gauges. hyper-util's pool exposes no statistics, so the count is
//! kept by the connections themselves: +1 when made, −1 when dropped.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::task::{Context, Poll};

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

/// The process's connection counts. Process-wide because pools outlive
/// generations and are shared by every domain with the same pool profile.
pub fn connection_counts() -> &'static ConnectionCounts {
    static COUNTS: std::sync::OnceLock<ConnectionCounts> = std::sync::OnceLock::new();
    COUNTS.get_or_init(ConnectionCounts::default)
}

/// Open connections by `host:port`.
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    by_authority: RwLock<HashMap<String, Arc<AtomicU64>>>,
}

impl ConnectionCounts {
    fn slot(&self, authority: &str) -> Arc<AtomicU64> {
        if let Some(c) = self
            .by_authority
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(authority)
        {
            return c.clone();
        }
        self.by_authority
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(authority.to_owned())
            .or_default()
            .clone()
    }

    /// Open connections to `authority` now.
    pub fn open(&self, authority: &str) -> u64 {
        self.by_authority
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(authority)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// Wraps connector `C`, counting what it opens into [`connection_counts`].
#[derive(Debug, Clone)]
pub struct Counting<C> {
    inner: C,
}

impl<C> Counting<C> {
    /// Counts connections made by `inner`.
    pub fn new(inner: C) -> Self {
        Self { inner }
    }
}

impl<C> tower_service::Service<Uri> for Counting<C>
where
    C: tower_service::Service<Uri> + Send,
    C::Future: Send + 'static,
{
    type Response = Counted<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let io = connecting.await?;
            let count = connection_counts().slot(&authority);
            count.fetch_add(1, Ordering::Relaxed);
            Ok(Counted { io, count })
        })
    }
}

/// A connection that decrements its backend's count when dropped.
#[derive(Debug)]
pub struct Counted<T> {
    io: T,
    count: Arc<AtomicU64>,
}

impl<T> Counted<T> {
    /// The connection it counts.
    pub fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T> Drop for Counted<T> {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T: Connection> Connection for Counted<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: Read + Unpin> Read for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: Write + Unpin> Write for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}
