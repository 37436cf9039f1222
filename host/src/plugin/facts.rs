//! The request facts a 0.2.0 plugin declares at `init` (`decisions.fact`
//! in `wit/v0.2`), and their values for one request. They are sent with
//! the call, so a plugin reads its path or its hash key's header without a
//! call back into the host: each such call costs more than the copy.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderName;

use super::bindings::v2::decisions::Fact;
use super::state::{RequestView, header_value};

/// One declared fact, its header name parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Spec {
    Method,
    Host,
    Path,
    Query,
    ClientAddr,
    Header(HeaderName),
}

/// A plugin's declared facts, in its order. Empty for a 0.1.x plugin and
/// for one that declares none: every call then gets an empty list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts(Arc<[Spec]>);

impl Facts {
    /// Checks and compiles the facts an `init` declared (the contract's
    /// rule: at most [`bbproxy_plugin_contract::MAX_FACTS`], valid header
    /// names); the `Err` is the reason `init` is refused.
    pub fn declared(facts: Vec<Fact>) -> Result<Facts, String> {
        bbproxy_plugin_contract::check_facts(
            facts.len(),
            facts.iter().filter_map(|f| match f {
                Fact::Header(n) => Some(n.as_str()),
                _ => None,
            }),
        )?;
        facts
            .into_iter()
            .map(|f| {
                Ok(match f {
                    Fact::Method => Spec::Method,
                    Fact::Host => Spec::Host,
                    Fact::Path => Spec::Path,
                    Fact::Query => Spec::Query,
                    Fact::ClientAddr => Spec::ClientAddr,
                    Fact::Header(n) => {
                        Spec::Header(HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
                            format!("declared fact header({n:?}): not a valid header name")
                        })?)
                    }
                })
            })
            .collect::<Result<Vec<_>, String>>()
            .map(|v| Facts(v.into()))
    }

    /// How many were declared.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none were.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values of the facts for `request` as the call's `facts` string
    /// (the WIT's encoding: line `i` is fact `i`'s value, `\0` when the
    /// request lacks it), each what the `request` method of the same name
    /// answers. No facts give none (the WIT's `none`: a string, even an
    /// empty one, costs an allocation in the plugin); no request (a call
    /// without one) an empty string.
    #[cfg(test)]
    pub fn values(&self, request: Option<&RequestView>) -> Option<String> {
        let mut out = String::new();
        self.write_values(request, &mut out).then_some(out)
    }

    /// [`Facts::values`] into `out` (cleared first, its allocation kept: a
    /// call's buffer is reused by the next); false when none are declared.
    pub fn write_values(&self, request: Option<&RequestView>, out: &mut String) -> bool {
        use std::fmt::Write;
        out.clear();
        if self.0.is_empty() {
            return false;
        }
        let Some(r) = request else {
            return true;
        };
        for fact in self.0.iter() {
            let value: Option<Cow<'_, str>> = match fact {
                Spec::Method => Some(r.parts.method.as_str().into()),
                Spec::Host => Some(r.host.as_str().into()),
                Spec::Path => Some(r.parts.uri.path().into()),
                Spec::Query => r.parts.uri.query().map(Into::into),
                Spec::ClientAddr => {
                    // Written in place: an address has no newline or NUL.
                    let _ = write!(out, "{}", r.client.ip());
                    out.push('\n');
                    continue;
                }
                Spec::Header(name) => {
                    header_value(&r.parts.headers, name, name == http::header::COOKIE)
                }
            };
            // No value holds a control character (header values are visible
            // ASCII, the URI's parts are checked by the parser), so a line
            // ends at its value's end; checked all the same, byte-wise (a
            // `char` pattern decodes every character).
            match value {
                Some(v) if !v.bytes().any(|b| b == b'\n' || b == 0) => out.push_str(&v),
                _ => out.push('\0'),
            }
            out.push('\n');
        }
        true
    }
}

impl std::fmt::Display for Facts {
    /// `path, method, header x-env`: as `plugin check` lists them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, fact) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match fact {
                Spec::Method => f.write_str("method")?,
                Spec::Host => f.write_str("host")?,
                Spec::Path => f.write_str("path")?,
                Spec::Query => f.write_str("query")?,
                Spec::ClientAddr => f.write_str("client-addr")?,
                Spec::Header(name) => write!(f, "header {name}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> RequestView {
        let (parts, ()) = http::Request::get("/a/b?x=1")
            .header("x-user", "alice")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .unwrap()
            .into_parts();
        RequestView {
            parts,
            host: "example.test".into(),
            client: "192.0.2.7:4000".parse().unwrap(),
        }
    }

    #[test]
    fn values_follow_the_declared_order_and_the_request_methods() {
        let facts = Facts::declared(vec![
            Fact::Header("X-User".into()),
            Fact::Path,
            Fact::Query,
            Fact::Method,
            Fact::Host,
            Fact::ClientAddr,
            Fact::Header("x-absent".into()),
            Fact::Header("cookie".into()),
        ])
        .unwrap();
        assert_eq!(
            facts.values(Some(&view())).unwrap(),
            "alice\n/a/b\nx=1\nGET\nexample.test\n192.0.2.7\n\0\na=1; b=2\n"
        );
        assert_eq!(facts.values(None).as_deref(), Some(""));
        assert_eq!(
            facts.to_string(),
            "header x-user, path, query, method, host, client-addr, header x-absent, header cookie"
        );
        assert_eq!(Facts::default().values(Some(&view())), None);
    }

    /// A call's buffer is the previous call's: what that call sent is gone.
    #[test]
    fn a_reused_buffer_holds_only_this_calls_values() {
        let facts = Facts::declared(vec![Fact::Path, Fact::ClientAddr]).unwrap();
        let mut buffer = "left over\n".repeat(8);
        let capacity = buffer.capacity();
        assert!(facts.write_values(Some(&view()), &mut buffer));
        assert_eq!(buffer, "/a/b\n192.0.2.7\n");
        assert_eq!(buffer.capacity(), capacity, "the allocation is kept");
        assert!(facts.write_values(None, &mut buffer));
        assert_eq!(buffer, "");
        assert!(!Facts::default().write_values(Some(&view()), &mut buffer));
    }

    #[test]
    fn a_bad_declaration_is_refused_with_the_reason() {
        assert_eq!(
            Facts::declared(vec![Fact::Header("bad name".into())]).unwrap_err(),
            r#"declared fact header("bad name"): not a valid header name"#
        );
        let err = Facts::declared(vec![Fact::Path; 17]).unwrap_err();
        assert!(err.starts_with("declared 17 request facts"), "{err}");
        assert!(Facts::declared(Vec::new()).unwrap().is_empty());
    }
}
