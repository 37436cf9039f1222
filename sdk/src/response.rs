//! The backend's response head a filter's `on_response` sees.

/// A backend's response head, valid during the [`Filter::on_response`]
/// call it is passed to.
///
/// In the proxy every accessor is a call into the host, which copies only
/// what is asked for. In tests the response is a
/// [`FakeResponse`](crate::testing::FakeResponse) that answers the same
/// way.
///
/// [`Filter::on_response`]: crate::Filter::on_response
///
/// ```
/// use bbproxy_sdk::testing::FakeResponse;
///
/// let fake = FakeResponse::new(200)
///     .header("Server", "nginx")
///     .backend("127.0.0.1:9002")
///     .upstream(1);
/// let resp = fake.as_response();
/// assert_eq!(resp.status(), 200);
/// assert_eq!(resp.header("server").as_deref(), Some("nginx"));
/// assert_eq!(resp.backend(), "127.0.0.1:9002");
/// assert_eq!(resp.upstream(), 1);
/// ```
#[derive(Clone, Copy)]
pub struct Response<'a> {
    source: Source<'a>,
}

// One variant on wasm32, so every match compiles to the direct host call.
#[derive(Clone, Copy)]
enum Source<'a> {
    Host(&'a crate::bindings::router::bbproxy::plugin::types::Response),
    #[cfg(not(target_arch = "wasm32"))]
    Fake(&'a crate::testing::FakeResponse),
}

impl std::fmt::Debug for Response<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source {
            Source::Host(_) => f.write_str("Response(host)"),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(fake) => f.debug_tuple("Response").field(fake).finish(),
        }
    }
}

impl<'a> Response<'a> {
    /// The view of the host's response handle passed to an export.
    pub(crate) fn from_host(
        handle: &'a crate::bindings::router::bbproxy::plugin::types::Response,
    ) -> Self {
        Response {
            source: Source::Host(handle),
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn from_fake(fake: &'a crate::testing::FakeResponse) -> Self {
        Response {
            source: Source::Fake(fake),
        }
    }

    /// HTTP status code.
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeResponse::new(404);
    /// assert_eq!(fake.as_response().status(), 404);
    /// ```
    #[inline]
    pub fn status(&self) -> u16 {
        match self.source {
            Source::Host(r) => r.status(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.status,
        }
    }

    /// First value of the header `name` (case-insensitive), if present and
    /// valid UTF-8, as the backend sent it or an earlier filter left it.
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeResponse::new(200)
    ///     .header("Set-Cookie", "a=1")
    ///     .header("set-cookie", "b=2");
    /// assert_eq!(fake.as_response().header("SET-COOKIE").as_deref(), Some("a=1"));
    /// assert_eq!(fake.as_response().header("x-missing"), None);
    /// ```
    #[inline]
    pub fn header(&self, name: &str) -> Option<String> {
        match self.source {
            Source::Host(r) => r.header(name),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.header_value(name).map(str::to_owned),
        }
    }

    /// The backend that answered, as configured (`127.0.0.1:9001`,
    /// `https://api.internal:8443`).
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeResponse::new(200);
    /// assert_eq!(fake.as_response().backend(), "127.0.0.1:9001");
    /// ```
    #[inline]
    pub fn backend(&self) -> String {
        match self.source {
            Source::Host(r) => r.backend(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.backend.clone(),
        }
    }

    /// The upstream number of that backend (an index into
    /// [`upstreams()`](crate::upstreams)).
    ///
    /// ```
    /// let fake = bbproxy_sdk::testing::FakeResponse::new(200).upstream(2);
    /// assert_eq!(fake.as_response().upstream(), 2);
    /// ```
    #[inline]
    pub fn upstream(&self) -> u32 {
        match self.source {
            Source::Host(r) => r.upstream(),
            #[cfg(not(target_arch = "wasm32"))]
            Source::Fake(f) => f.upstream,
        }
    }
}
