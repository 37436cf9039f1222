//! The host's integration tests, one binary: each module is an area, all
//! share [`common`]. Real things only: the proxy, hyper backends, Pebble and
//! the `bbproxy` binary on 127.0.0.1 with port 0.
//!
//! One binary instead of one per area: every test binary links wasmtime and
//! the whole host, so 23 binaries cost minutes of linking per build.

// Tests time real sockets and processes: the real clock is the point.
#![allow(clippy::disallowed_methods, reason = "tests measure wall-clock time")]

mod common;

mod acme;
mod admin;
mod balancing;
mod cli;
mod cluster;
mod contract_v2;
mod dashboard;
mod deploy;
mod filter_components;
mod filters;
mod forwarding;
mod h1_loop;
mod hashing;
mod http2;
mod instance_reuse;
mod layers;
mod limits;
mod metrics;
mod observability;
mod otel;
mod plugin_cache;
mod plugin_check;
mod polyglot;
mod pooling;
mod reload;
mod reload_load;
mod residency;
mod routes;
mod routing;
mod sandbox;
mod sandbox_measure;
mod sandbox_rss;
mod shutdown;
mod sizes;
mod smuggling;
mod splicing;
mod sticky;
mod storage;
mod timeouts;
mod tls;
mod transport;
mod upload_streaming;
mod workers;
