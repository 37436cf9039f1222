//! Why a plugin could not be loaded: each error names the plugin and says
//! what is wrong, in words an operator can act on.

/// Errors loading a plugin: each names the plugin and says what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The component could not be read.
    // The OS error is in the text and not a `source`, or `{:#}` would print
    // it twice.
    #[error("{name}: cannot read plugin file: {}", io_reason(.error))]
    Io {
        /// Plugin name (file path).
        name: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The file is not WebAssembly at all (empty, or another kind of file).
    #[error("{name}: {what}")]
    NotWebAssembly {
        /// Plugin name.
        name: String,
        /// What it is not.
        what: String,
    },
    /// The bytes are not a valid WebAssembly component.
    #[error("{name}: not a valid WebAssembly component: {reason}")]
    Compile {
        /// Plugin name.
        name: String,
        /// Why wasmtime refused it.
        reason: String,
    },
    /// The component does not implement the role's world.
    #[error("{name}: does not implement the bbproxy:plugin/{role} world: {reason}")]
    WrongWorld {
        /// Plugin name.
        name: String,
        /// The role it was configured for.
        role: &'static str,
        /// What is missing or mismatched.
        reason: String,
    },
    /// Instantiation or `init` trapped, timed out or returned an error.
    #[error("{name} ({role}): init failed: {reason}")]
    Init {
        /// Plugin name.
        name: String,
        /// The role.
        role: &'static str,
        /// The trap or the plugin's own error text.
        reason: String,
    },
    /// The engine could not be created.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
}

/// An OS error as a reader wants it: "no such file" rather than "No such
/// file or directory (os error 2)".
fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
        _ => error.to_string(),
    }
}
