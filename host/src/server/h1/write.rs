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
use crate::upstream::h1::SizeLine;

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
    if encoded.framing == Framing::Length(0) {
        // Nothing of the body goes out (HEAD, 204, 304, an empty body),
        // whatever it holds (the proxy's own answers have text for a
        // HEAD too); dropping it ends it, as hyper's writer does.
        write_all(io, &mut [IoSlice::new(head)]).await?;
        flush(io).await?;
        return Ok(encoded.last);
    }
    let mut batch = Batch::new(encoded.framing);
    let mut pending_head = Some(&head[..]);
    loop {
        // The first piece of a batch: one ready now when the head still
        // waits (else the head goes alone, and the body is awaited).
        let first = if pending_head.is_some() {
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
        batch.take(first)?;
        // Then every piece ready now, up to a spliced one (which must wait
        // for the socket to take it) or the batch's room: one write for
        // what would be several, and the bytes before a spliced piece go
        // out with it (`crate::splice`: sent with MSG_MORE).
        while batch.open() {
            match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
                Poll::Ready(frame) => batch.take(frame)?,
                Poll::Pending => break,
            }
        }
        let prefix = pending_head.take().unwrap_or(&[]);
        batch.write(io, prefix).await?;
        flush(io).await?;
        if batch.ended {
            return Ok(encoded.last);
        }
    }
}

/// The most body pieces one write carries.
const BATCH: usize = 4;

/// Body pieces ready to go out in one write, framed, and the body's end.
struct Batch {
    framing: Framing,
    /// Bytes still owed under `Framing::Length`.
    left: u64,
    pieces: [Bytes; BATCH],
    /// Each piece's chunk-size line (chunked framing).
    sizes: [SizeLine; BATCH],
    count: usize,
    /// The last piece is spliced (`crate::splice`): nothing may follow it
    /// in the write.
    hole: bool,
    /// The body has ended (its end is in the batch).
    ended: bool,
}

impl Batch {
    fn new(framing: Framing) -> Self {
        let left = match framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        Self {
            framing,
            left,
            pieces: Default::default(),
            sizes: Default::default(),
            count: 0,
            hole: false,
            ended: false,
        }
    }

    /// Whether another piece may join.
    fn open(&self) -> bool {
        self.count < BATCH && !self.hole && !self.ended
    }

    /// Adds what the body gave.
    fn take<E: std::fmt::Display>(
        &mut self,
        frame: Option<Result<http_body::Frame<Bytes>, E>>,
    ) -> Result<(), WriteError> {
        let data = match frame {
            None => {
                if self.framing == Framing::Chunked || self.left == 0 {
                    self.ended = true;
                    return Ok(());
                }
                return Err(WriteError::Body(
                    "the body ended before its content-length".into(),
                ));
            }
            Some(Err(e)) => return Err(WriteError::Body(e.to_string())),
            // Trailers: hyper sends them only to a client that asked (`TE:
            // trailers`), which hyper's side serves.
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => return Ok(()),
            },
        };
        if data.is_empty() {
            return Ok(());
        }
        if let Framing::Length(_) = self.framing {
            if data.len() as u64 > self.left {
                return Err(WriteError::Body(
                    "the body is longer than its content-length".into(),
                ));
            }
            self.left -= data.len() as u64;
        }
        self.hole = crate::splice::is_hole(&data);
        if self.framing == Framing::Chunked {
            self.sizes[self.count] = SizeLine::new(data.len());
        }
        self.pieces[self.count] = data;
        self.count += 1;
        Ok(())
    }

    /// Writes `prefix` (the head, when it is still to go) and the batch,
    /// then empties it.
    async fn write<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        prefix: &[u8],
    ) -> Result<(), WriteError> {
        let empty = IoSlice::new(&[]);
        let mut slices = [empty; 2 + 3 * BATCH];
        slices[0] = IoSlice::new(prefix);
        let mut n = 1;
        for (i, piece) in self.pieces[..self.count].iter().enumerate() {
            if self.framing == Framing::Chunked {
                slices[n] = IoSlice::new(self.sizes[i].as_bytes());
                slices[n + 2] = IoSlice::new(b"\r\n");
            }
            slices[n + 1] = IoSlice::new(piece);
            n += 3;
        }
        if self.ended && self.framing == Framing::Chunked {
            slices[n] = IoSlice::new(b"0\r\n\r\n");
            n += 1;
        }
        write_all(io, &mut slices[..n]).await?;
        for piece in &mut self.pieces[..self.count] {
            *piece = Bytes::new();
        }
        self.count = 0;
        self.hole = false;
        Ok(())
    }
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
