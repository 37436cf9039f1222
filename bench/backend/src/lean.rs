//! The same answers without hyper: `httparse` on one read buffer, each
//! batch of answers written with one `writev`. It exists to measure what
//! hyper's HTTP/1 server costs per keep-alive request against about the
//! least a Rust server on tokio can do (issue 15 item 3; bench/README.md),
//! so it serves what the bench sends and nothing more: requests without a
//! body, keep-alive, pipelining. Anything else (a request body, a parse
//! error, a head over 8 KiB) closes the connection.

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The largest request head served.
const MAX_HEAD: usize = 8 * 1024;

/// The fixed parts of the answers, rendered once.
#[derive(Clone)]
pub struct Answers {
    small: Bytes,
    large: Bytes,
    small_head: Bytes,
    large_head: Bytes,
}

impl Answers {
    /// Heads as hyper writes them (status line, content-length, date),
    /// with the date of the start: a bench run is shorter than a day and
    /// no client here reads it.
    pub fn new(small: Bytes, large: Bytes, date: &str) -> Self {
        let head = |len: usize| {
            Bytes::from(format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {len}\r\ndate: {date}\r\n\r\n"
            ))
        };
        Self {
            small_head: head(small.len()),
            large_head: head(large.len()),
            small,
            large,
        }
    }
}

/// Serves one connection until the client closes it or sends something
/// this server does not serve.
pub async fn serve(mut stream: TcpStream, answers: Answers) -> io::Result<()> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out: Vec<Bytes> = Vec::with_capacity(8);
    loop {
        // Every complete request buffered is answered before the next
        // read, so pipelined requests go out in one write.
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let n = match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => break,
                _ => return Ok(()),
            };
            let has_body = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            });
            if has_body {
                return Ok(());
            }
            if req.path == Some("/64k") {
                out.extend([answers.large_head.clone(), answers.large.clone()]);
            } else {
                out.extend([answers.small_head.clone(), answers.small.clone()]);
            }
            buf.advance(n);
        }
        write_all(&stream, &mut out).await?;
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Writes `out` with as few `writev` calls as the socket allows, and
/// empties it.
async fn write_all(stream: &TcpStream, out: &mut Vec<Bytes>) -> io::Result<()> {
    let mut first = 0;
    while first < out.len() {
        stream.writable().await?;
        // A stack array, as a lean path would: no allocation per write.
        let mut slices = [IoSlice::new(&[]); 16];
        let k = (out.len() - first).min(slices.len());
        for (slice, chunk) in slices.iter_mut().zip(&out[first..first + k]) {
            *slice = IoSlice::new(chunk);
        }
        let mut n = match stream.try_write_vectored(&slices[..k]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        while n > 0 {
            let chunk = &mut out[first];
            let taken = n.min(chunk.len());
            chunk.advance(taken);
            n -= taken;
            if chunk.is_empty() {
                first += 1;
            }
        }
    }
    out.clear();
    Ok(())
}
