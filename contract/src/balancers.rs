//! The built-in balancer's names and the request keys it hashes: read by
//! the config checker (`bbproxy check` names the key path of a bad value)
//! and by the balancer plugin itself, so the two never disagree on what a
//! `"balancer"`, `"hash_on"` or `"cookie"` value means, and the proxy and
//! the balancer read a request's sticky cookie the same way.

/// The balancer names the built-in balancer plugin knows; any other name is
/// for a custom balancer plugin.
pub const BUILTIN_BALANCERS: [&str; 7] = [
    "round-robin",
    "weighted-round-robin",
    "least-request",
    "consistent-hash",
    "random",
    "first",
    "sticky-cookie",
];

/// The candidate a round-robin pick takes for turn `n` (a shared counter's
/// value) among `count`: `n` modulo `count`, the remainder non-negative
/// (a counter may wrap or be set below zero). The one definition for the
/// balancer plugin's picks and the host's answers for the upstreams it
/// declared round-robin (contract 0.2.0's `balancer-answers`), so the two
/// take the same candidate for the same turn. `None` for no candidates.
///
/// ```
/// use bbproxy_plugin_contract::balancers::round_robin_turn;
/// assert_eq!(round_robin_turn(7, 3), Some(1));
/// assert_eq!(round_robin_turn(-1, 3), Some(2));
/// assert_eq!(round_robin_turn(i64::MIN, 3), Some(1));
/// assert_eq!(round_robin_turn(5, 0), None);
/// ```
pub fn round_robin_turn(n: i64, count: usize) -> Option<usize> {
    let count = i64::try_from(count).ok().filter(|&c| c > 0)?;
    usize::try_from(n.rem_euclid(count)).ok()
}

/// The built-in balancer that hashes a request key onto the backends.
pub const CONSISTENT_HASH: &str = "consistent-hash";

/// The built-in balancer that sends a client back to the backend its
/// cookie names (the proxy sets the cookie).
pub const STICKY_COOKIE: &str = "sticky-cookie";

/// The forms a `hash_on` value may take, for messages.
pub const HASH_ON_FORMS: &str =
    "\"header:<name>\", \"cookie:<name>\", \"query:<key>\", \"client_ip\" or \"path\"";

/// The request key the `consistent-hash` balancer hashes (`"hash_on"`).
/// `Header` names are lower case; a request without the key is balanced
/// round-robin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// `client_ip`: the client's IP address.
    ClientIp,
    /// `path`: the request path, without the query.
    Path,
    /// `header:<name>`: the first value of a request header.
    Header(String),
    /// `cookie:<name>`: the value of a cookie.
    Cookie(String),
    /// `query:<key>`: the value of a query parameter (as sent, not decoded).
    Query(String),
}

/// Why a `hash_on` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOnError {
    /// Not one of [`HASH_ON_FORMS`].
    Unknown,
    /// `header:<name>` with a name that is not an RFC 9110 token.
    BadHeaderName(String),
    /// `cookie:<name>` with a name that is not an RFC 9110 token.
    BadCookieName(String),
}

impl std::fmt::Display for HashOnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOnError::Unknown => write!(f, "expected {HASH_ON_FORMS}"),
            HashOnError::BadHeaderName(n) => write!(f, "{n:?} is not a valid header name"),
            HashOnError::BadCookieName(n) => write!(f, "{n:?} is not a valid cookie name"),
        }
    }
}

impl HashOn {
    /// Parses the config form (`header:x-user`).
    ///
    /// ```
    /// use bbproxy_plugin_contract::balancers::HashOn;
    /// assert_eq!(HashOn::parse("header:X-User"), Ok(HashOn::Header("x-user".into())));
    /// assert!(HashOn::parse("header:").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<HashOn, HashOnError> {
        let named = |prefix: &str| s.strip_prefix(prefix).filter(|n| !n.is_empty());
        let token = |name: &str| name.bytes().all(is_token_byte);
        match s {
            "client_ip" => Ok(HashOn::ClientIp),
            "path" => Ok(HashOn::Path),
            _ => {
                if let Some(name) = named("header:") {
                    if !token(name) {
                        return Err(HashOnError::BadHeaderName(name.to_owned()));
                    }
                    Ok(HashOn::Header(name.to_ascii_lowercase()))
                } else if let Some(name) = named("cookie:") {
                    if !token(name) {
                        return Err(HashOnError::BadCookieName(name.to_owned()));
                    }
                    Ok(HashOn::Cookie(name.to_owned()))
                } else if let Some(key) = named("query:") {
                    Ok(HashOn::Query(key.to_owned()))
                } else {
                    Err(HashOnError::Unknown)
                }
            }
        }
    }
}

impl std::fmt::Display for HashOn {
    /// The config form (`header:x-user`), which the built-in balancer reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOn::ClientIp => f.write_str("client_ip"),
            HashOn::Path => f.write_str("path"),
            HashOn::Header(name) => write!(f, "header:{name}"),
            HashOn::Cookie(name) => write!(f, "cookie:{name}"),
            HashOn::Query(key) => write!(f, "query:{key}"),
        }
    }
}

/// Whether `name` may be a cookie's name: an RFC 6265 `cookie-name`, a
/// non-empty RFC 9110 token (no `=`, `;`, spaces or quotes).
///
/// ```
/// use bbproxy_plugin_contract::balancers::is_cookie_name;
/// assert!(is_cookie_name("bb_srv"));
/// assert!(!is_cookie_name("a=b") && !is_cookie_name("") && !is_cookie_name("a b"));
/// ```
pub fn is_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_token_byte)
}

/// The values of every cookie called `name` in a `Cookie` header
/// (`a=1; bb_srv=x`), in order, without the double quotes a value may be
/// sent in. A request may carry one name more than once (cookies set for
/// different paths); the proxy and the balancer both take the first value
/// that names a backend, so they agree on what the request asked for.
///
/// ```
/// use bbproxy_plugin_contract::balancers::cookie_values;
/// let v: Vec<&str> = cookie_values("a=1; bb=x;bb=\"y\"; c", "bb").collect();
/// assert_eq!(v, ["x", "y"]);
/// ```
pub fn cookie_values<'a>(header: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    header.split(';').filter_map(move |pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim_end() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// An RFC 9110 `tchar`: what header and cookie names are made of.
pub(crate) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
