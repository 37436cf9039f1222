//! Builds the default plugin bundle for `wasm32-wasip2` with a nested cargo
//! (own target dir inside `OUT_DIR`, as wasmtime's test-programs do), so
//! `src/plugin/bundle.rs` can embed it with `include_bytes!` and the proxy
//! runs with no plugin files on disk. Only the bundle: the example plugins
//! and the tests' hostile fixtures are built by the tests that load them
//! (`host/tests/it/common/wasm.rs`), in the same target dir.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

#[path = "src/plugin/engine_config.rs"]
mod engine_config;
#[path = "build/nested.rs"]
mod nested;
use nested::{PROFILE, SCRUBBED_ENV, TARGET_SUBDIR, WASM_TARGET};

/// (package, file name written by cargo, destination under `OUT_DIR`).
const COMPONENTS: [(&str, &str, &str); 3] = [
    (
        "bbproxy-plugin-router",
        "bbproxy_plugin_router.wasm",
        "plugins/router.wasm",
    ),
    (
        "bbproxy-plugin-balancer",
        "bbproxy_plugin_balancer.wasm",
        "plugins/balancer.wasm",
    ),
    (
        "bbproxy-plugin-breaker",
        "bbproxy_plugin_breaker.wasm",
        "plugins/breaker.wasm",
    ),
];

/// Crate directories (relative to the workspace root) whose manifests feed
/// the components.
const CRATE_DIRS: [&str; 5] = [
    "sdk",
    "contract",
    "plugins/router",
    "plugins/balancer",
    "plugins/breaker",
];

/// Names a rustup toolchain to build the plugins with instead of the outer
/// build's own, for a toolchain that lacks wasm32-wasip2 (`fuzz/run.sh`
/// builds the host with a nightly that may not have it). The components are
/// the same whichever host toolchain embeds them.
const TOOLCHAIN_ENV: &str = "BBPROXY_PLUGIN_TOOLCHAIN";

/// With [`TOOLCHAIN_ENV`] set, these point at the outer toolchain and would
/// override the one `rustup run` selects.
const TOOLCHAIN_SCRUBBED_ENV: [&str; 4] = ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        // `cargo::error` already fails the build. Exiting 0 keeps cargo's
        // output to that one line; a failure status would add a dump of this
        // script's stdout, which repeats it.
        Err(Failure::Reported) => ExitCode::SUCCESS,
        Err(Failure::Other(e)) => {
            eprintln!("error: building the plugin components failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// Already explained to the user with a `cargo::error=` line.
    Reported,
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Other(e)
    }
}

fn run() -> Result<(), Failure> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let workspace = manifest_dir
        .parent()
        .context("host crate has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env("OUT_DIR")?);

    rerun_if_changed(&workspace);
    println!("cargo::rerun-if-env-changed={TOOLCHAIN_ENV}");
    let toolchain = std::env::var(TOOLCHAIN_ENV).ok().filter(|t| !t.is_empty());

    if !wasm_target_installed(toolchain.as_deref())? {
        let flag = toolchain
            .as_ref()
            .map(|t| format!(" --toolchain {t}"))
            .unwrap_or_default();
        println!(
            "cargo::error=the wasm32-wasip2 target is not installed; run: rustup target add wasm32-wasip2{flag}"
        );
        return Err(Failure::Reported);
    }

    let wasm_dir = out_dir.join(TARGET_SUBDIR);
    let mut cmd = match &toolchain {
        Some(t) => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", t, "cargo"]);
            for var in TOOLCHAIN_SCRUBBED_ENV {
                cmd.env_remove(var);
            }
            cmd
        }
        None => Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())),
    };
    cmd.current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "--target",
            WASM_TARGET,
            "--profile",
            PROFILE,
        ])
        .arg("--target-dir")
        .arg(&wasm_dir);
    for (package, _, _) in COMPONENTS {
        cmd.args(["-p", package]);
    }
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    let output = cmd
        .output()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !output.status.success() {
        // Cargo shows a failing build script's stderr; put the nested build's
        // own diagnostics there.
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        return Err(anyhow::anyhow!(
            "`cargo build --target {WASM_TARGET} --profile {PROFILE}` of the plugin crates failed ({}); its output is above",
            output.status
        )
        .into());
    }

    let built = wasm_dir.join(WASM_TARGET).join(PROFILE);
    let engine = precompiling_engine()?;
    for (package, file, dest) in COMPONENTS {
        let from = built.join(file);
        rerun_if_sources_changed(&from.with_extension("d"))?;
        let to = out_dir.join(dest);
        let bytes = fs::read(&from)
            .with_context(|| format!("{package}: expected {} after the build", from.display()))?;
        write_if_changed(&to, &bytes)?;
        let code = match &engine {
            Some(engine) => engine
                .precompile_component(&bytes)
                .map_err(|e| anyhow::anyhow!("precompiling {package}: {e:#}"))?,
            None => Vec::new(),
        };
        write_if_changed(&to.with_extension("cwasm"), &code)?;
    }
    Ok(())
}

/// The engine that precompiles the bundle for the proxy being built: the
/// proxy's own settings ([`engine_config::base`]) for the target, with no
/// CPU features beyond the architecture's baseline, so the code runs on any
/// machine the binary is copied to (the build machine's CPU may have more).
/// `None`, with a warning, when wasmtime cannot compile for the target: the
/// proxy then compiles the bundle when it starts, as it would without this.
fn precompiling_engine() -> Result<Option<wasmtime::Engine>> {
    let target = env("TARGET")?;
    let mut config = engine_config::base();
    let engine = config
        .target(&target)
        .and_then(|config| wasmtime::Engine::new(config));
    match engine {
        Ok(engine) => Ok(Some(engine)),
        Err(e) => {
            println!(
                "cargo::warning=the default plugins are not precompiled for {target} ({e:#}); the proxy compiles them when it starts"
            );
            Ok(None)
        }
    }
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set (not run by cargo?)"))
}

/// The files that are not sources of a component but change how it builds.
/// The sources themselves come from the nested build's dep-info files
/// ([`rerun_if_sources_changed`]).
fn rerun_if_changed(workspace: &Path) {
    let mut paths = vec![
        workspace.join("Cargo.lock"),
        // The `plugin` profile lives in the workspace manifest.
        workspace.join("Cargo.toml"),
        workspace.join("rust-toolchain.toml"),
    ];
    for dir in CRATE_DIRS {
        paths.push(workspace.join(dir).join("Cargo.toml"));
    }
    for path in paths {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}

/// Names every source file of a component, as its dep-info file (`.d`,
/// written by the nested cargo next to the component) lists them: the
/// crate's own files, the SDK's, the contract's and the WIT.
fn rerun_if_sources_changed(dep_info: &Path) -> Result<()> {
    let text =
        fs::read_to_string(dep_info).with_context(|| format!("reading {}", dep_info.display()))?;
    // `target: source source ...`; a space inside a path is escaped (`\ `).
    for line in text.lines() {
        let Some((_, sources)) = line.split_once(": ") else {
            continue;
        };
        let mut source = String::new();
        let mut chars = sources.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => source.extend(chars.next()),
                ' ' => print_source(&mut source),
                c => source.push(c),
            }
        }
        print_source(&mut source);
    }
    Ok(())
}

fn print_source(source: &mut String) {
    if !source.is_empty() {
        println!("cargo::rerun-if-changed={source}");
        source.clear();
    }
}

/// Whether `<sysroot>/lib/rustlib/wasm32-wasip2` exists for the rustc of
/// `toolchain` (rustup's name), or else the rustc cargo uses.
fn wasm_target_installed(toolchain: Option<&str>) -> Result<bool> {
    let mut cmd = match toolchain {
        Some(t) => {
            let mut cmd = Command::new("rustup");
            cmd.args(["run", t, "rustc"]);
            cmd.env_remove("RUSTUP_TOOLCHAIN");
            cmd
        }
        None => Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())),
    };
    cmd.args(["--print", "sysroot"]);
    let output = cmd
        .output()
        .with_context(|| format!("could not run {cmd:?}"))?;
    if !output.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let sysroot = String::from_utf8(output.stdout).context("sysroot path is not UTF-8")?;
    Ok(Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(WASM_TARGET)
        .is_dir())
}

/// Writes `bytes` to `path` unless it already holds them, so an unchanged
/// component does not make cargo recompile the crate that embeds it. The new
/// bytes go to a temporary file renamed over `path`: a target directory
/// seeded with hard links to another one's artifacts must not have the other
/// one's file rewritten through the link.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    let dir = path.parent().context("output path has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
