//! Listeners: binding (with errors that say how to fix them), the accept
//! loop, HTTP/1.1 and HTTP/2 (h2c prior knowledge) connections, TLS, and
//! graceful drain on shutdown. A connection starts in the server's own
//! HTTP/1.1 loop (`h1`), which hands it to hyper's server at the first
//! request that is not a bodiless HTTP/1.1 one.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::front::Front;
use crate::proxy::{Client, Proxy, Scheme};
use crate::splice::SpliceTarget;
use crate::tls::{Accepted, TlsTerminator};
use crate::upstream::request_body::ClientBody;

pub mod capacity;
pub mod conn;
mod h1;
pub mod workers;

use crate::conn_override::ConnTimeoutOverride;
use conn::{ConnState, ConnTimeouts, SharedTcp, Tracked, TrackedIo};

/// hyper's smallest allowed HTTP/1 read buffer.
const MIN_H1_BUFFER: usize = 8192;

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({setting}): {reason}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The config key it came from (`listen.http`).
    pub setting: &'static str,
    /// What went wrong and how to fix it.
    pub reason: String,
}

/// Binds `addr`, turning the common failures into advice.
pub async fn bind(addr: SocketAddr, setting: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, setting, &e))
}

/// Binds `addr` once per worker: `workers` listening sockets on one port
/// (`SO_REUSEPORT`), among which the kernel spreads new connections. The
/// first socket is bound before it allows the sharing, so an address that
/// anyone listens on already (another bbproxy included) is refused as with
/// a plain bind; the others then join it on the port it got (which the
/// first chose when `addr`'s port is 0).
pub fn bind_workers(
    addr: SocketAddr,
    setting: &'static str,
    workers: usize,
) -> Result<Vec<std::net::TcpListener>, BindError> {
    let fail = |e: io::Error| bind_error(addr, setting, &e);
    let first = listen_socket(addr, false).map_err(fail)?;
    let shared = workers > 1;
    if shared {
        first.set_reuse_port(true).map_err(fail)?;
    }
    first.listen(LISTEN_BACKLOG).map_err(fail)?;
    let bound = first
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .unwrap_or(addr);
    let mut listeners = vec![std::net::TcpListener::from(first)];
    for _ in 1..workers {
        let join = || -> io::Result<socket2::Socket> {
            let s = listen_socket(bound, true)?;
            s.listen(LISTEN_BACKLOG)?;
            Ok(s)
        };
        listeners.push(join().map_err(fail)?.into());
    }
    Ok(listeners)
}

/// tokio's (and std's) listen backlog.
const LISTEN_BACKLOG: i32 = 1024;

/// A non-blocking TCP socket bound to `addr`, with `SO_REUSEADDR` as tokio
/// sets it, and `SO_REUSEPORT` before the bind when `share`.
fn listen_socket(addr: SocketAddr, share: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if share {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn bind_error(addr: SocketAddr, setting: &'static str, e: &io::Error) -> BindError {
    BindError {
        addr,
        setting,
        reason: match e.kind() {
            io::ErrorKind::AddrInUse => format!(
                "address already in use: another process is listening there; stop it or set another port in {setting}"
            ),
            io::ErrorKind::PermissionDenied => format!(
                "permission denied: ports below 1024 need privileges; set a port of 1024 or more in {setting}, \
                 or allow the binary with `sudo setcap cap_net_bind_service=+ep $(command -v bbproxy)`"
            ),
            io::ErrorKind::AddrNotAvailable => format!(
                "address not available: no interface of this machine has that IP; fix {setting}"
            ),
            _ => e.to_string(),
        },
    }
}

/// Serves `listener` until `shutdown` turns true, then stops accepting at
/// once and lets open connections finish within `grace` (HTTP/1: after the
/// response in flight; HTTP/2: GOAWAY, then the open streams), after which the
/// rest are closed. Connection settings (`timeouts.client_header`,
/// `timeouts.keep_alive`, `timeouts.client_write`, `limits.*`) are read from
/// the generation current when each connection is accepted; a routed
/// request's domain `keep_alive` and `client_write` apply after it.
pub async fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    scheme: Scheme,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    serve_front(
        listener,
        Arc::new(Front::new(proxy, scheme)),
        None,
        shutdown,
        grace,
        workers::Seat::alone(),
    )
    .await;
}

/// Like [`serve`], with `front` answering requests and, with `tls`, a TLS
/// handshake (in the connection's own task) before HTTP; `seat` is the
/// worker whose listener socket this is (connections are served on the
/// runtime this runs on), counted in its stats and in
/// `bbproxy_worker_connections_total`.
pub async fn serve_front(
    listener: TcpListener,
    front: Arc<Front>,
    tls: Option<TlsTerminator>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    seat: workers::Seat,
) {
    let proxy = front.proxy().clone();
    let drain = proxy.drain().clone();
    let accepted_here = metrics::counter!(
        crate::telemetry::names::WORKER_CONNECTIONS,
        "worker" => seat.index().to_string()
    );
    // Settings of the config last seen: derived again only after a reload,
    // not on every accept (the timeout floors walk every domain).
    let mut derived: Option<(Arc<bbproxy_config::Config>, ConnSettings)> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors or a transient network error: back off
                // instead of spinning, and keep serving existing connections.
                metrics::counter!(crate::telemetry::names::ACCEPT_ERRORS).increment(1);
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let config = proxy.config();
        let Some(guard) = drain.try_connection(config.limits.max_connections as usize) else {
            capacity::refuse(stream);
            continue;
        };
        accepted_here.increment(1);
        let _ = stream.set_nodelay(true);
        let settings = match &derived {
            Some((seen, settings)) if Arc::ptr_eq(seen, &config) => *settings,
            _ => {
                let settings = ConnSettings::from_config(&config);
                derived = Some((config.clone(), settings));
                settings
            }
        };
        tokio::spawn(serve_connection(
            stream,
            peer,
            front.clone(),
            tls.clone(),
            settings,
            (guard, seat.accepted()),
        ));
    }
    drop(listener);
    let left = drain.shutdown(grace).await;
    if left > 0 {
        tracing::warn!(
            "shutdown grace period of {grace:?} passed with {left} connection(s) still open; closed them"
        );
    }
}

/// Per-connection settings taken from the config at accept time.
#[derive(Debug, Clone, Copy)]
struct ConnSettings {
    timeouts: ConnTimeouts,
    max_headers: usize,
    max_header_bytes: usize,
}

impl ConnSettings {
    fn from_config(config: &bbproxy_config::Config) -> Self {
        Self {
            timeouts: ConnTimeouts::new(
                config.timeouts.client_header,
                config.timeouts.keep_alive,
                config.timeouts.client_write,
                config.upstream_timeouts().map(|t| ConnTimeoutOverride {
                    keep_alive: t.keep_alive,
                    client_write: t.client_write,
                }),
            ),
            max_headers: config.limits.max_headers as usize,
            max_header_bytes: usize::try_from(config.limits.max_header_bytes).unwrap_or(usize::MAX),
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    front: Arc<Front>,
    tls: Option<TlsTerminator>,
    settings: ConnSettings,
    guards: (crate::drain::Guard, workers::OpenConnection),
) {
    let _guards = guards;
    // The socket stays reachable under TLS too, to reset it on a write
    // timeout.
    let tcp = Arc::new(stream);
    let io = SharedTcp::new(tcp.clone());
    match tls {
        None => {
            // Plain HTTP/1 bodies may be spliced (see `crate::splice`).
            let splice = SpliceTarget::new();
            let io = io.splicing(splice.clone());
            serve_http(io, &tcp, Some(splice), peer, front, settings).await;
        }
        Some(tls) => {
            // The handshake runs in the connection's own task, bounded by
            // the terminator's handshake timeout.
            let stream = match tls.accept(io).await {
                Ok(Accepted::Http(stream)) => stream,
                Ok(Accepted::Challenge) => return,
                Err(e) => {
                    tracing::debug!(client = %peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            // A 408 cannot be written under TLS by hand, and TLS records
            // cannot be spliced.
            serve_http(stream, &tcp, None, peer, front, settings).await;
        }
    }
}

/// hyper's server for a connection the own loop hands over, under
/// `settings`; `plain`: no TLS.
fn http_builder(settings: &ConnSettings, plain: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's header timer would also close idle keep-alive connections and
    // never answer 408; conn::drive does both jobs instead.
    builder
        .http1()
        .header_read_timeout(None)
        .max_headers(settings.max_headers)
        .max_buf_size(settings.max_header_bytes.max(MIN_H1_BUFFER));
    if plain {
        // Body pieces queued as they come, never copied into one buffer:
        // a spliced piece must reach the socket as its hole (see
        // `crate::splice`). What hyper chooses anyway for a socket that
        // writes vectors; said here because splicing depends on it.
        builder.http1().writev(true);
    }
    // Extended CONNECT (RFC 8441): WebSocket over HTTP/2, see proxy::upgrade.
    builder
        .http2()
        .enable_connect_protocol()
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves HTTP/1.1 and HTTP/2 on `io`: plain TCP (with the `splice` target
/// its socket drains), or TLS over `tcp`.
async fn serve_http<IO>(
    io: IO,
    tcp: &TcpStream,
    splice: Option<SpliceTarget>,
    peer: SocketAddr,
    front: Arc<Front>,
    settings: ConnSettings,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let proxy = front.proxy().clone();
    let plain = splice.is_some();
    let state = Arc::new(ConnState::default());
    let io = TrackedIo::new(io, state.clone());
    let builder = http_builder(&settings, plain);
    let drain = proxy.drain().subscribe();
    let client = Client::new(peer);
    let service = {
        let (front, client, splice, state) =
            (front.clone(), client.clone(), splice.clone(), state.clone());
        service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let request = state.begin();
            let front = front.clone();
            let client = client.clone();
            // HTTP/2 (h2c) copies bodies into frames: HTTP/1 only.
            let splice = splice
                .as_ref()
                .filter(|_| req.version() != http::Version::HTTP_2)
                .cloned();
            // Boxed whole, and built in its box (see `proxy::boxed`): the
            // request's future is several KiB (every phase's state), and
            // hyper moves the future it gets from here around before
            // polling it (into the h1 dispatcher's slot; into a new task
            // per h2 stream, some six copies). A box is a pointer to move.
            crate::proxy::boxed(move || async move {
                let req = Box::new(req.map(ClientBody::Hyper));
                Ok::<_, Infallible>(answer(&front, client, splice, req, request).await)
            })
        })
    };
    // The requests the own loop answers: their futures stay where the
    // loop awaits them (its box), so they need no box of their own.
    let respond = |req, request| answer(&front, client.clone(), splice.clone(), req, request);
    let limits = h1::Limits {
        max_headers: settings.max_headers,
        max_header_bytes: settings.max_header_bytes,
    };
    let conn = h1::Conn::new(io, state.clone(), limits, respond, &builder, service);
    let mut conn = std::pin::pin!(conn);
    let ended = conn::drive(
        conn.as_mut(),
        |c| c.graceful(),
        &state,
        settings.timeouts,
        drain,
        plain.then_some(tcp),
    )
    .await;
    if ended == conn::Ended::WriteTimeout {
        // Close with a reset: a plain close would leave the kernel sending
        // the queued response to a client that does not read, holding the
        // socket and its buffer for minutes.
        let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
    }
    if ended != conn::Ended::Done {
        tracing::debug!(client = %peer, "connection closed: {ended:?}");
    }
}

/// One request's answer, on either path: the proxy's response, with the
/// routed domain's connection timeouts applied, counted by `request` until
/// its body ends.
async fn answer(
    front: &Front,
    client: Client,
    splice: Option<SpliceTarget>,
    req: Box<http::Request<ClientBody>>,
    request: conn::RequestGuard,
) -> http::Response<Tracked<crate::proxy::ProxyBody>> {
    let mut resp = match front.handle(req, client, splice).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // Before the head is written and before the request ends.
    request.set_override(resp.extensions_mut().remove::<ConnTimeoutOverride>());
    // Written once the worker has run its other ready tasks, so the
    // responses of one scheduler round go out back to back and wake a
    // sleeping client once, as the request's task does with its backend
    // (`upstream::h1::send`). With tokio's `yield_now` as the wait: 3-4 %
    // less CPU per request and a lower p99 under the h1 load
    // (bench/README, 2026-12-05); with `turn::rest_of_round`, going
    // without it was within the noise (4 rounds, 2026-12-07).
    crate::turn::rest_of_round().await;
    resp.map(|body| Tracked::new(body, request))
}
