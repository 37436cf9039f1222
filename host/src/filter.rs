//! Filter chains: the filters a forwarded request and its backend's
//! response go through, compiled once per generation from `plugins.filters`,
//! a domain's `filters` and a route's, in that order.
//!
//! A request's chain is one list, the levels already joined when the
//! generation is built: on the request the filters run in chain order (the
//! route's last, so its edits are the ones the backend sees), on the
//! response in reverse (the global chain's last, so a policy set for every
//! domain, like removing `Server`, cannot be undone by one of them), as
//! middleware wraps a handler. Each kind of filter is one variant of
//! [`Filter`]: today the built-in `headers` ([`headers`]); the Wasm filter
//! world adds its own.

mod headers;

use std::sync::Arc;

use bbproxy_config::Config;
use http::{Response, request};

/// One filter of a chain, ready to run.
#[derive(Debug)]
pub enum Filter {
    /// The built-in `headers` filter: fixed edits, names and values parsed
    /// by config validation.
    Headers(bbproxy_config::HeaderFilter),
}

impl Filter {
    fn compile(config: &bbproxy_config::Filter) -> Self {
        match config {
            bbproxy_config::Filter::Headers(edits) => Filter::Headers(edits.clone()),
        }
    }

    fn request(&self, req: &mut request::Parts) {
        match self {
            Filter::Headers(f) => headers::apply(&f.request, &mut req.headers),
        }
    }

    fn response<B>(&self, resp: &mut Response<B>) {
        match self {
            Filter::Headers(f) => headers::apply(&f.response, resp.headers_mut()),
        }
    }
}

/// The filters one request goes through, in chain order. Cheap to clone:
/// chains that share a prefix (a domain's routes) share its filters.
#[derive(Debug, Clone, Default)]
pub struct Chain(Arc<[Arc<Filter>]>);

impl Chain {
    /// This chain followed by `more`, compiled.
    fn then(&self, more: &[bbproxy_config::Filter]) -> Chain {
        if more.is_empty() {
            return self.clone();
        }
        let filters = self.0.iter().cloned();
        Chain(
            filters
                .chain(more.iter().map(|f| Arc::new(Filter::compile(f))))
                .collect(),
        )
    }

    /// How many filters it has.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Runs the chain on the request head sent upstream, first filter
    /// first.
    pub fn request(&self, req: &mut request::Parts) {
        for f in self.0.iter() {
            f.request(req);
        }
    }

    /// Runs the chain on a backend's response to the client, last filter
    /// first.
    pub fn response<B>(&self, resp: &mut Response<B>) {
        for f in self.0.iter().rev() {
            f.response(resp);
        }
    }
}

/// A generation's chains: the global one, and each domain's (the global
/// one followed by the domain's own), by domain number.
#[derive(Debug, Default)]
pub struct Chains {
    global: Chain,
    domains: Vec<Chain>,
}

impl Chains {
    /// Compiles `config`'s chains.
    pub fn build(config: &Config) -> Chains {
        let global = Chain::default().then(&config.plugins.filters);
        let domains = config
            .domains
            .iter()
            .map(|d| global.then(&d.filters))
            .collect();
        Chains { global, domains }
    }

    /// The chain of requests to domain `i` (in config order); the global
    /// one for a request that matched no domain.
    pub fn domain(&self, i: Option<usize>) -> &Chain {
        i.and_then(|i| self.domains.get(i)).unwrap_or(&self.global)
    }

    /// The chain of a route of domain `i`: the domain's, then `route`.
    pub fn route(&self, i: usize, route: &[bbproxy_config::Filter]) -> Chain {
        self.domain(Some(i)).then(route)
    }
}

#[cfg(test)]
mod tests;
