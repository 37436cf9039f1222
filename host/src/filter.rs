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
//! [`Filter`]: the built-in `headers` ([`headers`]), run natively, and a
//! component of the `filter` world, run under the plugin runtime's bounds
//! with its `on_fault` policy: fail-open skips the filter, fail-closed
//! stops the request ([`Stop::Fault`]).

mod headers;

use std::sync::Arc;

use bbproxy_config::{Config, OnFault, PluginSpec};
use http::Response;

use crate::plugin::{
    Fault, FilterAction, FilterAnswer, FilterWorld, Plugin, RequestView, ResponseView, Tenant,
};

/// One filter of a chain, ready to run.
#[derive(Debug)]
pub enum Filter {
    /// The built-in `headers` filter: fixed edits, names and values parsed
    /// by config validation.
    Headers(bbproxy_config::HeaderFilter),
    /// A component of the `filter` world.
    Wasm {
        /// Loaded and `init`-checked.
        plugin: Arc<Plugin<FilterWorld>>,
        /// What a fault does to the request.
        on_fault: OnFault,
    },
}

/// Why a chain stopped a request instead of letting it go on.
#[derive(Debug)]
pub enum Stop {
    /// A filter answered it (an authentication check, a rate limit).
    Answer(FilterAnswer),
    /// A filter faulted and its policy is fail-closed.
    Fault(Fault),
}

/// Loads the component of a Wasm filter entry; the second argument is the
/// entry's key path (`domains.example.com.filters[1]`), for its errors.
pub type Loader<'a, E> =
    &'a mut dyn FnMut(&PluginSpec, &str) -> Result<Arc<Plugin<FilterWorld>>, E>;

impl Filter {
    fn compile<E>(
        config: &bbproxy_config::Filter,
        key: &str,
        load: Loader<'_, E>,
    ) -> Result<Self, E> {
        Ok(match config {
            bbproxy_config::Filter::Headers(edits) => Filter::Headers(edits.clone()),
            bbproxy_config::Filter::Wasm(spec) => Filter::Wasm {
                plugin: load(spec, key)?,
                on_fault: spec.on_fault,
            },
        })
    }

    /// The filter's fault under its policy: `Ok` (skip it) when it fails
    /// open.
    fn policy(on_fault: OnFault, fault: Fault) -> Result<(), Stop> {
        match on_fault {
            OnFault::FailOpen => Ok(()),
            OnFault::FailClosed => Err(Stop::Fault(fault)),
        }
    }

    fn request(&self, view: &mut Option<Box<RequestView>>, tenant: Tenant) -> Result<(), Stop> {
        let (plugin, on_fault) = match self {
            Filter::Headers(f) => {
                if let Some(v) = view {
                    headers::apply(&f.request, &mut v.parts.headers);
                }
                return Ok(());
            }
            Filter::Wasm { plugin, on_fault } => (plugin, *on_fault),
        };
        let (edits, target) = match plugin.on_request(tenant, view) {
            Ok(FilterAction::Forward { headers, target }) => (headers, target),
            Ok(FilterAction::Respond(answer)) => return Err(Stop::Answer(answer)),
            Err(fault) => return Self::policy(on_fault, fault),
        };
        let Some(v) = view else {
            return Ok(());
        };
        if let Some(target) = target {
            let current = v
                .parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
            match target.apply(&current) {
                Ok(pq) => v.parts.uri = http::Uri::from(pq),
                Err(msg) => {
                    let fault = plugin.record(Fault::BadAnswer(msg), tenant);
                    return Self::policy(on_fault, fault);
                }
            }
        }
        for edit in &edits {
            edit.apply(&mut v.parts.headers);
        }
        Ok(())
    }

    /// Runs the filter on `head`, the response's head lent out of it for
    /// the chain's whole response side.
    fn response(
        &self,
        head: &mut Option<ResponseView>,
        tenant: Tenant,
        request: &mut Option<Box<RequestView>>,
    ) -> Result<(), Stop> {
        match self {
            Filter::Headers(f) => {
                if let Some(h) = head {
                    headers::apply(&f.response, &mut h.headers);
                }
                Ok(())
            }
            Filter::Wasm { plugin, on_fault } => match plugin.on_response(tenant, request, head) {
                Ok(edits) => {
                    if let Some(h) = head {
                        for edit in &edits {
                            edit.apply(&mut h.headers);
                        }
                    }
                    Ok(())
                }
                Err(fault) => Self::policy(*on_fault, fault),
            },
        }
    }
}

/// What a chain's response side is run with besides the response.
#[derive(Debug)]
pub struct ResponseCtx<'a> {
    /// The domain the request's host matched (a filter's faults are kept
    /// per domain, as the router's are).
    pub tenant: Tenant,
    /// The request as it was sent upstream, for the filters to read; only
    /// needed when the chain [`Chain::components_on_response`].
    pub request: &'a mut Option<Box<RequestView>>,
    /// The backend that answered, as configured.
    pub backend: &'a str,
    /// Its upstream number.
    pub upstream: u32,
}

/// The filters one request goes through, in chain order. Cheap to clone:
/// chains that share a prefix (a domain's routes) share its filters.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    filters: Arc<[Arc<Filter>]>,
    /// Whether a filter is a component whose `on-response` runs (every
    /// 0.1.x one; a 0.2.0 one that said at `init` it edits responses),
    /// which needs the request lent to it on the response side.
    components_on_response: bool,
}

impl Chain {
    /// This chain followed by `more` (the entries under key path `key`),
    /// compiled.
    fn then<E>(
        &self,
        more: &[bbproxy_config::Filter],
        key: &str,
        load: Loader<'_, E>,
    ) -> Result<Chain, E> {
        if more.is_empty() {
            return Ok(self.clone());
        }
        let mut filters: Vec<Arc<Filter>> = self.filters.to_vec();
        for (i, f) in more.iter().enumerate() {
            filters.push(Arc::new(Filter::compile(f, &format!("{key}[{i}]"), load)?));
        }
        let components_on_response = filters.iter().any(|f| match &**f {
            Filter::Wasm { plugin, .. } => plugin.init_answer().on_response,
            Filter::Headers(_) => false,
        });
        Ok(Chain {
            filters: filters.into(),
            components_on_response,
        })
    }

    /// How many filters it has.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Whether a component of it sees responses, with the request as it
    /// was sent: only then does the proxy keep a copy of the request's
    /// head for the response side. A component that checks or edits
    /// requests only (an API-key check) costs no copy.
    pub fn components_on_response(&self) -> bool {
        self.components_on_response
    }

    /// The components it runs.
    pub fn components(&self) -> impl Iterator<Item = &Arc<Plugin<FilterWorld>>> {
        self.filters.iter().filter_map(|f| match &**f {
            Filter::Wasm { plugin, .. } => Some(plugin),
            Filter::Headers(_) => None,
        })
    }

    /// Runs the chain on the request about to be sent upstream (`view`),
    /// first filter first, for domain `tenant`; stops at the first filter
    /// that answers, or that faults and fails closed.
    pub fn request(&self, view: &mut Option<Box<RequestView>>, tenant: Tenant) -> Result<(), Stop> {
        for f in self.filters.iter() {
            f.request(view, tenant)?;
        }
        Ok(())
    }

    /// Runs the chain on a backend's response to the client, last filter
    /// first; stops at a filter that faults and fails closed. The head is
    /// made once for the whole chain (its headers moved out of `resp` and
    /// back, the backend's name copied once), not once per filter.
    pub fn response<B>(&self, resp: &mut Response<B>, with: ResponseCtx<'_>) -> Result<(), Stop> {
        let mut head = Some(ResponseView {
            status: resp.status(),
            headers: std::mem::take(resp.headers_mut()),
            backend: match self.components_on_response {
                true => with.backend.to_owned(),
                false => String::new(),
            },
            upstream: with.upstream,
        });
        let mut result = Ok(());
        for f in self.filters.iter().rev() {
            result = f.response(&mut head, with.tenant, with.request);
            if result.is_err() {
                break;
            }
        }
        // Always put back, whatever a filter did.
        if let Some(h) = head {
            *resp.headers_mut() = h.headers;
        }
        result
    }
}

/// A generation's chains: the global one, each domain's (the global one
/// followed by the domain's own) and each route's (its domain's followed
/// by its own), by domain number and route index.
#[derive(Debug, Default)]
pub struct Chains {
    global: Chain,
    domains: Vec<Chain>,
    routes: Vec<Vec<Chain>>,
}

impl Chains {
    /// Compiles `config`'s chains, loading each component with `load`.
    pub fn build<E>(config: &Config, load: Loader<'_, E>) -> Result<Chains, E> {
        let global = Chain::default().then(&config.plugins.filters, "plugins.filters", load)?;
        let mut domains = Vec::with_capacity(config.domains.len());
        let mut routes = Vec::with_capacity(config.domains.len());
        for d in &config.domains {
            let key = format!("domains.{}", d.name);
            let domain = global.then(&d.filters, &format!("{key}.filters"), load)?;
            let own = d
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| domain.then(&r.filters, &format!("{key}.routes[{i}].filters"), load))
                .collect::<Result<_, _>>()?;
            domains.push(domain);
            routes.push(own);
        }
        Ok(Chains {
            global,
            domains,
            routes,
        })
    }

    /// The chain of requests to domain `i` (in config order); the global
    /// one for a request that matched no domain.
    pub fn domain(&self, i: Option<usize>) -> &Chain {
        i.and_then(|i| self.domains.get(i)).unwrap_or(&self.global)
    }

    /// The chain of route `route` of domain `domain`: the domain's, then
    /// the route's own.
    pub fn route(&self, domain: usize, route: usize) -> Chain {
        self.routes
            .get(domain)
            .and_then(|r| r.get(route))
            .cloned()
            .unwrap_or_else(|| self.domain(Some(domain)).clone())
    }

    /// Every chain (a component shared by several chains is listed once
    /// per chain).
    pub fn all(&self) -> impl Iterator<Item = &Chain> {
        std::iter::once(&self.global)
            .chain(&self.domains)
            .chain(self.routes.iter().flatten())
    }
}

#[cfg(test)]
mod tests;
