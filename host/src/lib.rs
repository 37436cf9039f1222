//! BBProxy: a reverse proxy whose routing, load balancing and circuit
//! breaking are WebAssembly components.
//!
//! # Layers
//!
//! Dependencies point down this list, never up (a module may use the ones
//! below it; `host/tests/it/layers.rs` fails on an import circle):
//!
//! ```text
//! cli, demo          the binary's commands (`plugin check` included)
//! app                start, check and serve: builds everything below
//! check              what `bbproxy check` prints about a loaded config
//! reload, admin      config reloads; /metrics, /status, the dashboard
//! state              what app, admin and reload share for the process
//! server             listeners, connections and their timeouts
//! front              ACME challenges and the HTTPS redirect, before the
//!                    proxy
//! acme               certificates from an ACME server
//! storage            certificates, ACME state and locks shared by
//!                    replicas (a directory or Redis)
//! proxy              one request: route, select, attempt, retry
//! conn_override,     a domain's timeouts handed from proxy to server;
//!   drain            connections counted for a graceful shutdown
//! generation         one config's snapshot, pinned by each request
//! filter             the filter chains requests and responses go
//!                    through, compiled per generation
//! upstream           backends: exchange, pools, breakers, health checks
//! plugin             the WebAssembly sandbox the decisions run in
//! tls                certificate store, client and backend TLS
//! telemetry          the metrics recorder, metric names and handles
//! rand, clock,       randomness, time and state kept once per worker
//!   per_worker       thread, for everything above
//! splice             response bodies moved from backend to client
//!                    sockets through a pipe
//! bbproxy_config     config.json, parsed and validated (its own crate)
//! ```
//!
//! Modules only this crate uses are `pub(crate)`; the public ones are what
//! the binary, the integration tests and the fuzz targets call.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod acme;
pub mod admin;
pub mod app;
pub(crate) mod check;
pub mod cli;
pub mod clock;
pub(crate) mod conn_override;
pub mod demo;
pub(crate) mod drain;
pub mod filter;
pub(crate) mod front;
pub mod generation;
pub(crate) mod per_worker;
pub mod plugin;
pub mod proxy;
pub(crate) mod rand;
pub(crate) mod rawio;
pub mod reload;
pub mod residency;
pub mod server;
pub mod splice;
pub(crate) mod state;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub(crate) mod turn;
pub mod upstream;
