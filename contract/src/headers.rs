//! Which headers a filter may change. One rule, applied where a filter's
//! edits are accepted: by config validation to the built-in `headers`
//! filter, and (with the filter world) by the proxy to a Wasm filter's
//! answer. The proxy's own hop-by-hop stripping uses [`HOP_BY_HOP`] too.

/// Headers that describe one connection, not the message (RFC 9110
/// §7.6.1): the proxy removes them in both directions and sets its own.
/// Lower case, as `http::HeaderName` spells them.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Checks that a filter may set, add or remove header `name` (any case).
/// The `Err` says why not: a filter that could change how a message is
/// framed (`content-length`, `transfer-encoding`), the connection it
/// travels on (hop-by-hop headers) or the host it was routed by (`host`)
/// could make the proxy and the backend disagree on where a request ends
/// or what it is for: a request smuggling hole.
///
/// ```
/// use bbproxy_plugin_contract::headers::check_filter_header;
/// assert!(check_filter_header("x-request-id").is_ok());
/// assert!(check_filter_header("Content-Length").is_err());
/// assert!(check_filter_header("upgrade").is_err());
/// ```
pub fn check_filter_header(name: &str) -> Result<(), String> {
    let why = if name.eq_ignore_ascii_case("content-length")
        || name.eq_ignore_ascii_case("transfer-encoding")
    {
        "it frames the message; a changed framing lets the proxy and the backend disagree on where a message ends"
    } else if name.eq_ignore_ascii_case("host") {
        "the request was routed by it, and the backend must see the host it was routed by"
    } else if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        "it is hop-by-hop: it describes one connection, which the proxy manages itself"
    } else {
        return Ok(());
    };
    Err(format!(
        "a filter cannot change {} ({why})",
        name.to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_host_and_hop_by_hop_headers_are_refused_in_any_case() {
        for name in HOP_BY_HOP.iter().copied().chain([
            "host",
            "content-length",
            "Transfer-Encoding",
            "CONNECTION",
        ]) {
            let e = check_filter_header(name).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "a filter cannot change {} (",
                    name.to_ascii_lowercase()
                )),
                "{e}"
            );
        }
        assert_eq!(
            check_filter_header("Content-Length").unwrap_err(),
            "a filter cannot change content-length (it frames the message; a changed framing \
             lets the proxy and the backend disagree on where a message ends)"
        );
        for name in [
            "x-request-id",
            "server",
            "strict-transport-security",
            "hosts",
            "te-x",
        ] {
            assert!(check_filter_header(name).is_ok(), "{name}");
        }
    }
}
