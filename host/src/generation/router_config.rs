//! The keys the host adds to the built-in router's config: each domain's
//! routes, as the router compiles them in `init`, and the names of the
//! pools (upstreams that are no host). A config without routes or pools
//! adds nothing, so the router's config stays what it was.

use bbproxy_config::{Action, Config, HeaderMatch, Match};
use bbproxy_plugin_contract::routes::{ROUTER_POOLS_KEY, ROUTER_ROUTES_KEY};
use serde_json::{Map, Value, json};

/// `routes` (domain → its routes) and `pools`, when there are any.
pub(super) fn routes(config: &Config) -> Map<String, Value> {
    let mut out = Map::new();
    let routes: Map<String, Value> = config
        .domains
        .iter()
        .filter(|d| !d.routes.is_empty())
        .map(|d| {
            let list = d
                .routes
                .iter()
                .map(|r| route(&r.matcher, &r.action))
                .collect();
            (d.name.clone(), Value::Array(list))
        })
        .collect();
    if !routes.is_empty() {
        out.insert(ROUTER_ROUTES_KEY.to_owned(), Value::Object(routes));
    }
    if !config.pools.is_empty() {
        let names = config.pools.iter().map(|p| Value::String(p.name.clone()));
        out.insert(ROUTER_POOLS_KEY.to_owned(), Value::Array(names.collect()));
    }
    out
}

/// One route as the router reads it: its `match`, and `respond` when the
/// router answers it itself (the host resolves the other actions).
fn route(m: &Match, action: &Action) -> Value {
    let mut matcher = Map::new();
    let mut put = |key: &str, v: Value| {
        matcher.insert(key.to_owned(), v);
    };
    if let Some(p) = &m.path {
        put("path", json!(p));
    }
    if let Some(p) = &m.path_prefix {
        put("path_prefix", json!(p));
    }
    if let Some(r) = &m.path_regex {
        put("path_regex", json!(r));
    }
    if !m.methods.is_empty() {
        put("method", json!(m.methods));
    }
    if !m.headers.is_empty() {
        let headers = m.headers.iter().map(|(name, want)| {
            let v = match want {
                HeaderMatch::Present => Value::Bool(true),
                HeaderMatch::Exact(s) => Value::String(s.clone()),
            };
            (name.clone(), v)
        });
        put("header", Value::Object(headers.collect()));
    }
    if !m.query.is_empty() {
        let query = m.query.iter().map(|(k, v)| (k.clone(), json!(v)));
        put("query", Value::Object(query.collect()));
    }
    if !m.client_ip.is_empty() {
        let blocks: Vec<String> = m.client_ip.iter().map(ToString::to_string).collect();
        put("client_ip", json!(blocks));
    }
    let mut out = Map::new();
    out.insert("match".to_owned(), Value::Object(matcher));
    if let Action::Respond { status, body } = action {
        out.insert(
            "respond".to_owned(),
            json!({"status": status, "body": body}),
        );
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        bbproxy_config::parse(text, std::path::Path::new("config.json"))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Without routes or pools the router's config gets nothing new; with
    /// them, the domains' matchers (as the router reads them, `respond`
    /// only for routes it answers itself) and the pools' names.
    #[test]
    fn routes_and_pools_as_the_router_reads_them() {
        assert!(routes(&config(r#"{"domains": {"a.test": ["a:1"]}}"#)).is_empty());
        let c = config(
            r#"{"upstreams": {"api": ["p:1"]}, "domains": {"a.test": {"backends": ["a:1"], "routes": [
                {"match": {"path_prefix": "/api/", "method": "get", "header": {"X-Env": "canary", "x-d": true},
                           "query": {"v": "2"}, "client_ip": ["10.0.0.0/8"], "path_regex": "^/x", "path": "/api/x"},
                 "upstream": "api", "strip_prefix": "/api"},
                {"redirect": {"location": "/new"}, "match": {"path": "/old"}},
                {"respond": {"status": 404, "body": "no"}}
            ]}, "b.test": ["b:1"]}}"#,
        );
        let got = Value::Object(routes(&c));
        assert_eq!(
            got,
            json!({
                "routes": {"a.test": [
                    {"match": {"path": "/api/x", "path_prefix": "/api/", "path_regex": "^/x", "method": ["GET"],
                               "header": {"x-env": "canary", "x-d": true}, "query": {"v": "2"},
                               "client_ip": ["10.0.0.0/8"]}},
                    {"match": {"path": "/old"}},
                    {"match": {}, "respond": {"status": 404, "body": "no"}}
                ]},
                "pools": ["api"]
            })
        );
    }
}
