//! Sticky sessions' half on the request path (`"balancer": {"kind":
//! "sticky-cookie"}`): which backend the request's cookie names, read once
//! it is routed, and the cookie set on the backend's response when the
//! client was not already on the backend that answered (no cookie, one for
//! a backend that was not eligible or is no longer configured, or a retry
//! that moved it). The balancer plugin picks by the same cookie.

use http::Response;
use http::header::SET_COOKIE;

use super::ProxyBody;
use super::Scheme;
use super::ctx::{RequestCtx, Routed};

/// Notes the backend the request's cookie names, before the request's
/// head is handed to the first attempt (the response does not have it).
pub(super) fn note_request(ctx: &mut RequestCtx<'_, '_>, routed: Routed<'_>) {
    ctx.sticky = match (&routed.slot.sticky, &ctx.view) {
        (Some(cookie), Some(view)) => cookie.carried(&view.parts.headers),
        _ => None,
    };
}

/// Sets the cookie to the backend that answered, unless the request
/// already named it: a client that stays put gets no header, so a
/// response that was cacheable stays so.
pub(super) fn answer(ctx: &RequestCtx<'_, '_>, routed: Routed<'_>, resp: &mut Response<ProxyBody>) {
    let Some(cookie) = &routed.slot.sticky else {
        return;
    };
    let Some(served) = ctx.tried.last() else {
        return;
    };
    if ctx.sticky == Some(served) {
        return;
    }
    if let Some(value) = cookie.set_cookie(served, ctx.scheme == Scheme::Https) {
        // Appended: the backend's own cookies stay.
        resp.headers_mut().append(SET_COOKIE, value.clone());
    }
}
