//! `sticky-cookie`: each backend's token (the cookie's value that names it)
//! and the `Set-Cookie` headers that hand it to a client, made once per
//! generation. The balancer plugin gets the same tokens in its config and
//! picks by them; the request path (`proxy::sticky`) reads the request's
//! cookie and sets a new one when the client was not already on the backend
//! that answered.

use bbproxy_config::Backend;
use bbproxy_plugin_contract::balancers::cookie_values;
use http::header::{COOKIE, HeaderMap, HeaderValue, InvalidHeaderValue};
use sha2::{Digest, Sha256};

/// Why an upstream's sticky cookie could not be made.
#[derive(Debug, thiserror::Error)]
// The header error is in the text and not a `source`, or `{:#}` would
// print it twice.
#[error("sticky-cookie {cookie:?}: not a valid Set-Cookie header: {why}")]
pub struct StickyError {
    cookie: String,
    why: InvalidHeaderValue,
}

/// One `sticky-cookie` upstream's cookie.
#[derive(Debug)]
pub struct StickyCookie {
    name: String,
    /// Each backend's token, by backend index.
    tokens: Vec<String>,
    /// Each backend's `Set-Cookie` value, by backend index: for clients on
    /// plain HTTP, and with `Secure` for those on HTTPS. Made here so a
    /// response only clones a shared value.
    set_cookie: Vec<[HeaderValue; 2]>,
}

/// The token that names `backend` in the cookie: 16 hex digits of a
/// SHA-256 of its configured address. The same on every replica and after
/// a reload (nothing but the address goes in), so a client keeps its
/// backend across both; and not the address, which a client has no need to
/// see. It is not a secret: whoever can guess an address can compute its
/// token (the cookie only chooses among the configured backends, so a
/// forged one gains nothing). 64 bits keep a collision within one upstream
/// out of reach.
pub fn token(backend: &Backend) -> String {
    let digest = Sha256::new()
        .chain_update(b"bbproxy sticky-cookie\0")
        .chain_update(backend.url_base().as_bytes())
        .finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl StickyCookie {
    /// The cookie `name` (a validated cookie name) for `backends`, in
    /// configured order.
    pub fn new(name: &str, backends: &[Backend]) -> Result<StickyCookie, StickyError> {
        let tokens: Vec<String> = backends.iter().map(token).collect();
        let header = |token: &str, secure: &str| {
            // Path=/: one backend for the whole site, whichever path the
            // first response was for. HttpOnly: scripts have no use for it.
            // SameSite=Lax: sent on top-level navigations from other sites
            // (a followed link stays on its backend), not on their
            // subrequests.
            HeaderValue::from_str(&format!(
                "{name}={token}; Path=/; HttpOnly; SameSite=Lax{secure}"
            ))
            .map_err(|why| StickyError {
                cookie: name.to_owned(),
                why,
            })
        };
        let set_cookie = tokens
            .iter()
            .map(|t| Ok([header(t, "")?, header(t, "; Secure")?]))
            .collect::<Result<_, StickyError>>()?;
        Ok(StickyCookie {
            name: name.to_owned(),
            tokens,
            set_cookie,
        })
    }

    /// The cookie's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Each backend's token, by backend index.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// The backend the request's cookie names: the first of its values
    /// that is a backend's token, in every `Cookie` field (an HTTP/2 client
    /// may send each cookie in a field of its own), as the balancer reads
    /// them.
    pub fn carried(&self, headers: &HeaderMap) -> Option<usize> {
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|h| cookie_values(h, &self.name))
            .find_map(|value| self.tokens.iter().position(|t| t == value))
    }

    /// The `Set-Cookie` value that puts a client on backend `index`, with
    /// `Secure` when the client came over HTTPS.
    pub fn set_cookie(&self, index: usize, https: bool) -> Option<&HeaderValue> {
        self.set_cookie
            .get(index)
            .map(|[plain, secure]| if https { secure } else { plain })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbproxy_config::Scheme;

    fn backend(host: &str, port: u16) -> Backend {
        Backend {
            scheme: Scheme::Http,
            host: host.to_owned(),
            port,
            weight: 1,
        }
    }

    #[test]
    fn tokens_are_stable_opaque_and_distinct() {
        let a = backend("10.0.0.1", 8080);
        // Pinned: a change would move every client off its backend at the
        // next upgrade.
        // (SHA-256 of "bbproxy sticky-cookie\0http://10.0.0.1:8080".)
        assert_eq!(token(&a), "9376aa314b697ccf");
        assert_ne!(token(&a), token(&backend("10.0.0.1", 8081)));
        assert_ne!(token(&a), token(&backend("10.0.0.2", 8080)));
        // The weight is not the backend's identity.
        assert_eq!(
            token(&a),
            token(&Backend {
                weight: 5,
                ..a.clone()
            })
        );
    }

    #[test]
    fn carried_reads_every_cookie_field_and_skips_unknown_values() {
        let backends = [backend("a", 1), backend("b", 2), backend("c", 3)];
        let s = StickyCookie::new("bb_srv", &backends).unwrap();
        let t = s.tokens().to_vec();
        let headers = |fields: &[String]| {
            let mut h = HeaderMap::new();
            for f in fields {
                h.append(COOKIE, HeaderValue::from_str(f).unwrap());
            }
            h
        };
        assert_eq!(s.carried(&headers(&[])), None);
        assert_eq!(s.carried(&headers(&["x=1".into()])), None);
        assert_eq!(s.carried(&headers(&["bb_srv=nope".into()])), None);
        assert_eq!(
            s.carried(&headers(&[format!("x=1; bb_srv={}", t[1])])),
            Some(1)
        );
        // HTTP/2: one field per cookie, a stale value first.
        assert_eq!(
            s.carried(&headers(&[
                "x=1".into(),
                "bb_srv=stale".into(),
                format!("bb_srv={}", t[2])
            ])),
            Some(2)
        );
    }

    #[test]
    fn set_cookie_names_the_backend_with_secure_for_https() {
        let s = StickyCookie::new("bb_srv", &[backend("a", 1)]).unwrap();
        let t = &s.tokens()[0];
        assert_eq!(
            s.set_cookie(0, false).unwrap(),
            &format!("bb_srv={t}; Path=/; HttpOnly; SameSite=Lax")
        );
        assert_eq!(
            s.set_cookie(0, true).unwrap(),
            &format!("bb_srv={t}; Path=/; HttpOnly; SameSite=Lax; Secure")
        );
        assert_eq!(s.set_cookie(1, false), None);
    }
}
