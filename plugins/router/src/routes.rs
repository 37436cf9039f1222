//! Per-domain routes (config.json's `domains.X.routes`), as the host passes
//! them in the config under `routes`: compiled once in `init` (regexes,
//! CIDR blocks, header slots), then matched in order for each request of
//! the domain. Matching reads only what some route of the domain looks at,
//! each piece once, through [`Facts`]; it allocates nothing itself.
//!
//! The answer for a forwarding or redirect route is the route's domain and
//! index numbers (a 0.2.0 `domain-route`), which the host resolves to the
//! route's action; a `respond` route is answered here.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use bbproxy_plugin_contract::hash::{FNV1A_OFFSET, fnv1a_extend};
use bbproxy_plugin_contract::routes::{Cidr, prefix_base, query_pairs, under_base};
use bbproxy_sdk::Request;
use bbproxy_sdk::serde::Deserialize;
use bbproxy_sdk::v2::{Fact, Route};

/// Header values a request caches while it is matched; a domain's further
/// header names (rare) are read again for each route that asks.
const CACHED_HEADERS: usize = 4;

/// One route as the host passes it: config.json's `match`, and `respond`
/// when the route answers by itself.
#[derive(Debug, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct RouteSpec {
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,
    #[serde(default)]
    pub respond: Option<RespondSpec>,
}

/// config.json's `match` object (method upper case, header names lower
/// case, as the host passes them).
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct MatchSpec {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_regex: Option<String>,
    #[serde(default)]
    pub method: Vec<String>,
    #[serde(default)]
    pub header: BTreeMap<String, HeaderSpec>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub client_ip: Vec<String>,
}

/// A `header` matcher's value: `true` (present) or the exact value.
#[derive(Debug, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", untagged)]
pub enum HeaderSpec {
    Present(bool),
    Exact(String),
}

/// A `respond` route's answer.
#[derive(Debug, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct RespondSpec {
    pub status: u16,
    #[serde(default)]
    pub body: String,
}

/// One domain's routes, compiled.
#[derive(Debug, Default)]
pub struct DomainRoutes {
    routes: Vec<Compiled>,
    /// Header names some route reads, each with its cache slot.
    headers: Vec<String>,
    /// Which routes a request can match, by its path's first segment.
    index: SegmentIndex,
}

/// Routes by the first path segment they require. Most routes name a path
/// or a prefix, and a request's first segment rules out every route whose
/// path names another, so a request tries only the routes of its segment
/// and the ones that name no path, in their order. Trying all 20 routes of
/// a domain in turn cost more in mispredicted branches (a different kind of
/// check each time) than in the checks themselves.
#[derive(Debug, Default)]
struct SegmentIndex {
    /// Routes that name no path segment: every request may match them.
    unguarded: RouteSet,
    /// By segment: those routes and the segment's own.
    by_segment: HashMap<Box<str>, RouteSet, BuildHasherDefault<Fnv>>,
}

/// FNV-1a: segments are a few bytes, where SipHash's setup would cost more
/// than the lookup; the keys come from the operator's config, not from
/// clients, so flooding is not a concern.
#[derive(Debug)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(FNV1A_OFFSET)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a_extend(self.0, bytes);
    }
}

/// A set of route numbers, one bit each.
#[derive(Debug, Default, Clone)]
struct RouteSet(Vec<u64>);

impl RouteSet {
    fn insert(&mut self, i: usize) {
        let word = i / 64;
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        if let Some(w) = self.0.get_mut(word) {
            *w |= 1 << (i % 64);
        }
    }

    /// The members in ascending order.
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

/// The first segment of a path (`/api/v1` → `api`, `/` → empty), or `None`
/// when it does not start with `/`.
fn first_segment(path: &str) -> Option<&str> {
    let rest = path.strip_prefix('/')?;
    Some(rest.split_once('/').map_or(rest, |(seg, _)| seg))
}

impl SegmentIndex {
    /// The index of `routes`, whose `i`th element is the segment route `i`
    /// requires, if any.
    fn new(guards: &[Option<&str>]) -> Self {
        let mut index = SegmentIndex::default();
        for (i, guard) in guards.iter().enumerate() {
            if guard.is_none() {
                index.unguarded.insert(i);
            }
        }
        let mut segments: Vec<&str> = guards.iter().flatten().copied().collect();
        segments.sort_unstable();
        segments.dedup();
        index.by_segment = segments
            .into_iter()
            .map(|seg| {
                let mut set = index.unguarded.clone();
                for (i, guard) in guards.iter().enumerate() {
                    if *guard == Some(seg) {
                        set.insert(i);
                    }
                }
                (seg.into(), set)
            })
            .collect();
        index
    }

    /// The routes a request may match. The path is read only when some
    /// route names a segment.
    fn candidates<'r, S: Source<'r>>(&self, facts: &Facts<'r, S>) -> &RouteSet {
        if self.by_segment.is_empty() {
            return &self.unguarded;
        }
        first_segment(facts.path())
            .and_then(|seg| self.by_segment.get(seg))
            .unwrap_or(&self.unguarded)
    }
}

/// One route: the checks its matchers compile to, cheapest first (a route
/// has one or two, so a request tries only what each route asks), and its
/// answer.
#[derive(Debug)]
struct Compiled {
    checks: Vec<Check>,
    answer: Route,
}

#[derive(Debug)]
enum Check {
    /// `path`.
    Path(Box<str>),
    /// `path_prefix`, without its trailing slashes.
    Prefix(Box<str>),
    Methods(Methods),
    Clients(Vec<Cidr>),
    /// A `header`: its cache slot and the exact value (`None`: present).
    Header(usize, Option<Box<str>>),
    /// A `query` parameter and its value.
    Query(Box<str>, Box<str>),
    Regex(Box<regex::Regex>),
}

/// What of the request some route reads: the facts the router declares
/// (contract 0.2.0), so their values come with each call instead of one
/// call into the host per read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The path (a `path`, `path_prefix` or `path_regex` matcher).
    pub path: bool,
    /// The method.
    pub method: bool,
    /// The query.
    pub query: bool,
    /// The client's address.
    pub client: bool,
    /// Header names (lower case), in the order routes first name them.
    pub headers: Vec<String>,
}

impl Needs {
    /// As the facts of contract 0.2.0, the most read first, at most
    /// `max` (the rest are read through the request when a route needs
    /// them).
    pub fn facts(&self, max: usize) -> Vec<bbproxy_sdk::v2::Fact> {
        use bbproxy_sdk::v2::Fact;
        [
            (self.path, Fact::Path),
            (self.method, Fact::Method),
            (self.query, Fact::Query),
            (self.client, Fact::ClientAddr),
        ]
        .into_iter()
        .filter_map(|(needed, fact)| needed.then_some(fact))
        .chain(self.headers.iter().map(|h| Fact::header(h.as_str())))
        .take(max)
        .collect()
    }
}

impl DomainRoutes {
    /// Compiles the routes of `domain`, upstream number `number`; an error
    /// names the route.
    pub fn compile(
        domain: &str,
        number: u32,
        specs: Vec<RouteSpec>,
    ) -> Result<DomainRoutes, String> {
        let mut out = DomainRoutes::default();
        for (i, spec) in specs.into_iter().enumerate() {
            let route = out.compile_one(number, i, spec).map_err(|e| {
                format!("invalid router config: routes of {domain:?}, route {i}: {e}")
            })?;
            out.routes.push(route);
        }
        let guards: Vec<Option<&str>> = out.routes.iter().map(Compiled::segment).collect();
        out.index = SegmentIndex::new(&guards);
        Ok(out)
    }

    fn compile_one(&mut self, domain: u32, i: usize, spec: RouteSpec) -> Result<Compiled, String> {
        let m = spec.matcher;
        let regex = m
            .path_regex
            .map(|r| regex::Regex::new(&r).map_err(|e| format!("path_regex: {e}")))
            .transpose()?;
        let clients = m
            .client_ip
            .iter()
            .map(|c| Cidr::parse(c).map_err(|e| format!("client_ip {c:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let headers = m
            .header
            .into_iter()
            .map(|(name, want)| {
                let want = match want {
                    HeaderSpec::Present(true) => None,
                    HeaderSpec::Present(false) => return Err(format!("header {name:?}: false")),
                    HeaderSpec::Exact(v) => Some(v),
                };
                Ok((self.header_slot(&name), want))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let answer = match spec.respond {
            Some(r) => Route::respond(r.status, r.body),
            None => Route::domain_route(domain, u32::try_from(i).map_err(|_| "too many routes")?),
        };
        let methods = Methods::new(&m.method);
        let checks = m
            .path
            .map(|p| Check::Path(p.into()))
            .into_iter()
            .chain(m.path_prefix.map(|p| Check::Prefix(prefix_base(&p).into())))
            .chain((!methods.is_any()).then_some(Check::Methods(methods)))
            .chain((!clients.is_empty()).then_some(Check::Clients(clients)))
            .chain(
                headers
                    .into_iter()
                    .map(|(slot, v)| Check::Header(slot, v.map(Into::into))),
            )
            .chain(
                m.query
                    .into_iter()
                    .map(|(k, v)| Check::Query(k.into(), v.into())),
            )
            .chain(regex.map(|r| Check::Regex(Box::new(r))))
            .collect();
        Ok(Compiled { checks, answer })
    }

    /// Adds what of the request these routes read to `needs`.
    pub fn add_needs(&self, needs: &mut Needs) {
        needs.path |= !self.index.by_segment.is_empty();
        for check in self.routes.iter().flat_map(|r| &r.checks) {
            match check {
                Check::Path(_) | Check::Prefix(_) | Check::Regex(_) => needs.path = true,
                Check::Methods(_) => needs.method = true,
                Check::Clients(_) => needs.client = true,
                Check::Query(..) => needs.query = true,
                Check::Header(slot, _) => {
                    if let Some(name) = self.headers.get(*slot)
                        && !needs.headers.contains(name)
                    {
                        needs.headers.push(name.clone());
                    }
                }
            }
        }
    }

    fn header_slot(&mut self, name: &str) -> usize {
        let name = name.to_ascii_lowercase();
        match self.headers.iter().position(|n| *n == name) {
            Some(slot) => slot,
            None => {
                self.headers.push(name);
                self.headers.len() - 1
            }
        }
    }

    /// Whether the domain has routes at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The answer of the first route that matches the request, if any.
    pub fn find<'r, S: Source<'r>>(&self, facts: &Facts<'r, S>) -> Option<&Route> {
        self.index
            .candidates(facts)
            .iter()
            .filter_map(|i| self.routes.get(i))
            .find(|r| r.matches(facts, &self.headers))
            .map(|r| &r.answer)
    }

    /// [`DomainRoutes::find`] trying every route in turn, without the
    /// index: what the index must agree with.
    #[cfg(test)]
    fn find_linear<'r, S: Source<'r>>(&self, facts: &Facts<'r, S>) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.matches(facts, &self.headers))
            .map(|r| &r.answer)
    }
}

impl Compiled {
    /// The first path segment a request must have for this route to match:
    /// that of its exact `path` or of its `path_prefix`, if it has one
    /// (a prefix of `/` names none).
    fn segment(&self) -> Option<&str> {
        self.checks.iter().find_map(|c| match c {
            Check::Path(p) => first_segment(p),
            Check::Prefix(base) if !base.is_empty() => first_segment(base),
            _ => None,
        })
    }

    /// Every check holds.
    fn matches<'r, S: Source<'r>>(&self, f: &Facts<'r, S>, header_names: &[String]) -> bool {
        self.checks.iter().all(|c| c.holds(f, header_names))
    }
}

impl Check {
    fn holds<'r, S: Source<'r>>(&self, f: &Facts<'r, S>, header_names: &[String]) -> bool {
        match self {
            Check::Path(p) => **p == *f.path(),
            Check::Prefix(base) => under_base(base, f.path()),
            Check::Methods(m) => m.allows(f),
            Check::Clients(blocks) => f
                .client_ip()
                .is_some_and(|ip| blocks.iter().any(|c| c.contains(ip))),
            Check::Header(slot, want) => {
                let name = header_names.get(*slot).map_or("", String::as_str);
                f.with_header(*slot, name, |v| match (v, want) {
                    (None, _) => false,
                    (Some(_), None) => true,
                    (Some(v), Some(w)) => v == &**w,
                })
            }
            Check::Query(k, v) => query_has(f.query().unwrap_or(""), k, v),
            Check::Regex(r) => r.is_match(f.path()),
        }
    }
}

/// The methods registered with IANA that requests mostly use, each a bit:
/// a request's method is looked up once, and a route's `method` list is
/// one mask test.
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn method_bit(method: &str) -> u16 {
    KNOWN_METHODS
        .iter()
        .position(|m| *m == method)
        .map_or(0, |i| 1 << i)
}

/// A route's `method` matcher.
#[derive(Debug, Default)]
struct Methods {
    /// The known methods listed.
    known: u16,
    /// The others, upper case.
    other: Vec<String>,
}

impl Methods {
    fn new(list: &[String]) -> Self {
        let mut m = Methods::default();
        for name in list.iter().map(|s| s.to_ascii_uppercase()) {
            match method_bit(&name) {
                0 => m.other.push(name),
                bit => m.known |= bit,
            }
        }
        m
    }

    /// Whether none is listed: any method then.
    fn is_any(&self) -> bool {
        self.known == 0 && self.other.is_empty()
    }

    fn allows<'r, S: Source<'r>>(&self, f: &Facts<'r, S>) -> bool {
        if self.is_any() {
            return true;
        }
        let (bit, name) = f.method();
        self.known & bit != 0 || (bit == 0 && self.other.iter().any(|m| m == name))
    }
}

/// Whether the query string `q` has a parameter `key` equal to `value`
/// (compared as sent, not percent-decoded).
pub fn query_has(q: &str, key: &str, value: &str) -> bool {
    query_pairs(q).any(|(k, v)| k == key && v == value)
}

/// Where a request's facts come from: the host's request resource (each
/// accessor a host call that returns a fresh string) or a stand-in that
/// lends them (benchmarks).
pub trait Source<'r> {
    fn method(&self) -> Cow<'r, str>;
    fn path(&self) -> Cow<'r, str>;
    fn query(&self) -> Option<Cow<'r, str>>;
    fn client_addr(&self) -> Cow<'r, str>;
    fn header(&self, name: &str) -> Option<Cow<'r, str>>;
}

// A fact the router declared comes with the call: lent, not copied.
impl<'r> Source<'r> for Request<'r> {
    fn method(&self) -> Cow<'r, str> {
        self.lent(&Fact::Method).unwrap_or_default()
    }
    fn path(&self) -> Cow<'r, str> {
        self.lent(&Fact::Path).unwrap_or_default()
    }
    fn query(&self) -> Option<Cow<'r, str>> {
        self.lent(&Fact::Query)
    }
    fn client_addr(&self) -> Cow<'r, str> {
        self.lent(&Fact::ClientAddr).unwrap_or_default()
    }
    fn header(&self, name: &str) -> Option<Cow<'r, str>> {
        self.header_lent(name)
    }
}

/// A request whose parts are already at hand: the matching benchmark's
/// stand-in for the host's request resource.
#[derive(Debug, Clone, Copy)]
pub struct Lent<'r> {
    pub method: &'r str,
    pub path: &'r str,
    pub query: Option<&'r str>,
    pub client_addr: &'r str,
    pub headers: &'r [(&'r str, &'r str)],
}

impl<'r> Source<'r> for Lent<'r> {
    fn method(&self) -> Cow<'r, str> {
        Cow::Borrowed(self.method)
    }
    fn path(&self) -> Cow<'r, str> {
        Cow::Borrowed(self.path)
    }
    fn query(&self) -> Option<Cow<'r, str>> {
        self.query.map(Cow::Borrowed)
    }
    fn client_addr(&self) -> Cow<'r, str> {
        Cow::Borrowed(self.client_addr)
    }
    fn header(&self, name: &str) -> Option<Cow<'r, str>> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| Cow::Borrowed(*v))
    }
}

/// What the routes of one request have read of it, each piece read at
/// most once and only if a route asks.
pub struct Facts<'r, S> {
    source: &'r S,
    method: OnceCell<(u16, Cow<'r, str>)>,
    path: OnceCell<Cow<'r, str>>,
    query: OnceCell<Option<Cow<'r, str>>>,
    client: OnceCell<Option<IpAddr>>,
    headers: [OnceCell<Option<Cow<'r, str>>>; CACHED_HEADERS],
}

impl<'r, S: Source<'r>> Facts<'r, S> {
    pub fn new(source: &'r S) -> Self {
        Facts {
            source,
            method: OnceCell::new(),
            path: OnceCell::new(),
            query: OnceCell::new(),
            client: OnceCell::new(),
            headers: Default::default(),
        }
    }

    /// The request's method: its bit among the known ones (0 for another)
    /// and its name.
    fn method(&self) -> (u16, &str) {
        let (bit, name) = self.method.get_or_init(|| {
            let name = self.source.method();
            (method_bit(&name), name)
        });
        (*bit, name)
    }

    fn path(&self) -> &str {
        self.path.get_or_init(|| self.source.path())
    }

    fn query(&self) -> Option<&str> {
        self.query.get_or_init(|| self.source.query()).as_deref()
    }

    fn client_ip(&self) -> Option<IpAddr> {
        *self
            .client
            .get_or_init(|| self.source.client_addr().parse().ok())
    }

    /// Runs `f` on the header's first value (cached in `slot` when there
    /// is room).
    fn with_header<T>(&self, slot: usize, name: &str, f: impl FnOnce(Option<&str>) -> T) -> T {
        match self.headers.get(slot) {
            Some(cell) => f(cell.get_or_init(|| self.source.header(name)).as_deref()),
            None => f(self.source.header(name).as_deref()),
        }
    }
}

#[cfg(test)]
mod tests;
