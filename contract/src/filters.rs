//! The contract of a Wasm filter's answers (WIT world `filter`, 0.1.1)
//! that the WIT types cannot express. The proxy checks every `on-request`
//! and `on-response` answer with these functions before making any of it,
//! and the SDK's test host applies the same ones, so an edit a plugin's
//! unit test accepts is one the proxy makes. A failed check is a
//! `bad-answer` fault: nothing of that answer is applied.
//!
//! The rules: a header name is an HTTP token that a filter may change
//! ([`check_filter_header`]); a header value is visible ASCII, spaces and
//! tabs; a new path starts with `/` and a new path or query is visible
//! ASCII without `#` (and, for the path, without `?`), so it cannot smuggle
//! a second request line, a fragment or a query into the target; an answer
//! has a status in 200..=599 and a body of at most 64 KiB.
//!
//! Header edits are given as [`Edit`]s of borrowed text, because the proxy
//! and the SDK each generate their own bindings of the WIT `header-edit`.

use crate::headers::check_filter_header;

/// Largest body of a filter's answer (`respond`), as for a router's direct
/// answer: these are short texts (an authentication challenge, a rate
/// limit note); a bigger one is a plugin bug.
pub const MAX_FILTER_BODY_BYTES: usize = crate::MAX_DIRECT_BODY_BYTES;

/// The statuses a filter may answer with: no 1xx, which would promise the
/// client a final response the filter cannot send.
pub const FILTER_STATUSES: std::ops::RangeInclusive<u16> = 200..=599;

/// One header edit, as the WIT variant `header-edit` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit<'a> {
    /// `set(header)`: the header gets this one value.
    Set(&'a str, &'a str),
    /// `add(header)`: the value is appended.
    Add(&'a str, &'a str),
    /// `remove(name)`: every value goes.
    Remove(&'a str),
}

impl Edit<'_> {
    /// The header name the edit changes.
    pub fn name(&self) -> &str {
        match *self {
            Edit::Set(name, _) | Edit::Add(name, _) | Edit::Remove(name) => name,
        }
    }
}

/// Whether `b` may appear in a header name: an RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Checks a header name: a non-empty HTTP token (RFC 9110 §5.1), which a
/// filter may change ([`check_filter_header`]). The `Err` names it.
///
/// ```
/// use bbproxy_plugin_contract::filters::check_header_name;
/// assert!(check_header_name("X-Request-Id").is_ok());
/// assert_eq!(check_header_name("bad name").unwrap_err(), r#"invalid header name "bad name""#);
/// assert!(check_header_name("content-length").unwrap_err().starts_with("a filter cannot change content-length ("));
/// ```
pub fn check_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(format!("invalid header name {name:?}"));
    }
    check_filter_header(name)
}

/// Checks the value given to header `name`: visible ASCII, spaces and tabs
/// (what `http::HeaderValue::from_str` takes, and the proxy's built-in
/// `headers` filter too). A CR or LF would end the header line early: a
/// header injection.
///
/// ```
/// use bbproxy_plugin_contract::filters::check_header_value;
/// assert!(check_header_value("x-a", "one, two\tthree").is_ok());
/// assert_eq!(
///     check_header_value("x-a", "a\r\nx-b: 1").unwrap_err(),
///     "invalid value for header x-a: it contains the control character 0x0d \
///      (visible ASCII, spaces and tabs only)"
/// );
/// ```
pub fn check_header_value(name: &str, value: &str) -> Result<(), String> {
    if value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return Ok(());
    }
    // The value itself is left out: it may be a credential (an
    // `authorization` a filter adds), and this text reaches the log.
    let bad = value
        .bytes()
        .find(|&b| !(b == b'\t' || (b' '..=b'~').contains(&b)))
        .unwrap_or(0);
    Err(format!(
        "invalid value for header {}: {} (visible ASCII, spaces and tabs only)",
        name.to_ascii_lowercase(),
        describe(bad)
    ))
}

/// Checks one header edit: its name ([`check_header_name`]) and, for
/// `set` and `add`, its value ([`check_header_value`]).
///
/// ```
/// use bbproxy_plugin_contract::filters::{Edit, check_edit};
/// assert!(check_edit(Edit::Set("x-user", "7")).is_ok());
/// assert!(check_edit(Edit::Remove("server")).is_ok());
/// assert!(check_edit(Edit::Remove("Transfer-Encoding")).is_err());
/// ```
pub fn check_edit(edit: Edit<'_>) -> Result<(), String> {
    check_header_name(edit.name())?;
    match edit {
        Edit::Set(name, value) | Edit::Add(name, value) => check_header_value(name, value),
        Edit::Remove(_) => Ok(()),
    }
}

/// Whether `b` may appear in a new path or query as sent: visible ASCII
/// (anything else must be percent-encoded). A space, CR or LF would end
/// the request line early; `#` starts a fragment, which is never sent.
fn is_target_byte(b: u8) -> bool {
    (b'!'..=b'~').contains(&b) && b != b'#'
}

/// Checks a new path from `on-request` (`request-edits.path`): it starts
/// with `/` and is visible ASCII without `?` (the query is its own field)
/// or `#`.
///
/// ```
/// use bbproxy_plugin_contract::filters::check_path;
/// assert!(check_path("/v2/users/%C3%A9").is_ok());
/// assert!(check_path("v2").is_err());
/// assert!(check_path("/a?b=1").is_err());
/// ```
pub fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("invalid path {path:?}: it must start with /"));
    }
    if let Some(b) = path.bytes().find(|&b| b == b'?' || !is_target_byte(b)) {
        return Err(format!(
            "invalid path {path:?}: {} (visible ASCII without ? or #; percent-encode the rest)",
            describe(b)
        ));
    }
    Ok(())
}

/// Checks a new query from `on-request` (`request-edits.query`, without
/// the `?`; empty removes the query): visible ASCII without `#`.
///
/// ```
/// use bbproxy_plugin_contract::filters::check_query;
/// assert!(check_query("page=2&sort=name").is_ok());
/// assert!(check_query("").is_ok());
/// assert!(check_query("a=1#top").is_err());
/// ```
pub fn check_query(query: &str) -> Result<(), String> {
    if let Some(b) = query.bytes().find(|&b| !is_target_byte(b)) {
        // The query itself is left out, as from the access log: it may
        // carry a secret, and this text reaches the log.
        return Err(format!(
            "invalid query: {} (visible ASCII without #; percent-encode the rest)",
            describe(b)
        ));
    }
    Ok(())
}

/// Names the byte a path or query check refused.
fn describe(b: u8) -> String {
    match b {
        b'#' | b'?' => format!("it contains {}", char::from(b)),
        b' ' => "it contains a space".to_owned(),
        0x80.. => "it contains a non-ASCII character".to_owned(),
        _ => format!("it contains the control character 0x{b:02x}"),
    }
}

/// Checks an `on-request` answer `forward(request-edits)`: every header
/// edit ([`check_edit`]), the new path ([`check_path`]) and the new query
/// ([`check_query`]), if any. The `Err` starts with `on-request` and names
/// the header (or the path or query) at fault.
///
/// ```
/// use bbproxy_plugin_contract::filters::{Edit, check_forward};
/// assert!(check_forward([Edit::Remove("x-api-key")], Some("/v2"), None).is_ok());
/// assert_eq!(
///     check_forward([Edit::Set("x-a", "1"), Edit::Remove("Connection")], None, None).unwrap_err(),
///     "on-request edits: a filter cannot change connection (it is hop-by-hop: it describes \
///      one connection, which the proxy manages itself)"
/// );
/// ```
pub fn check_forward<'a>(
    edits: impl IntoIterator<Item = Edit<'a>>,
    path: Option<&str>,
    query: Option<&str>,
) -> Result<(), String> {
    let checked = edits
        .into_iter()
        .try_for_each(check_edit)
        .and_then(|()| path.map_or(Ok(()), check_path))
        .and_then(|()| query.map_or(Ok(()), check_query));
    checked.map_err(|e| format!("on-request edits: {e}"))
}

/// Checks an `on-request` answer `respond(filter-response)`: a status in
/// 200..=599, every header ([`check_header_name`], [`check_header_value`])
/// and a body of at most 64 KiB, given the body's length in bytes.
///
/// ```
/// use bbproxy_plugin_contract::filters::check_respond;
/// assert!(check_respond(401, [("www-authenticate", "ApiKey")], 13).is_ok());
/// assert_eq!(check_respond(101, [], 0).unwrap_err(), "on-request answered with status 101, outside 200..=599");
/// assert!(check_respond(403, [("content-length", "0")], 0).unwrap_err().contains("content-length"));
/// ```
pub fn check_respond<'a>(
    status: u16,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    body_bytes: usize,
) -> Result<(), String> {
    if !FILTER_STATUSES.contains(&status) {
        return Err(format!(
            "on-request answered with status {status}, outside {}..={}",
            FILTER_STATUSES.start(),
            FILTER_STATUSES.end()
        ));
    }
    if body_bytes > MAX_FILTER_BODY_BYTES {
        return Err(format!(
            "on-request answered with a body of {body_bytes} bytes (at most {MAX_FILTER_BODY_BYTES})"
        ));
    }
    headers
        .into_iter()
        .try_for_each(|(name, value)| check_edit(Edit::Add(name, value)))
        .map_err(|e| format!("on-request answer: {e}"))
}

/// Checks an `on-response` answer, the list of header edits
/// ([`check_edit`] each). The `Err` starts with `on-response` and names
/// the header at fault.
///
/// ```
/// use bbproxy_plugin_contract::filters::{Edit, check_response_edits};
/// assert!(check_response_edits([Edit::Set("x-frame-options", "DENY"), Edit::Remove("server")]).is_ok());
/// assert!(check_response_edits([Edit::Add("Upgrade", "h2c")]).unwrap_err().starts_with("on-response edits: a filter cannot change upgrade ("));
/// ```
pub fn check_response_edits<'a>(edits: impl IntoIterator<Item = Edit<'a>>) -> Result<(), String> {
    edits
        .into_iter()
        .try_for_each(check_edit)
        .map_err(|e| format!("on-response edits: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_tokens_a_filter_may_change() {
        for ok in ["x-a", "X-Request-Id", "a!#$%&'*+-.^_`|~z", "server", "0"] {
            assert_eq!(check_header_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a b", "a:b", "x-é", "a\r\nb", "(x)", "\"x\""] {
            assert_eq!(
                check_header_name(bad),
                Err(format!("invalid header name {bad:?}")),
                "{bad}"
            );
        }
        // The refused names come from the one rule, in any case.
        for refused in ["Host", "content-length", "TE", "proxy-authorization"] {
            let e = check_header_name(refused).unwrap_err();
            assert!(
                e.starts_with(&format!(
                    "a filter cannot change {} (",
                    refused.to_ascii_lowercase()
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn header_values_are_visible_ascii_spaces_and_tabs() {
        let printable: String = (b' '..=b'~').map(char::from).collect();
        assert_eq!(check_header_value("x-a", &printable), Ok(()));
        assert_eq!(check_header_value("x-a", "\t a \t"), Ok(()));
        assert_eq!(check_header_value("x-a", ""), Ok(()));
        for bad in ["a\rb", "a\nb", "\0", "\x7f", "é", "\x1b[31m"] {
            let e = check_header_value("X-A", bad).unwrap_err();
            assert!(
                e.starts_with("invalid value for header x-a: it contains "),
                "{e}"
            );
            // The value may be a credential: it is not repeated.
            assert!(!e.contains(bad), "{e}");
        }
    }

    #[test]
    fn edits_check_names_and_values_but_remove_has_no_value() {
        assert_eq!(check_edit(Edit::Set("x-a", "1")), Ok(()));
        assert_eq!(check_edit(Edit::Add("x-a", "")), Ok(()));
        assert_eq!(check_edit(Edit::Remove("x-a")), Ok(()));
        assert!(check_edit(Edit::Add("x-a", "\n")).is_err());
        assert!(check_edit(Edit::Set("bad name", "1")).is_err());
        assert!(check_edit(Edit::Remove("keep-alive")).is_err());
        assert_eq!(Edit::Add("x-b", "2").name(), "x-b");
    }

    #[test]
    fn paths_start_with_a_slash_and_carry_no_query_fragment_or_controls() {
        for ok in ["/", "/a/b", "/a;b=c/%20d", "//x", "/~user/!$&'()*+,=:@"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        let err = |p: &str| check_path(p).unwrap_err();
        assert_eq!(err(""), r#"invalid path "": it must start with /"#);
        assert_eq!(err("a/b"), r#"invalid path "a/b": it must start with /"#);
        assert!(err("http://x/").contains("must start with /"));
        assert!(err("/a?b").contains(": it contains ? ("), "{}", err("/a?b"));
        assert!(err("/a#b").contains(": it contains # ("));
        assert!(err("/a b").contains(": it contains a space ("));
        assert!(err("/é").contains("non-ASCII"));
        assert!(err("/a\r\nHost: evil").contains("control character 0x0d"));
        assert!(err("/\x7f").contains("control character 0x7f"));
        assert!(err("/\0").contains("control character 0x00"));
    }

    #[test]
    fn queries_carry_no_fragment_or_controls_and_may_be_empty() {
        for ok in ["", "a=1&b=2", "q=a%20b", "x?y=/z"] {
            assert_eq!(check_query(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("a#b", "contains #"),
            ("a b", "a space"),
            ("a\nb", "0x0a"),
            ("\t", "0x09"),
            ("ü", "non-ASCII"),
        ] {
            let e = check_query(bad).unwrap_err();
            assert!(e.starts_with("invalid query: it contains "), "{e}");
            assert!(!e.contains(bad), "the query is not repeated: {e}");
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn forward_checks_every_edit_then_path_then_query() {
        assert_eq!(check_forward([], None, None), Ok(()));
        assert_eq!(
            check_forward(
                [Edit::Set("x-a", "1"), Edit::Remove("x-api-key")],
                Some("/v2/x"),
                Some("")
            ),
            Ok(())
        );
        // The first bad edit is the one named, after good ones.
        let e = check_forward(
            [
                Edit::Add("x-a", "1"),
                Edit::Set("Content-Length", "0"),
                Edit::Set("host", "x"),
            ],
            None,
            None,
        )
        .unwrap_err();
        assert!(
            e.starts_with("on-request edits: a filter cannot change content-length ("),
            "{e}"
        );
        assert_eq!(
            check_forward([], Some("x"), None).unwrap_err(),
            r#"on-request edits: invalid path "x": it must start with /"#
        );
        assert!(
            check_forward([], None, Some("a#b"))
                .unwrap_err()
                .starts_with("on-request edits: invalid query: it contains #")
        );
    }

    #[test]
    fn respond_checks_status_body_and_headers() {
        assert_eq!(check_respond(200, [], 0), Ok(()));
        assert_eq!(
            check_respond(599, [("x-a", "1")], MAX_FILTER_BODY_BYTES),
            Ok(())
        );
        assert_eq!(
            check_respond(199, [], 0).unwrap_err(),
            "on-request answered with status 199, outside 200..=599"
        );
        assert!(check_respond(600, [], 0).is_err());
        assert!(check_respond(0, [], 0).is_err());
        assert_eq!(
            check_respond(401, [], MAX_FILTER_BODY_BYTES + 1).unwrap_err(),
            "on-request answered with a body of 65537 bytes (at most 65536)"
        );
        let e =
            check_respond(401, [("x-a", "1"), ("Transfer-Encoding", "chunked")], 0).unwrap_err();
        assert!(
            e.starts_with("on-request answer: a filter cannot change transfer-encoding ("),
            "{e}"
        );
        assert!(
            check_respond(401, [("www-authenticate", "a\r\nb")], 0)
                .unwrap_err()
                .contains("for header www-authenticate")
        );
    }

    #[test]
    fn response_edits_name_the_header_at_fault() {
        assert_eq!(check_response_edits([]), Ok(()));
        assert_eq!(
            check_response_edits([Edit::Set("x-frame-options", "DENY"), Edit::Remove("server")]),
            Ok(())
        );
        let e = check_response_edits([Edit::Remove("server"), Edit::Set("content-length", "1")])
            .unwrap_err();
        assert!(
            e.starts_with("on-response edits: a filter cannot change content-length ("),
            "{e}"
        );
        assert_eq!(
            check_response_edits([Edit::Add("x a", "1")]).unwrap_err(),
            r#"on-response edits: invalid header name "x a""#
        );
    }
}
