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

/// The bundle's entry (embedded component, precompiled code) that
/// `component` is: the embedded bytes themselves, or a copy of them byte
/// for byte (a bundled file loaded from disk is the same component).
fn bundled(component: &[u8]) -> Option<&'static (&'static [u8], &'static [u8])> {
    PRECOMPILED
        .iter()
        .find(|(wasm, _)| std::ptr::eq(*wasm, component) || *wasm == component)
}

/// The embedded precompiled code of `component`, when it is one of the
/// bundle's ([`bundled`]) and build.rs could precompile it.
pub(super) fn precompiled(component: &[u8]) -> Option<&'static [u8]> {
    bundled(component)
        .map(|(_, code)| *code)
        .filter(|code| !code.is_empty())
}

/// Hands back to the kernel the pages of this binary that hold `component`
/// and its precompiled code, when `component` is one of the bundle's
/// ([`bundled`]). They
/// are read once per load (hashed, compared, deserialized into wasmtime's
/// own memory) and never again until the next load, yet they stayed
/// resident: 5-6 MiB of an idle proxy's RSS, as much as everything else
/// the bundle costs. They are clean pages of a read-only file mapping: a
/// later read faults them back in from the page cache, unchanged.
pub(super) fn release_pages(component: &[u8]) {
    if let Some((wasm, code)) = bundled(component) {
        drop_resident(wasm);
        drop_resident(code);
    }
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "madvise on a static: the memory stays mapped and its contents unchanged"
)]
fn drop_resident(bytes: &'static [u8]) {
    let page = rustix::param::page_size();
    let start = bytes.as_ptr() as usize;
    let first = start.div_ceil(page) * page;
    let last = (start + bytes.len()) / page * page;
    if last <= first {
        return;
    }
    // SAFETY: [first, last) lies inside `bytes`, an `include_bytes!` static
    // in the binary's read-only, private file mapping (never written).
    // MADV_DONTNEED only drops the resident copies of those pages: the
    // mapping stays, and the next read faults the same bytes back in from
    // the file. No reference into this memory observes anything else. A
    // failure (a kernel without it) leaves the pages resident, as before.
    let _ = unsafe {
        rustix::mm::madvise(
            first as *mut std::ffi::c_void,
            last - first,
            rustix::mm::Advice::LinuxDontNeed,
        )
    };
}

#[cfg(not(target_os = "linux"))]
fn drop_resident(_bytes: &'static [u8]) {}
