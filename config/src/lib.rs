//! BBProxy's `config.json`: reading, validation and the typed [`Config`].
//!
//! The original Go BBProxy's file loads unchanged; the extensions (listeners,
//! admin, per-domain options, plugins, ACME, metrics) are all optional. Every
//! rejected input becomes a [`ConfigError`] whose `Display` is one line naming
//! the file, the key path and what was expected. Nothing here panics.

mod address;
mod digest;
mod duration;
mod error;
mod json;
mod model;
mod size;
mod storage;
mod validate;

use std::path::Path;

pub use duration::{DurationError, parse_duration};
pub use error::ConfigError;
pub use model::*;
pub use size::{SizeError, parse_size};
pub use storage::{
    DEFAULT_LOCK_LEASE, DEFAULT_REDIS_PREFIX, RedisStorage, RedisUrl, Secret, Storage,
};

/// Reads and parses the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(ConfigError::NotFound {
            given: path.to_path_buf(),
            looked: std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
        }),
        Err(error) => Err(ConfigError::Io {
            file: path.to_path_buf(),
            error,
        }),
    }
}

/// Parses config text. `origin` is the file it came from: it names the file
/// in errors, and relative paths inside resolve against its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    if text.trim_start_matches('\u{feff}').trim().is_empty() {
        return Err(ConfigError::Invalid {
            file: origin.to_path_buf(),
            key: String::new(),
            message: "the file is empty; expected a JSON object like {\"domains\": {...}}".into(),
        });
    }
    let root = json::parse_strict(text).map_err(|e| ConfigError::Syntax {
        file: origin.to_path_buf(),
        line: e.line,
        column: e.column,
        message: e.message,
    })?;
    let mut config =
        validate::config(&root, origin).map_err(|fault| fault.into_error(origin.to_path_buf()))?;
    config.sha256 = digest::of(&root);
    Ok(config)
}

#[cfg(test)]
mod tests;
