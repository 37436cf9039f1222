//! A response onto the client's stream: the head and, when the body has
//! its first piece ready, that piece in one vectored write; then each piece
//! framed as the head said, written whole before the next is asked for (a
//! client that stops reading holds one piece, as hyper's writer does).

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;

use bytes::Bytes;
use http::{Method, Response};
use http_body::Body;
use tokio::io::AsyncWrite;

use super::encode::{self, Framing, Known};

/// Why a response could not be written whole; the connection closes.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The head was refused (as hyper refuses it).
    #[error("response head: {0}")]
    Head(#[from] encode::EncodeError),
    /// The client's socket failed.
    #[error("writing to the client: {0}")]
    Io(#[from] io::Error),
    /// The body failed, or ended off its declared length.
    #[error("response body: {0}")]
    Body(String),
}

/// Writes `resp` to the response of a `method` request; `head` is the
/// connection's buffer for heads. `Ok(true)`: the connection must close
/// after it (the response said so, or its body is framed by the close).
pub async fn send<IO, B>(
    io: &mut IO,
    resp: Response<B>,
    method: &Method,
    head: &mut Vec<u8>,
) -> Result<bool, WriteError>
where
    IO: AsyncWrite + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (mut parts, mut body) = resp.into_parts();
    let known = if body.is_end_stream() {
        Known::Empty
    } else {
        body.size_hint()
            .exact()
            .map_or(Known::Unknown, Known::Exactly)
    };
    head.clear();
    let encoded = encode::encode(
        parts.status,
        parts.version,
        &mut parts.headers,
        method,
        known,
        head,
    )?;
    let mut out = Framed::new(encoded.framing);
    if encoded.framing == Framing::Length(0) {
        // Nothing of the body goes out (HEAD, 204, 304, an empty body);
        // dropping it ends it as hyper's writer does.
        write_all(io, &mut [IoSlice::new(head)]).await?;
        flush(io).await?;
        return Ok(encoded.last);
    }
    // The first piece goes with the head when it is ready now: one write
    // and one wake-up of the client for a small response.
    let mut pending_head = Some(&head[..]);
    loop {
        let frame = if pending_head.is_some() {
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    if let Some(h) = pending_head.take() {
                        write_all(io, &mut [IoSlice::new(h)]).await?;
                        flush(io).await?;
                    }
                    continue;
                }
            }
        } else {
            poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        };
        let prefix = pending_head.take().unwrap_or(&[]);
        match frame {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    // Trailers: hyper sends them only to a client that
                    // asked (`TE: trailers`), which hyper's side serves.
                    continue;
                };
                out.piece(io, prefix, &data).await?;
            }
            None => {
                out.end(io, prefix).await?;
                flush(io).await?;
                return Ok(encoded.last);
            }
            Some(Err(e)) => {
                return Err(WriteError::Body(e.to_string()));
            }
        }
    }
}

/// The body's framing as it is written.
struct Framed {
    framing: Framing,
    /// Bytes still owed under `Framing::Length`.
    left: u64,
}

impl Framed {
    fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Self { framing, left }
    }

    /// Writes `prefix` (the head, when it is still to go) and one piece.
    async fn piece<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        prefix: &[u8],
        data: &[u8],
    ) -> Result<(), WriteError> {
        match self.framing {
            Framing::Length(_) => {
                if data.len() as u64 > self.left {
                    return Err(WriteError::Body(
                        "the body is longer than its content-length".into(),
                    ));
                }
                self.left -= data.len() as u64;
                write_all(io, &mut [IoSlice::new(prefix), IoSlice::new(data)]).await?;
            }
            Framing::Chunked if data.is_empty() => {
                write_all(io, &mut [IoSlice::new(prefix)]).await?;
            }
            Framing::Chunked => {
                let mut size = [0u8; 18];
                let size = chunk_size(data.len(), &mut size);
                write_all(
                    io,
                    &mut [
                        IoSlice::new(prefix),
                        IoSlice::new(size),
                        IoSlice::new(data),
                        IoSlice::new(b"\r\n"),
                    ],
                )
                .await?;
            }
            Framing::Close => {
                write_all(io, &mut [IoSlice::new(prefix), IoSlice::new(data)]).await?;
            }
        }
        flush(io).await?;
        Ok(())
    }

    /// Writes `prefix` and the body's end.
    async fn end<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        prefix: &[u8],
    ) -> Result<(), WriteError> {
        match self.framing {
            Framing::Length(_) if self.left > 0 => Err(WriteError::Body(
                "the body ended before its content-length".into(),
            )),
            Framing::Chunked => {
                write_all(io, &mut [IoSlice::new(prefix), IoSlice::new(b"0\r\n\r\n")]).await?;
                Ok(())
            }
            _ => {
                write_all(io, &mut [IoSlice::new(prefix)]).await?;
                Ok(())
            }
        }
    }
}

/// `n` as a chunk-size line (hex, CRLF) in `buf`.
fn chunk_size(n: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 16;
    let mut n = n;
    loop {
        at -= 1;
        buf[at] = HEX[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf[16] = b'\r';
    buf[17] = b'\n';
    &buf[at..]
}

/// Writes every byte of `bufs` (empty ones skipped).
pub async fn write_all<IO: AsyncWrite + Unpin>(
    io: &mut IO,
    bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    let mut bufs = &mut bufs[..];
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, bufs)).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

async fn flush<IO: AsyncWrite + Unpin>(io: &mut IO) -> io::Result<()> {
    poll_fn(|cx| Pin::new(&mut *io).poll_flush(cx)).await
}

#[cfg(test)]
mod tests {
    use super::chunk_size;

    #[test]
    fn chunk_sizes_are_hex_lines() {
        let mut buf = [0u8; 18];
        assert_eq!(chunk_size(0, &mut buf), b"0\r\n");
        assert_eq!(chunk_size(13, &mut buf), b"d\r\n");
        assert_eq!(chunk_size(65536, &mut buf), b"10000\r\n");
        assert_eq!(chunk_size(usize::MAX, &mut buf), b"ffffffffffffffff\r\n");
    }
}
