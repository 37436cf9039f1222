//! The request a router, balancer or filter decides on.

use crate::v2::Fact;

/// The request being decided on, valid during the call it is passed to.
///
/// In the proxy every accessor is a call into the host, which copies only
/// what is asked for: read the headers you need, once. A contract 0.2.0
/// plugin can do better: the facts it declares at init
/// ([`v2::Router::facts`](crate::v2::Router::facts),
/// [`v2::Balancer::facts`](crate::v2::Balancer::facts),
/// [`Filter::request_facts`](crate::Filter::request_facts)) come with each
/// call, and reading one of them here calls nothing. In tests the request
/// is a [`FakeRequest`](crate::testing::FakeRequest) that answers the same
/// way.
///
/// ```
/// use bbproxy_sdk::testing::FakeRequest;
///
/// let fake = FakeRequest::get("App.Example.com:8443", "/api/users?page=2")
///     .header("X-Canary", "1");
/// let req = fake.as_request();
/// assert_eq!(req.method(), "GET");
/// assert_eq!(req.host(), "app.example.com");
/// assert_eq!(req.path(), "/api/users");
/// assert_eq!(req.query().as_deref(), Some("page=2"));
/// assert_eq!(req.header("x-canary").as_deref(), Some("1"));
/// ```
#[derive(Clone, Copy)]
pub struct Request<'a> {
    source: Source<'a>,
    pushed: Option<Pushed<'a>>,
}

/// The values of the declared facts that came with the call, in the order
/// of the declaration.
#[derive(Clone, Copy)]
struct Pushed<'a> {
    facts: &'a [Fact],
    values: &'a [Option<&'a str>],
}

impl<'a> Pushed<'a> {
    /// The value of the first declared fact `is` accepts, if one was
    /// declared: `Some(value)`, the value itself possibly `None`.
    fn find(&self, is: impl Fn(&Fact) -> bool) -> Option<Option<&'a str>> {
        let i = self.facts.iter().position(is)?;
        self.values.get(i).copied()
    }
}

/// Splits the `facts` string of a 0.2.0 call into the values of `count`
/// declared facts (the WIT's encoding: one line per fact, `\0` for one the
/// request lacks) into `out`; returns how many lines there were, at most
/// `out.len()`.
pub(crate) fn split_facts<'s>(facts: &'s str, out: &mut [Option<&'s str>]) -> usize {
    // A byte loop rather than `split_terminator('\n')`: its searcher calls
    // memchr for every line, which costs more than the few bytes of a line
    // (the values are short: a path, a header), on every call.
    let bytes = facts.as_bytes();
    let mut n = 0;
    let mut start = 0;
    for i in 0..=bytes.len() {
        // A line ends at `\n`, and at the end of the text when text is
        // left after the last `\n` (counted, as `split_terminator` does).
        let ends = match bytes.get(i) {
            Some(b) => *b == b'\n',
            None => start < i,
        };
        if !ends {
            continue;
        }
        let (Some(slot), Some(line)) = (out.get_mut(n), facts.get(start..i)) else {
            return n;
        };
        *slot = (line != "\0").then_some(line);
        n += 1;
        start = i + 1;
    }
    n
}

// One variant on wasm32, so every match compiles to the direct host call.
#[derive(Clone, Copy)]
enum Source<'a> {
    Host(&'a crate::bindings::router::bbproxy::plugin::types::Request),
    #[cfg(not(target_arch = "wasm32"))]
    Fake(&'a crate::testing::FakeRequest),
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            Source::Host(_) => f.write_str("Request(host)"),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(fake) => f.debug_tuple("Request").field(fake).finish(),
        }
    }
}

impl<'a> Request<'a> {
    /// The view of the host's request handle passed to an export.
    pub(crate) fn from_host(
        handle: &'a crate::bindings::router::bbproxy::plugin::types::Request,
    ) -> Self {
        Request {
            source: Source::Host(handle),
            pushed: None,
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn from_fake(fake: &'a crate::testing::FakeRequest) -> Self {
        Request {
            source: Source::Fake(fake),
            pushed: None,
        }
    }

    /// This request, answering the declared `facts` from the `values` that
    /// came with the call (a contract 0.2.0 call). More values than facts
    /// are ignored; a fact without a value reads through the source.
    pub(crate) fn with_pushed(self, facts: &'a [Fact], values: &'a [Option<&'a str>]) -> Self {
        Request {
            pushed: Some(Pushed { facts, values }),
            ..self
        }
    }

    /// The pushed value of a declared fact `is` accepts, if any.
    #[inline]
    fn pushed(&self, is: impl Fn(&Fact) -> bool) -> Option<Option<String>> {
        self.declared(is).map(|v| v.map(str::to_owned))
    }

    /// The value of `fact` as its accessor ([`Request::path`],
    /// [`Request::header`], ...) answers it, lent rather than copied when
    /// the fact was declared (it came with the call); a copy read through
    /// the proxy otherwise. A header fact is matched in any case.
    ///
    /// ```
    /// use bbproxy_sdk::v2::Fact;
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("a.test", "/x?q=1");
    /// assert_eq!(fake.as_request().lent(&Fact::Path).as_deref(), Some("/x"));
    /// assert_eq!(fake.as_request().lent(&Fact::header("x-absent")), None);
    /// ```
    pub fn lent(&self, fact: &Fact) -> Option<std::borrow::Cow<'a, str>> {
        let declared = match fact {
            Fact::Header(name) => {
                self.declared(|f| matches!(f, Fact::Header(n) if n.eq_ignore_ascii_case(name)))
            }
            _ => self.declared(|f| f == fact),
        };
        if let Some(v) = declared {
            return v.map(std::borrow::Cow::Borrowed);
        }
        match fact {
            Fact::Method => Some(self.method()),
            Fact::Host => Some(self.host()),
            Fact::Path => Some(self.path()),
            Fact::Query => self.query(),
            Fact::ClientAddr => Some(self.client_addr()),
            Fact::Header(name) => self.header(name),
        }
        .map(std::borrow::Cow::Owned)
    }

    /// As [`Request::header`], lent rather than copied when the header was
    /// declared as a fact (it came with the call); a copy read through the
    /// proxy otherwise.
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("a.test", "/").header("X-Key", "k");
    /// assert_eq!(fake.as_request().header_lent("x-key").as_deref(), Some("k"));
    /// ```
    #[inline]
    pub fn header_lent(&self, name: &str) -> Option<std::borrow::Cow<'a, str>> {
        match self.declared(|f| matches!(f, Fact::Header(n) if n.eq_ignore_ascii_case(name))) {
            Some(v) => v.map(std::borrow::Cow::Borrowed),
            None => self.header(name).map(std::borrow::Cow::Owned),
        }
    }

    /// The value of the first declared fact `is` accepts, as sent with the
    /// call, without copying it: `None` when no such fact was declared (or
    /// outside a contract 0.2.0 call), `Some(None)` when the request lacks
    /// it. The accessors ([`Request::path`], [`Request::header`], ...)
    /// answer the same, as an owned copy; this is for a hot path that
    /// would rather not allocate.
    ///
    /// ```
    /// use bbproxy_sdk::v2::Fact;
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("a.test", "/x");
    /// // Outside a 0.2.0 call nothing was sent with it.
    /// assert_eq!(fake.as_request().declared(|f| matches!(f, Fact::Path)), None);
    /// ```
    #[inline]
    pub fn declared(&self, is: impl Fn(&Fact) -> bool) -> Option<Option<&'a str>> {
        self.pushed.as_ref().and_then(|p| p.find(is))
    }

    /// HTTP method, upper case (`GET`, `POST`, ...).
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeRequest::new("post", "a.test", "/");
    /// assert_eq!(fake.as_request().method(), "POST");
    /// ```
    #[inline]
    pub fn method(&self) -> String {
        if let Some(Some(v)) = self.pushed(|f| matches!(f, Fact::Method)) {
            return v;
        }
        match self.source {
            Source::Host(r) => r.method(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.method.clone(),
        }
    }

    /// Host the client asked for (`:authority` or `Host`), lower case, without
    /// the port.
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("A.Test:8080", "/");
    /// assert_eq!(fake.as_request().host(), "a.test");
    /// ```
    #[inline]
    pub fn host(&self) -> String {
        if let Some(Some(v)) = self.pushed(|f| matches!(f, Fact::Host)) {
            return v;
        }
        match self.source {
            Source::Host(r) => r.host(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.host.clone(),
        }
    }

    /// Path of the request target, without the query.
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("a.test", "/x?y=1");
    /// assert_eq!(fake.as_request().path(), "/x");
    /// ```
    #[inline]
    pub fn path(&self) -> String {
        if let Some(Some(v)) = self.pushed(|f| matches!(f, Fact::Path)) {
            return v;
        }
        match self.source {
            Source::Host(r) => r.path(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.path.clone(),
        }
    }

    /// Query string without the leading `?`, if any.
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("a.test", "/x");
    /// assert_eq!(fake.as_request().query(), None);
    /// ```
    #[inline]
    pub fn query(&self) -> Option<String> {
        if let Some(v) = self.pushed(|f| matches!(f, Fact::Query)) {
            return v;
        }
        match self.source {
            Source::Host(r) => r.query(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.query.clone(),
        }
    }

    /// Client IP address as text (`203.0.113.7`, `2001:db8::1`).
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("a.test", "/").client("203.0.113.7");
    /// assert_eq!(fake.as_request().client_addr(), "203.0.113.7");
    /// ```
    #[inline]
    pub fn client_addr(&self) -> String {
        if let Some(Some(v)) = self.pushed(|f| matches!(f, Fact::ClientAddr)) {
            return v;
        }
        match self.source {
            Source::Host(r) => r.client_addr(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.client.clone(),
        }
    }

    /// First value of the header `name` (case-insensitive), if present and
    /// valid UTF-8. `cookie` is the exception: an HTTP/2 client may send
    /// each cookie in a field of its own, and the proxy joins them with
    /// `"; "` (RFC 9113 8.2.3), so every cookie is found in the one value.
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeRequest::get("a.test", "/")
    ///     .header("X-Tag", "a")
    ///     .header("x-tag", "b")
    ///     .header("Cookie", "a=1")
    ///     .header("cookie", "b=2");
    /// assert_eq!(fake.as_request().header("X-TAG").as_deref(), Some("a"));
    /// assert_eq!(fake.as_request().header("COOKIE").as_deref(), Some("a=1; b=2"));
    /// assert_eq!(fake.as_request().header("x-missing"), None);
    /// ```
    #[inline]
    pub fn header(&self, name: &str) -> Option<String> {
        if let Some(v) =
            self.pushed(|f| matches!(f, Fact::Header(n) if n.eq_ignore_ascii_case(name)))
        {
            return v;
        }
        match self.source {
            Source::Host(r) => r.header(name),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.header_value(name),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::FakeRequest;
    use crate::v2::Fact;

    #[test]
    fn declared_facts_are_answered_from_the_values_sent_with_the_call() {
        let fake = FakeRequest::get("a.test", "/real?q=1").header("X-User", "real");
        let facts = [Fact::Path, Fact::header("x-user"), Fact::Query];
        let mut values = [None; 3];
        assert_eq!(super::split_facts("/sent\nsent\n\0\n", &mut values), 3);
        // As `split_terminator` splits, for any input: more lines than
        // slots, an unterminated last line, empty lines, multi-byte text.
        for text in [
            "",
            "\n",
            "a",
            "a\nb",
            "\n\n\0\n",
            "é\nü\0\n\0",
            "1\n2\n3\n4\n5\n",
        ] {
            let mut got = [None; 3];
            let n = super::split_facts(text, &mut got);
            let want: Vec<Option<&str>> = text
                .split_terminator('\n')
                .take(3)
                .map(|l| (l != "\0").then_some(l))
                .collect();
            assert_eq!(&got[..n], want.as_slice(), "{text:?}");
        }
        let req = fake.as_request().with_pushed(&facts, &values);
        assert_eq!(req.path(), "/sent");
        assert_eq!(req.header("X-USER").as_deref(), Some("sent"));
        assert_eq!(req.query(), None, "a declared fact sent as none is none");
        // Undeclared: read through the request.
        assert_eq!(req.method(), "GET");
        assert_eq!(req.header("x-other"), None);
        assert_eq!(fake.as_request().query().as_deref(), Some("q=1"));
    }
}
