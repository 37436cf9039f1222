//! Header rewriting between client and backend: hop-by-hop headers removed in
//! both directions, `X-Forwarded-*` added, `Host` passed through.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded: the list
/// filters are refused too (`bbproxy_plugin_contract::headers`), as
/// header names built at compile time.
const HOP_BY_HOP: [HeaderName; 9] = {
    let n = bbproxy_plugin_contract::headers::HOP_BY_HOP;
    [
        HeaderName::from_static(n[0]),
        HeaderName::from_static(n[1]),
        HeaderName::from_static(n[2]),
        HeaderName::from_static(n[3]),
        HeaderName::from_static(n[4]),
        HeaderName::from_static(n[5]),
        HeaderName::from_static(n[6]),
        HeaderName::from_static(n[7]),
        HeaderName::from_static(n[8]),
    ]
};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those the `Connection` header names.
/// `TE: trailers` survives: it is how gRPC asks for trailers end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names says which of the list are there: most
    // messages carry none of them, or only `Connection`, and removing each
    // of the nine by name hashed it and probed the map, twice a request.
    let bit = |name: &HeaderName| {
        HOP_BY_HOP
            .iter()
            .position(|h| h == name)
            .map_or(0u16, |i| 1 << i)
    };
    let present = headers.keys().fold(0, |seen, name| seen | bit(name));
    if present == 0 {
        return;
    }
    let has = |name: &HeaderName| present & bit(name) != 0;
    if has(&header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    // Read after the names `Connection` lists are gone, before `TE` goes
    // with the rest of the list.
    let te_trailers = has(&header::TE)
        && headers
            .get(header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & 1 << i != 0 {
            headers.remove(name);
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The text of a client's address for `X-Forwarded-For`: made once per
/// connection ([`super::Client`]), so a request's header is a copy of a
/// shared value rather than the address formatted and allocated again
/// (three allocations and the integer formatting per request).
pub fn forwarded_for(ip: IpAddr) -> Option<HeaderValue> {
    HeaderValue::try_from(ip.to_string()).ok()
}

/// Adds the client (its [`forwarded_for`] text) to `X-Forwarded-For`
/// (appending to what earlier proxies wrote) and sets `X-Forwarded-Proto`
/// and `X-Forwarded-Host`.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: Option<&HeaderValue>,
    proto: &'static str,
    host: Option<&HeaderValue>,
) {
    if let Some(client) = client {
        // One lookup for the read and the write: each hashes the name.
        match headers.entry(&X_FORWARDED_FOR) {
            Entry::Vacant(e) => {
                e.insert(client.clone());
            }
            Entry::Occupied(mut e) => {
                let value = match e.get().to_str() {
                    Ok(prev) if !prev.trim().is_empty() => HeaderValue::from_bytes(
                        &[prev.as_bytes(), b", ", client.as_bytes()].concat(),
                    )
                    .ok(),
                    _ => Some(client.clone()),
                };
                if let Some(v) = value {
                    // Replaces every earlier field of the name, as before.
                    e.insert(v);
                }
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
    }
}

/// The host the client asked for: from the URI authority (HTTP/2, absolute
/// form) or the `Host` header, lower case, without port or trailing dot.
pub fn request_host(uri: &http::Uri, headers: &HeaderMap) -> String {
    let raw = uri
        .host()
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    normalize_host(raw)
}

fn normalize_host(raw: &str) -> String {
    let without_port = if let Some(rest) = raw.strip_prefix('[') {
        // [v6]:port → v6
        rest.split(']').next().unwrap_or(rest)
    } else if raw.matches(':').count() == 1 {
        raw.split(':').next().unwrap_or(raw)
    } else {
        raw
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get("x-kept").unwrap(), "1");
    }

    /// Each name of the list is removed when it comes alone, and a message
    /// without any keeps all its headers.
    #[test]
    fn strips_each_hop_by_hop_header_alone_and_nothing_else() {
        let mut plain = HeaderMap::new();
        plain.insert("x-kept", HeaderValue::from_static("1"));
        plain.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
        for name in &HOP_BY_HOP {
            let mut h = before.clone();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            strip_hop_by_hop(&mut h);
            assert_eq!(h, before, "{name} was not removed");
        }
        let mut h = before.clone();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    #[test]
    fn forwarded_for_appends() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        add_forwarded(
            &mut h,
            forwarded_for("203.0.113.9".parse().unwrap()).as_ref(),
            "http",
            Some(&HeaderValue::from_static("a.example")),
        );
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "198.51.100.1, 203.0.113.9"
        );
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "a.example");
    }

    #[test]
    fn forwarded_for_is_the_address_text_of_every_kind() {
        for ip in ["203.0.113.9", "::1", "2001:db8::8a2e:370:7334"] {
            let mut h = HeaderMap::new();
            let text = forwarded_for(ip.parse().unwrap());
            add_forwarded(&mut h, text.as_ref(), "https", None);
            assert_eq!(h.get("x-forwarded-for").unwrap(), ip);
            assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
            assert!(h.get("x-forwarded-host").is_none());
        }
    }

    #[test]
    fn host_is_normalized() {
        assert_eq!(normalize_host("Example.COM:8080"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "::1");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
        let uri: http::Uri = "http://API.example.com:443/x".parse().unwrap();
        assert_eq!(request_host(&uri, &HeaderMap::new()), "api.example.com");
    }
}
