//! Calling plugins directly, without a proxy: the request and the backend
//! list the sandbox tests hand to `route` and `pick`.

use bbproxy::plugin::{Backend, RequestView};

/// A `GET /` for `host` from 127.0.0.1.
pub fn view(host: &str) -> Option<RequestView> {
    let (parts, ()) = http::Request::get("/")
        .header("host", host)
        .body(())
        .unwrap()
        .into_parts();
    Some(RequestView {
        parts,
        host: host.to_owned(),
        client: "127.0.0.1:9".parse().unwrap(),
    })
}

/// One fresh, closed backend.
pub fn candidates() -> [Backend; 1] {
    [Backend::fresh(0)]
}
