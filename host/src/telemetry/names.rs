//! Metric names, in one place so code, docs and tests agree. Documented in
//! the README's "Metrics" table.

/// Counter: requests answered, labels `domain`, `backend`, `class`.
pub const REQUESTS: &str = "bbproxy_requests_total";
/// Histogram: seconds to response headers, label `domain`.
pub const REQUEST_DURATION: &str = "bbproxy_request_duration_seconds";
/// Gauge: requests being handled.
pub const IN_FLIGHT: &str = "bbproxy_requests_in_flight";
/// Counter: requests whose client went away before the response headers,
/// labels `domain`, `backend`.
pub const CLIENT_CLOSED_REQUESTS: &str = "bbproxy_requests_client_closed_total";
/// Counter: connect errors, label `backend`.
pub const CONNECT_ERRORS: &str = "bbproxy_upstream_connect_errors_total";
/// Counter: connect or response timeouts, label `backend`.
pub const UPSTREAM_TIMEOUTS: &str = "bbproxy_upstream_timeouts_total";
/// Counter: responses cut because the backend paused past
/// `timeouts.upstream_idle`.
pub const UPSTREAM_BODY_TIMEOUTS: &str = "bbproxy_upstream_body_timeouts_total";
/// Counter: response body bytes moved from backend to client sockets by
/// `splice(2)`, never copied through the proxy.
pub const SPLICED_BYTES: &str = "bbproxy_spliced_bytes_total";
/// Gauge: a backend's active health-check verdict (1 healthy), labels
/// `upstream`, `backend`.
pub const BACKEND_HEALTHY: &str = "bbproxy_backend_healthy";
/// Counter: client connections closed by a timeout, label `kind`
/// (`header`, `keep_alive`, `write`).
pub const CLIENT_TIMEOUTS: &str = "bbproxy_client_timeouts_total";
/// Counter: connections refused over `limits.max_connections`.
pub const CONNECTIONS_REFUSED: &str = "bbproxy_connections_refused_total";
/// Counter: failed accepts on a proxy or the admin listener.
pub const ACCEPT_ERRORS: &str = "bbproxy_accept_errors_total";
/// Counter: upgraded (WebSocket) connections.
pub const UPGRADES: &str = "bbproxy_upgrades_total";
/// Counter: calls answered by the `on_fault` policy while a plugin is
/// suspended, labels `plugin`, `role`.
pub const PLUGIN_SUSPENDED_CALLS: &str = "bbproxy_plugin_suspended_calls_total";
/// Counter: plugin log lines dropped over the log budget, labels `plugin`,
/// `role`.
pub const PLUGIN_LOG_LINES_DROPPED: &str = "bbproxy_plugin_log_lines_dropped_total";
/// Gauge: notAfter of a domain's served certificate (Unix seconds), label
/// `domain`.
pub const CERT_EXPIRY: &str = "bbproxy_cert_expiry_timestamp_seconds";
/// Gauge: when a domain's ACME certificate is due for renewal (Unix
/// seconds), label `domain`.
pub const CERT_RENEWAL: &str = "bbproxy_cert_renewal_timestamp_seconds";
/// Counter: ACME orders, label `result` (`ok`, `error`).
pub const ACME_ORDERS: &str = "bbproxy_acme_orders_total";
/// Gauge: open pooled connections, label `backend`.
pub const POOL_OPEN: &str = "bbproxy_pool_connections_open";
/// Gauge: idle pooled connections, label `backend`.
pub const POOL_IDLE: &str = "bbproxy_pool_connections_idle";
/// Gauge: breaker state 0/1/2, labels `domain`, `backend`.
pub const BREAKER_STATE: &str = "bbproxy_breaker_state";
/// Counter: breaker transitions, labels `domain`, `backend`, `to`.
pub const BREAKER_TRANSITIONS: &str = "bbproxy_breaker_transitions_total";
/// Counter: plugin calls, labels `plugin`, `role`.
pub const PLUGIN_CALLS: &str = "bbproxy_plugin_calls_total";
/// Histogram: plugin call seconds, labels `plugin`, `role`.
pub const PLUGIN_CALL_DURATION: &str = "bbproxy_plugin_call_duration_seconds";
/// Counter: plugin faults, labels `plugin`, `role`, `kind`.
pub const PLUGIN_FAULTS: &str = "bbproxy_plugin_faults_total";
/// Counter: components compiled (a cache hit is not counted).
pub const PLUGIN_COMPILES: &str = "bbproxy_plugin_compiles_total";
/// Counter: reloads, label `result`.
pub const RELOADS: &str = "bbproxy_reloads_total";
/// Gauge: the serving generation's number.
pub const GENERATION: &str = "bbproxy_generation";
/// Gauge: 1 while an operator has drained the backend, labels `domain`,
/// `backend`.
pub const BACKEND_DRAINED: &str = "bbproxy_backend_drained";
/// Counter: admin actions refused for a missing or wrong token.
pub const ADMIN_UNAUTHORIZED: &str = "bbproxy_admin_unauthorized_total";
/// Counter: requests that ended without a backend's response, labels `side`
/// (`client`, `upstream`, `router`, `balancer`, `breaker`, `internal`) and
/// `kind`.
pub const REQUEST_ERRORS: &str = "bbproxy_request_errors_total";
/// Counter: requests refused by a limit, label `status`.
pub const REQUESTS_REJECTED: &str = "bbproxy_requests_rejected_total";
/// Counter: requests retried on another backend, label `upstream`.
pub const UPSTREAM_RETRIES: &str = "bbproxy_upstream_retries_total";
/// Counter: requests refused a backend's connection slot, label `upstream`.
pub const BACKEND_QUEUE_REJECTED: &str = "bbproxy_backend_queue_rejected_total";
/// Counter: client connections accepted, label `worker` (the worker
/// thread whose listener socket took it).
pub const WORKER_CONNECTIONS: &str = "bbproxy_worker_connections_total";
/// Gauge (always 1): the serving generation's digest, label `sha256`.
pub const CONFIG_INFO: &str = "bbproxy_config_info";
/// Gauge: 1 while the certificate storage answers, 0 during an outage.
pub const STORAGE_UP: &str = "bbproxy_storage_up";
/// Counter: failed storage operations, label `op`.
pub const STORAGE_ERRORS: &str = "bbproxy_storage_errors_total";
/// Counter: spans the OTLP collector accepted.
pub const TRACE_SPANS_EXPORTED: &str = "bbproxy_trace_spans_exported_total";
/// Counter: span batches that failed to export (collector unreachable,
/// refused or slow).
pub const TRACE_EXPORT_FAILURES: &str = "bbproxy_trace_export_failures_total";
/// Counter: sampled spans dropped because `tracing.queue_size` spans were
/// already waiting for export (a slow or stalled collector).
pub const TRACE_SPANS_DROPPED: &str = "bbproxy_trace_spans_dropped_total";
