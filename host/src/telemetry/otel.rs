//! OpenTelemetry traces over OTLP/HTTP (protobuf), when `tracing` is
//! configured: a server span per request, a client span per upstream
//! attempt, W3C `traceparent`/`tracestate` continued from the client and
//! passed to the backend.
//!
//! Spans go through the SDK's batch processor: ending a span puts it on a
//! bounded queue (a full queue drops it, counted) and a thread of the SDK's
//! own exports batches, so a slow or absent collector never slows a request.
//! Every worker thread ends its spans into the one processor of the process.
//! The export itself runs on the control runtime (the one that started the
//! proxy, never a worker's) over hyper (the tree's client; no gRPC stack,
//! no second HTTP client).
//!
//! With tracing off the request path holds `None` and does nothing: no
//! span, no allocation, the trace headers pass through untouched.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bbproxy_config::TracingSettings;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, TraceFlags, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData,
    SpanExporter, SpanProcessor,
};

use super::names;

/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// A collector's answer is read up to this size (it carries at most a
/// partial-success message).
const MAX_ANSWER: usize = 64 * 1024;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP trace exporter: {0}")]
pub struct TracingError(String);

/// Spans exported, failed, dropped and ended since start, for `/status`
/// and `/metrics`.
#[derive(Debug, Default)]
pub struct ExportStats {
    ended: AtomicU64,
    exported: AtomicU64,
    failed: AtomicU64,
    failed_exports: AtomicU64,
    dropped: AtomicU64,
    /// Spans handed to the batch processor whose export has not finished
    /// (queued, or in the batch being sent).
    held: AtomicU64,
}

/// A copy of [`ExportStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportCounts {
    /// Sampled spans that ended (queued for export, or dropped when the
    /// queue was full).
    pub ended: u64,
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans in batches that failed to export.
    pub failed: u64,
    /// Batches that failed to export.
    pub failed_exports: u64,
    /// Sampled spans dropped because the queue was full.
    pub dropped: u64,
}

impl ExportStats {
    /// The counts now.
    pub fn counts(&self) -> ExportCounts {
        ExportCounts {
            ended: self.ended.load(Ordering::Relaxed),
            exported: self.exported.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failed_exports: self.failed_exports.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// The process's tracer, built once from `tracing` at start.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    stats: Arc<ExportStats>,
    traces_url: String,
    sample_ratio: f64,
    queue_size: u32,
}

impl fmt::Debug for Tracing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tracing")
            .field("traces_url", &self.traces_url)
            .field("sample_ratio", &self.sample_ratio)
            .finish_non_exhaustive()
    }
}

impl Tracing {
    /// Starts the exporter; its HTTP requests run on `runtime`.
    pub fn start(
        settings: &TracingSettings,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, TracingError> {
        let stats = Arc::new(ExportStats::default());
        let client = ExportClient::new(runtime)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(settings.traces_url.clone())
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TracingError(e.to_string()))?;
        let exporter = CountingExporter {
            inner: exporter,
            stats: stats.clone(),
            exported: metrics::counter!(names::TRACE_SPANS_EXPORTED),
            failures: metrics::counter!(names::TRACE_EXPORT_FAILURES),
        };
        // Batches of 512 every 5 s (the SDK's defaults; OTEL_BSP_* override
        // them) from a queue of `queue_size`: memory is bounded whatever
        // the load. The processor's own queue is as large as the limit
        // `CountingProcessor` keeps, so the SDK never drops a span uncounted.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(settings.queue_size as usize)
            .build();
        let processor = CountingProcessor {
            inner: BatchSpanProcessor::new(exporter, batch),
            limit: u64::from(settings.queue_size),
            stats: stats.clone(),
            dropped: metrics::counter!(names::TRACE_SPANS_DROPPED),
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.sample_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(settings.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("bbproxy");
        Ok(Self {
            provider,
            tracer,
            stats,
            traces_url: settings.traces_url.clone(),
            sample_ratio: settings.sample_ratio,
            queue_size: settings.queue_size,
        })
    }

    /// Where spans go.
    pub fn traces_url(&self) -> &str {
        &self.traces_url
    }

    /// The share of new traces recorded.
    pub fn sample_ratio(&self) -> f64 {
        self.sample_ratio
    }

    /// Ended spans held for export at most.
    pub fn queue_size(&self) -> u32 {
        self.queue_size
    }

    /// Export counts so far.
    pub fn counts(&self) -> ExportCounts {
        self.stats.counts()
    }

    /// Exports what is queued now. Blocks until the collector answered or
    /// the export timed out.
    pub fn flush(&self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::debug!("trace flush: {e}");
        }
    }

    /// Exports what is queued and stops the exporter (at shutdown). Blocks
    /// up to `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!("traces not all exported at shutdown: {e}");
        }
    }

    /// The server span of a request, continuing the client's trace when
    /// its `traceparent` is valid.
    pub fn server_span(&self, request: ServerRequest<'_>) -> ServerSpan {
        let parent = TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &HeaderExtractor(request.headers));
        let mut attributes = vec![
            KeyValue::new("http.request.method", request.method.as_str().to_owned()),
            KeyValue::new("url.path", request.path.to_owned()),
            KeyValue::new("url.scheme", request.scheme),
            KeyValue::new("server.address", request.host.to_owned()),
            KeyValue::new("client.address", request.client.ip().to_string()),
            KeyValue::new("client.port", i64::from(request.client.port())),
            KeyValue::new("network.protocol.version", request.version),
        ];
        if let Some(agent) = request
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attributes.push(KeyValue::new("user_agent.original", agent.to_owned()));
        }
        let span = self
            .tracer
            .span_builder(request.method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        ServerSpan {
            tracer: self.tracer.clone(),
            method: request.method.clone(),
            span,
        }
    }
}

/// What the server span says about the request.
#[derive(Debug, Clone, Copy)]
pub struct ServerRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The normalised host.
    pub host: &'a str,
    pub client: std::net::SocketAddr,
    /// `1.1`, `2`...
    pub version: &'static str,
    pub headers: &'a HeaderMap,
}

/// The `network.protocol.version` of an HTTP version.
pub fn protocol_version(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// One request's server span. Dropped without [`ServerSpan::end`] (the
/// client went away) it still ends, without a status code.
#[derive(Debug)]
pub struct ServerSpan {
    tracer: SdkTracer,
    method: Method,
    span: opentelemetry_sdk::trace::Span,
}

impl ServerSpan {
    /// Records how long a plugin decision took, as a span event
    /// (`router`, `balancer`, `breaker`).
    pub fn decision(&mut self, plugin: &'static str, took: Duration) {
        if self.span.is_recording() {
            self.span
                .add_event(plugin, vec![KeyValue::new("duration_us", micros(took))]);
        }
    }

    /// A client span for one attempt on `backend` (`host:port`); `resend`
    /// is 0 for the first attempt, 1 for the first retry...
    pub fn attempt(&self, method: &Method, backend: &str, resend: usize) -> ClientSpan {
        let parent = Context::new().with_remote_span_context(self.span.span_context().clone());
        let mut attributes = Vec::new();
        if self.span.is_recording() {
            let (address, port) = split_authority(backend);
            attributes.push(KeyValue::new(
                "http.request.method",
                method.as_str().to_owned(),
            ));
            attributes.push(KeyValue::new("server.address", address.to_owned()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
            attributes.push(KeyValue::new("bbproxy.backend", backend.to_owned()));
            if resend > 0 {
                attributes.push(KeyValue::new(
                    "http.request.resend_count",
                    i64::try_from(resend).unwrap_or(i64::MAX),
                ));
            }
        }
        let span = self
            .tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        ClientSpan { span }
    }

    /// The response headers went out with `status`, from `backend` of
    /// `domain` when there was one (5xx marks the span an error, as the
    /// HTTP conventions say for servers).
    pub fn respond(&mut self, status: u16, domain: Option<&str>, backend: Option<&str>) {
        if !self.span.is_recording() {
            return;
        }
        // The conventions name a server span `{method} {target}` with a
        // low-cardinality target. Without routes the configured domain is
        // that target (one per config entry; the Host header is not: any
        // client can send any); a request no domain took keeps `{method}`.
        if let Some(d) = domain {
            self.span.update_name(format!("{} {d}", self.method));
        }
        self.span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(d) = domain {
            self.span
                .set_attribute(KeyValue::new("bbproxy.domain", d.to_owned()));
        }
        if let Some(b) = backend {
            self.span
                .set_attribute(KeyValue::new("bbproxy.backend", b.to_owned()));
        }
        if status >= 500 {
            self.span
                .set_attribute(KeyValue::new("error.type", status.to_string()));
            self.span.set_status(Status::error(""));
        }
    }

    /// The response body is done.
    pub fn end(mut self) {
        self.span.end();
    }
}

/// One upstream attempt's client span.
#[derive(Debug)]
pub struct ClientSpan {
    span: opentelemetry_sdk::trace::Span,
}

impl ClientSpan {
    /// Writes this span as the parent into the upstream request's
    /// `traceparent`, and the trace's `tracestate` (removed when empty: an
    /// empty header is not valid).
    pub fn inject(&self, headers: &mut HeaderMap) {
        let sc = self.span.span_context();
        let traceparent = format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            (sc.trace_flags() & TraceFlags::SAMPLED).to_u8()
        );
        if let Ok(v) = HeaderValue::from_str(&traceparent) {
            headers.insert(TRACEPARENT, v);
        }
        let state = sc.trace_state().header();
        match HeaderValue::from_str(&state) {
            Ok(v) if !state.is_empty() => {
                headers.insert(TRACESTATE, v);
            }
            _ => {
                headers.remove(TRACESTATE);
            }
        }
    }

    /// Records how long a plugin decision on this attempt took.
    pub fn decision(&mut self, plugin: &'static str, took: Duration) {
        if self.span.is_recording() {
            self.span
                .add_event(plugin, vec![KeyValue::new("duration_us", micros(took))]);
        }
    }

    /// The backend answered with `status`.
    pub fn answered(mut self, status: u16) {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                self.span
                    .set_attribute(KeyValue::new("error.type", status.to_string()));
                self.span.set_status(Status::error(""));
            }
        }
        self.span.end();
    }

    /// The attempt failed without an answer (`kind` is a short class like
    /// `connect_error` or `timeout`).
    pub fn failed(mut self, kind: &'static str, message: &dyn fmt::Display) {
        if self.span.is_recording() {
            self.span.set_attribute(KeyValue::new("error.type", kind));
            self.span.set_status(Status::error(message.to_string()));
        }
        self.span.end();
    }
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `host:port` (or `[v6]:port`) into host and port.
fn split_authority(authority: &str) -> (&str, Option<u16>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => (
            host.trim_start_matches('[').trim_end_matches(']'),
            port.parse().ok(),
        ),
        _ => (authority, None),
    }
}

/// Counts sampled spans as they end, and drops (counted) those that find
/// `limit` spans already held for export. The SDK's processor drops a span
/// on a full queue too but only logs it once; holding the limit here makes
/// every drop visible. Called on whichever worker thread ended the span:
/// atomics and the SDK's `try_send`, nothing that waits.
#[derive(Debug)]
struct CountingProcessor {
    inner: BatchSpanProcessor,
    limit: u64,
    stats: Arc<ExportStats>,
    dropped: metrics::Counter,
}

impl SpanProcessor for CountingProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        self.stats.ended.fetch_add(1, Ordering::Relaxed);
        if self.stats.held.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.stats.held.fetch_sub(1, Ordering::AcqRel);
            if self.stats.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    "trace queue full ({} spans): spans are dropped (counted in bbproxy_trace_spans_dropped_total) until the collector catches up",
                    self.limit
                );
            }
            self.dropped.increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts exported and failed spans and batches; a finished export, good
/// or not, frees its spans' places in the queue.
#[derive(Debug)]
struct CountingExporter {
    inner: opentelemetry_otlp::SpanExporter,
    stats: Arc<ExportStats>,
    exported: metrics::Counter,
    failures: metrics::Counter,
}

impl SpanExporter for CountingExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len() as u64;
        let result = self.inner.export(batch).await;
        self.stats.held.fetch_sub(n, Ordering::AcqRel);
        match &result {
            Ok(()) => {
                self.stats.exported.fetch_add(n, Ordering::Relaxed);
                self.exported.increment(n);
            }
            Err(e) => {
                self.stats.failed.fetch_add(n, Ordering::Relaxed);
                self.stats.failed_exports.fetch_add(1, Ordering::Relaxed);
                self.failures.increment(1);
                tracing::warn!("cannot export {n} span(s) to the OTLP collector: {e}");
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter's HTTP client: hyper on the control runtime. The SDK calls
/// it from its own export thread, so each request is spawned onto that
/// runtime and awaited there; no worker thread runs an export.
#[derive(Debug, Clone)]
struct ExportClient {
    runtime: tokio::runtime::Handle,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl ExportClient {
    fn new(runtime: tokio::runtime::Handle) -> Result<Self, TracingError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TracingError(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            runtime,
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let request = Request::from_parts(parts, Full::new(body));
        let exchange = async move {
            let response = client.request(request).await?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| -> HttpError { e })?
                .to_bytes();
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let task = self.runtime.spawn(async move {
            match tokio::time::timeout(EXPORT_TIMEOUT, exchange).await {
                Ok(result) => result,
                Err(_) => Err(HttpError::from("the collector did not answer in time")),
            }
        });
        task.await?
    }
}

#[cfg(test)]
mod tests;
