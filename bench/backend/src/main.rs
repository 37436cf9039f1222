//! The origin server of `bench/run.sh`: answers `/64k` with 65536 bytes and
//! anything else with a 13-byte body, from memory, over HTTP/1.1 keep-alive.
//! One thread, so that pinned next to the load generator it costs one known
//! share of that core and every proxy row talks to the same thing.
//!
//! Usage: `bbproxy-bench-backend [--lean | --proxy BACKEND] ADDR` (e.g.
//! `127.0.0.1:0`); prints the bound address on its first line of stdout,
//! then serves until killed. `--lean` serves the same answers without hyper
//! (see `lean`), `--proxy` passes requests to BACKEND as the least proxy on
//! hyper does (see `mini_proxy`): the `lean-origin` and `mini-proxy` rows of
//! bench/run.sh.

mod lean;
mod mini_proxy;

use std::convert::Infallible;
use std::io::Write;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const SMALL: &[u8] = b"Hello, world\n";
const LARGE_LEN: usize = 64 * 1024;

fn main() -> anyhow::Result<()> {
    let usage = || {
        anyhow::anyhow!(
            "usage: bbproxy-bench-backend [--lean | --proxy BACKEND] ADDR (e.g. 127.0.0.1:0)"
        )
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, addr) = match args.as_slice() {
        [addr] => (Mode::Hyper, addr),
        [flag, addr] if flag == "--lean" => (Mode::Lean, addr),
        [flag, backend, addr] if flag == "--proxy" => (
            Mode::Proxy(backend.parse().map_err(|e| {
                anyhow::anyhow!("--proxy takes the backend's ip:port, got {backend:?}: {e}")
            })?),
            addr,
        ),
        _ => return Err(usage()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(addr, mode))
}

/// What the process serves.
#[derive(Clone, Copy)]
enum Mode {
    /// The answers, with hyper's HTTP/1 server.
    Hyper,
    /// The answers, with `lean`.
    Lean,
    /// Requests passed to this backend by `mini_proxy`.
    Proxy(std::net::SocketAddr),
}

async fn serve(addr: &str, mode: Mode) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    // The harness reads the port from here; flush so it does not wait on a
    // buffered pipe.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{bound}")?;
    out.flush()?;
    drop(out);
    accept(listener, mode).await
}

/// Serves every connection `listener` accepts, as `mode` says.
async fn accept(listener: TcpListener, mode: Mode) -> anyhow::Result<()> {
    let small = Bytes::from_static(SMALL);
    let large = Bytes::from(vec![b'x'; LARGE_LEN]);
    let answers = lean::Answers::new(
        small.clone(),
        large.clone(),
        &httpdate::fmt_http_date(std::time::SystemTime::now()),
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: keep serving the
            // connections that exist rather than exit mid-benchmark.
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        match mode {
            Mode::Hyper => {
                tokio::spawn(serve_hyper(stream, small.clone(), large.clone()));
            }
            Mode::Lean => {
                tokio::spawn(lean::serve(stream, answers.clone()));
            }
            Mode::Proxy(backend) => {
                tokio::spawn(mini_proxy::serve(stream, backend));
            }
        }
    }
}

/// Serves one connection with hyper's HTTP/1 server: `/64k` gets `large`,
/// anything else `small`.
async fn serve_hyper(stream: tokio::net::TcpStream, small: Bytes, large: Bytes) {
    let svc = service_fn(move |req: Request<Incoming>| {
        let body = if req.uri().path() == "/64k" {
            large.clone()
        } else {
            small.clone()
        };
        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(mode: Mode) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(accept(listener, mode));
        addr
    }

    /// Sends `requests` at once and reads until the small and the large
    /// body have come back (`both`) or the connection ends.
    async fn exchange(addr: std::net::SocketAddr, requests: &str, both: bool) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(requests.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let done = |got: &[u8]| {
            both && got.ends_with(&[b'x'; 64])
                && got.iter().filter(|&&b| b == b'x').count() >= LARGE_LEN
        };
        while !done(&got) {
            let n = tokio::time::timeout_at(deadline, conn.read(&mut buf))
                .await
                .expect("answers within 10 s")
                .unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    const TWO: &str = "GET / HTTP/1.1\r\nhost: a\r\n\r\nGET /64k HTTP/1.1\r\nhost: a\r\n\r\n";

    /// Both servers give the same answers to pipelined requests, the lean
    /// one with hyper's header lines.
    #[tokio::test]
    async fn the_lean_server_answers_as_hyper_does() {
        for mode in [Mode::Hyper, Mode::Lean] {
            let got = exchange(start(mode).await, TWO, true).await;
            assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{got:.300}");
            assert!(got.contains("content-length: 13\r\n"), "{got:.300}");
            assert!(got.contains("content-length: 65536\r\n"), "{got:.300}");
            assert!(got.contains("date: "), "{got:.300}");
            assert!(got.contains("Hello, world\n"), "{got:.300}");
            assert_eq!(got.matches('x').count(), LARGE_LEN, "{got:.300}");
        }
    }

    /// A request with a body is not served by the lean server: it closes.
    #[tokio::test]
    async fn the_lean_server_closes_on_a_request_body() {
        let addr = start(Mode::Lean).await;
        let got = exchange(
            addr,
            "POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi",
            false,
        )
        .await;
        assert_eq!(got, "");
    }

    /// The mini proxy passes both answers through from its backend.
    #[tokio::test]
    async fn the_mini_proxy_passes_answers_through() {
        let origin = start(Mode::Lean).await;
        let proxy = start(Mode::Proxy(origin)).await;
        let got = exchange(proxy, TWO, true).await;
        assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{got:.300}");
        assert!(got.contains("Hello, world\n"), "{got:.300}");
        assert_eq!(got.matches('x').count(), LARGE_LEN, "{got:.300}");
    }
}
