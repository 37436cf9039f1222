//! The default plugin bundle, built from `plugins/` by `build.rs` and embedded
//! in the binary so the proxy runs with no plugin files on disk.

use super::code_memory::PageAligned;

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
/// then), so the default bundle starts without Cranelift. The code is
/// page-aligned so it can run where it is embedded (`code_memory.rs`).
static PRECOMPILED: [(&[u8], &PageAligned<[u8]>); 3] = [
    (
        ROUTER,
        &PageAligned(*include_bytes!(concat!(
            env!("OUT_DIR"),
            "/plugins/router.cwasm"
        ))),
    ),
    (
        BALANCER,
        &PageAligned(*include_bytes!(concat!(
            env!("OUT_DIR"),
            "/plugins/balancer.cwasm"
        ))),
    ),
    (
        BREAKER,
        &PageAligned(*include_bytes!(concat!(
            env!("OUT_DIR"),
            "/plugins/breaker.cwasm"
        ))),
    ),
];

/// The bundle's entry (embedded component, precompiled code) that
/// `component` is: the embedded bytes themselves, or a copy of them byte
/// for byte (a bundled file loaded from disk is the same component).
fn bundled(component: &[u8]) -> Option<(&'static [u8], &'static [u8])> {
    PRECOMPILED
        .iter()
        .find(|(wasm, _)| std::ptr::eq(*wasm, component) || *wasm == component)
        .map(|(wasm, code)| (*wasm, &code.0))
}

/// The embedded precompiled code of `component`, when it is one of the
/// bundle's ([`bundled`]) and build.rs could precompile it.
pub(super) fn precompiled(component: &[u8]) -> Option<&'static [u8]> {
    bundled(component)
        .map(|(_, code)| code)
        .filter(|code| !code.is_empty())
}

/// Hands back to the kernel the pages of this binary that hold `component`
/// and its precompiled code, when `component` is one of the bundle's
/// ([`bundled`]). They
/// are read once per load (hashed, compared, deserialized) and never again
/// until the next load, except the code's text where it runs in place;
/// yet they stayed resident: 5-6 MiB of an idle proxy's RSS, as much as
/// everything else the bundle costs. They are clean pages of a read-only
/// file mapping: a later read or call faults them back in from the page
/// cache, unchanged.
pub(super) fn release_pages(component: &[u8]) {
    if let Some((wasm, code)) = bundled(component) {
        crate::residency::drop_resident(wasm);
        crate::residency::drop_resident(code);
    }
}
