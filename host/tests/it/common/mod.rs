//! Shared pieces of the integration tests: real hyper backends on
//! 127.0.0.1:0, the proxy started in-process from a config file in a temp
//! dir, HTTP/1.1 and h2c clients, and waiting on conditions with deadlines.

pub mod acme_front;
pub mod alone;
pub mod binary;
pub mod browser;
pub mod direct;
pub mod otlp;
pub mod pebble;
pub mod prom;
pub mod switchable;
pub mod tls;
pub mod wasm;

pub use wasm::{dir_with, example_plugin, fixture};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

pub mod raw;
pub mod redis;

/// Size of the body `/download` serves.
pub const DOWNLOAD_BYTES: usize = 10 * 1024 * 1024;

/// A test backend: answers `backend <name>` to every request, except
/// `/upload` (answers the hex SHA-256 of the body it read), `/download`
/// (streams [`DOWNLOAD_BYTES`] of [`pattern`]) and `/headers` (the
/// request's headers as `name: value` lines sorted by name, with the response
/// headers `server: backend <name>` and `x-backend: <name>`). Counts
/// requests.
pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with_delay(name, Duration::ZERO).await
    }

    /// A backend that waits `delay` before answering.
    pub async fn start_with_delay(name: &str, delay: Duration) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, listener, delay, false)
    }

    /// A backend on a given address (to bring a dead backend back).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Backend {
        revive(addr);
        let listener = TcpListener::bind(addr).await.unwrap();
        Self::serve(name, listener, Duration::ZERO, false)
    }

    /// A backend that says which one it is and what it was asked:
    /// `backend <name> <METHOD> <path?query>` to every request.
    pub async fn start_reporting(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(name, listener, Duration::ZERO, true)
    }

    fn serve(name: &str, listener: TcpListener, delay: Duration, report: bool) -> Backend {
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let (n, h) = (name.to_owned(), hits.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h) = (n.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (n, h) = (n.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            if report {
                                let target = req.uri().path_and_query().map_or("", |p| p.as_str());
                                return Ok(full(format!("backend {n} {} {target}", req.method())));
                            }
                            Ok::<_, Infallible>(answer(&n, req).await)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend { addr, hits, task }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    name: &str,
    req: Request<Incoming>,
) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    match req.uri().path() {
        "/upload" => {
            let mut hasher = Sha256::new();
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                if let Ok(data) = frame.unwrap().into_data() {
                    hasher.update(&data);
                }
            }
            full(hex(&hasher.finalize()))
        }
        "/download" => {
            let chunks = futures_stream(DOWNLOAD_BYTES);
            Response::new(http_body_util::StreamBody::new(chunks).boxed())
        }
        "/headers" => {
            let mut pairs: Vec<(&str, &str)> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("?")))
                .collect();
            // By name only (a stable sort): a header's values stay in the
            // order they came in.
            pairs.sort_by_key(|(k, _)| *k);
            let lines: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            // Response headers for the filter tests to edit.
            let mut resp = full(lines.join("\n"));
            let h = resp.headers_mut();
            h.insert("server", format!("backend {name}").parse().unwrap());
            h.insert("x-backend", name.parse().unwrap());
            resp
        }
        _ => full(format!("backend {name}")),
    }
}

fn full(s: String) -> Response<http_body_util::combinators::BoxBody<Bytes, Infallible>> {
    Response::new(Full::new(Bytes::from(s)).boxed())
}

/// Deterministic bytes: byte i is `i * 31 mod 251`.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn futures_stream(
    len: usize,
) -> impl futures_core::Stream<Item = Result<hyper::body::Frame<Bytes>, Infallible>> + Send {
    const CHUNK: usize = 64 * 1024;
    let data = Bytes::from(pattern(len));
    let chunks: Vec<Bytes> = (0..len.div_ceil(CHUNK))
        .map(|i| data.slice(i * CHUNK..((i + 1) * CHUNK).min(len)))
        .collect();
    tokio_stream_iter(chunks)
}

fn tokio_stream_iter(
    chunks: Vec<Bytes>,
) -> impl futures_core::Stream<Item = Result<hyper::body::Frame<Bytes>, Infallible>> + Send {
    struct Iter(std::vec::IntoIter<Bytes>);
    impl futures_core::Stream for Iter {
        type Item = Result<hyper::body::Frame<Bytes>, Infallible>;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            std::task::Poll::Ready(self.0.next().map(|b| Ok(hyper::body::Frame::data(b))))
        }
    }
    Iter(chunks.into_iter())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A running proxy plus the temp dir holding its config.
pub struct Proxy {
    pub addr: SocketAddr,
    pub running: Option<bbproxy::app::Running>,
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Writes `config_json` (which should listen on `127.0.0.1:0`) to
    /// `config.json` in a temp dir and starts the proxy on it.
    pub async fn start(config_json: &str) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config_json).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config_json: &str) -> Proxy {
        Self::start_in_with(dir, config_json, bbproxy::app::Options::default()).await
    }

    /// Where every proxy of the suite keeps compiled plugins unless its
    /// config says otherwise: each component (the Python and JavaScript
    /// examples; the default bundle comes precompiled) is compiled once per
    /// target dir, not once per test.
    pub fn plugin_cache_dir() -> PathBuf {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
    }

    /// [`Proxy::start`] with `options` (e.g. a number of workers).
    pub async fn start_with(config_json: &str, options: bbproxy::app::Options) -> Proxy {
        Self::start_in_with(tempfile::tempdir().unwrap(), config_json, options).await
    }

    pub async fn start_in_with(
        dir: tempfile::TempDir,
        config_json: &str,
        options: bbproxy::app::Options,
    ) -> Proxy {
        let path = dir.path().join("config.json");
        std::fs::write(&path, config_json).unwrap();
        let config = bbproxy_config::load(&path).unwrap();
        let options = bbproxy::app::Options {
            plugin_cache_dir: options
                .plugin_cache_dir
                .or_else(|| Some(Self::plugin_cache_dir())),
            ..options
        };
        let running = bbproxy::app::start(config, options).await.unwrap();
        Proxy {
            addr: running.http.unwrap(),
            running: Some(running),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn generation(&self) -> Arc<bbproxy::generation::Generation> {
        self.running.as_ref().unwrap().generation.load_full()
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// HTTP/1.1 client with keep-alive.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// HTTP/1.1 client that dials `addr` whatever the URI's authority, so
/// requests can name a test domain.
pub fn client_to(addr: SocketAddr) -> Client<ResolveTo, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(ResolveTo(addr))
}

/// An HTTP/2 (prior knowledge) client sending every request to one address.
pub type HttpClientTo = Client<ResolveTo, Full<Bytes>>;

/// HTTP/2 client with prior knowledge (h2c) that dials `addr` whatever the
/// URI's authority.
pub fn h2c_client_to(addr: SocketAddr) -> HttpClientTo {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(ResolveTo(addr))
}

/// A connector that sends every request to one address, so a URI can carry
/// any authority.
#[derive(Clone)]
pub struct ResolveTo(std::net::SocketAddr);

impl tower_service::Service<hyper::Uri> for ResolveTo {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let addr = self.0;
        Box::pin(async move {
            Ok(hyper_util::rt::TokioIo::new(
                tokio::net::TcpStream::connect(addr).await?,
            ))
        })
    }
}

/// GET `url` with `Host: host`; status and body text.
pub async fn get(client: &HttpClient, url: &str, host: &str) -> (StatusCode, String) {
    let req = Request::get(url)
        .header(hyper::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A config serving `app.test` from `backend` alone on 127.0.0.1:0, with
/// `admin` as the `admin` value (JSON: `null` or `"127.0.0.1:0"`).
pub fn app_test_config(backend: SocketAddr, admin: &str) -> String {
    format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": {admin},
            "domains": {{"app.test": ["{backend}"]}}}}"#
    )
}

/// Polls `cond` until it holds or `deadline` passes.
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if cond().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A JSON array of backend addresses.
pub fn addrs(backends: &[&Backend]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!("[{}]", list.join(", "))
}

/// A TCP port on 127.0.0.1 kept for one server that is told its number
/// (Pebble, redis-server, a proxy's listener), for as long as this lives.
/// Linux never hands a bound port out to a port-0 bind, yet lets sockets
/// that all set SO_REUSEADDR (tokio, Go and redis-server do) share it as
/// long as only one listens: the server binds and listens there while the
/// reservation stays. A port found free, released and bound later was
/// racy: another test could be given it in between.
pub struct ReservedPort {
    pub port: u16,
    _socket: socket2::Socket,
}

impl ReservedPort {
    /// A reserved port whose number is also free for UDP right now (for
    /// a DNS server that binds both).
    pub fn new(udp_too: bool) -> ReservedPort {
        loop {
            let (socket, addr) = bound_never_listening(true);
            let port = addr.port();
            if !udp_too || std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
                return ReservedPort {
                    port,
                    _socket: socket,
                };
            }
        }
    }
}

/// A TCP socket bound to a port of 127.0.0.1 that the kernel picked, not
/// listening; with `reuse_address`, a server that sets SO_REUSEADDR too
/// may still listen on the port.
fn bound_never_listening(reuse_address: bool) -> (socket2::Socket, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_reuse_address(reuse_address).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    (s, addr)
}

/// A 127.0.0.1 address that refuses connections: a socket bound there
/// that never listens, kept for the rest of the test process. Binding and
/// releasing a port was racy: with tests (and their child processes)
/// running side by side, another test's backend could be given the port
/// and answer for the "dead" backend. A bound port is never handed out
/// again while its socket lives (this one does not set SO_REUSEADDR).
pub async fn dead_addr() -> SocketAddr {
    let (s, addr) = bound_never_listening(false);
    held_dead().push((addr, s));
    addr
}

/// Lets go of a [`dead_addr`]'s port, for a backend to come up there.
pub fn revive(addr: SocketAddr) {
    held_dead().retain(|(a, _)| *a != addr);
}

/// The sockets that keep [`dead_addr`]'s ports.
fn held_dead() -> std::sync::MutexGuard<'static, Vec<(SocketAddr, socket2::Socket)>> {
    static HELD: std::sync::Mutex<Vec<(SocketAddr, socket2::Socket)>> =
        std::sync::Mutex::new(Vec::new());
    HELD.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's resident memory in KiB (in-process proxies included).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The sum of a Prometheus counter over the series whose labels include all
/// of `labels`, from this process's recorder (the proxy runs in it).
/// Metrics are process-global: a test asserting a delta must not run beside
/// another test that moves the same series.
pub fn counter(name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = bbproxy::telemetry::render();
    text.lines()
        .filter(|l| {
            let Some(rest) = l.strip_prefix(name) else {
                return false;
            };
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .sum()
}

/// Raises this test process's open-file limit and checks it allows
/// `connections` connections with both ends in this process (plus 256 for
/// everything else).
pub fn need_open_files_for(connections: usize) {
    let fds = bbproxy::server::capacity::raise_nofile_limit().unwrap();
    assert!(
        fds.now >= 2 * connections as u64 + 256,
        "this test needs {} open files; the hard limit is {}",
        2 * connections + 256,
        fds.hard
    );
}

/// A [`ReservedPort`] is bound (so no port-0 bind is handed it) and a
/// server that sets SO_REUSEADDR still listens and answers there. A port
/// found free and released (the old `free_port`) fails the first assertion.
#[tokio::test]
async fn a_reserved_port_is_kept_from_others_and_served_by_its_server() {
    let reserved = ReservedPort::new(true);
    let addr = SocketAddr::from(([127, 0, 0, 1], reserved.port));
    let plain = || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&addr.into())
    };
    assert!(plain().is_err(), "{addr} is not reserved");
    let server = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (connected, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), server.accept());
    assert!(
        connected.is_ok() && accepted.is_ok(),
        "the server at {addr} is not reached"
    );
}

/// [`dead_addr`] refuses connections and keeps its port from everyone
/// else until [`revive`]d (binding then releasing it did not: another
/// test could be handed the port and answer for the dead backend).
#[tokio::test]
async fn a_dead_address_refuses_connections_and_keeps_its_port() {
    let addr = dead_addr().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    assert!(std::net::TcpListener::bind(addr).is_err(), "{addr} is free");
    revive(addr);
    assert!(std::net::TcpListener::bind(addr).is_ok(), "{addr} is held");
}
