//! The WASI a plugin sees. Components built by the standard toolchains
//! import WASI (Rust's std imports `wasi:cli`, `wasi:io` and, when used,
//! clocks and random), so the interfaces are linked, but over a context with
//! no ambient capabilities:
//!
//! - filesystem: no preopened directories, so nothing can be opened;
//! - environment variables and arguments: empty; stdin: closed;
//!   stdout/stderr: discarded (use `host.log`);
//! - sockets and name lookup: refused;
//! - clocks: reading the wall and monotonic clocks is allowed (the host
//!   interface gives the same numbers: `host.wall-ms`, `host.monotonic-ns`),
//!   but waiting on them is not: `subscribe-duration`/`subscribe-instant`
//!   trap, so a plugin cannot sleep;
//! - random: allowed (Rust's `HashMap` seeds itself from it; the host
//!   interface has `host.random` too);
//! - every *blocking* call (`poll`, `pollable.block`, `blocking-read`,
//!   `blocking-write-and-flush`, ...) traps. Plugins run synchronously on the
//!   proxy's worker threads, where blocking would stall other requests (and
//!   wasmtime-wasi's sync adapters cannot run inside a Tokio worker at all).
//!   The non-blocking stream calls (`check-write`, `write`, `flush`) work on
//!   the discarded stdout/stderr.
//!
//! None of the `bbproxy:plugin/host` calls block either: they read atomics,
//! the request held in the store, or take a short lock on the shared state.
//! So the only way a plugin spends time is running its own code, which the
//! epoch deadline bounds.

use wasmtime::component::Linker;
use wasmtime_wasi::{WasiCtx, WasiView};

/// WASI version that wasmtime-wasi registers; components importing any
/// earlier 0.2.x version are linked to it by semver.
const WASI_VERSION: &str = "0.2.12";

/// Functions replaced by a trap: `(interface, function)`.
const FORBIDDEN: [(&str, &str); 11] = [
    ("wasi:clocks/monotonic-clock", "subscribe-duration"),
    ("wasi:clocks/monotonic-clock", "subscribe-instant"),
    ("wasi:io/poll", "poll"),
    ("wasi:io/poll", "[method]pollable.block"),
    ("wasi:io/poll", "[method]pollable.ready"),
    (
        "wasi:io/streams",
        "[method]output-stream.blocking-write-and-flush",
    ),
    (
        "wasi:io/streams",
        "[method]output-stream.blocking-write-zeroes-and-flush",
    ),
    ("wasi:io/streams", "[method]output-stream.blocking-flush"),
    ("wasi:io/streams", "[method]output-stream.blocking-splice"),
    ("wasi:io/streams", "[method]input-stream.blocking-read"),
    ("wasi:io/streams", "[method]input-stream.blocking-skip"),
];

/// Links WASI 0.2 into `linker`, with every call that could block replaced
/// by a trap. Generic over the store's state (the plugin state implements
/// `WasiView`), so this module needs nothing from the rest of the runtime.
pub fn add_to_linker<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    for (interface, function) in FORBIDDEN {
        let instance = format!("{interface}@{WASI_VERSION}");
        let message = format!(
            "{interface}.{function} is not available to plugins: a plugin may not sleep or block"
        );
        linker
            .instance(&instance)?
            .func_new(function, move |_, _, _, _| {
                Err(wasmtime::Error::msg(message.clone()))
            })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// A context granting nothing beyond what the module comment lists.
pub fn context() -> WasiCtx {
    WasiCtx::builder()
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}
