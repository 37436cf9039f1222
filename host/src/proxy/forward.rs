//! Building the upstream request head from the client's: once per request,
//! before the first attempt, and reused by every attempt.

use bbproxy_plugin_contract::routes::strip_prefix;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;

use super::ctx::Routed;
use super::{headers, upgrade};
use crate::plugin::RequestView;
use crate::upstream::exchange::Head;

/// Builds the upstream head from the client's request. `upgrade` puts back
/// the `Connection: upgrade` / `Upgrade` pair that hop-by-hop stripping
/// removes (and turns an HTTP/2 extended CONNECT into an HTTP/1.1 upgrade);
/// `routed` brings a route's `strip_prefix` and the request's filters,
/// which run last so their edits are what the backend sees.
pub(super) fn prepare(
    view: RequestView,
    proto: &'static str,
    upgrade: Option<&upgrade::Requested>,
    routed: Routed<'_>,
) -> Head {
    let RequestView {
        mut parts, client, ..
    } = view;
    // HTTP/2 clients send the host only as :authority; backends speaking
    // HTTP/1.1 need it as Host.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = upgrade {
        upgrade.apply(&mut parts.method, &mut parts.headers);
    }
    let host = parts.headers.get(header::HOST).cloned();
    headers::add_forwarded(&mut parts.headers, client.ip(), proto, host.as_ref());
    routed.filters.request(&mut parts);
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = match routed.strip_prefix {
        Some(prefix) => stripped(path, prefix),
        None => path,
    };
    Head {
        method: parts.method,
        path,
        headers: parts.headers,
    }
}

/// `path` without the segment-aware `prefix` (still starting with `/`),
/// its query kept; unchanged when it does not lie under `prefix`.
fn stripped(path: PathAndQuery, prefix: &str) -> PathAndQuery {
    let Some(rest) = strip_prefix(prefix, path.path()) else {
        return path;
    };
    let text = match path.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    PathAndQuery::try_from(text).unwrap_or(path)
}

/// What the balancer sees on a retry: the upstream request as sent.
pub(super) fn retry_view(head: &Head, host: &str, client: std::net::SocketAddr) -> RequestView {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = head.method.clone();
    parts.uri = http::Uri::from(head.path.clone());
    parts.headers = head.headers.clone();
    RequestView {
        parts,
        host: host.to_owned(),
        client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_keeps_the_query_and_the_leading_slash() {
        let p = |s: &'static str| PathAndQuery::from_static(s);
        assert_eq!(stripped(p("/api/x?a=1&b"), "/api"), p("/x?a=1&b"));
        assert_eq!(stripped(p("/api?a=1"), "/api/"), p("/?a=1"));
        assert_eq!(stripped(p("/api"), "/api"), p("/"));
        assert_eq!(stripped(p("/apix/y"), "/api"), p("/apix/y"));
    }
}
