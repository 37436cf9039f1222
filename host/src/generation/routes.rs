//! What a domain's route (the built-in router's answer for a route that
//! forwards or redirects: `example.com#2` from a 0.1.x router, domain and
//! index numbers from a 0.2.0 one) stands for in one generation: resolved
//! once when the generation is built, looked up per request by
//! `proxy::decide`.

use bbproxy_config::{Action, Config, UpstreamSettings};
use http::{HeaderValue, StatusCode};

use super::BuildError;
use crate::filter::{Chain, Chains};
use crate::upstream::RetryBudget;

/// A forwarding route's target and the settings its requests use.
#[derive(Debug)]
pub struct RouteTarget {
    /// The upstream number it forwards to.
    pub upstream: u32,
    /// Removed from the path sent to the backend.
    pub strip_prefix: Option<String>,
    /// The target's settings with the route's timeouts and retries.
    pub settings: UpstreamSettings,
    /// The route's own budget of retries (its `retries` budget keys).
    pub retry_budget: RetryBudget,
    /// The global chain, its domain's, then its own.
    pub filters: Chain,
}

/// What a route reference stands for.
#[derive(Debug)]
pub enum RouteAction {
    /// Forward to a target (boxed: redirects are small).
    Forward(Box<RouteTarget>),
    /// Answer with a redirect.
    Redirect {
        /// 301, 302, 303, 307 or 308.
        status: StatusCode,
        /// The `Location` header.
        location: HeaderValue,
    },
}

/// The action of every forwarding or redirect route of every domain, by
/// the domain's upstream number and the route's index (`None` for a
/// `respond` route, which the router answers itself): two array lookups
/// per routed request.
#[derive(Debug, Default)]
pub struct RouteTable(Vec<Vec<Option<RouteAction>>>);

impl RouteTable {
    /// The table of `config`'s routes; `upstream_index` numbers upstream
    /// names; a route's filters follow its domain's in `chains`.
    pub fn build(
        config: &Config,
        upstream_index: impl Fn(&str) -> Option<u32>,
        chains: &Chains,
    ) -> Result<RouteTable, BuildError> {
        let upstreams: Vec<_> = config.upstreams().collect();
        let mut table: Vec<Vec<Option<RouteAction>>> = Vec::new();
        for (di, d) in config.domains.iter().enumerate() {
            let domain = upstream_index(&d.name).ok_or_else(|| unchecked(d, 0))? as usize;
            let mut actions = Vec::with_capacity(d.routes.len());
            for (i, route) in d.routes.iter().enumerate() {
                let action = match &route.action {
                    Action::Respond { .. } => None,
                    Action::Redirect { status, location } => Some(RouteAction::Redirect {
                        status: StatusCode::from_u16(*status).map_err(|_| unchecked(d, i))?,
                        location: HeaderValue::from_str(location).map_err(|_| unchecked(d, i))?,
                    }),
                    Action::Forward(f) => {
                        let upstream =
                            upstream_index(&f.upstream).ok_or_else(|| unchecked(d, i))?;
                        let target = upstreams
                            .get(upstream as usize)
                            .ok_or_else(|| unchecked(d, i))?;
                        let settings = UpstreamSettings {
                            timeouts: f.timeouts,
                            retries: f.retries,
                            ..target.upstream.clone()
                        };
                        Some(RouteAction::Forward(Box::new(RouteTarget {
                            upstream,
                            strip_prefix: f.strip_prefix.clone(),
                            retry_budget: RetryBudget::new(&settings.retries),
                            settings,
                            filters: chains.route(di, i),
                        })))
                    }
                };
                actions.push(action);
            }
            if table.len() <= domain {
                table.resize_with(domain + 1, Vec::new);
            }
            table[domain] = actions;
        }
        Ok(RouteTable(table))
    }

    /// The action of route `index` of the domain with upstream number
    /// `domain`.
    pub fn get(&self, domain: u32, index: u32) -> Option<&RouteAction> {
        self.0.get(domain as usize)?.get(index as usize)?.as_ref()
    }
}

/// A route that validation should have refused: config validation and
/// this table disagree.
fn unchecked(d: &bbproxy_config::Domain, i: usize) -> BuildError {
    BuildError::Unsupported(format!(
        "domains.{}.routes[{i}]: the route passed validation but cannot be served",
        d.name
    ))
}
