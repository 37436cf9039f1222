//! How the nested cargo that builds WebAssembly components is run: shared by
//! `host/build.rs` (the default bundle) and the integration tests'
//! `common/wasm.rs` (the example plugins and hostile fixtures), so both
//! build into one target dir with one profile and the SDK and its
//! dependencies are compiled once.

/// The components' target.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The workspace profile for components: small and fast.
pub const PROFILE: &str = "plugin";

/// The nested build's target dir, under the host crate's `OUT_DIR`.
pub const TARGET_SUBDIR: &str = "wasm";

/// Variables that must not leak from the outer build into the nested one:
/// the outer build's flags and target are for the host, and under `cargo
/// clippy` the wrappers point at clippy-driver.
pub const SCRUBBED_ENV: [&str; 7] = [
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTC_WRAPPER",
];
