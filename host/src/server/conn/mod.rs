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
mod io;
mod state;

use std::future::Future;
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
    // One timer for the connection's life, moved only when it must fire
    // sooner: resetting it on every request would cost more than the rare
    // early wake-up.
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    let mut sleep = std::pin::pin!(sleep);
    let mut armed: Option<Instant> = None;
    loop {
        // A closing connection may still be stuck writing to a client that
        // does not read (graceful shutdown waits for the write to finish).
        let now = Instant::now();
        let t = state.effective(&timeouts);
        let next = if closing {
            state.write_check(&t, now)
        } else {
            state.next_check(&t, now)
        };
        if let Some(next) = next
            && armed.is_none_or(|at| next < at)
        {
            sleep.as_mut().reset(next);
            armed = Some(next);
        }
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!("client connection ended: {e}");
                }
                return Ended::Done;
            }
            _ = &mut sleep, if armed.is_some() => {
                armed = None;
                match expired(state, &timeouts, closing, raw) {
                    Expired::Nothing => {}
                    Expired::KeepAlive => {
                        graceful(conn.as_mut());
                        closing = true;
                    }
                    Expired::End(ended) => return ended,
                }
            }
            changed = phase.changed() => {
                let now = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Abort };
                match now {
                    Phase::Running => {}
                    Phase::Draining => {
                        if !closing {
                            graceful(conn.as_mut());
                            closing = true;
                        }
                    }
                    Phase::Abort => return Ended::Aborted,
                }
            }
        }
    }
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
