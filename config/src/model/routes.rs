//! `upstreams` (named backend pools) and a domain's `routes`: which requests
//! go where, decided by the built-in router in config order.

pub use bbproxy_plugin_contract::routes::{Cidr, REDIRECT_STATUSES};

use super::{Filter, Retries, UpstreamTimeouts};

pub const DEFAULT_REDIRECT_STATUS: u16 = 308;

/// One entry of a domain's `routes`: the first whose `matcher` holds for a
/// request decides what happens to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub matcher: Match,
    pub action: Action,
    /// `filters`: the route's chain, after the domain's; empty unless the
    /// route forwards.
    pub filters: Vec<Filter>,
}

/// A route's `match`: every matcher given must hold; none given matches
/// every request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Match {
    /// `path`: the request path equals it (as sent, without the query).
    pub path: Option<String>,
    /// `path_prefix`: segment-aware (`/api` and `/api/` match `/api` and
    /// `/api/x`, not `/apix`).
    pub path_prefix: Option<String>,
    /// `path_regex`: the `regex` crate's syntax, unanchored unless written
    /// with `^`/`$`; a valid pattern.
    pub path_regex: Option<String>,
    /// `method`: upper case, no duplicates; empty matches any method.
    pub methods: Vec<String>,
    /// `header`: lower-case names, in file order.
    pub headers: Vec<(String, HeaderMatch)>,
    /// `query`: a parameter of the query string with this value, compared
    /// as sent (not percent-decoded), in file order.
    pub query: Vec<(String, String)>,
    /// `client_ip`: the client's address lies in one of these; empty
    /// matches any client.
    pub client_ip: Vec<Cidr>,
}

/// What a `header` matcher asks of the header's first value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// `true`: present, whatever its value.
    Present,
    /// A string: exactly this value.
    Exact(String),
}

/// A route's one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `upstream`: forward to a named pool or to a domain's backends.
    Forward(Forward),
    /// `redirect`: answer with `Location`.
    Redirect { status: u16, location: String },
    /// `respond`: answer with a plain-text body.
    Respond { status: u16, body: String },
}

/// A forwarding route's target and the settings it forwards with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The name of a pool of `upstreams` or of a domain with backends.
    pub upstream: String,
    /// `strip_prefix`: removed (segment-aware) from the path sent to the
    /// backend, which keeps its leading `/` and its query.
    pub strip_prefix: Option<String>,
    /// The target's timeouts with the route's `timeouts` laid over them.
    pub timeouts: UpstreamTimeouts,
    /// The target's retries with the route's `retries` laid over them.
    pub retries: Retries,
}
