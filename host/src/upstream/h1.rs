//! The HTTP/1.1 upstream path a request's own task drives. A connection
//! checked out of its worker's pool is written and read by the task that
//! sends the request, and then by whoever polls the response body: no
//! connection task of its own and no wake-up of a second task per request,
//! which hyper-util's pooled client costs (bench/README.md: 7.6 % of the
//! proxy's CPU under the h1 load, plus that task's polling). hyper's
//! `client::conn::http1` is the codec; its `Connection` future is polled
//! here instead of spawned, so both ends of hyper's request channel are
//! polled by the same task.
//!
//! A connection goes back to the pool only once its response body has
//! ended and hyper's dispatcher is ready for another request (framing
//! ended cleanly, no `Connection: close`, the request body fully written);
//! anything else (a body dropped early, a parse or framing error, an early
//! close) drops it, with a reset when it is mid-exchange (`Conn`'s drop).
//! An idle connection has no task polling it, so a backend's close is
//! seen by the pool's sweeper (within a second; it also ends those idle
//! past `pool.idle_timeout`), or when the next request is about to be
//! written on it: hyper reads a waiting connection before it
//! writes and hands the request back unsent, and [`send`] puts it on a new
//! connection.
//!
//! Upgrades (a 101 hands the connection over to a tunnel) and HTTP/2
//! backends keep hyper-util's client (`pool.rs`).

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, Connection, SendRequest};
use tower_service::Service;

use super::BackendState;
use super::connector::{Counted, Counting};
use super::request_body::RequestBody;
use crate::clock;
use crate::tls::backend::BackendConnector;

type Io = Counted<<BackendConnector as Service<Uri>>::Response>;

/// Why an exchange failed, as the caller classifies it.
#[derive(Debug)]
pub struct Failed {
    /// No connection could be made (nothing was sent).
    pub connect: bool,
    /// The cause.
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

/// One worker's idle HTTP/1.1 connections of one pool profile, by backend.
pub struct H1Pool {
    idle: Mutex<Idle>,
    connector: Counting<BackendConnector>,
    builder: Builder,
    max_idle: usize,
    /// Zero: kept until the backend closes it.
    idle_timeout: Duration,
}

impl std::fmt::Debug for H1Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Pool")
            .field("idle", &self.lock().count())
            .field("max_idle", &self.max_idle)
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

#[derive(Default)]
struct Idle {
    /// By the backend's base URL; the last one in is the first out (its
    /// buffers and socket are the warmest).
    by_backend: HashMap<String, Vec<Parked>>,
    /// Whether a sweeper task is running.
    sweeping: bool,
}

impl Idle {
    fn count(&self) -> usize {
        self.by_backend.values().map(Vec::len).sum()
    }
}

struct Parked {
    /// Boxed: hyper's connection state is about a kilobyte, and a
    /// connection moves from the pool to a request to its body and back.
    conn: Box<Conn>,
    /// `clock::monotonic_ms` when it was checked in.
    since_ms: u64,
}

/// One connection: hyper's request handle and the connection future that
/// does its reading and writing whenever it is polled.
struct Conn {
    sender: SendRequest<RequestBody>,
    /// `None` once it has finished (closed by either side, or failed).
    /// Dropped then, not kept: hyper hands back a request still queued on
    /// it only when it is dropped, and until then that request's response
    /// would wait for nothing.
    conn: Option<Connection<Io, RequestBody>>,
}

impl Drop for Conn {
    /// A connection dropped in the middle of an exchange (the response
    /// given up at a timeout, its body dropped unread, an error) is reset,
    /// not closed: a backend streaming to a full window would otherwise
    /// learn of the close only from a zero-window probe, backed off to
    /// seconds, and go on producing a response nobody reads (HAProxy's
    /// `nolinger` on an abort does the same). A closed socket that still
    /// holds unread data is reset by the kernel anyway; this covers the
    /// one whose receive queue happened to be empty. A connection that
    /// ended cleanly (waiting for a request) closes normally.
    fn drop(&mut self) {
        if !self.sender.is_ready()
            && let Some(conn) = self.conn.take()
        {
            let _ = socket2::SockRef::from(tcp(conn.into_parts().io.get_ref()))
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

impl Conn {
    /// Lets the connection read and write what it can; true once it has
    /// ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn
            && Pin::new(conn).poll(cx).is_ready()
        {
            self.conn = None;
        }
        self.conn.is_none()
    }

    /// Whether hyper's dispatcher is waiting for a request, as it last
    /// left it (no I/O).
    fn waiting(&self) -> bool {
        self.conn.is_some() && self.sender.is_ready()
    }

    /// Whether it can take another request now, after letting it do its
    /// I/O: a backend's close or stray bytes end it, a response body read
    /// to its end leaves it waiting.
    fn reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !self.drive(&mut cx) && self.sender.is_ready()
    }
}

impl H1Pool {
    /// An empty pool that connects through `connector`, keeps up to
    /// `max_idle` idle connections per backend for `idle_timeout` (zero:
    /// until the backend closes them), reading at most `max_buf` at once.
    pub fn new(
        connector: Counting<BackendConnector>,
        max_idle: u32,
        idle_timeout: Duration,
        max_buf: usize,
    ) -> Self {
        let mut builder = Builder::new();
        builder.max_buf_size(max_buf);
        Self {
            idle: Mutex::default(),
            connector,
            builder,
            max_idle: max_idle as usize,
            idle_timeout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Idle connections now, all backends together.
    pub fn idle(&self) -> usize {
        self.lock().count()
    }

    /// Whether a connection parked at `since_ms` has been idle for longer
    /// than `idle_timeout` at `now_ms`. Strictly longer: both readings are
    /// truncated to the millisecond, so a difference of exactly the timeout
    /// can be up to a millisecond short of it in real time (a pool with a
    /// 200 ms timeout closed a connection 199.8 ms after it was parked).
    fn expired(&self, since_ms: u64, now_ms: u64) -> bool {
        !self.idle_timeout.is_zero()
            && u128::from(now_ms.saturating_sub(since_ms)) > self.idle_timeout.as_millis()
    }

    /// An idle connection to `backend`, if there is one; those expired are
    /// dropped on the way. It is not driven here: a close that came while
    /// it was parked is read before the request is written (hyper reads a
    /// waiting connection first), and hyper then hands the request back
    /// unsent, for [`send`] to put on a new connection.
    fn checkout(&self, backend: &str) -> Option<Box<Conn>> {
        let now = clock::monotonic_ms();
        let mut dropped = Vec::new();
        let mut idle = self.lock();
        let list = idle.by_backend.get_mut(backend)?;
        let mut found = None;
        while let Some(parked) = list.pop() {
            if !self.expired(parked.since_ms, now) && parked.conn.waiting() {
                found = Some(parked.conn);
                break;
            }
            dropped.push(parked);
        }
        drop(idle);
        // Closed after the lock: closing a socket is a system call.
        drop(dropped);
        found
    }

    /// Parks `conn` for the next request to `backend`, when it is
    /// reusable and the backend's list has room; starts the sweeper.
    fn checkin(self: &Arc<Self>, backend: &str, mut conn: Box<Conn>) {
        // A body read to its end usually leaves hyper waiting already.
        // Asked first even when nothing is kept: a connection left ready
        // for the next request closes cleanly when dropped (see `Conn`'s
        // drop), one still mid-exchange is reset.
        if !(conn.waiting() || conn.reusable()) || self.max_idle == 0 {
            return;
        }
        // The sweeper runs on the runtime of the request that parks the
        // connection (its worker); outside one, nothing would sweep.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut idle = self.lock();
        let list = match idle.by_backend.get_mut(backend) {
            Some(list) => list,
            None => idle.by_backend.entry(backend.to_owned()).or_default(),
        };
        if list.len() >= self.max_idle {
            drop(idle);
            return;
        }
        list.push(Parked {
            conn,
            since_ms: clock::monotonic_ms(),
        });
        if !idle.sweeping {
            idle.sweeping = true;
            drop(idle);
            runtime.spawn(sweep(Arc::downgrade(self), self.sweep_every()));
        }
    }

    /// How often the sweeper looks: often enough that a connection ends
    /// within about half its idle timeout past it, and that one the
    /// backend closed is closed here within a second.
    fn sweep_every(&self) -> Duration {
        if self.idle_timeout.is_zero() {
            return Duration::from_secs(1);
        }
        (self.idle_timeout / 2).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Drops idle connections that expired or ended; false (and the
    /// sweeper stops) when none are left.
    fn sweep_once(&self) -> bool {
        let now = clock::monotonic_ms();
        let mut dropped = Vec::new();
        let mut idle = self.lock();
        idle.by_backend.retain(|_, list| {
            for mut parked in std::mem::take(list) {
                if !self.expired(parked.since_ms, now) && parked.conn.reusable() {
                    list.push(parked);
                } else {
                    dropped.push(parked);
                }
            }
            !list.is_empty()
        });
        let any = !idle.by_backend.is_empty();
        idle.sweeping = any;
        drop(idle);
        drop(dropped);
        any
    }

    /// A new connection to `backend`.
    async fn connect(&self, backend: &BackendState) -> Result<Box<Conn>, Failed> {
        let failed = |connect, error| Failed { connect, error };
        let uri = origin(backend).map_err(|e| failed(true, e))?;
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| failed(true, e))?;
        let io = connector.call(uri).await.map_err(|e| failed(true, e))?;
        let (sender, conn) = self
            .builder
            .handshake(io)
            .await
            .map_err(|e| failed(true, e.into()))?;
        Ok(Box::new(Conn {
            sender,
            conn: Some(conn),
        }))
    }
}

/// Clears the pool's `sweeping` flag when the sweeper is dropped before it
/// finished (its runtime shut down), so the next check-in starts another.
/// A sweeper that finishes has cleared it under the pool's lock itself: a
/// check-in may have started the next one since.
struct Sweeping {
    pool: Weak<H1Pool>,
    finished: bool,
}

impl Drop for Sweeping {
    fn drop(&mut self) {
        if !self.finished
            && let Some(pool) = self.pool.upgrade()
        {
            pool.lock().sweeping = false;
        }
    }
}

async fn sweep(pool: Weak<H1Pool>, every: Duration) {
    let mut flag = Sweeping {
        pool: pool.clone(),
        finished: false,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else { return };
        if !pool.sweep_once() {
            flag.finished = true;
            return;
        }
    }
}

/// `scheme://authority/` of `backend`, what the connector dials.
fn origin(backend: &BackendState) -> Result<Uri, Box<dyn std::error::Error + Send + Sync>> {
    Ok(match &backend.origin {
        Some((scheme, authority)) => Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()?,
        None => backend.base.parse::<Uri>()?,
    })
}

/// Sends `req` (origin-form URI) to `backend` on a pooled connection or a
/// new one, driving the connection until the response head is in. A
/// pooled connection that turns out closed before the request went out is
/// replaced by a new one, once. The request comes boxed: each future of
/// the request's chain that held it kept a copy of its 300 bytes (an
/// argument's place is kept beside the locals it is moved into), and each
/// copy was also made once per request.
pub async fn send(
    pool: &Arc<H1Pool>,
    backend: &Arc<BackendState>,
    mut req: Box<Request<RequestBody>>,
) -> Result<Response<UpstreamBody>, Failed> {
    // As hyper-util's client does: an HTTP/1.0 request may lack it.
    if !req.headers().contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(&backend.authority)
    {
        req.headers_mut().insert(header::HOST, host);
    }
    let mut pooled = pool.checkout(&backend.base);
    loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(conn) => conn,
            // Boxed: connecting's future is over a kilobyte, and every
            // future above this one (the request's whole chain, created
            // and moved once per request) would carry it for the rare
            // request that needs a new connection.
            None => Box::pin(pool.connect(backend)).await?,
        };
        let mut response = pin!(conn.sender.try_send_request(*req));
        // Written once the worker has run its other ready tasks (tokio
        // wakes a yielded task after its next I/O poll), so the requests of
        // one scheduler tick reach the backends back to back and wake a
        // sleeping backend once, as hyper-util's connection tasks, woken
        // after the request tasks, did. Writing each one at once cost 7 %
        // more CPU per request under h1 and HTTPS load here (the wake-ups
        // of the other CPU, `_raw_spin_unlock_irqrestore` in `writev`;
        // bench/README.md, 2026-12-05).
        tokio::task::yield_now().await;
        let result = poll_fn(|cx| {
            conn.drive(cx);
            response.as_mut().poll(cx)
        })
        .await;
        match result {
            Ok(resp) => {
                let returning = Returning {
                    conn,
                    pool: pool.clone(),
                    backend: backend.clone(),
                };
                return Ok(resp.map(|body| UpstreamBody {
                    body,
                    conn: Some(returning),
                }));
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => *req = unsent,
                _ => {
                    return Err(Failed {
                        connect: false,
                        error: e.into_error().into(),
                    });
                }
            },
        }
    }
}

/// A connection lent to a response body, and where it goes back.
struct Returning {
    conn: Box<Conn>,
    pool: Arc<H1Pool>,
    backend: Arc<BackendState>,
}

/// A backend's response body; on the owned path it drives its connection
/// while it is read and parks it when it ends cleanly.
#[derive(Debug)]
pub struct UpstreamBody {
    body: Incoming,
    conn: Option<Returning>,
}

impl std::fmt::Debug for Returning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returning")
            .field("backend", &self.backend.authority)
            .finish()
    }
}

impl UpstreamBody {
    /// A body read by a connection task of its own (hyper-util's client).
    pub fn driven_elsewhere(body: Incoming) -> Self {
        Self { body, conn: None }
    }

    fn give_back(&mut self) {
        if let Some(r) = self.conn.take() {
            let Returning {
                conn,
                pool,
                backend,
            } = r;
            pool.checkin(&backend.base, conn);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        // The body first: a small response is usually in its channel
        // already (read with the head); the connection is driven only when
        // the body waits for more.
        let mut polled = Pin::new(&mut this.body).poll_frame(cx);
        if polled.is_pending()
            && let Some(r) = &mut this.conn
        {
            r.conn.drive(cx);
            polled = Pin::new(&mut this.body).poll_frame(cx);
        }
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            // A failed body leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => this.conn = None,
            _ => {}
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

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A body without data (204, 304, a HEAD's answer) is never polled,
        // and hyper stops polling one that says it has ended: both are
        // still clean ends. Any other body dropped early takes its
        // connection with it.
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}
