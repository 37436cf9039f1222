//! What a plugin's store holds, and the host interface (`bbproxy:plugin/host`,
//! the `request` resource) implemented over it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{CounterHandle, RequestHandle, ResponseHandle, host, types};
use super::budget::Budget;
use super::logbudget::{self, LogBudget};
use super::resource_caps::Limiter;
use super::shared::SharedState;
use crate::clock;

/// The parts of a client request that plugins may read. The proxy keeps it
/// boxed and moves the box into the store for the duration of a call and
/// takes it back afterwards, so no header is copied unless a plugin asks for
/// it, and lending it moves a pointer, not the few hundred bytes of a head.
#[derive(Debug)]
pub struct RequestView {
    /// Method, URI, version and headers as received.
    pub parts: http::request::Parts,
    /// The host the client asked for: lower case, without port.
    pub host: String,
    /// The client's address.
    pub client: SocketAddr,
}

/// A backend's response head as a filter's `on-response` sees it, lent to
/// the store like [`RequestView`]: the headers are moved in and back out.
#[derive(Debug)]
pub struct ResponseView {
    /// The backend's status.
    pub status: http::StatusCode,
    /// Its headers, with earlier filters' edits.
    pub headers: http::HeaderMap,
    /// The backend that answered, as configured.
    pub backend: String,
    /// That backend's upstream number.
    pub upstream: u32,
}

/// Who a store belongs to, for log lines and metrics.
#[derive(Debug, Clone)]
pub struct PluginIdentity {
    /// `builtin` or the file name of the component.
    pub name: Arc<str>,
    /// `router`, `balancer` or `breaker`.
    pub role: &'static str,
}

/// Data of one plugin instance's store.
pub struct PluginState {
    pub(super) limits: Limiter,
    /// Budget of the call in progress, checked when its epoch deadline
    /// passes.
    pub(super) budget: Budget,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) request: Option<Box<RequestView>>,
    pub(super) response: Option<ResponseView>,
    /// The candidates of a 0.2.0 `pick` in progress (empty otherwise),
    /// read through the `candidates` interface. Kept between calls so the
    /// copy into it reuses one allocation.
    pub(super) candidates: Vec<types::Backend>,
    /// The declared facts' values sent with the call in progress (a 0.2.0
    /// router, balancer or filter). Kept between calls so filling it
    /// reuses one allocation.
    pub(super) facts: String,
    /// Reads of the lent request through `request`'s methods in the call in
    /// progress: what a 0.2.0 plugin could have declared as facts.
    pub(super) request_reads: u32,
    /// Whether the instance is in its `init` call, the only time a
    /// router may declare answers (`router-answers`).
    pub(super) initializing: bool,
    /// The domains (upstream numbers) a 0.2.0 router declared during
    /// `init` to go to their own upstream; taken into its `InitAnswer`.
    pub(super) upstream_is_domain: Vec<bool>,
    /// By upstream number, the shared counter a 0.2.0 balancer declared
    /// during `init` to pick round-robin on (`balancer-answers`); taken
    /// into its `InitAnswer`.
    pub(super) round_robin: Vec<Option<CounterHandle>>,
    shared: Arc<SharedState>,
    upstreams: Arc<[types::Upstream]>,
    identity: PluginIdentity,
    logs: Arc<LogBudget>,
}

impl PluginState {
    pub(super) fn new(
        limits: Limiter,
        shared: Arc<SharedState>,
        upstreams: Arc<[types::Upstream]>,
        identity: PluginIdentity,
        logs: Arc<LogBudget>,
    ) -> Self {
        Self {
            limits,
            budget: Budget::start(std::time::Duration::ZERO, super::budget::call_clock()),
            wasi: super::wasi::context(),
            table: ResourceTable::new(),
            request: None,
            response: None,
            candidates: Vec::new(),
            facts: String::new(),
            request_reads: 0,
            initializing: false,
            upstream_is_domain: Vec::new(),
            round_robin: Vec::new(),
            shared,
            upstreams,
            identity,
            logs,
        }
    }

    /// The lent request, for one read through a `request` method: counted
    /// (see `request_reads`).
    fn read_request(&mut self) -> wasmtime::Result<&RequestView> {
        self.request_reads = self.request_reads.saturating_add(1);
        self.request.as_deref().ok_or_else(|| {
            wasmtime::Error::msg("request resource used outside of the call that lent it")
        })
    }
}

impl PluginState {
    /// How many upstreams the plugin was given (`host.upstreams`).
    pub(super) fn upstream_count(&self) -> usize {
        self.upstreams.len()
    }

    /// The shared counter behind a `host.counter` handle the plugin holds.
    pub(super) fn counter(&self, c: &Resource<CounterHandle>) -> wasmtime::Result<CounterHandle> {
        Ok(Arc::clone(self.table.get(c)?))
    }

    fn response(&self) -> wasmtime::Result<&ResponseView> {
        self.response.as_ref().ok_or_else(|| {
            wasmtime::Error::msg("response resource used outside of the call that lent it")
        })
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The value of request header `name` as `request.header` answers it (and
/// a 0.2.0 plugin's declared header fact): the first field, as text.
/// An HTTP/2 client may send each cookie in a `cookie` field of its own
/// (RFC 9113 8.2.3): joined with "; ", as the RFC has them joined for
/// HTTP/1.1, they read as the one Cookie header of an HTTP/1.1 client, so a
/// cookie after the first field is found too.
/// `is_cookie` says whether `name` is `cookie` (the caller knows cheaply).
pub(super) fn header_value(
    headers: &http::HeaderMap,
    name: impl http::header::AsHeaderName,
    is_cookie: bool,
) -> Option<std::borrow::Cow<'_, str>> {
    if is_cookie
        && headers
            .get_all(http::header::COOKIE)
            .iter()
            .nth(1)
            .is_some()
    {
        let values: Vec<&str> = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        return Some(values.join("; ").into());
    }
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(Into::into)
}

impl types::Host for PluginState {}

impl types::HostRequest for PluginState {
    fn method(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.read_request()?.parts.method.as_str().to_owned())
    }

    fn host(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.read_request()?.host.clone())
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.read_request()?.parts.uri.path().to_owned())
    }

    fn query(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<Option<String>> {
        Ok(self.read_request()?.parts.uri.query().map(str::to_owned))
    }

    fn client_addr(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.read_request()?.client.ip().to_string())
    }

    fn header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        let headers = &self.read_request()?.parts.headers;
        let is_cookie = name.eq_ignore_ascii_case("cookie");
        Ok(header_value(headers, name.as_str(), is_cookie).map(std::borrow::Cow::into_owned))
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        // Only borrows are ever lent; there is nothing to free.
        Ok(())
    }
}

impl types::HostResponse for PluginState {
    fn status(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<u16> {
        Ok(self.response()?.status.as_u16())
    }

    fn header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self
            .response()?
            .headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    fn backend(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<String> {
        Ok(self.response()?.backend.clone())
    }

    fn upstream(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<u32> {
        Ok(self.response()?.upstream)
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<()> {
        // Only borrows are ever lent.
        Ok(())
    }
}

impl host::Host for PluginState {
    fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        let plugin = &*self.identity.name;
        let role = self.identity.role;
        if !self.logs.take(clock::monotonic_ms()) {
            metrics::counter!(
                crate::telemetry::names::PLUGIN_LOG_LINES_DROPPED,
                "plugin" => plugin.to_owned(),
                "role" => role,
            )
            .increment(1);
            return Ok(());
        }
        let message = logbudget::truncate(&message);
        match level {
            types::Level::Trace => tracing::trace!(plugin, role, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, role, "{message}"),
            types::Level::Info => tracing::info!(plugin, role, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, role, "{message}"),
            types::Level::Error => tracing::error!(plugin, role, "{message}"),
        }
        Ok(())
    }

    fn monotonic_ns(&mut self) -> wasmtime::Result<u64> {
        Ok(clock::monotonic_ns())
    }

    fn wall_ms(&mut self) -> wasmtime::Result<u64> {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Ok(u64::try_from(ms).unwrap_or(u64::MAX))
    }

    fn random(&mut self) -> wasmtime::Result<u64> {
        Ok(crate::rand::next_u64())
    }

    fn upstreams(&mut self) -> wasmtime::Result<Vec<types::Upstream>> {
        Ok(self.upstreams.to_vec())
    }

    fn kv_get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.shared.kv_get(&key))
    }

    fn kv_set(&mut self, key: String, value: String) -> wasmtime::Result<bool> {
        Ok(self.shared.kv_set(key, value))
    }

    fn kv_delete(&mut self, key: String) -> wasmtime::Result<bool> {
        Ok(self.shared.kv_delete(&key))
    }
}

impl host::HostCounter for PluginState {
    fn new(&mut self, name: String) -> wasmtime::Result<Resource<CounterHandle>> {
        let counter = self.shared.counter(&name);
        Ok(self.table.push(counter)?)
    }

    fn fetch_add(&mut self, c: Resource<CounterHandle>, delta: i64) -> wasmtime::Result<i64> {
        Ok(self.table.get(&c)?.fetch_add(delta, Ordering::Relaxed))
    }

    fn get(&mut self, c: Resource<CounterHandle>) -> wasmtime::Result<i64> {
        Ok(self.table.get(&c)?.load(Ordering::Relaxed))
    }

    fn set(&mut self, c: Resource<CounterHandle>, value: i64) -> wasmtime::Result<()> {
        self.table.get(&c)?.store(value, Ordering::Relaxed);
        Ok(())
    }

    fn compare_and_swap(
        &mut self,
        c: Resource<CounterHandle>,
        expected: i64,
        new: i64,
    ) -> wasmtime::Result<bool> {
        Ok(self
            .table
            .get(&c)?
            .compare_exchange(expected, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok())
    }

    fn drop(&mut self, c: Resource<CounterHandle>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}
