//! `sticky-cookie`: a client goes back to the backend its cookie names.
//!
//! The proxy does the cookie's other half: it gives every backend an opaque
//! token (a hash of its address, so the same on every replica and after a
//! reload, and not the address itself), passes the tokens here by backend
//! position, and sets the cookie on a response whose request did not carry
//! the token of the backend that answered. This side only reads: a request
//! whose cookie names a candidate goes there; one without the cookie, with
//! a token no backend has (garbage, or a backend removed by a reload) or
//! naming a backend that is not a candidate now (breaker open, failing its
//! health check, drained, already tried by this request) is balanced
//! round-robin over the candidates (weighted, when their weights differ),
//! and the proxy then sets the cookie to where it went.

use bbproxy_plugin_contract::balancers::{cookie_values, is_cookie_name};
use bbproxy_sdk::serde::Deserialize;
use bbproxy_sdk::{Backend, Counter, Request};

use crate::weighted_round_robin;

/// One `sticky-cookie` upstream's settings, as the proxy passes them.
#[derive(Debug, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct StickySpec {
    /// The cookie's name (config.json's `"cookie"`).
    pub cookie: String,
    /// Each backend's token (the cookie's value for it), by position.
    pub tokens: Vec<String>,
}

/// What `sticky-cookie` keeps for one upstream.
#[derive(Debug)]
pub struct Sticky {
    cookie: String,
    tokens: Vec<String>,
    /// For requests whose cookie names no candidate.
    round_robin: Counter,
}

impl Sticky {
    /// The policy for an upstream with `backends` backends; refuses a
    /// spec that could never match a cookie the proxy sets.
    pub fn new(spec: StickySpec, backends: u32, round_robin: Counter) -> Result<Sticky, String> {
        if !is_cookie_name(&spec.cookie) {
            return Err(format!(
                "sticky-cookie: {:?} is not a valid cookie name",
                spec.cookie
            ));
        }
        if u32::try_from(spec.tokens.len()).ok() != Some(backends) {
            return Err(format!(
                "sticky-cookie: {} tokens for {backends} backends",
                spec.tokens.len()
            ));
        }
        Ok(Sticky {
            cookie: spec.cookie,
            tokens: spec.tokens,
            round_robin,
        })
    }

    /// The candidate the request's cookie names, else the next in
    /// weighted round-robin order (plain round-robin when the weights are
    /// equal): a new client is placed by the backends' weights, and then
    /// stays where it was placed.
    pub fn pick(&self, req: &Request, candidates: &[Backend]) -> Option<usize> {
        // Declared as a fact (contract 0.2.0): lent from the call's values.
        req.header_lent("cookie")
            .and_then(|header| self.named(&header, candidates))
            .or_else(|| {
                let weights: Vec<u32> = candidates.iter().map(|b| b.weight).collect();
                weighted_round_robin(self.round_robin.fetch_add(1), &weights)
            })
    }

    /// The first candidate a value of the cookie in `header` names: a
    /// request may carry the name more than once (another path's cookie of
    /// the same name), and one stale value must not hide a good one.
    pub fn named(&self, header: &str, candidates: &[Backend]) -> Option<usize> {
        cookie_values(header, &self.cookie).find_map(|value| {
            candidates
                .iter()
                .position(|b| self.token(b.id) == Some(value))
        })
    }

    fn token(&self, id: u32) -> Option<&str> {
        let i = usize::try_from(id).ok()?;
        self.tokens.get(i).map(String::as_str)
    }
}
