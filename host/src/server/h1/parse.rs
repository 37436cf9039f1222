//! A request head off the client's bytes, for the requests the loop answers
//! itself: HTTP/1.1 without a body, upgrade, `Expect` or `TE`. Everything
//! else (and every malformed head) is left to hyper, which answers it as
//! before: 400, 414, 431, 100-continue, chunked and sized bodies, upgrades.

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};

use crate::upstream::request_body::ClientBody;

/// hyper's longest request target; a longer one gets its 414 from hyper.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// The most headers a head handled here may have (the default of
/// `limits.max_headers`); a config that allows more sends every request
/// to hyper.
const MAX_HEADERS: usize = 100;

/// Where a header's name and value lie in the head: (offset, length) each.
pub type Span = ((usize, usize), (usize, usize));

/// What the buffered bytes hold.
#[derive(Debug)]
pub enum Parsed {
    /// A whole head the loop answers; the connection stays open after it
    /// unless `keep_alive` is false (the client sent `Connection: close`).
    Request {
        /// Boxed, as the proxy takes it.
        req: Box<Request<ClientBody>>,
        keep_alive: bool,
    },
    /// Not a whole head yet.
    Partial,
    /// hyper takes the connection from here, these bytes included.
    HandOver,
}

/// The limits hyper is configured with, which a head handled here must
/// keep too (a head beyond them goes to hyper for its 431).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

/// Parses the head at the start of `buf`, taking its bytes off `buf` when
/// it is one the loop answers. Header values and the target share the
/// bytes read, as hyper's do.
/// `spans` is the connection's scratch space for the header positions.
pub fn parse(buf: &mut BytesMut, limits: Limits, spans: &mut Vec<Span>) -> Parsed {
    // Left uninitialised, as hyper does: httparse writes each header it
    // returns, and zeroing the array cost more than the parse of a small
    // head.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let Some(headers) = headers.get_mut(..limits.max_headers) else {
        // More headers allowed than the array holds: hyper's path.
        return Parsed::HandOver;
    };
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        buf,
        headers,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= limits.max_header_bytes {
                Parsed::HandOver
            } else {
                Parsed::Partial
            };
        }
        Err(_) => return Parsed::HandOver,
    };
    if len > limits.max_header_bytes || parsed.version != Some(1) {
        return Parsed::HandOver;
    }
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return Parsed::HandOver;
    };
    if path.len() > MAX_URI_LEN {
        return Parsed::HandOver;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::HandOver;
    };
    if method == Method::CONNECT {
        return Parsed::HandOver;
    }
    let mut keep_alive = true;
    for h in parsed.headers.iter() {
        match Kind::of(h) {
            Kind::Plain => {}
            Kind::Close => keep_alive = false,
            Kind::Hyper => return Parsed::HandOver,
        }
    }
    // Offsets into `buf`, taken before the borrow of its bytes ends.
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = offset(path.as_bytes());
    spans.clear();
    for h in parsed.headers.iter() {
        spans.push((offset(h.name.as_bytes()), offset(h.value)));
    }
    let head = buf.split_to(len).freeze();
    let slice = |(at, n): (usize, usize)| head.slice(at..at + n);
    let Ok(uri) = Uri::from_maybe_shared(slice(target)) else {
        return Parsed::HandOver;
    };
    // Room for the X-Forwarded-For, -Proto and -Host the proxy adds
    // (`proxy::headers`): the map then never grows (a new table and every
    // entry hashed again) on the way to the backend.
    let mut map = HeaderMap::with_capacity(spans.len() + 3);
    for &(name, value) in spans.iter() {
        let Ok(name) = HeaderName::from_bytes(&head[name.0..name.0 + name.1]) else {
            return Parsed::HandOver;
        };
        map.append(name, value_of(slice(value)));
    }
    let mut req = Box::new(Request::new(ClientBody::Empty));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = map;
    Parsed::Request { req, keep_alive }
}

/// A header value from bytes httparse accepted as one (as hyper makes
/// them).
fn value_of(bytes: Bytes) -> HeaderValue {
    // httparse allows only visible ASCII, obs-text, space and tab in a
    // value, all of which `HeaderValue` allows; the checked constructor
    // cannot fail on them, and a value it refused would be left out rather
    // than passed on unchecked.
    HeaderValue::from_maybe_shared(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// What a request header means for who answers the request.
enum Kind {
    /// Nothing for the loop.
    Plain,
    /// `Connection: close`: the connection ends after the response.
    Close,
    /// Something hyper's server handles: a body, an upgrade, `Expect`,
    /// `TE` (trailers).
    Hyper,
}

impl Kind {
    fn of(h: &httparse::Header<'_>) -> Kind {
        let name = h.name.as_bytes();
        let is = |n: &HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
        if is(&header::CONTENT_LENGTH) {
            return if h.value == b"0" {
                Kind::Plain
            } else {
                Kind::Hyper
            };
        }
        if is(&header::TRANSFER_ENCODING)
            || is(&header::UPGRADE)
            || is(&header::EXPECT)
            || is(&header::TE)
        {
            return Kind::Hyper;
        }
        if is(&header::CONNECTION) {
            let mut kind = Kind::Plain;
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    kind = Kind::Close;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Kind::Hyper;
                }
            }
            return kind;
        }
        Kind::Plain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_headers: 100,
        max_header_bytes: 1024,
    };

    fn parse_text(text: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(text);
        let parsed = parse(&mut buf, LIMITS, &mut Vec::new());
        (parsed, buf)
    }

    #[test]
    fn a_bodiless_keep_alive_head_is_the_loops_and_leaves_what_follows() {
        let (parsed, rest) = parse_text(
            "GET /a?b=c HTTP/1.1\r\nHost: app.test\r\nX-Two: 1\r\nx-two: 2\r\ncontent-length: 0\r\n\r\nGET /next",
        );
        let Parsed::Request { req, keep_alive } = parsed else {
            panic!("not answered by the loop: {parsed:?}");
        };
        assert!(keep_alive);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "app.test");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_ends_the_connection_after_the_response() {
        let (parsed, _) =
            parse_text("GET / HTTP/1.1\r\nhost: a\r\nconnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(
            parsed,
            Parsed::Request {
                keep_alive: false,
                ..
            }
        ));
    }

    #[test]
    fn what_hyper_answers_is_handed_over_with_every_byte() {
        for text in [
            // Bodies, continues, trailers, upgrades, CONNECT.
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            "PUT / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nte: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nupgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nconnection: Upgrade\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nhost: a:443\r\n\r\n",
            // Other versions: HTTP/1.0, HTTP/2's preface.
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            // Malformed heads: hyper's 400s.
            "GET / HTTP/1.1\r\nbad header\r\n\r\n",
            "GET /a b HTTP/1.1\r\n\r\n",
            "G(T / HTTP/1.1\r\n\r\n",
        ] {
            let (parsed, rest) = parse_text(text);
            assert!(matches!(parsed, Parsed::HandOver), "{text:?}: {parsed:?}");
            assert_eq!(&rest[..], text.as_bytes(), "{text:?}: bytes kept");
        }
    }

    #[test]
    fn heads_over_the_limits_go_to_hyper_for_its_431() {
        let long = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "a".repeat(1100));
        assert!(matches!(parse_text(&long).0, Parsed::HandOver));
        // Not complete yet, but already over the limit.
        assert!(matches!(parse_text(&long[..1050]).0, Parsed::HandOver));
        assert!(matches!(parse_text(&long[..500]).0, Parsed::Partial));
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..3 {
            many.push_str(&format!("x{i}: 1\r\n"));
        }
        many.push_str("\r\n");
        let mut buf = BytesMut::from(many.as_str());
        let two = Limits {
            max_headers: 2,
            max_header_bytes: 1024,
        };
        assert!(matches!(
            parse(&mut buf, two, &mut Vec::new()),
            Parsed::HandOver
        ));
    }
}
