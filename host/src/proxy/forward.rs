//! Building the upstream request from the client's: once per request,
//! after routing and before the balancer's pick, so the filters and the
//! balancer see the request the backend will get; its head is then reused
//! by every attempt.

use bbproxy_plugin_contract::routes::strip_prefix;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;

use super::ctx::{RequestCtx, Routed};
use super::error::{ErrorKind, ProxyError};
use super::{headers, upgrade};
use crate::plugin::RequestView;
use crate::upstream::exchange::Head;

/// Makes the client's request the upstream one, in place: `client` is
/// its address's `X-Forwarded-For` text. `upgrade` puts
/// back the `Connection: upgrade` / `Upgrade` pair that hop-by-hop
/// stripping removes (and turns an HTTP/2 extended CONNECT into an
/// HTTP/1.1 upgrade); `routed` brings a route's `strip_prefix`. The
/// request's filters run after this (`crate::filter::Chain::request`), so
/// their edits are what the backend sees.
pub(super) fn prepare(
    view: &mut RequestView,
    proto: &'static str,
    client: Option<&HeaderValue>,
    upgrade: Option<&upgrade::Requested>,
    routed: Routed<'_>,
) {
    let RequestView { parts, .. } = view;
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
    headers::add_forwarded(&mut parts.headers, client, proto, host.as_ref());
    if let Some(prefix) = routed.strip_prefix
        && let Some(path) = parts.uri.path_and_query()
    {
        parts.uri = http::Uri::from(stripped(path.clone(), prefix));
    }
}

/// Builds the request's upstream head, once, from its prepared view; the
/// host the view was lent (see `Proxy::run`) goes back to the context.
pub(super) fn build_head(ctx: &mut RequestCtx<'_, '_>) -> Result<(), ProxyError> {
    let Some(view) = ctx.view.take() else {
        return Err(ErrorKind::Internal("no request to forward").into());
    };
    let mut view = *view;
    ctx.host = std::mem::take(&mut view.host);
    ctx.head = Some(into_head(view));
    Ok(())
}

/// The upstream head of a prepared request.
fn into_head(view: RequestView) -> Head {
    let parts = view.parts;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
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

/// The request as it was sent, for the response's filters: the head taken
/// back (the attempts are over).
pub(super) fn sent_view(head: Head, host: &str, client: std::net::SocketAddr) -> Box<RequestView> {
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = head.method;
    parts.uri = http::Uri::from(head.path);
    parts.headers = head.headers;
    Box::new(RequestView {
        parts,
        host: host.to_owned(),
        client,
    })
}

/// What the balancer sees on a retry: the upstream request as sent.
pub(super) fn retry_view(
    head: &Head,
    host: &str,
    client: std::net::SocketAddr,
) -> Box<RequestView> {
    let copy = Head {
        method: head.method.clone(),
        path: head.path.clone(),
        headers: head.headers.clone(),
    };
    sent_view(copy, host, client)
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
