//! What counts as a plugin fault, and how a failed call is classified for
//! logs, metrics (`bbproxy_plugin_faults_total{kind}`) and the 503 body.

use wasmtime::{Trap, WasmBacktrace};

/// A plugin misbehaved during a call (or was not called at all because it
/// is suspended after repeated faults). Every variant is answered the same
/// way: the instance is discarded and the request gets the plugin's
/// `on_fault` policy.
#[derive(Debug, thiserror::Error)]
pub enum Fault {
    /// The call ran past its CPU deadline (epoch interruption).
    #[error("deadline exceeded: {0}")]
    Timeout(String),
    /// The instance asked for more memory (or table space) than its cap and
    /// then trapped.
    #[error("memory cap hit: {0}")]
    Memory(String),
    /// The WebAssembly call stack was exhausted.
    #[error("stack overflow: {0}")]
    StackOverflow(String),
    /// Any other trap (`unreachable`, out-of-bounds access, a forbidden
    /// host call such as sleeping, `exit`).
    #[error("trap: {0}")]
    Trap(String),
    /// An answer outside the plugin's contract.
    #[error("invalid answer: {0}")]
    BadAnswer(String),
    /// A replacement instance could not be created (instantiation or `init`
    /// failed at run time).
    #[error("cannot create an instance: {0}")]
    Instantiate(String),
    /// Not a new fault: the plugin faulted repeatedly and is not called
    /// until its backoff interval ends.
    #[error("suspended for another {remaining_ms} ms after repeated faults")]
    Suspended {
        /// Time left until calls are tried again.
        remaining_ms: u64,
    },
}

impl Fault {
    /// Short label for metrics and logs: `timeout`, `memory`,
    /// `stack-overflow`, `trap`, `bad-answer`, `instantiate` or `suspended`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Timeout(_) => "timeout",
            Fault::Memory(_) => "memory",
            Fault::StackOverflow(_) => "stack-overflow",
            Fault::Trap(_) => "trap",
            Fault::BadAnswer(_) => "bad-answer",
            Fault::Instantiate(_) => "instantiate",
            Fault::Suspended { .. } => "suspended",
        }
    }

    /// Classifies the error of a failed call. `memory_denied` says whether
    /// the store's limiter refused a growth during the call: a guest whose
    /// allocation failed usually aborts with a plain `unreachable`, which
    /// only the limiter can tell apart from any other trap.
    pub(super) fn from_call(error: &wasmtime::Error, memory_denied: bool) -> Fault {
        let message = summary(error);
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Fault::Timeout(message),
            Some(Trap::StackOverflow) => Fault::StackOverflow(message),
            _ if memory_denied => Fault::Memory(message),
            _ => Fault::Trap(message),
        }
    }
}

/// The error of a failed call on one line: its causes without the wasm
/// backtrace (15 lines for a memory fault), then the frame the guest stopped
/// in. The whole trace is for the debug log (see [`backtrace`]).
fn summary(error: &wasmtime::Error) -> String {
    let causes: Vec<String> = error
        .chain()
        .map(|e| e.to_string())
        // The backtrace is the only multi-line context wasmtime attaches.
        .filter(|m| !m.contains('\n'))
        .collect();
    let mut line = causes.join(": ");
    if let Some(frame) = top_frame(error) {
        line.push_str(" (in ");
        line.push_str(&frame);
        line.push(')');
    }
    line
}

/// The innermost guest frame of a failed call, as `module!function`.
fn top_frame(error: &wasmtime::Error) -> Option<String> {
    let frame = error.downcast_ref::<WasmBacktrace>()?.frames().first()?;
    let function = frame.func_name().map_or_else(
        || format!("wasm-function[{}]", frame.func_index()),
        str::to_owned,
    );
    Some(match frame.module().name() {
        Some(module) => format!("{module}!{function}"),
        None => function,
    })
}

/// The full wasm backtrace of a failed call, if it has one, for the debug
/// log line that follows a fault's one-line warning.
pub(super) fn backtrace(error: &wasmtime::Error) -> Option<String> {
    error.downcast_ref::<WasmBacktrace>().map(|b| b.to_string())
}

/// Runs a guest call, turning a panic of a host function (a bug, but one a
/// hostile plugin might find) into an error, so it is a fault like any other
/// and never unwinds into the request path.
pub(super) fn guarded<R>(f: impl FnOnce() -> wasmtime::Result<R>) -> wasmtime::Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(wasmtime::Error::msg(format!(
            "a host function panicked during the call: {what}"
        )))
    })
}
