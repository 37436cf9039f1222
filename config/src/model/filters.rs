//! `filters`: chains of filters that edit the requests a domain (or one of
//! its routes) forwards and the responses it gets back. A chain is
//! `plugins.filters` (every domain), then the domain's, then the matched
//! route's.

use std::path::Path;

pub use http::{HeaderName, HeaderValue};

impl Filter {
    /// The component file it runs, if it is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Filter::Headers(_) => None,
            Filter::Wasm(spec) => match &spec.source {
                crate::PluginSource::Path(p) => Some(p),
                crate::PluginSource::Builtin => None,
            },
        }
    }
}

/// One entry of a `filters` chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// `{"builtin": "headers", "config": {...}}`: fixed header edits,
    /// run by the proxy itself.
    Headers(HeaderFilter),
    /// `{"path": "filter.wasm", "config": {...}, "on_fault": ...}`: a
    /// component of the `filter` world, with the keys of any plugin entry
    /// (a component's `on_fault` defaults to `fail-closed`: a filter that
    /// checks access must not be skipped unless the operator says so).
    Wasm(crate::PluginSpec),
}

/// The built-in `headers` filter's `config`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderFilter {
    /// `request`: edits to the request sent to the backend.
    pub request: HeaderEdits,
    /// `response`: edits to the backend's response sent to the client.
    pub response: HeaderEdits,
}

/// Edits to one message's headers, made in this order: `remove`, `set`,
/// `add`. No name is one a filter may not change
/// (`bbproxy_plugin_contract::headers::check_filter_header`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderEdits {
    /// `remove`: every value of these headers is removed.
    pub remove: Vec<HeaderName>,
    /// `set`: each header gets this one value, replacing any; no name
    /// twice.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// `add`: this value is appended to the header's values.
    pub add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}
