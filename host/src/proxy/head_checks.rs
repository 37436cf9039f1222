//! Checks on a request head before anything is routed or forwarded:
//! `limits.max_uri_length` (414), `limits.max_headers` and
//! `limits.max_header_bytes` (431; hyper enforces both on HTTP/1 while
//! parsing, this repeats them for HTTP/2), an ambiguous `Host` (400), and
//! per domain `limits.max_body_size` against a declared Content-Length (413
//! before a byte of the body is read).

use bbproxy_config::Limits;
use http::header::{self, HeaderMap};
use http::request::Parts;
use http::{StatusCode, Version};

/// A request the proxy refuses, with the reason for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Status to answer with.
    pub status: StatusCode,
    /// One line for the body.
    pub reason: String,
}

impl Rejection {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }
}

/// Checks the request head against the connection-level limits.
pub fn check_head(parts: &Parts, limits: &Limits) -> Result<(), Rejection> {
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target as u64 > limits.max_uri_length {
        return Err(Rejection::new(
            StatusCode::URI_TOO_LONG,
            format!("request target longer than {} bytes", limits.max_uri_length),
        ));
    }
    if parts.headers.len() > limits.max_headers as usize {
        return Err(Rejection::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("more than {} header fields", limits.max_headers),
        ));
    }
    let bytes: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + target;
    if bytes as u64 > limits.max_header_bytes {
        return Err(Rejection::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers larger than {} bytes",
                limits.max_header_bytes
            ),
        ));
    }
    check_host(parts)
}

/// Two `Host` headers, or a target (absolute form, HTTP/2 `:authority`)
/// naming another host than `Host`, would let the router and the backend
/// disagree on the host (RFC 9112 section 3.2, RFC 9113 section 8.3.1). An
/// empty `Host`, or none on HTTP/1.1, names no host at all: 400, as nginx.
fn check_host(parts: &Parts) -> Result<(), Rejection> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "more than one Host header",
        ));
    }
    if first.is_some_and(|h| h.as_bytes().iter().all(u8::is_ascii_whitespace)) {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "an empty Host header",
        ));
    }
    if parts.version == Version::HTTP_11 && first.is_none() && parts.uri.authority().is_none() {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "an HTTP/1.1 request without a Host header",
        ));
    }
    if let (Some(authority), Some(host)) = (parts.uri.authority(), first)
        && !host
            .to_str()
            .is_ok_and(|h| h.eq_ignore_ascii_case(authority.as_str()))
    {
        return Err(Rejection::new(
            StatusCode::BAD_REQUEST,
            "the request target's host differs from the Host header",
        ));
    }
    Ok(())
}

/// A declared body over `max` (0: no limit) is refused before it is read.
pub fn check_declared_length(headers: &HeaderMap, max: u64) -> Result<(), Rejection> {
    if max == 0 {
        return Ok(());
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > max => Err(Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is larger than the limit of {max} bytes"),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn limits_give_their_status() {
        let limits = Limits {
            max_uri_length: 10,
            max_headers: 2,
            ..Limits::default()
        };
        let long = parts(http::Request::get("/0123456789a"));
        assert_eq!(
            check_head(&long, &limits).unwrap_err().status,
            StatusCode::URI_TOO_LONG
        );
        let many = parts(
            http::Request::get("/")
                .header("a", "1")
                .header("b", "1")
                .header("c", "1"),
        );
        assert_eq!(
            check_head(&many, &limits).unwrap_err().status,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
        );
        let two_hosts = parts(
            http::Request::get("/")
                .header("host", "a")
                .header("host", "b"),
        );
        assert_eq!(
            check_head(&two_hosts, &limits).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_LENGTH, "11".parse().unwrap());
        assert_eq!(
            check_declared_length(&h, 10).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert!(check_declared_length(&h, 11).is_ok());
        assert!(check_declared_length(&h, 0).is_ok());
    }
}
