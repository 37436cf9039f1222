//! Raw-socket pieces: send exact bytes to the proxy and read what comes
//! back, and a backend that records the exact bytes it receives.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Generous plugin deadlines for tests that start many proxies on a busy
/// machine: a 10 ms init deadline is not what these tests are about. Ends
/// with a comma, for the middle of a top-level object.
pub const PLUGINS: &str = r#""plugins": {"router": {"timeout": "2s"}, "balancer": {"timeout": "2s"}, "breaker": {"timeout": "2s"}},"#;

/// What a raw exchange saw.
#[derive(Debug)]
pub struct Seen {
    pub bytes: Vec<u8>,
    /// The proxy closed the connection (EOF or reset) before the deadline.
    pub closed: bool,
    pub elapsed: Duration,
}

impl Seen {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Status codes of every response in the bytes, in order (HTTP/1.1
    /// responses, and HTTP/1.0 ones to HTTP/1.0 requests).
    pub fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        let mut found: Vec<(usize, u16)> = ["HTTP/1.1 ", "HTTP/1.0 "]
            .iter()
            .flat_map(|v| text.match_indices(v))
            .filter_map(|(i, _)| Some((i, text.get(i + 9..i + 12)?.parse().ok()?)))
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, s)| s).collect()
    }
}

/// Reads one HTTP head off `conn` (CR LF CR LF included), a byte at a time
/// so that nothing after it is taken.
pub async fn read_head(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    Ok(head)
}

/// Writes `request` to `addr`, then reads until the proxy closes or
/// `deadline` passes.
pub async fn exchange(addr: SocketAddr, request: &[u8], deadline: Duration) -> Seen {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    read_until_close(&mut conn, deadline).await
}

pub async fn read_until_close(conn: &mut TcpStream, deadline: Duration) -> Seen {
    let start = Instant::now();
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        let left = deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    Seen {
        bytes,
        closed,
        elapsed: start.elapsed(),
    }
}

/// A backend that answers `ok <path>` and records every byte it reads, the
/// connections it accepted (and how many are still open) and the requests it
/// served.
pub struct Recorder {
    pub addr: SocketAddr,
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub connections: Arc<AtomicU64>,
    pub open: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let open = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let (b, c, r, o) = (
            bytes.clone(),
            connections.clone(),
            requests.clone(),
            open.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (b, r, o) = (b.clone(), r.clone(), o.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let r = r.clone();
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            let path = req.uri().path().to_owned();
                            let _ = req.into_body().collect().await;
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                                "ok {path}"
                            )))))
                        }
                    });
                    let io = TokioIo::new(Recording {
                        inner: stream,
                        log: b,
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Recorder {
            addr,
            bytes,
            connections,
            open,
            requests,
            task,
        }
    }

    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connections accepted and not yet closed.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::SeqCst)
    }
}

struct Recording {
    inner: TcpStream,
    log: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recording {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            let new = buf.filled()[before..].to_vec();
            self.log.lock().unwrap().extend_from_slice(&new);
        }
        polled
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A backend that speaks raw bytes: for each accepted connection it reads
/// one request head, then writes `response` (and keeps the socket open for
/// `hold`). Counts connections.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawBackend {
    pub async fn start(response: &'static [u8], hold: Duration) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let c = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream.write_all(response).await;
                    tokio::time::sleep(hold).await;
                });
            }
        });
        RawBackend {
            addr,
            connections,
            task,
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}
