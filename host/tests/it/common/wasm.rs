//! The example plugins (`examples/plugins/rust-*`) and the hostile fixtures
//! (`host/tests/fixtures/`), built for `wasm32-wasip2` the first time a test
//! of this process asks for one. `host/build.rs` builds only the default
//! bundle; this builds the rest with the same nested cargo, profile and
//! target dir (inside the host's `OUT_DIR`), so the SDK and its
//! dependencies are compiled once for both and an unchanged tree costs only
//! cargo's up-to-date check.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The crates built here; each gives `<package with _>.wasm`.
const PACKAGES: [&str; 9] = [
    "example-rust-last-backend",
    "example-rust-api-key-filter",
    "example-rust-canary-router",
    "example-rust-latency-balancer",
    "fixture-hostile-balancer",
    "fixture-hostile-router",
    "fixture-hostile-breaker",
    "fixture-test-filter",
    "fixture-v2-balancer",
];

#[path = "../../../build/nested.rs"]
mod nested;
use nested::{PROFILE, SCRUBBED_ENV, TARGET_SUBDIR, WASM_TARGET};

/// A temporary directory holding a copy of each `(plugin, name)`: a
/// config started in it (`Proxy::start_in`) names the plugins by these
/// relative paths, and each test's copy gives its plugins names (and
/// metric labels) of their own.
pub fn dir_with<P: AsRef<std::path::Path>>(plugins: &[(P, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (plugin, name) in plugins {
        std::fs::copy(plugin, dir.path().join(name)).unwrap();
    }
    dir
}

/// The nested build's target dir, the one `host/build.rs` uses.
fn target_dir() -> PathBuf {
    PathBuf::from(env!("OUT_DIR")).join(TARGET_SUBDIR)
}

/// An example plugin by the file name it had under the old build
/// (`rust_last_backend.wasm` is crate `example-rust-last-backend`).
pub fn example_plugin(file: &str) -> PathBuf {
    component(&format!("example_{file}"))
}

/// A hostile fixture (`hostile_balancer.wasm` is crate
/// `fixture-hostile-balancer`).
pub fn fixture(file: &str) -> PathBuf {
    component(&format!("fixture_{file}"))
}

fn component(file: &str) -> PathBuf {
    let path = built().join(file);
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// Builds every crate of [`PACKAGES`] once per process (cargo's own lock
/// orders concurrent test processes) and returns the directory holding the
/// components.
fn built() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .to_path_buf();
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(&workspace)
                .args(["build", "--quiet", "--target", WASM_TARGET])
                .args(["--profile", PROFILE, "--target-dir"])
                .arg(target_dir());
            for package in PACKAGES {
                cmd.args(["-p", package]);
            }
            for var in SCRUBBED_ENV {
                cmd.env_remove(var);
            }
            let output = cmd.output().expect("running cargo for the test plugins");
            assert!(
                output.status.success(),
                "building the example and fixture plugins failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            target_dir().join(WASM_TARGET).join(PROFILE)
        })
        .clone()
}
