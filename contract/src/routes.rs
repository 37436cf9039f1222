//! The rules of config.json's per-domain `routes` that both the config
//! checker and the built-in router apply, so that what `bbproxy check`
//! accepts (and calls shadowed) is what the router matches: segment-aware
//! path prefixes, CIDR blocks, the route reference the router answers with,
//! and the redirect statuses.

use std::net::IpAddr;

/// What separates a domain's name from a route's index in a route
/// reference, `example.com#2`: it cannot appear in a domain or pool name.
pub const ROUTE_REF_SEPARATOR: char = '#';

/// The keys of the built-in router's config under which the host passes
/// each domain's routes and the names of the pools (which are upstreams,
/// but no host's); a user's `plugins.router.config` cannot set them.
pub const ROUTER_ROUTES_KEY: &str = "routes";
/// See [`ROUTER_ROUTES_KEY`].
pub const ROUTER_POOLS_KEY: &str = "pools";
/// Both reserved keys.
pub const RESERVED_ROUTER_KEYS: [&str; 2] = [ROUTER_ROUTES_KEY, ROUTER_POOLS_KEY];

/// The statuses a `redirect` route may answer with.
pub const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// The domain and route index of a route reference (`example.com#2`),
/// the answer a 0.1.x router gives for a domain's route (a 0.2.0 one
/// answers with the numbers); `None` when `name` is not one.
pub fn parse_route_ref(name: &str) -> Option<(&str, usize)> {
    let (domain, index) = name.rsplit_once(ROUTE_REF_SEPARATOR)?;
    Some((domain, index.parse().ok()?))
}

/// The prefix a `path_prefix` or `strip_prefix` compares by: without its
/// trailing slashes, so `/api/` and `/api` are the same prefix (`""` for
/// `/`, which every path starts with).
pub fn prefix_base(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// Whether `path` lies under the segment-aware `prefix`: `/api` and `/api/`
/// match `/api` and `/api/x`, never `/apix`.
///
/// ```
/// use bbproxy_plugin_contract::routes::prefix_matches;
/// assert!(prefix_matches("/api/", "/api"));
/// assert!(prefix_matches("/api", "/api/x"));
/// assert!(!prefix_matches("/api", "/apix"));
/// assert!(prefix_matches("/", "/anything"));
/// ```
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    under_base(prefix_base(prefix), path)
}

/// [`prefix_matches`] for a prefix already given as its
/// [`prefix_base`] (a router compiles it once).
pub fn under_base(base: &str, path: &str) -> bool {
    let (path, base) = (path.as_bytes(), base.as_bytes());
    // The base, then the end of the path or a segment boundary. Compared
    // byte by byte: paths and prefixes are short and mostly differ early,
    // where a call to `memcmp` would cost more than the comparison (the
    // router tries every prefix route of a domain in turn).
    path.len() >= base.len()
        && path.iter().zip(base).all(|(p, b)| p == b)
        && matches!(path.get(base.len()), None | Some(b'/'))
}

/// `path` without the segment-aware `prefix`, still starting with `/`
/// (`/api/x` → `/x`, `/api` → `/`); `None` when `path` does not lie under
/// it.
///
/// ```
/// use bbproxy_plugin_contract::routes::strip_prefix;
/// assert_eq!(strip_prefix("/api", "/api/x/y"), Some("/x/y"));
/// assert_eq!(strip_prefix("/api", "/api"), Some("/"));
/// assert_eq!(strip_prefix("/api", "/apix"), None);
/// ```
pub fn strip_prefix<'p>(prefix: &str, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix_base(prefix))?;
    match rest {
        "" => Some("/"),
        r if r.starts_with('/') => Some(r),
        _ => None,
    }
}

/// The `key=value` pairs of a query string, as sent (not percent-decoded),
/// in order; a pair without `=` has the empty value. The router's `query`
/// matcher and the balancer's `query:` hash key read queries this one way.
///
/// ```
/// use bbproxy_plugin_contract::routes::query_pairs;
/// let p: Vec<_> = query_pairs("a=1&flag&b=x=y").collect();
/// assert_eq!(p, [("a", "1"), ("flag", ""), ("b", "x=y")]);
/// ```
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Whether `name` is an RFC 9110 token: an HTTP method or a header name.
pub fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(crate::balancers::is_token_byte)
}

/// An IP block of a `client_ip` matcher: `10.0.0.0/8`, `2001:db8::/32`, or
/// one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The network address (no host bits set).
    pub addr: IpAddr,
    /// Leading bits that must match.
    pub len: u8,
}

/// Why a CIDR block was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CidrError {
    /// Not an address, or a prefix length that is no number.
    Syntax,
    /// A prefix length longer than the address.
    Length(u8),
    /// Bits set after the prefix: the network address is given instead.
    HostBits(Cidr),
}

impl std::fmt::Display for CidrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CidrError::Syntax => f.write_str(
                "expected an IP block like \"10.0.0.0/8\", \"2001:db8::/32\" or one address",
            ),
            CidrError::Length(n) => write!(f, "prefix length /{n} is longer than the address"),
            CidrError::HostBits(net) => {
                write!(f, "bits are set after the prefix; did you mean \"{net}\"?")
            }
        }
    }
}

impl Cidr {
    /// Parses `addr/len` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) if !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()) => {
                (a, Some(l.parse::<u8>().map_err(|_| CidrError::Syntax)?))
            }
            Some(_) => return Err(CidrError::Syntax),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Syntax)?;
        let max = Self::bits(addr);
        let len = len.unwrap_or(max);
        if len > max {
            return Err(CidrError::Length(len));
        }
        let net = Cidr {
            addr: Self::masked(addr, len),
            len,
        };
        if net.addr != addr {
            return Err(CidrError::HostBits(net));
        }
        Ok(net)
    }

    /// Whether `ip` lies in the block. An IPv4 client seen through an
    /// IPv6 socket (`::ffff:a.b.c.d`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        Self::bits(ip) == Self::bits(self.addr) && Self::masked(ip, self.len) == self.addr
    }

    /// Whether every address of `other` lies in this block.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }

    fn bits(addr: IpAddr) -> u8 {
        match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    fn masked(addr: IpAddr, len: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_segment_aware() {
        for p in ["/api", "/api/", "/api//"] {
            assert!(prefix_matches(p, "/api"), "{p}");
            assert!(prefix_matches(p, "/api/"), "{p}");
            assert!(prefix_matches(p, "/api/x/y"), "{p}");
            assert!(!prefix_matches(p, "/apix"), "{p}");
            assert!(!prefix_matches(p, "/ap"), "{p}");
            assert!(!prefix_matches(p, "/x/api"), "{p}");
        }
        assert!(prefix_matches("/", "/"));
        assert!(prefix_matches("/", "/a"));
    }

    #[test]
    fn strip_keeps_the_leading_slash() {
        assert_eq!(strip_prefix("/api", "/api/x"), Some("/x"));
        assert_eq!(strip_prefix("/api/", "/api/x"), Some("/x"));
        assert_eq!(strip_prefix("/api", "/api"), Some("/"));
        assert_eq!(strip_prefix("/api", "/api/"), Some("/"));
        assert_eq!(strip_prefix("/api", "/apix"), None);
        assert_eq!(strip_prefix("/", "/x"), Some("/x"));
    }

    #[test]
    fn cidrs_parse_and_match_both_families() {
        let v4 = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(v4.contains("10.1.200.3".parse().unwrap()));
        assert!(v4.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!v4.contains("10.2.0.1".parse().unwrap()));
        assert!(!v4.contains("::1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::7".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        let one = Cidr::parse("192.0.2.1").unwrap();
        assert_eq!(one.len, 32);
        assert!(one.contains("192.0.2.1".parse().unwrap()));
        assert!(!one.contains("192.0.2.2".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        assert!(Cidr::parse("::/0").unwrap().covers(&v6));
        assert!(v4.covers(&Cidr::parse("10.1.2.0/24").unwrap()));
        assert!(!v4.covers(&Cidr::parse("10.0.0.0/8").unwrap()));
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert_eq!(Cidr::parse("10.0.0.0/33"), Err(CidrError::Length(33)));
        assert_eq!(Cidr::parse("nope"), Err(CidrError::Syntax));
        assert_eq!(Cidr::parse("10.0.0.0/"), Err(CidrError::Syntax));
        assert_eq!(Cidr::parse("10.0.0.0/-1"), Err(CidrError::Syntax));
        let e = Cidr::parse("10.0.0.1/8").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bits are set after the prefix; did you mean \"10.0.0.0/8\"?"
        );
    }

    #[test]
    fn tokens_and_references() {
        assert!(is_token("GET") && is_token("x-env") && !is_token("") && !is_token("a b"));
        assert_eq!(parse_route_ref("example.com#2"), Some(("example.com", 2)));
        assert_eq!(parse_route_ref("a#b#3"), Some(("a#b", 3)));
        assert_eq!(parse_route_ref("example.com"), None);
        assert_eq!(parse_route_ref("example.com#x"), None);
    }
}
