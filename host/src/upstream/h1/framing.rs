//! Where a response body ends, taken piece by piece out of the bytes read
//! so far (no I/O here: the exchange reads when a piece needs more), and
//! a whole response read from bytes in memory through the same parser and
//! framing, for the fuzz target and the tests.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response};
use http_body::Frame;

use super::chunked::{ChunkError, Chunked, Decoded};
use super::error::{BoxError, Broken};
use super::wire::{self, Framing};

/// What is left of a response body.
pub enum Left {
    /// This many bytes (zero: ended).
    Length(u64),
    /// Chunks, where the decoder is.
    Chunked(Chunked),
    /// Until the backend closes.
    Close,
}

/// The next piece of a body.
pub enum Piece {
    /// Data, or the trailers.
    Frame(Frame<Bytes>),
    /// The body has ended.
    End,
    /// The bytes read so far hold no more of it.
    More,
}

impl Left {
    /// The body's framing at its start.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Empty => Left::Length(0),
            Framing::Length(n) => Left::Length(n),
            Framing::Chunked => Left::Chunked(Chunked::default()),
            Framing::Close => Left::Close,
        }
    }

    /// Whether nothing is left.
    pub fn ended(&self) -> bool {
        match self {
            Left::Length(n) => *n == 0,
            Left::Chunked(c) => c.ended(),
            Left::Close => false,
        }
    }

    /// Takes the next piece out of `buf`, the bytes read and not taken
    /// (data leaves as a slice of it, not a copy).
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Piece, ChunkError> {
        Ok(match self {
            Left::Length(0) => Piece::End,
            Left::Length(n) if !buf.is_empty() => {
                let take = usize::try_from(*n).unwrap_or(usize::MAX).min(buf.len());
                *n -= take as u64;
                Piece::Frame(Frame::data(buf.split_to(take).freeze()))
            }
            Left::Close if !buf.is_empty() => Piece::Frame(Frame::data(buf.split().freeze())),
            Left::Chunked(decoder) => match decoder.decode(buf)? {
                Decoded::Data(data) => Piece::Frame(Frame::data(data)),
                Decoded::Trailers(t) => Piece::Frame(Frame::trailers(t)),
                Decoded::End => Piece::End,
                Decoded::More => Piece::More,
            },
            Left::Length(_) | Left::Close => Piece::More,
        })
    }

    /// The backend closed the connection: the end of a body delimited by
    /// the close, a cut one otherwise.
    pub fn closed(&mut self) -> Result<(), Broken> {
        if matches!(self, Left::Close) {
            *self = Left::Length(0);
        }
        if self.ended() {
            Ok(())
        } else {
            Err(Broken::BodyCut)
        }
    }
}

/// Reads `bytes` as a backend's whole response to a `method` request (the
/// connection closed after them), the first `split` bytes arriving before
/// the rest, through the proxy's own head parser and body framing: the
/// head and the body's data, or the error. `max` bounds the head, as
/// the pool's read limit does. For the fuzz target `upstream_response`
/// (fuzz/) and the tests.
pub fn read_response(
    bytes: &[u8],
    split: usize,
    method: &Method,
    max: usize,
) -> Result<(Response<()>, Vec<u8>), BoxError> {
    let (first, mut rest) = bytes.split_at(split.min(bytes.len()));
    let mut buf = BytesMut::from(first);
    let mut spare = HeaderMap::new();
    let head = loop {
        if let Some(head) = wire::parse_response(&mut buf, method, max, &mut spare)? {
            break head;
        }
        if rest.is_empty() {
            return Err(Broken::NoResponse.into());
        }
        buf.extend_from_slice(std::mem::take(&mut rest));
    };
    let mut left = Left::new(head.framing);
    let mut body = Vec::new();
    loop {
        match left.next(&mut buf)? {
            Piece::Frame(frame) => {
                if let Ok(data) = frame.into_data() {
                    body.extend_from_slice(&data);
                }
            }
            Piece::End => return Ok((head.response, body)),
            Piece::More if rest.is_empty() => {
                left.closed()?;
                return Ok((head.response, body));
            }
            Piece::More => buf.extend_from_slice(std::mem::take(&mut rest)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16 * 1024;

    const SEEDS: [(&[u8], &[u8]); 4] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world",
            b"hello world",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nx-t: 1\r\n\r\n",
            b"hello world",
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nhello world",
            b"hello world",
        ),
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n", b""),
    ];

    #[test]
    fn whole_responses_read_the_same_however_they_are_split() {
        for (bytes, body) in SEEDS {
            for split in 0..=bytes.len() {
                let (_, read) = read_response(bytes, split, &Method::GET, MAX).unwrap();
                assert_eq!(
                    read,
                    body,
                    "{:?} split at {split}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
        let (_, read) = read_response(SEEDS[0].0, 5, &Method::HEAD, MAX).unwrap();
        assert!(read.is_empty());
        let cut = &SEEDS[0].0[..SEEDS[0].0.len() - 1];
        assert!(read_response(cut, 0, &Method::GET, MAX).is_err());
    }

    /// A small fuzz run that CI repeats: 20,000 mutations of the seeds
    /// (bytes changed, dropped, CR LF inserted, cut short) never panic, and
    /// a body is never longer than the bytes it came from.
    #[test]
    fn mutated_responses_are_errors_or_bodies_never_panics() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut errors = 0;
        for round in 0..20_000 {
            let (seed, _) = SEEDS[round % SEEDS.len()];
            let mut bytes = seed.to_vec();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % bytes.len().max(1);
                match next() % 4 {
                    0 if !bytes.is_empty() => bytes[at] = next() as u8,
                    1 if !bytes.is_empty() => drop(bytes.remove(at)),
                    2 => bytes.splice(at..at, *b"\r\n").for_each(drop),
                    _ => bytes.truncate(at),
                }
            }
            let split = (next() as usize) % (bytes.len() + 1);
            match read_response(&bytes, split, &Method::GET, MAX) {
                Ok((_, body)) => assert!(body.len() <= bytes.len()),
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    errors += 1;
                }
            }
        }
        // The mutations reach the error paths and the accepting ones.
        assert!((1000..19_000).contains(&errors), "{errors} errors");
    }
}
