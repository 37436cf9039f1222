//! A response head in HTTP/1.1, as hyper's server writes it (lower-case
//! names, its `Content-Length` / `Transfer-Encoding` choices and its
//! `Date`), so a client cannot tell which of the two answered.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, StatusCode, Version, header};

/// How the body after the head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes (zero: no body at all).
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the connection closes (an HTTP/1.0 response of unknown length).
    Close,
}

/// What the body says of its length before it is read (hyper's
/// `BodyLength`, `None` for an ended body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The body has ended already.
    Empty,
    /// It holds exactly this many bytes.
    Exactly(u64),
    /// Unknown.
    Unknown,
}

/// A head written into a buffer, and what it decided.
#[derive(Debug)]
pub struct Encoded {
    /// How the body is framed.
    pub framing: Framing,
    /// The connection ends after this response (`Connection: close`, or a
    /// body framed by the close).
    pub last: bool,
}

/// An error hyper's writer would also refuse the response with: the head
/// is not sent and the connection closes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(&'static str);

/// Writes the head of a response with `status`, `version` and `headers`
/// (drained) to a `method` request into `dst`.
pub fn encode(
    status: StatusCode,
    version: Version,
    headers: &mut http::HeaderMap,
    method: &Method,
    body: Known,
    dst: &mut Vec<u8>,
) -> Result<Encoded, EncodeError> {
    if status.is_informational() {
        return Err(EncodeError("response with 1xx status code not supported"));
    }
    let http10 = version == Version::HTTP_10;
    status_line(status, http10, dst);
    let can_chunked = !http10 && can_have_body(method, status);
    let mut framing = None;
    let mut last = false;
    let mut wrote_date = false;
    let mut cur: Option<header::HeaderName> = None;
    for (name, value) in headers.drain() {
        if let Some(n) = name {
            cur = Some(n);
        }
        let Some(name) = &cur else { continue };
        if *name == header::CONTENT_LENGTH {
            if !content_length(&value, body, method, &mut framing)? {
                continue;
            }
        } else if *name == header::TRANSFER_ENCODING {
            if framing.is_some_and(|f| f != Framing::Chunked) {
                return Err(EncodeError("unexpected transfer-encoding"));
            }
            if !can_chunked {
                continue;
            }
            framing = Some(Framing::Chunked);
            line(dst, "transfer-encoding", &value);
            if !is_chunked(&value) {
                // `chunked` must be the last coding; hyper adds it.
                dst.truncate(dst.len() - 2);
                dst.extend_from_slice(b", chunked\r\n");
            }
            continue;
        } else if *name == header::CONNECTION {
            last |= has_token(&value, b"close");
        } else if *name == header::DATE {
            wrote_date = true;
        } else if *name == header::TRAILER && !can_chunked {
            continue;
        }
        line(dst, name.as_str(), &value);
    }
    let mut framing = match framing {
        Some(f) => f,
        None => implied(status, method, body, can_chunked, dst),
    };
    if !can_have_body(method, status) {
        framing = Framing::Length(0);
    }
    if !wrote_date {
        dst.extend_from_slice(b"date: ");
        date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    last |= framing == Framing::Close;
    Ok(Encoded { framing, last })
}

/// The framing of a response whose headers set none, and the header that
/// says it (hyper's choices).
fn implied(
    status: StatusCode,
    method: &Method,
    body: Known,
    can_chunked: bool,
    dst: &mut Vec<u8>,
) -> Framing {
    match body {
        Known::Unknown if can_chunked => {
            dst.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        }
        Known::Unknown => Framing::Close,
        Known::Empty | Known::Exactly(0) => {
            if can_have_content_length(status) && *method != Method::HEAD {
                dst.extend_from_slice(b"content-length: 0\r\n");
            }
            Framing::Length(0)
        }
        Known::Exactly(n) if can_have_content_length(status) => {
            dst.extend_from_slice(b"content-length: ");
            dst.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            dst.extend_from_slice(b"\r\n");
            Framing::Length(n)
        }
        Known::Exactly(_) => Framing::Length(0),
    }
}

fn status_line(status: StatusCode, http10: bool, dst: &mut Vec<u8>) {
    if status == StatusCode::OK && !http10 {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    dst.extend_from_slice(if http10 { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    dst.extend_from_slice(status.as_str().as_bytes());
    dst.push(b' ');
    // A reason must be written: many parsers expect one.
    dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    dst.extend_from_slice(b"\r\n");
}

/// A `Content-Length` header against the body, as hyper decides: whether
/// the caller writes it. The first one sets the framing and is written;
/// repeats are dropped (a different one of a body of unknown length is an
/// error); an ended body's is dropped, except a HEAD response's.
fn content_length(
    value: &HeaderValue,
    body: Known,
    method: &Method,
    framing: &mut Option<Framing>,
) -> Result<bool, EncodeError> {
    if framing.is_some_and(|f| f == Framing::Chunked) {
        return Err(EncodeError("unexpected content-length"));
    }
    let len = match body {
        Known::Exactly(n) => n,
        Known::Unknown => {
            let Some(len) = parse_length(value) else {
                return Err(EncodeError("illegal content-length value"));
            };
            if let Some(Framing::Length(prev)) = framing
                && *prev != len
            {
                return Err(EncodeError("multiple content-length values"));
            }
            len
        }
        // No body: only a HEAD response says how long it would be.
        Known::Empty if *method == Method::HEAD => 0,
        Known::Empty => return Ok(false),
    };
    if framing.is_some() {
        return Ok(false);
    }
    *framing = Some(Framing::Length(len));
    Ok(true)
}

fn parse_length(value: &HeaderValue) -> Option<u64> {
    let s = value.to_str().ok()?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn line(dst: &mut Vec<u8>, name: &str, value: &HeaderValue) {
    dst.extend_from_slice(name.as_bytes());
    dst.extend_from_slice(b": ");
    dst.extend_from_slice(value.as_bytes());
    dst.extend_from_slice(b"\r\n");
}

fn is_chunked(value: &HeaderValue) -> bool {
    value
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn has_token(value: &HeaderValue, token: &[u8]) -> bool {
    value
        .as_bytes()
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn can_have_body(method: &Method, status: StatusCode) -> bool {
    *method != Method::HEAD && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

fn can_have_content_length(status: StatusCode) -> bool {
    !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

thread_local! {
    /// The `Date` value and the second it was made for: formatted once a
    /// second per worker, as hyper's cache does.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

/// Appends the current `Date` value (IMF-fixdate, 29 bytes).
fn date(dst: &mut Vec<u8>) {
    // The coarse clock (the last timer tick's time, a few milliseconds
    // behind at most) is exact enough for whole seconds, and is read
    // without the clock source: 13 ns against `SystemTime::now`'s 49 on
    // the bench's VM, once per response.
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            let text = httpdate::fmt_http_date(at);
            if let Some(bytes) = text.as_bytes().get(..29) {
                cached.1.copy_from_slice(bytes);
                cached.0 = secs;
            }
        }
        dst.extend_from_slice(&cached.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map_of(headers: &[(&str, &str)]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for (n, v) in headers {
            map.append(
                header::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        method: Method,
        body: Known,
    ) -> (String, Framing, bool) {
        let mut map = map_of(headers);
        let mut dst = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let e = encode(status, Version::HTTP_11, &mut map, &method, body, &mut dst).unwrap();
        let text = String::from_utf8(dst).unwrap();
        // The date is the one line that changes.
        let date = text.find("date: ").expect("a date line");
        let text = format!("{}{}", &text[..date], &text[date + 37..]);
        (text, e.framing, e.last)
    }

    #[test]
    fn a_known_length_is_said_once() {
        let (text, framing, last) = head(200, &[("x-a", "1")], Method::GET, Known::Exactly(13));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 13\r\n\r\n"
        );
        assert_eq!((framing, last), (Framing::Length(13), false));
        let (text, framing, _) = head(
            200,
            &[("content-length", "13")],
            Method::GET,
            Known::Exactly(13),
        );
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n");
        assert_eq!(framing, Framing::Length(13));
    }

    #[test]
    fn an_unknown_length_is_chunked_or_the_header_s() {
        let (text, framing, _) = head(200, &[], Method::GET, Known::Unknown);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(framing, Framing::Chunked);
        let (text, framing, _) = head(200, &[("content-length", "7")], Method::GET, Known::Unknown);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(framing, Framing::Length(7));
        let (text, framing, _) = head(
            200,
            &[("transfer-encoding", "gzip")],
            Method::GET,
            Known::Unknown,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n"
        );
        assert_eq!(framing, Framing::Chunked);
    }

    #[test]
    fn bodiless_answers_carry_no_body_and_only_the_lengths_they_may() {
        let (text, framing, _) = head(200, &[], Method::GET, Known::Empty);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(framing, Framing::Length(0));
        // HEAD: the length the GET would have, and no body.
        let (text, framing, _) = head(200, &[("content-length", "5")], Method::HEAD, Known::Empty);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(framing, Framing::Length(0));
        let (text, _, _) = head(200, &[], Method::HEAD, Known::Empty);
        assert_eq!(text, "HTTP/1.1 200 OK\r\n\r\n");
        let (text, framing, _) = head(204, &[], Method::GET, Known::Exactly(3));
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(framing, Framing::Length(0));
        let (text, _, _) = head(
            304,
            &[("transfer-encoding", "chunked")],
            Method::GET,
            Known::Unknown,
        );
        assert_eq!(text, "HTTP/1.1 304 Not Modified\r\n\r\n");
    }

    #[test]
    fn connection_close_and_close_delimited_bodies_end_the_connection() {
        let (text, _, last) = head(200, &[("connection", "close")], Method::GET, Known::Empty);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        );
        assert!(last);
        let mut map = http::HeaderMap::new();
        let mut dst = Vec::new();
        let e = encode(
            StatusCode::OK,
            Version::HTTP_10,
            &mut map,
            &Method::GET,
            Known::Unknown,
            &mut dst,
        )
        .unwrap();
        assert_eq!((e.framing, e.last), (Framing::Close, true));
        assert!(dst.starts_with(b"HTTP/1.0 200 OK\r\n"));
    }

    #[test]
    fn heads_hyper_refuses_are_refused() {
        let refuse = |status: u16, headers: &[(&str, &str)], body| {
            let mut map = map_of(headers);
            let status = StatusCode::from_u16(status).unwrap();
            encode(
                status,
                Version::HTTP_11,
                &mut map,
                &Method::GET,
                body,
                &mut Vec::new(),
            )
            .is_err()
        };
        assert!(refuse(103, &[], Known::Empty));
        assert!(refuse(
            200,
            &[("content-length", "5"), ("content-length", "6")],
            Known::Unknown
        ));
        assert!(refuse(200, &[("content-length", "x")], Known::Unknown));
        assert!(refuse(
            200,
            &[("transfer-encoding", "chunked"), ("content-length", "5")],
            Known::Unknown
        ));
        assert!(!refuse(
            200,
            &[("content-length", "5"), ("content-length", "5")],
            Known::Unknown
        ));
    }

    /// The whole head `encode` writes for a 200 with `map` and no body.
    fn written(map: &mut http::HeaderMap) -> String {
        let mut dst = Vec::new();
        encode(
            StatusCode::OK,
            Version::HTTP_11,
            map,
            &Method::GET,
            Known::Empty,
            &mut dst,
        )
        .unwrap();
        String::from_utf8(dst).unwrap()
    }

    #[test]
    fn a_date_is_added_unless_the_response_has_one() {
        let text = written(&mut http::HeaderMap::new());
        let date = text
            .split("date: ")
            .nth(1)
            .unwrap()
            .split("\r\n")
            .next()
            .unwrap();
        let parsed = httpdate::parse_http_date(date).unwrap();
        let age = SystemTime::now()
            .duration_since(parsed)
            .unwrap_or(Duration::ZERO);
        assert!(age < Duration::from_secs(5), "{date}");
        let text = written(&mut map_of(&[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]));
        assert_eq!(text.matches("date: ").count(), 1, "{text}");
        assert!(text.contains("date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"));
    }
}
