//! The three kinds of network names in a config: addresses to listen on,
//! backend addresses to connect to, and domain names to match `Host` against.
//!
//! Each parser returns a reason without the offending text; the caller puts
//! the key path and the value around it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::model::Scheme;

/// Suffix for every listen-address error, so the operator sees the accepted
/// forms next to whatever went wrong.
const LISTEN_FORMS: &str = "expected \"host:port\", \":port\" or \"[::1]:port\"";

/// Parses an address to bind. Only IP literals and `localhost` are accepted:
/// binding to a resolved name would silently depend on DNS at start-up.
/// Port 0 is allowed so tests can ask the OS for a free port.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if s.is_empty() {
        return Err(format!("empty; {LISTEN_FORMS}"));
    }
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => return Err(format!("missing port; {LISTEN_FORMS}")),
        Ok(IpAddr::V6(_)) => {
            return Err("missing port (IPv6 addresses need brackets, like \"[::1]:8080\")".into());
        }
        Err(_) => {}
    }
    let (host, port) = split_host_port(s)?;
    let Some(port) = port else {
        return Err(format!("missing port; {LISTEN_FORMS}"));
    };
    let port = parse_port(port, true)?;
    let ip = match host {
        Host::Empty => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Host::V6(ip) => IpAddr::V6(ip),
        Host::Text(text) if text.eq_ignore_ascii_case("localhost") => {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }
        Host::Text(text) => text.parse::<Ipv4Addr>().map(IpAddr::V4).map_err(|_| {
            format!("host {text:?} must be an IP address or localhost (names are not resolved for listening)")
        })?,
    };
    Ok(SocketAddr::new(ip, port))
}

/// A backend address after parsing; `host` holds an IPv6 literal without
/// brackets so it can be handed straight to a resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendAddr {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
}

/// Parses `host:port`, `http://host[:port]` or `https://host[:port]`.
pub(crate) fn parse_backend(s: &str) -> Result<BackendAddr, String> {
    if s.is_empty() {
        return Err("empty; expected \"host:port\" or \"http://host:port\"".into());
    }
    let (scheme, rest, explicit) = match s.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "http" => (Scheme::Http, rest, true),
            "https" => (Scheme::Https, rest, true),
            _ => {
                return Err(format!(
                    "unsupported scheme {scheme:?} (use http:// or https://)"
                ));
            }
        },
        None => (Scheme::Http, s, false),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err("a backend is an address without a path, like \"http://host:8080\"".into());
    }
    if rest.contains('@') {
        return Err("credentials in backend addresses are not supported".into());
    }
    if rest.parse::<Ipv6Addr>().is_ok() {
        return Err("IPv6 addresses need brackets, like \"[::1]:8080\"".into());
    }
    let (host, port) = split_host_port(rest)?;
    let port = match port {
        Some(port) => parse_port(port, false)?,
        None if explicit => scheme.default_port(),
        None => {
            return Err(
                "missing port (write \"host:8080\", or give a scheme as in \"http://host\")".into(),
            );
        }
    };
    let host = match host {
        Host::Empty => return Err("missing host".into()),
        Host::V6(ip) => ip.to_string(),
        Host::Text(text) => {
            if let Ok(ip) = text.parse::<Ipv4Addr>() {
                ip.to_string()
            } else {
                check_dns_name(text, false)?;
                text.to_ascii_lowercase()
            }
        }
    };
    Ok(BackendAddr { scheme, host, port })
}

/// Normalises a `domains` key: lower case, no trailing dot, IPv6 in brackets
/// (as it appears in a `Host` header), wildcard only as `*.` in front.
pub(crate) fn normalize_domain(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("empty domain name".into());
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .map(|ip| format!("[{ip}]"))
            .map_err(|_| format!("{inner:?} is not an IPv6 address"));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    if s.contains(':') {
        return Err("a domain name has no port; the Host header is matched without it".into());
    }
    let lowered = s.to_ascii_lowercase();
    let name = lowered.strip_suffix('.').unwrap_or(&lowered);
    match name.strip_prefix("*.") {
        Some(base) => check_dns_name(base, true)?,
        None => check_dns_name(name, true)?,
    }
    Ok(name.to_owned())
}

/// Checks host-name syntax. Underscores are allowed because container
/// platforms hand them out in service names.
fn check_dns_name(name: &str, is_domain_key: bool) -> Result<(), String> {
    if !name.is_ascii() {
        return Err("use the ASCII (punycode, xn--) form of internationalized names".into());
    }
    if name.contains('*') {
        return Err(if is_domain_key {
            "a wildcard must be the whole first label, as in \"*.example.com\"".into()
        } else {
            "wildcards are not allowed here".into()
        });
    }
    if name.len() > 253 {
        return Err("name longer than 253 characters".into());
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label (two dots in a row, or a leading dot)".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} is longer than 63 characters"));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!(
                "invalid character {bad:?} (letters, digits, '-', '_' and '.' only)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
        last = label;
    }
    // An all-digit last label can only be a mistyped IPv4 address.
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a valid IPv4 address".into());
    }
    Ok(())
}

enum Host<'a> {
    Empty,
    V6(Ipv6Addr),
    Text(&'a str),
}

fn split_host_port(s: &str) -> Result<(Host<'_>, Option<&str>), String> {
    if let Some(bracketed) = s.strip_prefix('[') {
        let Some((inner, after)) = bracketed.split_once(']') else {
            return Err("missing ']' after the IPv6 address".into());
        };
        let ip = inner
            .parse::<Ipv6Addr>()
            .map_err(|_| format!("{inner:?} is not an IPv6 address"))?;
        return match after {
            "" => Ok((Host::V6(ip), None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((Host::V6(ip), Some(port))),
                None => Err(format!("unexpected {after:?} after ']'")),
            },
        };
    }
    match s.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            Err("IPv6 addresses need brackets, like \"[::1]:8080\"".into())
        }
        Some(("", port)) => Ok((Host::Empty, Some(port))),
        Some((host, port)) => Ok((Host::Text(host), Some(port))),
        None if s.is_empty() => Ok((Host::Empty, None)),
        None => Ok((Host::Text(s), None)),
    }
}

fn parse_port(s: &str, allow_zero: bool) -> Result<u16, String> {
    let range = if allow_zero {
        "port must be 1-65535 (or 0 for any free port)"
    } else {
        "port must be 1-65535"
    };
    if s.is_empty() {
        return Err("missing port after ':'".into());
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(range.into());
    }
    match s.parse::<u16>() {
        Ok(0) if !allow_zero => Err(range.into()),
        Ok(port) => Ok(port),
        Err(_) => Err(range.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(s: &str) -> SocketAddr {
        match s.parse() {
            Ok(a) => a,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen("127.0.0.1:8080"), Ok(sock("127.0.0.1:8080")));
        assert_eq!(parse_listen(":8443"), Ok(sock("0.0.0.0:8443")));
        assert_eq!(parse_listen("[::1]:8080"), Ok(sock("[::1]:8080")));
        assert_eq!(parse_listen("[::]:80"), Ok(sock("[::]:80")));
        assert_eq!(parse_listen("localhost:9901"), Ok(sock("127.0.0.1:9901")));
        assert_eq!(parse_listen("127.0.0.1:0"), Ok(sock("127.0.0.1:0")));
    }

    #[test]
    fn bad_listen_addresses() {
        let err = |s: &str| parse_listen(s).err().unwrap_or_default();
        assert!(err("localhost:99999").starts_with("port must be 1-65535"));
        assert!(err("localhost:http").starts_with("port must be 1-65535"));
        assert!(err("127.0.0.1").starts_with("missing port"));
        assert!(err("localhost").starts_with("missing port"));
        assert!(err("localhost:").starts_with("missing port"));
        assert!(err("::1").starts_with("missing port"));
        assert!(err("::1:80").contains("need brackets"));
        assert!(err("example.com:80").contains("must be an IP address or localhost"));
        assert!(err("[::1]8080").contains("after ']'"));
        assert!(err("[zz]:80").contains("not an IPv6 address"));
        assert!(err("").starts_with("empty"));
    }

    #[test]
    fn backend_addresses() {
        let ok = |s: &str| parse_backend(s).map(|b| (b.scheme, b.host, b.port));
        assert_eq!(
            ok("localhost:8080"),
            Ok((Scheme::Http, "localhost".into(), 8080))
        );
        assert_eq!(
            ok("http://App.Internal:81/"),
            Ok((Scheme::Http, "app.internal".into(), 81))
        );
        assert_eq!(ok("https://api"), Ok((Scheme::Https, "api".into(), 443)));
        assert_eq!(
            ok("HTTP://10.0.0.1"),
            Ok((Scheme::Http, "10.0.0.1".into(), 80))
        );
        assert_eq!(ok("[::1]:9000"), Ok((Scheme::Http, "::1".into(), 9000)));
        assert_eq!(ok("my_svc:80"), Ok((Scheme::Http, "my_svc".into(), 80)));
    }

    #[test]
    fn bad_backend_addresses() {
        let err = |s: &str| parse_backend(s).err().unwrap_or_default();
        assert_eq!(err("localhost:99999"), "port must be 1-65535");
        assert_eq!(err("localhost:0"), "port must be 1-65535");
        assert!(err("localhost").starts_with("missing port"));
        assert!(err("bad host!:80").contains("invalid character ' '"));
        assert!(err("a..b:80").contains("empty label"));
        assert!(err("-a:80").contains("starts or ends with '-'"));
        assert!(err("ftp://x:21").contains("unsupported scheme"));
        assert!(err("http://x:80/api").contains("without a path"));
        assert!(err("http://u:p@x:80").contains("credentials"));
        assert!(err(":80").contains("missing host"));
        assert!(err("::1").contains("need brackets"));
        assert!(err("300.1.1.1:80").contains("not a valid IPv4 address"));
        assert!(err("*.x:80").contains("wildcards"));
    }

    #[test]
    fn domain_names() {
        assert_eq!(normalize_domain("Example.COM"), Ok("example.com".into()));
        assert_eq!(normalize_domain("example.com."), Ok("example.com".into()));
        assert_eq!(
            normalize_domain("*.example.com"),
            Ok("*.example.com".into())
        );
        assert_eq!(normalize_domain("localhost"), Ok("localhost".into()));
        assert_eq!(normalize_domain("10.0.0.1"), Ok("10.0.0.1".into()));
        assert_eq!(normalize_domain("::1"), Ok("[::1]".into()));
        assert_eq!(normalize_domain("[0::1]"), Ok("[::1]".into()));
    }

    #[test]
    fn bad_domain_names() {
        let err = |s: &str| normalize_domain(s).err().unwrap_or_default();
        assert!(err("").contains("empty"));
        assert!(err("example.com:8080").contains("no port"));
        assert!(err("a.*.example.com").contains("whole first label"));
        assert!(err("*").contains("whole first label"));
        assert!(err("*example.com").contains("whole first label"));
        assert!(err("exa mple.com").contains("invalid character"));
        assert!(err("bücher.de").contains("punycode"));
        assert!(err(&format!("{}.com", "a".repeat(64))).contains("longer than 63"));
    }
}
