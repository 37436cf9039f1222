//! What a client connection is doing ([`ConnState`]), shared by the
//! socket wrapper, the response body and the driver, and the timeouts
//! that apply to it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::time::Instant;

use crate::conn_override::ConnTimeoutOverride;

const NONE: u64 = u64::MAX;
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// How far an HTTP/1 response body may run ahead of the socket before it
/// waits (`ConnState::hold_body`): one HTTP/1 upstream read (16 KiB). Then
/// hyper writes two chunks at once where the backend's data is there: a
/// write to the client (and the wake-up of a client waiting to read) per
/// 32 KiB rather than per chunk. With none (every byte written before the
/// next chunk), a 64 KiB response took about three writes under load
/// against nginx's one. A stalled reader holds one chunk more for it: the
/// 500-stalled-readers test's RSS grew by 35-37 MiB instead of 33, of the
/// 50 it allows.
const BODY_AHEAD: u64 = crate::upstream::pool::UPSTREAM_READ_BUFFER as u64;

/// What the connection is doing, shared by the socket wrapper, the service
/// and the driver. Times are milliseconds since the connection opened.
#[derive(Debug)]
pub struct ConnState {
    opened: Instant,
    /// `opened` on the process's clock (`crate::clock`), in ms.
    opened_ms: u64,
    /// Requests handed to the service whose responses have not ended.
    active: AtomicU32,
    /// When the wait for the current head started: the connection's opening
    /// (a client that connects and sends nothing is a slowloris too), then
    /// the first byte after a response ended.
    head_started: AtomicU64,
    /// Bytes of the current head have arrived (a 408 makes sense).
    head_bytes: AtomicBool,
    /// When the last response ended (or the connection opened).
    last_done: AtomicU64,
    /// Seen the HTTP/2 preface: heads are frames, no slowloris phase.
    pub(super) h2: AtomicBool,
    first_read: AtomicBool,
    /// Since when writes to the client have made no progress (the socket's
    /// send buffer is full: the client does not read), or `NONE`.
    write_stalled: AtomicU64,
    /// Response body bytes handed to hyper, and bytes the socket has taken
    /// (heads included), over the connection's life: see `Tracked`.
    pub(super) yielded: AtomicU64,
    written: AtomicU64,
    /// The HTTP/1 response body waiting for the socket to take what hyper
    /// already holds, woken by the next write that makes progress.
    parked: AtomicBool,
    body_waker: Mutex<Option<Waker>>,
    /// HTTP/2 streams whose body handed hyper a chunk and has not been
    /// asked for the next one: hyper waits for the client to open the
    /// stream's flow-control window. A client that never does stalls the
    /// stream without ever blocking a socket write.
    h2_waiting: AtomicU32,
    /// Since when waiting streams have made no progress, or `NONE`.
    h2_waiting_since: AtomicU64,
    /// The keep-alive and client write timeouts (ms) of the domain the
    /// latest request was routed to, or `NONE` for the connection's own.
    keep_alive_override: AtomicU64,
    client_write_override: AtomicU64,
    /// The driver asked the connection to close once idle (drain, or the
    /// keep-alive ran out): read by `server::h1`'s loop.
    closing: AtomicBool,
}

impl Default for ConnState {
    fn default() -> Self {
        let opened = Instant::now();
        Self {
            opened,
            opened_ms: crate::clock::ms_at(opened),
            active: AtomicU32::new(0),
            head_started: AtomicU64::new(0),
            head_bytes: AtomicBool::new(false),
            last_done: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            first_read: AtomicBool::new(true),
            write_stalled: AtomicU64::new(NONE),
            yielded: AtomicU64::new(0),
            written: AtomicU64::new(0),
            parked: AtomicBool::new(false),
            body_waker: Mutex::new(None),
            h2_waiting: AtomicU32::new(0),
            h2_waiting_since: AtomicU64::new(NONE),
            keep_alive_override: AtomicU64::new(NONE),
            client_write_override: AtomicU64::new(NONE),
            closing: AtomicBool::new(false),
        }
    }
}

impl ConnState {
    /// A response is about to be written: its domain's timeouts apply from
    /// now on (`None`, a local answer: the connection's own). Called before
    /// the response's head is written and before its request ends, so the
    /// write and the keep-alive after it see the domain's values. Under
    /// HTTP/2 the latest routed stream's values apply to the connection.
    pub fn set_override(&self, o: Option<ConnTimeoutOverride>) {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE - 1);
        let (keep_alive, client_write) =
            o.map_or((NONE, NONE), |o| (ms(o.keep_alive), ms(o.client_write)));
        self.keep_alive_override
            .store(keep_alive, Ordering::Release);
        self.client_write_override
            .store(client_write, Ordering::Release);
    }

    /// The timeouts in force: the connection's, with the latest request's
    /// domain overrides. An override is never below its floor (a domain of
    /// a generation loaded after the connection was accepted may be): the
    /// driver's sleeps are bounded by the floor and would pass it.
    pub(super) fn effective(&self, t: &ConnTimeouts) -> ConnTimeouts {
        let pick = |stored: &AtomicU64, own: Duration, floor: Duration| {
            let ms = stored.load(Ordering::Acquire);
            if ms == NONE {
                return own;
            }
            let d = Duration::from_millis(ms);
            if d.is_zero() {
                Duration::ZERO
            } else if floor.is_zero() {
                own
            } else {
                d.max(floor)
            }
        };
        ConnTimeouts {
            keep_alive: pick(&self.keep_alive_override, t.keep_alive, t.keep_alive_floor),
            client_write: pick(
                &self.client_write_override,
                t.client_write,
                t.client_write_floor,
            ),
            ..*t
        }
    }

    /// Milliseconds since the connection opened, on the coarse clock: read
    /// twice a request (a head's first bytes, a response's end), and these
    /// stamps only bound timeouts of seconds. Never earlier than the fine
    /// clock's reading (a timeout cannot end early), a few ms later at most.
    pub(super) fn now(&self) -> u64 {
        crate::clock::coarse_ms()
            .saturating_sub(self.opened_ms)
            .min(NONE - 1)
    }

    pub(super) fn on_read(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        // A load first: every read after the first finds it false, and a
        // swap would be a locked instruction on each of them.
        if self.first_read.load(Ordering::Acquire)
            && self.first_read.swap(false, Ordering::AcqRel)
            && data.starts_with(H2_PREFACE)
        {
            self.h2.store(true, Ordering::Release);
        }
        if self.active.load(Ordering::Acquire) == 0 {
            self.head_bytes.store(true, Ordering::Release);
        }
        if self.active.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) == NONE
        {
            // No wake-up for the driver: it is already due no later than
            // this head's deadline (see `next_check`).
            let _ = self.head_started.compare_exchange(
                NONE,
                self.now(),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    /// A write found the client's socket full. Only the connection's own
    /// task writes, so a plain load and store suffice; no wake-up for the
    /// driver (see `next_check`).
    pub(super) fn on_write_blocked(&self) {
        if self.write_stalled.load(Ordering::Acquire) == NONE {
            self.write_stalled.store(self.now(), Ordering::Release);
        }
    }

    /// A write made progress: one load on the fast path.
    pub(super) fn on_write_progress(&self) {
        if self.write_stalled.load(Ordering::Acquire) != NONE {
            self.write_stalled.store(NONE, Ordering::Release);
        }
        // Loaded first, as above: a body is rarely parked.
        if self.parked.load(Ordering::Acquire) && self.parked.swap(false, Ordering::AcqRel) {
            let waker = self.body_waker.lock().ok().and_then(|mut w| w.take());
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    /// The socket took `n` bytes.
    pub(super) fn on_written(&self, n: usize) {
        self.written.fetch_add(n as u64, Ordering::AcqRel);
        self.on_write_progress();
    }

    /// Whether an HTTP/1 response body should wait before handing hyper
    /// another chunk. hyper keeps polling a body until its write buffer
    /// holds `max_buf_size` (the header limit, 64 KiB by default) and only
    /// then writes, so a client that does not read would pin that much per
    /// connection, plus what the upstream side holds. Waiting while the
    /// socket is more than [`BODY_AHEAD`] behind the body bytes already
    /// handed over keeps that to about two chunks, as nginx keeps a few
    /// buffers per slow client. HTTP/2 is left alone: its streams share
    /// the socket and have their own flow control.
    pub(super) fn hold_body(&self, cx: &mut Context<'_>) -> bool {
        let behind = || {
            self.yielded.load(Ordering::Acquire) > self.written.load(Ordering::Acquire) + BODY_AHEAD
        };
        if self.h2.load(Ordering::Acquire) || !behind() {
            return false;
        }
        if let Ok(mut w) = self.body_waker.lock() {
            match w.as_mut() {
                Some(old) if old.will_wake(cx.waker()) => {}
                _ => *w = Some(cx.waker().clone()),
            }
        }
        self.parked.store(true, Ordering::Release);
        // A write may have landed between the first look and parking.
        if behind() {
            return true;
        }
        self.parked.store(false, Ordering::Release);
        false
    }

    /// An HTTP/2 stream's body handed hyper a chunk that is not its last.
    pub(super) fn h2_wait(&self) {
        if self.h2_waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            self.h2_waiting_since.store(self.now(), Ordering::Release);
        }
    }

    /// A waiting HTTP/2 stream was asked for more (the client opened its
    /// window) or ended: progress for the streams still waiting.
    pub(super) fn h2_unwait(&self) {
        let left = self
            .h2_waiting
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        let since = if left == 0 { NONE } else { self.now() };
        self.h2_waiting_since.store(since, Ordering::Release);
    }

    /// When writes stuck since `write_stalled`, or HTTP/2 streams stuck on
    /// flow control since `h2_waiting_since`, exceed `client_write`.
    pub(super) fn write_expiry(&self, t: &ConnTimeouts) -> Option<Instant> {
        let socket = self.write_stalled.load(Ordering::Acquire);
        let streams = if self.h2_waiting.load(Ordering::Acquire) > 0 {
            self.h2_waiting_since.load(Ordering::Acquire)
        } else {
            NONE
        };
        let since = socket.min(streams);
        (since != NONE && !t.client_write.is_zero())
            .then(|| self.opened + Duration::from_millis(since) + t.client_write)
    }

    /// The latest the driver may look for a write stall: one that starts
    /// now expires no sooner than `now + client_write_floor` (whichever
    /// domain's response it writes), a running one at its expiry. Another
    /// HTTP/2 stream's domain may shorten a running stall's timeout without
    /// waking the driver: looking at least every floor bounds the delay.
    pub(super) fn write_check(&self, t: &ConnTimeouts, now: Instant) -> Option<Instant> {
        if t.client_write_floor.is_zero() {
            return self.write_expiry(t);
        }
        let next = now + t.client_write_floor;
        Some(self.write_expiry(t).map_or(next, |at| at.min(next)))
    }

    /// The connection is to close once idle (no further request after the
    /// one in progress).
    pub fn close_when_idle(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// Whether [`Self::close_when_idle`] was asked.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// A request head was parsed: the service starts on it. The returned
    /// guard ends the request when the response body is done or dropped.
    pub fn begin(self: &Arc<Self>) -> RequestGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.head_started.store(NONE, Ordering::Release);
        self.head_bytes.store(false, Ordering::Release);
        RequestGuard(self.clone())
    }

    /// When the current timeout expires, if one runs.
    pub(super) fn expiry(&self, t: &ConnTimeouts) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, d: Duration| self.opened + Duration::from_millis(ms) + d;
        let head = self.head_started.load(Ordering::Acquire);
        if head != NONE && !self.h2.load(Ordering::Acquire) {
            return (!t.header.is_zero()).then(|| at(head, t.header));
        }
        (!t.keep_alive.is_zero()).then(|| at(self.last_done.load(Ordering::Acquire), t.keep_alive))
    }

    /// When the driver must look again: never later than any timeout that
    /// can expire, so that the request path never has to wake it. While a
    /// request runs nothing expires, and whatever timeout starts after it
    /// ends lasts at least the shorter timeout; while idle, a head that
    /// starts now ends no sooner than `now + header`. A request that starts
    /// now may be routed to the domain with the shortest keep-alive, so the
    /// idle time after it ends no sooner than `now + keep_alive_floor`, in
    /// every phase. A write stall can start in any phase, so `write_check`
    /// bounds every answer. The driver may wake early; it then just looks
    /// again. `t` is the effective set (see `effective`).
    pub(super) fn next_check(&self, t: &ConnTimeouts, now: Instant) -> Option<Instant> {
        let write = self.write_check(t, now);
        let header = (!t.header.is_zero()).then_some(t.header);
        let keep_alive = (!t.keep_alive.is_zero()).then_some(t.keep_alive);
        let floor = (!t.keep_alive_floor.is_zero()).then(|| now + t.keep_alive_floor);
        let bounds = write.into_iter().chain(floor);
        if self.active.load(Ordering::Acquire) > 0 {
            return header.map(|d| now + d).into_iter().chain(bounds).min();
        }
        let expiry = self.expiry(t);
        // Until its first bytes arrive a connection may still turn out to be
        // HTTP/2, whose idle limit is `keep_alive` from the opening (not the
        // header timeout): it must not be looked at later than that either.
        let maybe_h2 = if self.first_read.load(Ordering::Acquire) {
            keep_alive.map(|d| {
                self.opened + Duration::from_millis(self.last_done.load(Ordering::Acquire)) + d
            })
        } else {
            None
        };
        if self.head_started.load(Ordering::Acquire) != NONE || self.h2.load(Ordering::Acquire) {
            return expiry.into_iter().chain(maybe_h2).chain(bounds).min();
        }
        let head = header.map(|d| now + d);
        expiry.into_iter().chain(head).chain(bounds).min()
    }

    /// Whether part of a head arrived (a 408 is the right answer to expiry;
    /// a silent connection is just closed).
    pub(super) fn head_pending(&self) -> bool {
        self.head_bytes.load(Ordering::Acquire)
    }

    /// Whether the connection waits for a head under the header timeout.
    pub(super) fn in_head(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Acquire) != NONE
            && !self.h2.load(Ordering::Acquire)
    }
}

/// One request being served on a connection.
#[derive(Debug)]
pub struct RequestGuard(pub(super) Arc<ConnState>);

impl RequestGuard {
    /// See [`ConnState::set_override`].
    pub fn set_override(&self, o: Option<ConnTimeoutOverride>) {
        self.0.set_override(o);
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let s = &self.0;
        s.last_done.store(s.now(), Ordering::Release);
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The connection-level timeouts; zero disables one.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    /// From the first byte of a head to its end.
    pub header: Duration,
    /// Idle between requests (until a request's domain overrides it).
    pub keep_alive: Duration,
    /// Longest time writes to the client may make no progress (until a
    /// request's domain overrides it).
    pub client_write: Duration,
    /// The shortest non-zero keep-alive any request may bring (the
    /// connection's and every domain's), zero if none: bounds the driver's
    /// sleep while a request runs.
    pub keep_alive_floor: Duration,
    /// The same for `client_write`: bounds every sleep.
    pub client_write_floor: Duration,
}

impl ConnTimeouts {
    /// The connection's values with floors from its own and `domains`'
    /// values.
    pub fn new(
        header: Duration,
        keep_alive: Duration,
        client_write: Duration,
        domains: impl IntoIterator<Item = ConnTimeoutOverride>,
    ) -> Self {
        let mut t = Self {
            header,
            keep_alive,
            client_write,
            keep_alive_floor: keep_alive,
            client_write_floor: client_write,
        };
        let shorter = |floor: &mut Duration, d: Duration| {
            if !d.is_zero() && (floor.is_zero() || d < *floor) {
                *floor = d;
            }
        };
        for d in domains {
            shorter(&mut t.keep_alive_floor, d.keep_alive);
            shorter(&mut t.client_write_floor, d.client_write);
        }
        t
    }
}

#[cfg(test)]
mod tests;
