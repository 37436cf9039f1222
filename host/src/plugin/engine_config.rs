//! The wasmtime settings that compiled code depends on. The runtime
//! (`engine.rs`) builds its engine from them, and so does `build.rs` when
//! it precompiles the default bundle (it includes this file), so the
//! embedded code is always compiled for the engine that loads it; wasmtime
//! still checks the two agree when it loads the code.

use wasmtime::Config;

/// The settings every engine of the proxy starts from: epoch interruption,
/// which bounds each plugin call (see `ticker.rs`).
pub fn base() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config
}
