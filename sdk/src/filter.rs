//! The filter role (WIT world `filter`, 0.1.1): the [`Filter`] trait and
//! the constructors of its answers.

// Only the test host checks answers in the plugin; in the proxy, the host does.
#[cfg(not(target_arch = "wasm32"))]
use bbproxy_plugin_contract::filters::Edit;

use crate::{
    FilterResponse, Header, HeaderEdit, Request, RequestAction, RequestEdits, Response,
    expect_no_config,
};

/// A plugin that edits the requests a domain (or route) forwards and the
/// response heads its backends send back, or answers a request itself: an
/// authentication check, a rate limit (WIT world `filter`). Export it with
/// `bbproxy_sdk::v2::export!(F: filter);` (contract 0.2.0, which lets a
/// filter that edits no response skip `on_response`: see
/// [`Filter::edits_responses`]) or `bbproxy_sdk::export!(F: filter);`
/// (0.1.1).
///
/// Filters run in chains (`plugins.filters`, then the domain's, then the
/// route's): [`on_request`](Filter::on_request) first to last, after
/// routing and before a backend is picked;
/// [`on_response`](Filter::on_response) last to first, on the head of a
/// backend's response. An answer outside the contract (a header a filter
/// may not change, an invalid name, value, path or query, an answer's
/// status outside 200..=599 or body over 64 KiB) is a fault; the test
/// host's [`TestHost::on_request`](crate::testing::TestHost::on_request)
/// and [`TestHost::on_response`](crate::testing::TestHost::on_response)
/// report it as an `Err`.
///
/// ```
/// use bbproxy_sdk::{Filter, HeaderEdit, Request, RequestAction, RequestEdits, Response};
/// use bbproxy_sdk::testing::{FakeRequest, FakeResponse, TestHost};
///
/// /// Refuses writes; tags what it forwards and hides the backend's software.
/// #[derive(Default)]
/// struct ReadOnly;
///
/// impl Filter for ReadOnly {
///     fn on_request(&mut self, req: &Request) -> RequestAction {
///         if req.method() != "GET" {
///             return RequestAction::respond(405, "read-only\n").with_header("allow", "GET");
///         }
///         RequestEdits::new().set_header("x-read-only", "1").into()
///     }
///     fn on_response(&mut self, _req: &Request, _resp: &Response) -> Vec<HeaderEdit> {
///         vec![HeaderEdit::remove("server")]
///     }
/// }
///
/// let host = TestHost::new();
/// let mut filter: ReadOnly = host.filter("{}").unwrap();
/// let post = FakeRequest::new("POST", "a.test", "/");
/// let answer = host.on_request(&mut filter, &post).unwrap();
/// assert_eq!(answer.answer().map(|a| a.status), Some(405));
///
/// let mut get = FakeRequest::get("a.test", "/");
/// let action = host.on_request(&mut filter, &get).unwrap();
/// get.apply(action.edits().unwrap()).unwrap();
/// assert_eq!(get.as_request().header("x-read-only").as_deref(), Some("1"));
///
/// let mut resp = FakeResponse::new(200).header("Server", "nginx/1.25");
/// let edits = host.on_response(&mut filter, &get, &resp).unwrap();
/// resp.apply(&edits).unwrap();
/// assert_eq!(resp.as_response().header("server"), None);
/// ```
pub trait Filter: Default + 'static {
    /// Creates the plugin instance; called once per instance before any
    /// other call, with the filter's `config` from config.json as JSON text
    /// (`{}` when absent). An error rejects the generation that loads the
    /// plugin, and its text is shown to the operator.
    ///
    /// The default accepts only an empty configuration (see
    /// [`expect_no_config`]) and returns `Self::default()`.
    ///
    /// ```
    /// use bbproxy_sdk::{Filter, serde::Deserialize, testing::TestHost};
    ///
    /// #[derive(Default, Deserialize)]
    /// #[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
    /// struct Tag { value: String }
    /// impl Filter for Tag {
    ///     fn init(config: &str) -> Result<Self, String> {
    ///         bbproxy_sdk::parse_config(config).map_err(|e| format!("invalid tag config: {e}"))
    ///     }
    /// }
    ///
    /// let host = TestHost::new();
    /// assert_eq!(host.filter::<Tag>(r#"{"value": "blue"}"#).map(|t| t.value), Ok("blue".into()));
    /// let err = host.filter::<Tag>("{}").err().unwrap();
    /// assert!(err.starts_with("invalid tag config: missing field `value`"), "{err}");
    /// ```
    fn init(config: &str) -> Result<Self, String> {
        expect_no_config(config)?;
        Ok(Self::default())
    }

    /// Called once per request after routing, before a backend is picked,
    /// with the request as it will be sent upstream (hop-by-hop headers
    /// removed, `X-Forwarded-*` added, a route's `strip_prefix` applied,
    /// earlier filters' edits made). Not called for a request the router
    /// answered itself. Returns [`RequestAction::forward`] (with
    /// [`RequestEdits`] to change the request) or
    /// [`RequestAction::respond`] to answer the client now: no later
    /// filter, balancer or backend sees the request then.
    ///
    /// The default forwards the request unchanged.
    ///
    /// ```
    /// use bbproxy_sdk::{Filter, Request, RequestAction, RequestEdits};
    /// use bbproxy_sdk::testing::{FakeRequest, TestHost};
    ///
    /// /// Moves `/v1/...` to `/v2/...` and drops the query.
    /// #[derive(Default)]
    /// struct V2;
    /// impl Filter for V2 {
    ///     fn on_request(&mut self, req: &Request) -> RequestAction {
    ///         match req.path().strip_prefix("/v1/") {
    ///             Some(rest) => RequestEdits::new().path(format!("/v2/{rest}")).query("").into(),
    ///             None => RequestAction::forward(),
    ///         }
    ///     }
    /// }
    ///
    /// let host = TestHost::new();
    /// let mut req = FakeRequest::get("a.test", "/v1/users?page=2");
    /// let action = host.on_request(&mut V2, &req).unwrap();
    /// req.apply(action.edits().unwrap()).unwrap();
    /// assert_eq!((req.as_request().path(), req.as_request().query()), ("/v2/users".into(), None));
    /// ```
    fn on_request(&mut self, req: &Request) -> RequestAction {
        let _ = req;
        RequestAction::forward()
    }

    /// Called once with the response head of the backend that answered
    /// (not for the proxy's own error answers, nor a protocol switch's
    /// 101), with the request as it was sent. Returns the header changes
    /// to make, in order (see the [`HeaderEdit`] constructors).
    ///
    /// The default changes nothing.
    ///
    /// ```
    /// use bbproxy_sdk::{Filter, HeaderEdit, Request, Response};
    /// use bbproxy_sdk::testing::{FakeRequest, FakeResponse, TestHost};
    ///
    /// /// Says which backend answered.
    /// #[derive(Default)]
    /// struct Which;
    /// impl Filter for Which {
    ///     fn on_response(&mut self, _: &Request, resp: &Response) -> Vec<HeaderEdit> {
    ///         vec![HeaderEdit::set("x-backend", resp.backend())]
    ///     }
    /// }
    ///
    /// let host = TestHost::new();
    /// let resp = FakeResponse::new(200).backend("10.0.0.2:80");
    /// let edits = host.on_response(&mut Which, &FakeRequest::get("a.test", "/"), &resp);
    /// assert_eq!(edits, Ok(vec![HeaderEdit::set("x-backend", "10.0.0.2:80")]));
    /// ```
    fn on_response(&mut self, req: &Request, resp: &Response) -> Vec<HeaderEdit> {
        let _ = (req, resp);
        Vec::new()
    }

    /// Whether this filter edits responses at all. Asked once, right after
    /// `init`, by a filter exported for contract 0.2.0
    /// (`bbproxy_sdk::v2::export!(F: filter)`): `false`, and the proxy never
    /// calls [`Filter::on_response`], which saves a call on every response
    /// (an authentication check needs none). The default, `true`, keeps
    /// every call; a 0.1.1 export ignores it.
    fn edits_responses(&self) -> bool {
        true
    }

    /// The request facts [`Filter::on_request`] reads on every call (the
    /// header an authentication check looks at, say). Asked once, right
    /// after `init`, by a filter exported for contract 0.2.0: the proxy
    /// sends their values with each `on_request` call, and the
    /// [`Request`]'s accessors answer them without a call into the proxy
    /// (see [`crate::v2::Fact`]; at most [`crate::v2::MAX_FACTS`]). The
    /// default declares none; a 0.1.1 export ignores it.
    fn request_facts(&self) -> Vec<crate::v2::Fact> {
        Vec::new()
    }
}

impl Header {
    /// A header `name: value`.
    ///
    /// ```
    /// let h = bbproxy_sdk::Header::new("x-a", "1");
    /// assert_eq!((h.name.as_str(), h.value.as_str()), ("x-a", "1"));
    /// ```
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Header {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl HeaderEdit {
    /// Replaces every value of the header `name` with `value`.
    ///
    /// ```
    /// use bbproxy_sdk::{Header, HeaderEdit};
    /// assert_eq!(HeaderEdit::set("x-a", "1"), HeaderEdit::Set(Header::new("x-a", "1")));
    /// ```
    pub fn set(name: impl Into<String>, value: impl Into<String>) -> HeaderEdit {
        HeaderEdit::Set(Header::new(name, value))
    }

    /// Appends `value` to the header `name`, keeping any already there.
    ///
    /// ```
    /// use bbproxy_sdk::{Header, HeaderEdit};
    /// assert_eq!(HeaderEdit::add("vary", "cookie"), HeaderEdit::Add(Header::new("vary", "cookie")));
    /// ```
    pub fn add(name: impl Into<String>, value: impl Into<String>) -> HeaderEdit {
        HeaderEdit::Add(Header::new(name, value))
    }

    /// Removes every value of the header `name`.
    ///
    /// ```
    /// use bbproxy_sdk::HeaderEdit;
    /// assert_eq!(HeaderEdit::remove("server"), HeaderEdit::Remove("server".into()));
    /// ```
    pub fn remove(name: impl Into<String>) -> HeaderEdit {
        HeaderEdit::Remove(name.into())
    }

    /// The name of the header this edit changes.
    ///
    /// ```
    /// use bbproxy_sdk::HeaderEdit;
    /// assert_eq!(HeaderEdit::add("x-a", "1").name(), "x-a");
    /// assert_eq!(HeaderEdit::remove("server").name(), "server");
    /// ```
    pub fn name(&self) -> &str {
        match self {
            HeaderEdit::Set(h) | HeaderEdit::Add(h) => &h.name,
            HeaderEdit::Remove(name) => name,
        }
    }

    /// The edit as the contract crate's checks take it.
    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn as_contract(&self) -> Edit<'_> {
        match self {
            HeaderEdit::Set(h) => Edit::Set(&h.name, &h.value),
            HeaderEdit::Add(h) => Edit::Add(&h.name, &h.value),
            HeaderEdit::Remove(name) => Edit::Remove(name),
        }
    }
}

impl Default for RequestEdits {
    /// No change: the request goes on as it is.
    fn default() -> Self {
        RequestEdits {
            headers: Vec::new(),
            path: None,
            query: None,
        }
    }
}

impl RequestEdits {
    /// No change yet; add some with the builder methods below, then turn
    /// it into an action with `.into()` or [`RequestAction::forward_with`].
    ///
    /// ```
    /// let edits = bbproxy_sdk::RequestEdits::new();
    /// assert!(edits.is_empty());
    /// ```
    pub fn new() -> RequestEdits {
        RequestEdits::default()
    }

    /// Adds a [`HeaderEdit::set`]: the header `name` gets this one value.
    ///
    /// ```
    /// use bbproxy_sdk::{HeaderEdit, RequestEdits};
    /// let edits = RequestEdits::new().set_header("x-user", "7");
    /// assert_eq!(edits.headers, [HeaderEdit::set("x-user", "7")]);
    /// ```
    pub fn set_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(HeaderEdit::set(name, value));
        self
    }

    /// Adds a [`HeaderEdit::add`]: `value` is appended to the header
    /// `name`.
    ///
    /// ```
    /// use bbproxy_sdk::{HeaderEdit, RequestEdits};
    /// let edits = RequestEdits::new().add_header("x-tag", "a").add_header("x-tag", "b");
    /// assert_eq!(edits.headers, [HeaderEdit::add("x-tag", "a"), HeaderEdit::add("x-tag", "b")]);
    /// ```
    pub fn add_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(HeaderEdit::add(name, value));
        self
    }

    /// Adds a [`HeaderEdit::remove`]: every value of the header `name`
    /// goes.
    ///
    /// ```
    /// use bbproxy_sdk::{HeaderEdit, RequestEdits};
    /// let edits = RequestEdits::new().remove_header("x-api-key");
    /// assert_eq!(edits.headers, [HeaderEdit::remove("x-api-key")]);
    /// ```
    pub fn remove_header(mut self, name: impl Into<String>) -> Self {
        self.headers.push(HeaderEdit::remove(name));
        self
    }

    /// Sends the request to a new path: starting with `/`, without the
    /// query, visible ASCII without `#` (percent-encode the rest).
    ///
    /// ```
    /// let edits = bbproxy_sdk::RequestEdits::new().path("/v2/users");
    /// assert_eq!(edits.path.as_deref(), Some("/v2/users"));
    /// ```
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Sends the request with a new query string (without the `?`; empty
    /// removes the query).
    ///
    /// ```
    /// let edits = bbproxy_sdk::RequestEdits::new().query("");
    /// assert_eq!(edits.query.as_deref(), Some(""));
    /// ```
    pub fn query(mut self, query: impl Into<String>) -> Self {
        self.query = Some(query.into());
        self
    }

    /// Whether these edits change nothing.
    ///
    /// ```
    /// let edits = bbproxy_sdk::RequestEdits::new();
    /// assert!(edits.is_empty());
    /// assert!(!edits.query("a=1").is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.path.is_none() && self.query.is_none()
    }
}

impl FilterResponse {
    /// An answer with `status` (200..=599) and a plain `body` (at most
    /// 64 KiB), no headers yet.
    ///
    /// ```
    /// let r = bbproxy_sdk::FilterResponse::new(429, "slow down\n");
    /// assert_eq!((r.status, r.body.as_str(), r.headers.len()), (429, "slow down\n", 0));
    /// ```
    pub fn new(status: u16, body: impl Into<String>) -> FilterResponse {
        FilterResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// Adds the header `name: value` to the answer (after any earlier one
    /// of the same name).
    ///
    /// ```
    /// use bbproxy_sdk::{FilterResponse, Header};
    /// let r = FilterResponse::new(429, "").header("retry-after", "10");
    /// assert_eq!(r.headers, [Header::new("retry-after", "10")]);
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push(Header::new(name, value));
        self
    }
}

impl RequestAction {
    /// Forwards the request unchanged.
    ///
    /// ```
    /// use bbproxy_sdk::{RequestAction, RequestEdits};
    /// assert_eq!(RequestAction::forward(), RequestAction::Forward(RequestEdits::new()));
    /// ```
    pub fn forward() -> RequestAction {
        RequestAction::Forward(RequestEdits::new())
    }

    /// Forwards the request with `edits` (the same as `edits.into()`).
    ///
    /// ```
    /// use bbproxy_sdk::{RequestAction, RequestEdits};
    /// let action = RequestAction::forward_with(RequestEdits::new().remove_header("cookie"));
    /// assert_eq!(action.edits().map(|e| e.headers.len()), Some(1));
    /// ```
    pub fn forward_with(edits: RequestEdits) -> RequestAction {
        RequestAction::Forward(edits)
    }

    /// Answers the client now with `status` (200..=599) and a plain
    /// `body` (at most 64 KiB); add headers with
    /// [`with_header`](RequestAction::with_header).
    ///
    /// ```
    /// use bbproxy_sdk::{FilterResponse, RequestAction};
    /// let action = RequestAction::respond(403, "forbidden\n");
    /// assert_eq!(action.answer(), Some(&FilterResponse::new(403, "forbidden\n")));
    /// ```
    pub fn respond(status: u16, body: impl Into<String>) -> RequestAction {
        RequestAction::Respond(FilterResponse::new(status, body))
    }

    /// Adds the header `name: value` to the message that goes on: the
    /// answer of a [`respond`](RequestAction::respond), or, on a
    /// [`forward`](RequestAction::forward), the forwarded request (a
    /// [`HeaderEdit::add`] after its other edits).
    ///
    /// ```
    /// use bbproxy_sdk::{Header, HeaderEdit, RequestAction};
    /// let answer = RequestAction::respond(401, "").with_header("www-authenticate", "ApiKey");
    /// assert_eq!(answer.answer().unwrap().headers, [Header::new("www-authenticate", "ApiKey")]);
    /// let forward = RequestAction::forward().with_header("x-checked", "1");
    /// assert_eq!(forward.edits().unwrap().headers, [HeaderEdit::add("x-checked", "1")]);
    /// ```
    pub fn with_header(self, name: impl Into<String>, value: impl Into<String>) -> RequestAction {
        match self {
            RequestAction::Forward(edits) => RequestAction::Forward(edits.add_header(name, value)),
            RequestAction::Respond(answer) => RequestAction::Respond(answer.header(name, value)),
        }
    }

    /// The edits, if this action forwards the request.
    ///
    /// ```
    /// use bbproxy_sdk::RequestAction;
    /// assert!(RequestAction::forward().edits().is_some());
    /// assert!(RequestAction::respond(403, "").edits().is_none());
    /// ```
    pub fn edits(&self) -> Option<&RequestEdits> {
        match self {
            RequestAction::Forward(edits) => Some(edits),
            RequestAction::Respond(_) => None,
        }
    }

    /// The answer, if this action answers the client itself.
    ///
    /// ```
    /// use bbproxy_sdk::RequestAction;
    /// assert_eq!(RequestAction::respond(429, "").answer().map(|a| a.status), Some(429));
    /// assert!(RequestAction::forward().answer().is_none());
    /// ```
    pub fn answer(&self) -> Option<&FilterResponse> {
        match self {
            RequestAction::Forward(_) => None,
            RequestAction::Respond(answer) => Some(answer),
        }
    }
}

impl From<RequestEdits> for RequestAction {
    /// Forwards the request with these edits.
    fn from(edits: RequestEdits) -> RequestAction {
        RequestAction::Forward(edits)
    }
}

impl From<FilterResponse> for RequestAction {
    /// Answers the client with this response.
    fn from(answer: FilterResponse) -> RequestAction {
        RequestAction::Respond(answer)
    }
}
