//! The request a router, balancer or filter decides on.

/// The request being decided on, valid during the call it is passed to.
///
/// In the proxy every accessor is a call into the host, which copies only
/// what is asked for: read the headers you need, once. In tests the request
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
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn from_fake(fake: &'a crate::testing::FakeRequest) -> Self {
        Request {
            source: Source::Fake(fake),
        }
    }

    /// HTTP method, upper case (`GET`, `POST`, ...).
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeRequest::new("post", "a.test", "/");
    /// assert_eq!(fake.as_request().method(), "POST");
    /// ```
    #[inline]
    pub fn method(&self) -> String {
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
        match self.source {
            Source::Host(r) => r.header(name),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.header_value(name),
        }
    }
}
