use std::path::Path;

use http::{HeaderMap, HeaderValue, Request, Response, request};

use super::*;

/// A config whose global chain, domain `a.test` and its first route each
/// set `x-level` (request and response) to their own name, and add to
/// `x-trail` in both directions.
fn config() -> Config {
    let level = |name: &str| {
        format!(
            r#"[{{"builtin": "headers", "config": {{
                "request": {{"set": {{"x-level": "{name}"}}, "add": {{"x-trail": "{name}"}}}},
                "response": {{"set": {{"x-level": "{name}"}}, "add": {{"x-trail": "{name}"}}}}}}}}]"#
        )
    };
    bbproxy_config::parse(
        &format!(
            r#"{{"plugins": {{"filters": {}}},
                "domains": {{"a.test": {{"backends": ["127.0.0.1:1"], "filters": {},
                    "routes": [{{"match": {{"path": "/r"}}, "upstream": "a.test", "filters": {}}}]}},
                  "b.test": ["127.0.0.1:2"]}}}}"#,
            level("global"),
            level("domain"),
            level("route")
        ),
        Path::new("config.json"),
    )
    .unwrap()
}

/// `config`'s chains; built-in filters only, so nothing is loaded.
fn build(config: &Config) -> Chains {
    Chains::build(config, &mut |_, key| -> Result<_, String> {
        Err(format!("{key}: no component in these tests"))
    })
    .unwrap()
}

/// `parts` through `chain`'s request side.
fn run_request(chain: &Chain, parts: request::Parts) -> HeaderMap {
    let mut view = Some(Box::new(crate::plugin::RequestView {
        parts,
        host: "a.test".into(),
        client: "127.0.0.1:1".parse().unwrap(),
    }));
    chain.request(&mut view, Tenant::Upstream(0)).unwrap();
    view.unwrap().parts.headers
}

fn request_through(chain: &Chain) -> HeaderMap {
    run_request(chain, Request::new(()).into_parts().0)
}

fn response_through(chain: &Chain) -> HeaderMap {
    let mut resp = Response::new(());
    let with = ResponseCtx {
        tenant: Tenant::Upstream(0),
        request: &mut None,
        backend: "127.0.0.1:1",
        upstream: 0,
    };
    chain.response(&mut resp, with).unwrap();
    resp.headers().clone()
}

fn all(h: &HeaderMap, name: &str) -> Vec<String> {
    h.get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

/// On the request the filters run in chain order (the route's edit is the
/// last), on the response in reverse (the global chain's is the last).
#[test]
fn requests_run_the_chain_in_order_and_responses_in_reverse() {
    let config = config();
    let chains = build(&config);
    let route = chains.route(0, 0);
    assert_eq!(route.len(), 3);
    let req = request_through(&route);
    assert_eq!(req["x-level"], "route");
    assert_eq!(all(&req, "x-trail"), ["global", "domain", "route"]);
    let resp = response_through(&route);
    assert_eq!(resp["x-level"], "global");
    assert_eq!(all(&resp, "x-trail"), ["route", "domain", "global"]);

    // A domain's own requests: the global chain, then the domain's.
    let domain = chains.domain(Some(0));
    assert_eq!(
        all(&request_through(domain), "x-trail"),
        ["global", "domain"]
    );
    // A domain without filters, and a request that matched no domain:
    // the global chain only.
    for chain in [chains.domain(Some(1)), chains.domain(None)] {
        assert_eq!(all(&request_through(chain), "x-trail"), ["global"]);
    }
}

#[test]
fn one_filter_removes_then_sets_then_adds() {
    let config = bbproxy_config::parse(
        r#"{"domains": {"a.test": {"backends": ["127.0.0.1:1"], "filters": [{"builtin": "headers", "config": {
            "request": {"remove": ["x-gone", "x-again"], "set": {"x-set": "new"}, "add": {"x-add": "2", "x-again": "back"}}}}]}}}"#,
        Path::new("config.json"),
    )
    .unwrap();
    let chains = build(&config);
    let (parts, ()) = Request::builder()
        .header("x-gone", "1")
        .header("x-again", "old")
        .header("x-set", "a")
        .header("x-set", "b")
        .header("x-add", "1")
        .header("x-kept", "k")
        .body(())
        .unwrap()
        .into_parts();
    let h = &run_request(chains.domain(Some(0)), parts);
    assert!(h.get("x-gone").is_none());
    assert_eq!(all(h, "x-again"), ["back"]);
    assert_eq!(all(h, "x-set"), ["new"]);
    assert_eq!(all(h, "x-add"), ["1", "2"]);
    assert_eq!(h["x-kept"], HeaderValue::from_static("k"));
}

#[test]
fn no_filters_is_empty_chains() {
    let config = bbproxy_config::parse(
        r#"{"domains": {"a.test": ["127.0.0.1:1"]}}"#,
        Path::new("c.json"),
    )
    .unwrap();
    let chains = build(&config);
    assert!(chains.domain(Some(0)).is_empty() && chains.domain(None).is_empty());
    assert!(chains.route(0, 0).is_empty());
}
