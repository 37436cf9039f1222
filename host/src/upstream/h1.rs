//! The HTTP/1.1 upstream path a request's own task drives, on a codec of
//! the proxy's own (`wire`, `chunked`, httparse underneath). A connection
//! checked out of its worker's pool is written and read by the task that
//! sends the request, and then by whoever polls the response body: no
//! connection task, no channel and no oneshot per request. hyper's
//! `client::conn::http1`, which this path drove before, still handed each
//! request to its dispatcher through a channel and the response back
//! through a oneshot, and fed the body through another channel, all
//! within the one task (bench/README.md: 3 % of the proxy's samples under
//! the h1 load).
//!
//! A connection goes back to the pool only once its response body has
//! ended, the request went out whole, the response allowed keep-alive
//! (HTTP/1.1 without `Connection: close`, or 1.0 with `keep-alive`; a body
//! delimited by the close never) and nothing followed the response;
//! anything else (a body dropped early, a parse or framing error, an early
//! close) drops it, with a reset when it is mid-exchange (`Conn`'s drop).
//! An idle connection has no task polling it: a backend's close is seen
//! by the pool's sweeper (within a second; it also ends those idle past
//! `pool.idle_timeout`), or when it is checked out, before the request is
//! written; a request whose head cannot be written on a reused connection
//! goes on a new one.
//!
//! Upgrades (a 101 hands the connection over to a tunnel) and HTTP/2
//! backends keep hyper-util's client (`pool.rs`).

mod body;
mod chunked;
mod conn;
mod error;
mod exchange;
mod framing;
mod wire;

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response, Uri};
use http_body::Body;
use tower_service::Service;

pub use self::body::UpstreamBody;
pub use self::chunked::SizeLine;
use self::conn::Conn;
use self::error::{BoxError, Broken};
use self::exchange::{Exchange, Reading};
pub use self::framing::read_response;
use self::wire::Upload;
use super::BackendState;
use super::connector::Counting;
use super::request_body::RequestBody;
use crate::clock;
use crate::splice::SpliceTarget;
use crate::tls::backend::BackendConnector;

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
    /// The largest response head, and the largest read.
    max_buf: usize,
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
    /// buffers and socket are the warmest). hashbrown's default hasher
    /// (foldhash): looked up twice a request, where std's SipHash costs
    /// several times as much on a short key and its DoS resistance buys
    /// nothing (the keys are the config's own backends).
    by_backend: hashbrown::HashMap<String, Vec<Parked>>,
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
    /// `clock::coarse_ms` when it was checked in.
    since_ms: u64,
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
        Self {
            idle: Mutex::default(),
            connector,
            max_buf,
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

    /// An idle connection to `backend`, if there is one at `now` (the
    /// process's clock, in ms); those expired, closed by the backend or
    /// with bytes nobody asked for are dropped on the way.
    fn checkout(&self, backend: &str, now: u64) -> Option<Box<Conn>> {
        let mut dropped = Vec::new();
        let mut idle = self.lock();
        let list = idle.by_backend.get_mut(backend)?;
        let mut found = None;
        while let Some(parked) = list.pop() {
            let mut parked = parked;
            if !self.expired(parked.since_ms, now) && parked.conn.idle_and_open() {
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
        // Whatever is not kept closes normally: its exchange ended whole.
        if self.max_idle == 0 || !conn.idle_and_open() {
            return;
        }
        let mut idle = self.lock();
        // The sweeper runs on the runtime of the request that parks the
        // connection (its worker); outside one, nothing would sweep. Asked
        // only when no sweeper runs (the handle is a reference count's
        // increment and decrement on every request otherwise).
        let start_sweeper = if idle.sweeping {
            None
        } else {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => Some(runtime),
                Err(_) => return,
            }
        };
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
            // The coarse clock: read on every request, and never earlier
            // than the fine one (a connection is not taken for idle
            // longer than it was).
            since_ms: clock::coarse_ms(),
        });
        if let Some(runtime) = start_sweeper {
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
                if !self.expired(parked.since_ms, now) && parked.conn.idle_and_open() {
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
        Ok(Box::new(Conn::new(io, self.max_buf)))
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

/// The body's first piece if the client has sent it already (without
/// waiting for it): data only, checked against a declared length.
async fn first_piece(body: &mut RequestBody, upload: Upload) -> Result<Option<Bytes>, BoxError> {
    let polled = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
    match polled {
        Poll::Ready(Some(Ok(frame))) => {
            let Ok(data) = frame.into_data() else {
                return Ok(None);
            };
            if let Upload::Length(declared) = upload
                && data.len() as u64 > declared
            {
                return Err(Broken::Length {
                    declared,
                    actual: data.len() as u64,
                }
                .into());
            }
            Ok(Some(data))
        }
        Poll::Ready(Some(Err(fault))) => Err(fault.into()),
        // Ended (the exchange sees it again: a body reports its end
        // once more) or not there yet.
        Poll::Ready(None) | Poll::Pending => Ok(None),
    }
}

/// Sends a request (`method`, origin-form `path`, `headers`, `body`) to
/// `backend` on a pooled connection or a new one, until the response head
/// is in; the body streams on, spliced to `splice` where it can be (see
/// `crate::splice`). A pooled connection that turns out closed before the
/// request's head went out is replaced by a new one, once. The pool's
/// idle connections are judged at `start`, the exchange's (a clock reading
/// less per request).
pub async fn send(
    pool: &Arc<H1Pool>,
    backend: &Arc<BackendState>,
    start: tokio::time::Instant,
    (method, path): (&Method, &PathAndQuery),
    mut headers: HeaderMap,
    mut body: RequestBody,
    splice: Option<&SpliceTarget>,
) -> Result<Response<UpstreamBody>, Failed> {
    let failed = |error: BoxError| Failed {
        connect: false,
        error,
    };
    // As hyper-util's client does: an HTTP/1.0 request may lack it.
    if !headers.contains_key(header::HOST)
        && let Ok(host) = HeaderValue::from_str(&backend.authority)
    {
        headers.insert(header::HOST, host);
    }
    let upload = wire::upload_of(method, &headers, &body);
    // The body's first piece, when it is there already, goes out in the
    // head's write; kept until the head is out, for a retry on a new
    // connection.
    let mut first: Option<Bytes> = None;
    let mut looked = false;
    let mut pooled = pool.checkout(&backend.base, clock::ms_at(start));
    let conn = loop {
        let reused = pooled.is_some();
        let mut conn = match pooled.take() {
            Some(conn) => conn,
            // Boxed: connecting's future is over a kilobyte, and every
            // future above this one (the request's whole chain, created
            // and moved once per request) would carry it for the rare
            // request that needs a new connection.
            None => Box::pin(pool.connect(backend)).await?,
        };
        // Mid-exchange from here: dropped before its end, it is reset.
        conn.clean = false;
        wire::encode_request(method, path, &headers, upload, conn.head_buf());
        // Written once the worker has run its other ready tasks, so the
        // requests of one scheduler round reach the backends back to back
        // and wake a sleeping backend once, as hyper-util's connection
        // tasks, woken after the request tasks, did. With tokio's
        // `yield_now` as the wait, writing each one at once cost 7 % more
        // CPU per request under h1 and HTTPS load here (the wake-ups of the
        // other CPU, `_raw_spin_unlock_irqrestore` in `writev`;
        // bench/README.md, 2026-12-05); with `turn::rest_of_round`, going
        // without it was within the noise (4 rounds, 2026-12-07).
        crate::turn::rest_of_round().await;
        if !looked && upload != Upload::None {
            looked = true;
            first = first_piece(&mut body, upload).await.map_err(failed)?;
        }
        match &first {
            Some(data) => conn.queue_head_with(data.clone(), upload == Upload::Chunked),
            None => conn.queue_head(),
        }
        // Nothing more of the body is taken until this is out, so a
        // reused connection that fails here (the backend closed it since
        // it was checked) can hand the request to a new one.
        match poll_fn(|cx| conn.poll_write_queued(cx)).await {
            Ok(()) => break conn,
            Err(_) if reused => {}
            Err(e) => return Err(failed(e.into())),
        }
    };
    let sent = first.as_ref().map_or(0, |d| d.len() as u64);
    let mut ex = Exchange::new(conn, body, upload, sent, headers);
    let max = pool.max_buf;
    let head = poll_fn(|cx| ex.poll_head(cx, method, max))
        .await
        .map_err(failed)?;
    let mut reading = Reading::new(ex, head.framing, head.keep_alive);
    if let Some(target) = splice {
        reading.splice_to(target);
    }
    let body = UpstreamBody::owned(reading, pool.clone(), backend.clone());
    Ok(head.response.map(|()| body))
}
