//! The chunked transfer coding (RFC 9112 §7.1): the size line both sides of
//! the proxy write before each chunk they send (a request body to a
//! backend, a response body to a client), and a backend's chunked response
//! body, decoded in place from the connection's read buffer: data comes out
//! as slices of that buffer, not copies. As strict as hyper's decoder,
//! which this replaces: a size line is hex digits, optional blanks and
//! extensions, then CR LF; a chunk ends in CR LF; a bare LF anywhere, a
//! size past `u64`, more than 16 KiB of extensions or of trailers is an
//! error and the connection is not reused.

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// Extension bytes allowed over a whole body (hyper's limit).
const EXTENSIONS_LIMIT: u64 = 16 * 1024;
/// Bytes allowed in the trailer section (hyper's limit).
const TRAILER_LIMIT: usize = 16 * 1024;
/// Trailer fields allowed.
const TRAILER_FIELDS: usize = 64;

/// A chunk-size line (hex digits, CR LF), kept by value: a body's pieces
/// carry theirs until the write that sends them.
#[derive(Debug, Clone, Copy)]
pub struct SizeLine {
    buf: [u8; 18],
    /// Where the line starts in `buf` (it ends at the end).
    at: u8,
}

impl SizeLine {
    /// The line of a chunk of `n` bytes.
    pub fn new(n: usize) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0; 18];
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
        Self { buf, at: at as u8 }
    }

    /// The line's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[usize::from(self.at)..]
    }
}

impl Default for SizeLine {
    /// No line (empty), for a slot not written yet.
    fn default() -> Self {
        Self {
            buf: [0; 18],
            at: 18,
        }
    }
}

/// What went wrong in a chunked body.
#[derive(Debug, thiserror::Error)]
#[error("invalid chunked response body: {0}")]
pub struct ChunkError(&'static str);

/// What the next bytes of the buffer held.
#[derive(Debug)]
pub enum Decoded {
    /// Body data.
    Data(Bytes),
    /// The trailer fields, after the last chunk.
    Trailers(HeaderMap),
    /// The body has ended.
    End,
    /// More bytes are needed.
    More,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    SizeBlank,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailers,
    End,
}

/// The decoder's place in a chunked body.
#[derive(Debug)]
pub struct Chunked {
    state: State,
    /// The chunk size being read, then what is left of the chunk.
    size: u64,
    /// Whether the size line had a digit.
    digits: bool,
    extensions: u64,
}

impl Default for Chunked {
    fn default() -> Self {
        Self {
            state: State::Size,
            size: 0,
            digits: false,
            extensions: 0,
        }
    }
}

impl Chunked {
    /// Whether the body has ended (its trailers, if any, returned).
    pub fn ended(&self) -> bool {
        self.state == State::End
    }

    /// What is left of the chunk whose data comes next (none of it
    /// buffered yet, or the buffer taken), if the decoder is in one.
    pub fn data_left(&self) -> Option<u64> {
        (self.state == State::Data).then_some(self.size)
    }

    /// `n` bytes of the current chunk's data were taken past the buffer
    /// (spliced); at most [`data_left`](Self::data_left).
    pub fn skipped(&mut self, n: u64) {
        self.size = self.size.saturating_sub(n);
        if self.size == 0 {
            self.state = State::DataCr;
        }
    }

    /// Consumes what it can of `buf`: the next piece of data, the trailers,
    /// the end, or `More` when `buf` holds no complete piece.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        loop {
            match self.state {
                State::End => return Ok(Decoded::End),
                State::Data => {
                    if buf.is_empty() {
                        return Ok(Decoded::More);
                    }
                    let take = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(buf.len());
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                State::Trailers => return self.trailers(buf),
                _ => {}
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::More);
            };
            buf.advance(1);
            self.state = self.step(byte)?;
        }
    }

    /// The state after `byte`, in the size line or a chunk's end.
    fn step(&mut self, byte: u8) -> Result<State, ChunkError> {
        Ok(match (self.state, byte) {
            (State::Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                let digit = match byte {
                    b'0'..=b'9' => byte - b'0',
                    b'a'..=b'f' => byte - b'a' + 10,
                    _ => byte - b'A' + 10,
                };
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(u64::from(digit)))
                    .ok_or(ChunkError("chunk size too large"))?;
                self.digits = true;
                State::Size
            }
            (State::Size | State::SizeBlank, b' ' | b'\t') if self.digits => State::SizeBlank,
            (State::Size | State::SizeBlank, b';') if self.digits => State::Extension,
            (State::Size | State::SizeBlank | State::Extension, b'\r') if self.digits => {
                State::SizeLf
            }
            (State::Extension, b'\n') => return Err(ChunkError("bare LF in a chunk extension")),
            (State::Extension, _) => {
                self.extensions += 1;
                if self.extensions > EXTENSIONS_LIMIT {
                    return Err(ChunkError("chunk extensions too large"));
                }
                State::Extension
            }
            (State::SizeLf, b'\n') => {
                self.digits = false;
                if self.size == 0 {
                    State::Trailers
                } else {
                    State::Data
                }
            }
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::Size,
            (State::SizeLf | State::DataLf, _) => return Err(ChunkError("expected LF after CR")),
            (State::DataCr, _) => return Err(ChunkError("chunk data longer than its size")),
            _ => return Err(ChunkError("invalid chunk size line")),
        })
    }

    /// The trailer section: an empty line, or fields ending in one.
    fn trailers(&mut self, buf: &mut BytesMut) -> Result<Decoded, ChunkError> {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            self.state = State::End;
            return Ok(Decoded::End);
        }
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return if buf.len() > TRAILER_LIMIT {
                Err(ChunkError("trailers too large"))
            } else {
                Ok(Decoded::More)
            };
        };
        let len = end + 4;
        if len > TRAILER_LIMIT {
            return Err(ChunkError("trailers too large"));
        }
        let section = buf.split_to(len);
        let mut fields = [httparse::EMPTY_HEADER; TRAILER_FIELDS];
        let parsed = match httparse::parse_headers(&section, &mut fields) {
            Ok(httparse::Status::Complete((_, parsed))) => parsed,
            _ => return Err(ChunkError("invalid trailer fields")),
        };
        let mut trailers = HeaderMap::with_capacity(parsed.len());
        for field in parsed {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| ChunkError("invalid trailer name"))?;
            let value = HeaderValue::from_bytes(field.value)
                .map_err(|_| ChunkError("invalid trailer value"))?;
            trailers.append(name, value);
        }
        self.state = State::End;
        Ok(Decoded::Trailers(trailers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed `step` bytes at a time: the data, the trailers
    /// and whether it ended.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, bool), ChunkError> {
        let mut dec = Chunked::default();
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => trailers = Some(t),
                Decoded::End => return Ok((data, trailers, buf.is_empty())),
                Decoded::More if fed == input.len() => return Ok((data, trailers, false)),
                Decoded::More => {
                    let next = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..next]);
                    fed = next;
                }
            }
        }
    }

    #[test]
    fn chunks_extensions_and_trailers_decode_however_the_bytes_arrive() {
        let input = b"5\r\nhello\r\n6;name=val \r\n world\r\nA \t;x\r\n0123456789\r\n0\r\nx-sum: 21\r\n\r\n";
        for step in [1, 2, 3, 7, input.len()] {
            let (data, trailers, clean) = decode(input, step).unwrap();
            assert_eq!(data, b"hello world0123456789", "step {step}");
            assert_eq!(trailers.unwrap()["x-sum"], "21", "step {step}");
            assert!(clean, "step {step}");
        }
        let (data, trailers, clean) = decode(b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(
            (data.as_slice(), trailers.is_none(), clean),
            (&b"abc"[..], true, true)
        );
    }

    #[test]
    fn bad_framing_is_an_error_not_data() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhello!\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"x\r\n",
            b"\r\n",
            b" 5\r\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"3\r\nabc\r\n0\r\nx-a: 1\r\nbad header\r\n\r\n",
        ] {
            assert!(
                decode(bad, 1).is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(bad)
            );
        }
        let mut many = b"1".to_vec();
        many.push(b';');
        many.extend(std::iter::repeat_n(b'a', EXTENSIONS_LIMIT as usize + 1));
        assert!(decode(&many, 4096).is_err());
        let mut big = b"0\r\nx-a: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', TRAILER_LIMIT));
        assert!(decode(&big, 4096).is_err());
    }

    #[test]
    fn an_unfinished_body_asks_for_more_and_bytes_after_the_end_stay_in_the_buffer() {
        assert!(matches!(decode(b"5\r\nhel", 2), Ok((d, None, false)) if d == b"hel"));
        let (data, _, clean) = decode(b"2\r\nok\r\n0\r\n\r\nHTTP/1.1", 64).unwrap();
        assert_eq!((data.as_slice(), clean), (&b"ok"[..], false));
    }

    /// Data taken past the buffer (spliced) moves the decoder through the
    /// chunk as decoded data would: its CR LF and the next size line are
    /// still checked.
    #[test]
    fn data_skipped_past_the_buffer_leaves_the_chunk_framing_checked() {
        let mut c = Chunked::default();
        assert_eq!(c.data_left(), None);
        let mut buf = BytesMut::from(&b"10000\r\n"[..]);
        assert!(matches!(c.decode(&mut buf), Ok(Decoded::More)));
        assert_eq!(c.data_left(), Some(0x10000));
        c.skipped(0x8000);
        assert_eq!(c.data_left(), Some(0x8000));
        c.skipped(0x8000);
        assert_eq!(c.data_left(), None);
        let mut buf = BytesMut::from(&b"\r\n3\r\nend\r\n0\r\n\r\n"[..]);
        assert!(matches!(c.decode(&mut buf), Ok(Decoded::Data(d)) if d == "end"));
        assert!(matches!(c.decode(&mut buf), Ok(Decoded::End)));
        // A chunk that runs on past its size is still caught.
        let mut c = Chunked::default();
        let mut buf = BytesMut::from(&b"4\r\n"[..]);
        assert!(matches!(c.decode(&mut buf), Ok(Decoded::More)));
        c.skipped(4);
        let mut buf = BytesMut::from(&b"x\r\n"[..]);
        assert!(c.decode(&mut buf).is_err());
    }

    #[test]
    fn size_lines_are_hex_and_crlf() {
        let line = |n| SizeLine::new(n).as_bytes().to_vec();
        assert_eq!(line(0), b"0\r\n");
        assert_eq!(line(13), b"d\r\n");
        assert_eq!(line(65536), b"10000\r\n");
        assert_eq!(line(usize::MAX), b"ffffffffffffffff\r\n");
    }
}
