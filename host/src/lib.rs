//! BBProxy: a reverse proxy whose routing, load balancing and circuit
//! breaking are WebAssembly components.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod acme;
pub mod admin;
pub mod app;
pub mod check;
pub mod cli;
pub mod clock;
pub mod conn_override;
pub mod demo;
pub mod drain;
pub mod front;
pub mod generation;
pub mod plugin;
pub mod proxy;
pub mod rand;
pub mod reload;
pub mod server;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod upstream;
