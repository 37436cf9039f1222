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

/// Each component with its code as `build.rs` precompiled it for this
/// proxy's engine settings (empty when it could not: the proxy compiles it
/// then), so the default bundle starts without Cranelift.
static PRECOMPILED: [(&[u8], &[u8]); 3] = [
    (
        ROUTER,
        include_bytes!(concat!(env!("OUT_DIR"), "/plugins/router.cwasm")),
    ),
    (
        BALANCER,
        include_bytes!(concat!(env!("OUT_DIR"), "/plugins/balancer.cwasm")),
    ),
    (
        BREAKER,
        include_bytes!(concat!(env!("OUT_DIR"), "/plugins/breaker.cwasm")),
    ),
];

/// The embedded precompiled code of `component`, when it is one of the
/// bundle's (byte for byte: a copy of a bundled file loaded from disk is
/// the same component).
pub(super) fn precompiled(component: &[u8]) -> Option<&'static [u8]> {
    PRECOMPILED
        .iter()
        .find(|(wasm, code)| !code.is_empty() && *wasm == component)
        .map(|(_, code)| *code)
}
