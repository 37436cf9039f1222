//! The default plugin bundle, built from `plugins/` by `build.rs` and embedded
//! in the binary so the proxy runs with no plugin files on disk.

/// The default router component (world `router`, crate
/// `bbproxy-plugin-router`): exact host match, then the longest wildcard
/// (`*.example.com`), then the configured `default`, else `421`.
pub static ROUTER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/router.wasm"));

/// The default balancer component (world `balancer`, crate
/// `bbproxy-plugin-balancer`): `round-robin`, `weighted-round-robin`,
/// `least-request`, `consistent-hash`, `random` and `first`, chosen per
/// upstream by its `balancer` setting.
pub static BALANCER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/balancer.wasm"));

/// The default circuit-breaker component (world `breaker`, crate
/// `bbproxy-plugin-breaker`): consecutive-failure threshold, open period,
/// half-open probes.
pub static BREAKER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/plugins/breaker.wasm"));
