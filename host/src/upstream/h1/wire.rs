//! The heads of an HTTP/1.1 exchange with a backend: the request head
//! written straight from the proxy's head into the connection's write
//! buffer, the response head parsed by httparse out of its read buffer
//! (header values stay slices of that buffer), and how the response body
//! is framed (RFC 9112 §6.3). The rules are hyper's client's, which this
//! path replaced (bench/README.md): the same bodies, lengths and
//! keep-alive decisions, without its dispatch channel.

use std::io::Write as _;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response, StatusCode, Version};
use http_body::Body;
use smallvec::SmallVec;

use super::super::request_body::RequestBody;

/// Response header fields allowed (hyper's default).
const MAX_HEADERS: usize = 100;

/// A response head that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x or malformed (httparse's words).
    #[error("invalid response head: {0}")]
    Parse(#[from] httparse::Error),
    /// Larger than the pool's read limit.
    #[error("response head larger than {0} bytes")]
    TooLarge(usize),
    /// A field httparse let through that `http` refuses.
    #[error("invalid response header field")]
    Field,
    /// Differing or unparsable `Content-Length` values.
    #[error("invalid content-length in the response")]
    ContentLength,
    /// `Transfer-Encoding` in an HTTP/1.0 response.
    #[error("transfer-encoding in an HTTP/1.0 response")]
    TransferEncoding,
    /// A 101 to a request that asked for no upgrade (upgrades take
    /// hyper-util's client).
    #[error("unexpected 101 response")]
    Switching,
}

/// How the request body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked, its length unknown.
    Chunked,
}

/// How the request's body goes out, as hyper's client framed it
/// (`role::Client::set_length`): a body that has ended is none (its
/// `Content-Length`, if any, kept); a valid `Content-Length` is kept; a
/// known size becomes one; an unknown one is chunked, except for GET, HEAD
/// and CONNECT, which send none. Decided before any of the body is read.
pub fn upload_of(method: &Method, headers: &HeaderMap, body: &RequestBody) -> Upload {
    // The client's side has refused an invalid `Content-Length` already;
    // one that got here anyway is replaced by the framing `encode_request`
    // writes.
    if body.is_end_stream() {
        Upload::None
    } else if let Ok(Some(len)) = content_length(headers) {
        Upload::Length(len)
    } else if let Some(len) = body.size_hint().exact() {
        Upload::Length(len)
    } else if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
        Upload::None
    } else {
        Upload::Chunked
    }
}

/// Writes the request head into `out`, its framing header written from
/// `upload` (which read the headers' `Content-Length` already) in place
/// of the client's: a length as `content-length`, chunked as
/// `transfer-encoding`; without a body the headers go as they are.
/// `Transfer-Encoding` never comes from the proxy (it is hop-by-hop).
pub fn encode_request(
    method: &Method,
    path: &PathAndQuery,
    headers: &HeaderMap,
    upload: Upload,
    out: &mut Vec<u8>,
) {
    let framed = upload != Upload::None;
    out.clear();
    out.reserve(64 + path.as_str().len() + headers.len() * 32);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if *name == header::TRANSFER_ENCODING || (framed && *name == header::CONTENT_LENGTH) {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match upload {
        Upload::Length(len) => {
            let _ = write!(out, "content-length: {len}\r\n");
        }
        Upload::Chunked => field(out, b"transfer-encoding", b"chunked"),
        Upload::None => {}
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// How a response body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
    /// Until the backend closes (never reusable).
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub struct Head {
    /// Status, version and headers.
    pub response: Response<()>,
    /// How its body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request after it.
    pub keep_alive: bool,
}

/// Parses the response head at the start of `buf`, skipping informational
/// (1xx) responses, and takes it out of `buf`; `None` while incomplete.
/// `max` bounds the head: a head not complete within it is an error. The
/// fields go into `spare` (emptied first) when it is not taken yet.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    max: usize,
    spare: &mut HeaderMap,
) -> Result<Option<Head>, HeadError> {
    loop {
        let Some((response, keep_alive)) = parse_one(buf, max, spare)? else {
            return Ok(None);
        };
        let status = response.status().as_u16();
        if status == 101 {
            return Err(HeadError::Switching);
        }
        if (100..200).contains(&status) {
            // `100 Continue`, `103 Early Hints`: not forwarded (as hyper's
            // client drops them); the final response follows.
            continue;
        }
        let (framing, keep_alive, response) = framing(response, method, keep_alive)?;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
        }));
    }
}

/// One head, taken out of `buf`: the response and whether it keeps the
/// connection.
fn parse_one(
    buf: &mut BytesMut,
    max: usize,
    spare: &mut HeaderMap,
) -> Result<Option<(Response<()>, bool)>, HeadError> {
    let mut fields =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut []);
    // Where each field's name and value sit in the head, so the values
    // can be slices of the frozen head instead of copies.
    let mut at: SmallVec<[(u32, u32, u32, u32); 24]> = SmallVec::new();
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut parsed,
        buf,
        &mut fields,
    )? {
        httparse::Status::Complete(len) if len <= max => len,
        httparse::Status::Complete(_) => return Err(HeadError::TooLarge(max)),
        httparse::Status::Partial if buf.len() >= max => return Err(HeadError::TooLarge(max)),
        httparse::Status::Partial => return Ok(None),
    };
    let code = parsed.code.unwrap_or(0);
    let version = if parsed.version == Some(1) {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    for f in parsed.headers.iter() {
        let name = offset(f.name.as_bytes());
        let value = offset(f.value);
        at.push((
            name,
            name + f.name.len() as u32,
            value,
            value + f.value.len() as u32,
        ));
    }
    let status =
        StatusCode::from_u16(code).map_err(|_| HeadError::Parse(httparse::Error::Status))?;
    let head = buf.split_to(len).freeze();
    let mut headers = std::mem::take(spare);
    headers.clear();
    headers.reserve(at.len());
    let mut keep_alive = version == Version::HTTP_11;
    let mut close = false;
    for &(n0, n1, v0, v1) in &at {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize])
            .map_err(|_| HeadError::Field)?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
            .map_err(|_| HeadError::Field)?;
        if name == header::CONNECTION {
            // Once any `Connection` line asks to close, a later
            // `keep-alive` cannot undo it.
            if close || has_token(&value, "close") {
                close = true;
                keep_alive = false;
            } else if !keep_alive {
                keep_alive = has_token(&value, "keep-alive");
            }
        }
        headers.append(name, value);
    }
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some((response, keep_alive)))
}

/// The body's framing (RFC 9112 §6.3, as hyper's `Client::decoder`). A
/// response with both `Transfer-Encoding` and `Content-Length` is read as
/// the former says, its `Content-Length` dropped (it must not reach the
/// client with a body of another length) and its connection not reused.
fn framing(
    mut response: Response<()>,
    method: &Method,
    mut keep_alive: bool,
) -> Result<(Framing, bool, Response<()>), HeadError> {
    let status = response.status().as_u16();
    if status == 204 || status == 304 || *method == Method::HEAD {
        return Ok((Framing::Empty, keep_alive, response));
    }
    if response.headers().contains_key(header::TRANSFER_ENCODING) {
        if response.version() == Version::HTTP_10 {
            return Err(HeadError::TransferEncoding);
        }
        let headers = response.headers_mut();
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        let chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            (Framing::Chunked, keep_alive, response)
        } else {
            (Framing::Close, false, response)
        });
    }
    match content_length(response.headers()) {
        Ok(Some(len)) => Ok((Framing::Length(len), keep_alive, response)),
        Ok(None) => Ok((Framing::Close, false, response)),
        Err(()) => Err(HeadError::ContentLength),
    }
}

/// The `Content-Length` of `headers`: `None` without one, an error when
/// its values (several fields, or a list) differ or are not numbers.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ()> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.to_str().map_err(|_| ())?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            let len: u64 = part.parse().map_err(|_| ())?;
            if found.is_some_and(|f| f != len) {
                return Err(());
            }
            found = Some(len);
        }
    }
    Ok(found)
}

/// Whether a comma-separated header value lists `token`.
fn has_token(value: &HeaderValue, token: &str) -> bool {
    value
        .to_str()
        .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::SizeHint;

    fn parse(bytes: &[u8], method: Method) -> Result<Option<Head>, HeadError> {
        let mut buf = BytesMut::from(bytes);
        parse_response(&mut buf, &method, 1024, &mut HeaderMap::new())
    }

    fn head(bytes: &[u8]) -> Head {
        parse(bytes, Method::GET).unwrap().unwrap()
    }

    #[test]
    fn framing_and_keep_alive_follow_the_response() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        assert_eq!(h.response.headers()["x-a"], "1");
        let h = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h =
            head(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive, close\r\n\r\n");
        assert!(!h.keep_alive);
        let h = head(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(2), false));
        let h = head(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
        assert_eq!(h.response.version(), Version::HTTP_10);
        let h = head(b"HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);
        let h = parse(
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            Method::HEAD,
        );
        assert_eq!(h.unwrap().unwrap().framing, Framing::Empty);
        // The same length twice, in two fields or a list, is one length.
        let h = head(b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(3));
    }

    /// Both framings: chunked wins, the length is not passed on (it would
    /// frame the client's copy differently) and the connection is not
    /// reused.
    #[test]
    fn a_length_beside_chunked_is_dropped_and_the_connection_with_it() {
        let h = head(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert!(h.response.headers().get(header::CONTENT_LENGTH).is_none());
    }

    #[test]
    fn informational_answers_are_skipped_and_the_head_leaves_the_buffer() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"[..],
        );
        let h = parse_response(&mut buf, &Method::POST, 1024, &mut HeaderMap::new())
            .unwrap()
            .unwrap();
        assert_eq!(h.response.status(), StatusCode::CREATED);
        assert_eq!(&buf[..], b"ok");
        let mut partial = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 2"[..]);
        let spare = &mut HeaderMap::new();
        assert!(
            parse_response(&mut partial, &Method::POST, 1024, spare)
                .unwrap()
                .is_none()
        );
        assert_eq!(&partial[..], b"HTTP/1.1 2");
    }

    #[test]
    fn bad_heads_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\n 2\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(
                parse(bad, Method::GET).is_err(),
                "{:?} parsed",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"HTTP/1.1 200 OK\r\nx-a: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1100));
        assert!(matches!(
            parse(&long, Method::GET),
            Err(HeadError::TooLarge(1024))
        ));
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nx-a: 1\r\n", Method::GET)
                .unwrap()
                .is_none()
        );
    }

    fn encode(method: Method, headers: &[(&str, &str)], body: RequestBody) -> (String, Upload) {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let mut out = Vec::new();
        let path = PathAndQuery::from_static("/a?b=1");
        let upload = upload_of(&method, &map, &body);
        encode_request(&method, &path, &map, upload, &mut out);
        (String::from_utf8(out).unwrap(), upload)
    }

    #[test]
    fn the_request_head_carries_the_framing_hyper_gave_it() {
        /// (method, client headers, body ended, body size hint, head sent, framing)
        type Case = (
            Method,
            &'static [(&'static str, &'static str)],
            bool,
            SizeHint,
            &'static str,
            Upload,
        );
        let exact = SizeHint::with_exact;
        let cases: [Case; 6] = [
            (
                Method::GET,
                &[("host", "b")],
                true,
                exact(0),
                "GET /a?b=1 HTTP/1.1\r\nhost: b\r\n\r\n",
                Upload::None,
            ),
            (
                Method::POST,
                &[("content-length", "3"), ("transfer-encoding", "chunked")],
                false,
                exact(3),
                "POST /a?b=1 HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
                Upload::Length(3),
            ),
            (
                Method::PUT,
                &[],
                false,
                exact(4),
                "PUT /a?b=1 HTTP/1.1\r\ncontent-length: 4\r\n\r\n",
                Upload::Length(4),
            ),
            (
                Method::POST,
                &[],
                false,
                SizeHint::default(),
                "POST /a?b=1 HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
                Upload::Chunked,
            ),
            (
                Method::GET,
                &[],
                false,
                SizeHint::default(),
                "GET /a?b=1 HTTP/1.1\r\n\r\n",
                Upload::None,
            ),
            // A length the client repeated goes out once, as the framing
            // read it.
            (
                Method::POST,
                &[("content-length", "3, 3"), ("content-length", "3")],
                false,
                exact(3),
                "POST /a?b=1 HTTP/1.1\r\ncontent-length: 3\r\n\r\n",
                Upload::Length(3),
            ),
        ];
        for (method, headers, ended, hint, want_head, want_upload) in cases {
            let (head, upload) =
                encode(method.clone(), headers, RequestBody::declaring(ended, hint));
            assert_eq!(head, want_head, "{method} {headers:?}");
            assert_eq!(upload, want_upload, "{method} {headers:?}");
        }
    }
}
