//! Keep-alive connection pools to backends, one per distinct pool profile
//! (protocol, connect timeout, pool knobs) and worker. HTTP/1.1 requests go
//! through connections their own task drives (`h1.rs`); HTTP/2 backends and
//! upgrades through hyper-util's client. Both key connections by backend
//! inside a pool, so a profile shared by several domains still keeps each
//! backend's connections apart. The [`Registry`](super::Registry) hands
//! a reloaded generation the same pool for an unchanged profile, so a reload
//! does not cost the warm connections.
//!
//! Connections are returned to the pool only after a cleanly framed
//! exchange: hyper closes a client connection on any parse or framing error
//! (bad chunk, Content-Length mismatch, early close), and a response whose
//! body the client abandoned is not reused either.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bbproxy_config::{UpstreamProtocol, UpstreamSettings};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::Counting;
use super::h1::H1Pool;
use super::request_body::RequestBody;
use crate::tls::TlsError;
use crate::tls::backend::{self, BackendConnector};

/// The most an HTTP/1 backend connection buffers from its socket, as
/// HAProxy's default `tune.bufsize`: hyper's default lets the buffer grow to
/// 400 KiB, and a response whose client reads slowly holds it (and the
/// older buffers its queued chunks still point into) all that time. 64 KiB
/// took 8 % less CPU on 64 KiB bodies, but a stalled reader then held about
/// 170 KiB (a chunk queued to the client, one in the body's channel, a new
/// read buffer): 500 of them grew the RSS by 85 MB, where the slow-reader
/// test allows 50 MiB (bench/README.md, 2026-12-05). A response body runs
/// at most one such read ahead of its client's socket (`BODY_AHEAD` in
/// `server::conn::state`).
pub const UPSTREAM_READ_BUFFER: usize = 16 * 1024;

/// hyper-util's pooled client: HTTP/2 backends and HTTP/1.1 upgrades.
pub type UpstreamClient = Client<Counting<BackendConnector>, RequestBody>;

/// One worker's way to a pool profile's backends.
#[derive(Debug)]
pub struct Upstream {
    /// For HTTP/2 (h2c, h2 over TLS) and for upgrades, whose connection
    /// becomes a tunnel.
    pub client: UpstreamClient,
    /// For every other HTTP/1.1 request (`None` for HTTP/2 profiles):
    /// connections the request's own task drives.
    pub h1: Option<Arc<H1Pool>>,
}

/// A pool's clients, one per worker thread: a worker's requests check out
/// and return connections that worker opened and drives.
pub type UpstreamClients = Arc<crate::per_worker::PerWorker<Upstream>>;

/// The client type of health checks.
pub type HealthClient = Client<BackendConnector, Empty<Bytes>>;

/// What makes two pools different.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// HTTP/1.1, h2c, or h2 over TLS. An `h2` pool offers only ALPN `h2`
    /// and is HTTP/2-only, so it never shares connections with an HTTP/1.1
    /// pool for the same backend.
    pub protocol: UpstreamProtocol,
    /// Connect timeout (zero: the OS's).
    pub connect_timeout: Duration,
    /// Idle connections kept per backend by each worker thread (as nginx's
    /// `keepalive`, which is per worker process).
    pub max_idle: u32,
    /// How long an idle connection is kept (zero: until the backend closes it).
    pub idle_timeout: Duration,
    /// Extra PEM roots for `https://` backends, on top of the webpki roots.
    pub backend_ca: Option<PathBuf>,
}

impl PoolKey {
    /// The profile of a domain's settings.
    pub fn of(settings: &UpstreamSettings, backend_ca: Option<PathBuf>) -> Self {
        Self {
            backend_ca,
            protocol: settings.protocol,
            connect_timeout: settings.timeouts.connect,
            max_idle: settings.pool.max_idle,
            idle_timeout: settings.pool.idle_timeout,
        }
    }

    /// A new pool with this profile; `http://` and `https://` backends
    /// alike (TLS verified against the webpki roots and `backend_ca`).
    pub fn build(&self) -> Result<Upstream, TlsError> {
        let connector = Counting::new(self.connector()?);
        let h1 = (self.protocol == UpstreamProtocol::Http1).then(|| {
            Arc::new(H1Pool::new(
                connector.clone(),
                self.max_idle,
                self.idle_timeout,
                UPSTREAM_READ_BUFFER,
            ))
        });
        Ok(Upstream {
            client: self.builder().build(connector),
            h1,
        })
    }

    /// The client for the health checks of a domain with this profile:
    /// the same TLS trust and protocol as its traffic, on connections of
    /// its own so a check never queues behind requests.
    pub fn health_client(&self) -> Result<HealthClient, TlsError> {
        Ok(self.builder().build(self.connector()?))
    }

    fn connector(&self) -> Result<BackendConnector, TlsError> {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout((!self.connect_timeout.is_zero()).then_some(self.connect_timeout));
        http.enforce_http(false);
        let h2_tls = self.protocol == UpstreamProtocol::H2;
        let roots = backend::roots(self.backend_ca.as_deref())?;
        Ok(backend::connector(roots, http, h2_tls))
    }

    fn builder(&self) -> hyper_util::client::legacy::Builder {
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout((!self.idle_timeout.is_zero()).then_some(self.idle_timeout))
            .pool_max_idle_per_host(self.max_idle as usize)
            .http1_max_buf_size(UPSTREAM_READ_BUFFER);
        // h2c has no negotiation; h2 over TLS has, but the connector has
        // already refused any backend that did not pick `h2`.
        if matches!(self.protocol, UpstreamProtocol::H2c | UpstreamProtocol::H2) {
            builder.http2_only(true);
        }
        builder
    }
}
