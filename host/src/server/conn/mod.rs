//! One client connection: the socket wrapper that notices request heads
//! arriving, the body wrapper that notices responses finishing, and the
//! driver that enforces the header-read (slowloris), keep-alive and client
//! write timeouts and the drain phases around hyper's connection future.
//!
//! hyper's own `header_read_timeout` starts as soon as a connection waits for
//! a head, so it doubles as a keep-alive timeout, and it closes without a
//! response. Tracking the phases here lets the two timeouts differ and lets a
//! slow client get its 408.

mod body;
mod gate;
mod io;
mod state;

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

pub use body::Tracked;
pub use io::{SharedTcp, TrackedIo};
pub use state::{ConnState, ConnTimeouts, RequestGuard};

use crate::drain::Phase;

/// How a connection ended, as far as the driver is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// hyper finished it (cleanly or with the error it logged).
    Done,
    /// A head took longer than the header timeout.
    HeaderTimeout {
        /// Whether a 408 could be sent.
        answered: bool,
    },
    /// Writes to the client made no progress for the write timeout (it
    /// stopped reading). The caller resets the socket: the kernel must not
    /// keep trying to deliver what is queued.
    WriteTimeout,
    /// The drain's grace period ran out.
    Aborted,
}

/// Drives `conn` to completion while enforcing the connection timeouts and
/// following the drain phase. `graceful` starts hyper's graceful shutdown
/// (HTTP/1: close once idle; HTTP/2: GOAWAY). `raw` is the socket, when the
/// driver may write a 408 on it itself (plain TCP; not TLS).
pub async fn drive<F, E>(
    mut conn: Pin<&mut F>,
    graceful: impl Fn(Pin<&mut F>),
    state: &ConnState,
    timeouts: ConnTimeouts,
    mut phase: watch::Receiver<Phase>,
    raw: Option<&TcpStream>,
) -> Ended
where
    F: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut closing = false;
    if *phase.borrow_and_update() != Phase::Running {
        graceful(conn.as_mut());
        closing = true;
    }
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    let mut timer = Timer {
        sleep: std::pin::pin!(sleep),
        gate: gate::Gate::new(),
        armed: None,
    };
    let mut phase_gate = gate::Gate::new();
    loop {
        // A closing connection may still be stuck writing to a client that
        // does not read (graceful shutdown waits for the write to finish).
        let now = Instant::now();
        let t = state.effective(&timeouts);
        timer.arm(if closing {
            state.write_check(&t, now)
        } else {
            state.next_check(&t, now)
        });
        match next_event(conn.as_mut(), &mut timer, &mut phase, &mut phase_gate).await {
            Event::Done(done) => {
                if let Err(e) = done {
                    tracing::debug!("client connection ended: {e}");
                }
                return Ended::Done;
            }
            Event::Timer => match expired(state, &timeouts, closing, raw) {
                Expired::Nothing => {}
                Expired::KeepAlive => {
                    graceful(conn.as_mut());
                    closing = true;
                }
                Expired::End(ended) => return ended,
            },
            Event::Phase(Phase::Running) => {}
            Event::Phase(Phase::Draining) => {
                if !closing {
                    graceful(conn.as_mut());
                    closing = true;
                }
            }
            Event::Phase(Phase::Abort) => return Ended::Aborted,
        }
    }
}

/// The driver's one timer, for the connection's life: moved only when it
/// must fire sooner, as resetting it on every request would cost more than
/// the rare early wake-up.
struct Timer<'a> {
    sleep: Pin<&'a mut tokio::time::Sleep>,
    /// Polled only once it fired (see `gate`).
    gate: gate::Gate,
    /// When it fires, if it is to.
    armed: Option<Instant>,
}

impl Timer<'_> {
    /// Makes it fire at `next` if that is sooner than it would.
    fn arm(&mut self, next: Option<Instant>) {
        if let Some(next) = next
            && self.armed.is_none_or(|at| next < at)
        {
            self.sleep.as_mut().reset(next);
            self.gate.open();
            self.armed = Some(next);
        }
    }
}

/// What moves the driver's loop on.
enum Event<E> {
    /// hyper's connection future finished.
    Done(Result<(), E>),
    /// The timer fired.
    Timer,
    /// The drain phase changed to this (`Abort` too when its sender is
    /// gone).
    Phase(Phase),
}

/// Waits for hyper's connection future to finish (polled first, at every
/// wake), the timer (when armed) to fire or the drain phase to change; the
/// last two are polled only when they fired (see `gate`).
async fn next_event<F, E>(
    mut conn: Pin<&mut F>,
    timer: &mut Timer<'_>,
    phase: &mut watch::Receiver<Phase>,
    phase_gate: &mut gate::Gate,
) -> Event<E>
where
    F: Future<Output = Result<(), E>>,
{
    let changed = {
        let changed = phase.changed();
        let mut changed = std::pin::pin!(changed);
        phase_gate.open();
        let armed = timer.armed.is_some();
        tokio::select! {
            biased;
            done = conn.as_mut() => return Event::Done(done),
            () = poll_fn(|cx| timer.gate.poll(cx, timer.sleep.as_mut())), if armed => {
                timer.armed = None;
                return Event::Timer;
            }
            r = poll_fn(|cx| phase_gate.poll(cx, changed.as_mut())) => r.is_ok(),
        }
    };
    Event::Phase(if changed {
        *phase.borrow_and_update()
    } else {
        Phase::Abort
    })
}

/// What the driver's timer found.
enum Expired {
    /// Nothing ran out (the timer fired early, or a closing connection
    /// only watches its writes).
    Nothing,
    /// The connection was idle past its keep-alive: close it gracefully.
    KeepAlive,
    /// The connection ends now.
    End(Ended),
}

/// Which timeout in force, if any, has run out; counted by kind.
fn expired(
    state: &ConnState,
    timeouts: &ConnTimeouts,
    closing: bool,
    raw: Option<&TcpStream>,
) -> Expired {
    let count = |kind: &'static str| {
        metrics::counter!(crate::telemetry::names::CLIENT_TIMEOUTS, "kind" => kind).increment(1);
    };
    let t = state.effective(timeouts);
    if state
        .write_expiry(&t)
        .is_some_and(|at| at <= Instant::now())
    {
        count("write");
        return Expired::End(Ended::WriteTimeout);
    }
    if closing || state.expiry(&t).is_none_or(|at| at > Instant::now()) {
        return Expired::Nothing;
    }
    if state.in_head() {
        // Counted before the 408 goes out: a client that sees the close
        // must find the timeout counted.
        count("header");
        let answered = state.head_pending() && raw.is_some_and(answer_408);
        return Expired::End(Ended::HeaderTimeout { answered });
    }
    count("keep_alive");
    Expired::KeepAlive
}

/// Writes a minimal 408 straight to the socket (hyper is mid-head and cannot)
/// and half-closes it. Best effort: a full send buffer means a client that
/// does not read, and it gets the close alone.
fn answer_408(raw: &TcpStream) -> bool {
    const RESPONSE: &[u8] = b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 46\r\n\r\nbbproxy: request headers not received in time\n";
    let sent = raw.try_write(RESPONSE).is_ok_and(|n| n == RESPONSE.len());
    let _ = socket2::SockRef::from(raw).shutdown(std::net::Shutdown::Write);
    sent
}
