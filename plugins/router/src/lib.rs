//! BBProxy's default router: picks the upstream whose name matches the
//! request's host.
//!
//! Configuration (`plugins.router.config` in config.json; every key optional):
//!
//! ```json
//! {"default": "example.com"}
//! ```
//!
//! - `default`: the upstream for hosts that match no name (`null` or absent:
//!   none). It must be a configured upstream name.
//!
//! Matching is `bbproxy_plugin_contract::hosts` (exact name, then the
//! longest wildcard, then `default`), the rule the proxy itself uses to find
//! a domain's own router; a host that matches nothing gets
//! `421 Misdirected Request`.
//!
//! The host adds two keys of its own (config.json's `domains.X.routes`
//! and the names of the `upstreams` pools, which are upstreams but no
//! host's): `routes` (domain → its routes, see [`routes`]) and `pools`.
//! A request of a domain with routes goes where its first matching route
//! says; when none matches, to the domain's backends, or `404` if it has
//! none.

pub mod routes;

use std::collections::BTreeMap;

use bbproxy_plugin_contract::hosts::HostMatcher;
use bbproxy_sdk::Request;
use bbproxy_sdk::serde::Deserialize;
use bbproxy_sdk::v2::{Route, Router};
use routes::{DomainRoutes, Facts, RouteSpec, Source};

/// The plugin's configuration, as given by the host.
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct Config {
    /// Upstream for hosts that match no upstream name.
    #[serde(default)]
    pub default: Option<String>,
    /// Each domain's routes, in order (added by the host).
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<RouteSpec>>,
    /// The upstreams that are pools, not hosts (added by the host).
    #[serde(default)]
    pub pools: Vec<String>,
}

impl Config {
    /// Parses the JSON configuration text.
    pub fn parse(json: &str) -> Result<Config, String> {
        bbproxy_sdk::parse_config(json).map_err(|e| format!("invalid router config: {e}"))
    }
}

/// Host → upstream name lookup, and each domain's routes, built once per
/// instance.
#[derive(Debug, Default)]
pub struct RouteTable {
    names: Vec<String>,
    matcher: HostMatcher,
    /// By domain number; empty for a domain without routes.
    routes: Vec<DomainRoutes>,
    /// By domain number: whether it has no backends of its own (a request
    /// no route matches is then answered 404).
    backendless: Vec<bool>,
}

impl RouteTable {
    /// Builds the table from the configured upstream names and the `default`
    /// upstream, which must be one of them.
    pub fn new<I, S>(names: I, default: Option<String>) -> Result<RouteTable, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let default = match default {
            None => None,
            Some(default) => match names.iter().position(|n| *n == default) {
                Some(i) => Some(i),
                None => {
                    return Err(format!(
                        "invalid router config: \"default\" is {default:?}, which is not a configured upstream (configured: {})",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ));
                }
            },
        };
        let matcher = HostMatcher::new(names.iter().map(String::as_str), default);
        Ok(RouteTable {
            names,
            matcher,
            routes: Vec::new(),
            backendless: Vec::new(),
        })
    }

    /// Adds each domain's routes (compiled), and which domains have no
    /// backends (`backendless(name)`).
    pub fn with_routes(
        mut self,
        routes: BTreeMap<String, Vec<RouteSpec>>,
        backendless: impl Fn(&str) -> bool,
    ) -> Result<RouteTable, String> {
        self.routes = self.names.iter().map(|_| DomainRoutes::default()).collect();
        self.backendless = self.names.iter().map(|n| backendless(n)).collect();
        for (domain, specs) in routes {
            let Some(i) = self.names.iter().position(|n| *n == domain) else {
                return Err(format!(
                    "invalid router config: routes for {domain:?}, which is not a configured domain"
                ));
            };
            let number = u32::try_from(i).map_err(|_| "too many domains".to_owned())?;
            self.routes[i] = DomainRoutes::compile(&domain, number, specs)?;
        }
        Ok(self)
    }

    /// What of the request the routes of every domain read.
    pub fn needs(&self) -> routes::Needs {
        let mut needs = routes::Needs::default();
        for r in &self.routes {
            r.add_needs(&mut needs);
        }
        needs
    }

    /// The decision for `req`: its domain's first matching route, else the
    /// domain (404 when it has no backends), else 421.
    pub fn route_request(&self, req: &Request) -> Route {
        self.decide(&req.host(), req)
    }

    /// The decision for a request for `host` whose other parts come from
    /// `source`.
    pub fn decide<'r, S: Source<'r>>(&self, host: &str, source: &'r S) -> Route {
        match self.matcher.lookup(host) {
            Some(i) => self.decide_domain(i, host, source),
            None => self.route(host),
        }
    }

    /// [`RouteTable::decide`] for a request whose host matched domain
    /// number `i` (`host` only names it in an answer for a domain that is
    /// not in the table).
    pub fn decide_domain<'r, S: Source<'r>>(&self, i: usize, host: &str, source: &'r S) -> Route {
        if let Some(routes) = self.routes.get(i).filter(|r| !r.is_empty()) {
            if let Some(answer) = routes.find(&Facts::new(source)) {
                return answer.clone();
            }
            if self.backendless.get(i).copied().unwrap_or(false) {
                return Route::respond(404, "bbproxy: no route matches this request\n");
            }
        }
        match u32::try_from(i) {
            Ok(n) if i < self.names.len() => Route::upstream(n),
            _ => self.route(host),
        }
    }

    /// The upstream for `host`, if any (exact name, then longest wildcard,
    /// then the default).
    /// The domains whose every request [`RouteTable::decide_domain`] sends
    /// to the domain's own upstream: those without routes.
    pub fn self_routed(&self) -> Vec<u32> {
        (0..self.names.len())
            .filter(|&i| self.routes.get(i).is_none_or(DomainRoutes::is_empty))
            .filter_map(|i| u32::try_from(i).ok())
            .collect()
    }

    pub fn lookup(&self, host: &str) -> Option<&str> {
        let i = self.matcher.lookup(host)?;
        self.names.get(i).map(String::as_str)
    }

    /// The decision for `host`: its upstream, or `421 Misdirected Request`.
    pub fn route(&self, host: &str) -> Route {
        match self.matcher.lookup(host).map(u32::try_from) {
            Some(Ok(n)) => Route::upstream(n),
            _ => Route::respond(421, format!("bbproxy: no route for host {host:?}\n")),
        }
    }
}

/// The router plugin.
#[derive(Debug, Default)]
pub struct HostRouter {
    table: RouteTable,
    /// What the routes read, declared at init (contract 0.2.0), so it comes
    /// with each call.
    facts: Vec<bbproxy_sdk::v2::Fact>,
}

impl Router for HostRouter {
    fn init(config: &str) -> Result<Self, String> {
        let config = Config::parse(config)?;
        // Pools come after the domains: leaving them out keeps the
        // domains' numbers.
        let domains: Vec<_> = bbproxy_sdk::upstreams()
            .into_iter()
            .filter(|u| !config.pools.contains(&u.name))
            .collect();
        let names = domains.iter().map(|u| u.name.clone());
        let table = RouteTable::new(names, config.default)?.with_routes(config.routes, |name| {
            domains.iter().any(|u| u.name == name && u.backends == 0)
        })?;
        let facts = table.needs().facts(bbproxy_sdk::v2::MAX_FACTS);
        Ok(HostRouter { table, facts })
    }

    fn facts(&self) -> Vec<bbproxy_sdk::v2::Fact> {
        self.facts.clone()
    }

    fn self_routed_domains(&self) -> Vec<u32> {
        self.table.self_routed()
    }

    fn route(&mut self, req: &Request, domain: Option<u32>) -> Route {
        // The host matched the domain already (by the same rule): only a
        // request of no domain needs its host read, for `default` or the
        // 421's text.
        match domain {
            Some(d) if (d as usize) < self.table.names.len() => {
                self.table.decide_domain(d as usize, "", req)
            }
            _ => self.table.route_request(req),
        }
    }
}

bbproxy_sdk::v2::export!(HostRouter: router);

#[cfg(test)]
mod tests {
    use super::*;

    fn table(names: &[&str], default: Option<&str>) -> RouteTable {
        RouteTable::new(names.iter().copied(), default.map(str::to_owned)).unwrap()
    }

    #[test]
    fn exact_match() {
        let t = table(&["example.com", "127.0.0.1", "localhost"], None);
        assert_eq!(t.lookup("example.com"), Some("example.com"));
        assert_eq!(t.lookup("127.0.0.1"), Some("127.0.0.1"));
        assert_eq!(t.lookup("localhost"), Some("localhost"));
        assert_eq!(t.lookup("www.example.com"), None);
    }

    #[test]
    fn exact_beats_wildcard() {
        let t = table(&["*.example.com", "a.example.com"], None);
        assert_eq!(t.lookup("a.example.com"), Some("a.example.com"));
        assert_eq!(t.lookup("b.example.com"), Some("*.example.com"));
    }

    #[test]
    fn wildcard_matches_any_depth_but_not_apex() {
        let t = table(&["*.example.com"], None);
        assert_eq!(t.lookup("a.example.com"), Some("*.example.com"));
        assert_eq!(t.lookup("a.b.example.com"), Some("*.example.com"));
        assert_eq!(t.lookup("example.com"), None);
        assert_eq!(t.lookup(".example.com"), None);
        assert_eq!(t.lookup("badexample.com"), None);
    }

    #[test]
    fn longest_wildcard_wins() {
        let t = table(&["*.example.com", "*.b.example.com", "*.com"], None);
        assert_eq!(t.lookup("a.b.example.com"), Some("*.b.example.com"));
        assert_eq!(t.lookup("a.c.example.com"), Some("*.example.com"));
        assert_eq!(t.lookup("other.com"), Some("*.com"));
        assert_eq!(t.lookup("b.example.com"), Some("*.example.com"));
    }

    #[test]
    fn trailing_dot_is_ignored() {
        let t = table(&["example.com", "*.example.org"], None);
        assert_eq!(t.lookup("example.com."), Some("example.com"));
        assert_eq!(t.lookup("a.example.org."), Some("*.example.org"));
    }

    #[test]
    fn default_applies_when_nothing_matches() {
        let t = table(
            &["example.com", "*.example.org", "fallback"],
            Some("fallback"),
        );
        assert_eq!(t.lookup("unknown.net"), Some("fallback"));
        assert_eq!(t.lookup("example.com"), Some("example.com"));
        assert_eq!(t.lookup("a.example.org"), Some("*.example.org"));
    }

    #[test]
    fn no_match_is_421() {
        let t = table(&["example.com"], None);
        let route = t.route("nope.test");
        let response = route.direct_response().unwrap();
        assert_eq!(response.status, 421);
        assert_eq!(response.body, "bbproxy: no route for host \"nope.test\"\n");
        assert_eq!(t.route("example.com"), Route::upstream(0));
    }

    #[test]
    fn default_must_be_an_upstream() {
        let err = RouteTable::new(["a.test", "b.test"], Some("c.test".to_owned())).unwrap_err();
        assert!(err.contains("\"c.test\""), "{err}");
        assert!(err.contains("a.test, b.test"), "{err}");
        let err = RouteTable::new(Vec::<String>::new(), Some("c.test".to_owned())).unwrap_err();
        assert!(err.contains("configured: none"), "{err}");
    }

    #[test]
    fn config_parsing() {
        assert_eq!(Config::parse("{}").unwrap().default, None);
        assert_eq!(Config::parse(r#"{"default": null}"#).unwrap().default, None);
        assert_eq!(
            Config::parse(r#"{"default": "a.test"}"#)
                .unwrap()
                .default
                .as_deref(),
            Some("a.test")
        );
        let err = Config::parse(r#"{"defualt": "a.test"}"#).unwrap_err();
        assert!(err.contains("unknown field `defualt`"), "{err}");
        assert!(Config::parse(r#"{"default": 3}"#).is_err());
        assert!(Config::parse("[]").is_err());
    }
}
