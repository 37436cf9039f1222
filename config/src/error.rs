//! `ConfigError`: every way a config file can be rejected, each displayed as
//! one line that starts with the file so it reads well in a log or terminal.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {} not found (looked in {}); pass one with --config FILE",
        given.display(),
        looked.display()
    )]
    NotFound { given: PathBuf, looked: PathBuf },

    // The OS error is part of the message rather than a `source`, so that
    // error-chain printers do not repeat it.
    #[error("config file {}: cannot read: {error}", file.display())]
    Io {
        file: PathBuf,
        error: std::io::Error,
    },

    /// JSON that does not parse, or repeats a key; `message` starts with
    /// `syntax error:` for the former.
    #[error("{}:{line}:{column}: {message}", file.display())]
    Syntax {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error(
        "{}: unknown key `{key}` (expected one of: {}){}",
        file.display(),
        expected.join(", "),
        suggestion.as_ref().map(|s| format!("; did you mean `{s}`?")).unwrap_or_default()
    )]
    UnknownKey {
        file: PathBuf,
        /// Dotted path, e.g. `domains.example.com.balancr`.
        key: String,
        expected: Vec<String>,
        suggestion: Option<String>,
    },

    /// `key` is empty when the problem is the document as a whole.
    #[error("{}: {}{message}", file.display(), if key.is_empty() { String::new() } else { format!("{key}: ") })]
    Invalid {
        file: PathBuf,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The config file the error is about.
    pub fn file(&self) -> &std::path::Path {
        match self {
            ConfigError::NotFound { given, .. } => given,
            ConfigError::Io { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::UnknownKey { file, .. }
            | ConfigError::Invalid { file, .. } => file,
        }
    }

    /// The dotted path of the offending key, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. }
                if !key.is_empty() =>
            {
                Some(key)
            }
            _ => None,
        }
    }
}

/// A problem found while walking the JSON, before the file name is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    UnknownKey {
        key: String,
        name: String,
        expected: Vec<&'static str>,
    },
    Invalid {
        key: String,
        message: String,
    },
}

impl Fault {
    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Fault::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    pub(crate) fn into_error(self, file: PathBuf) -> ConfigError {
        match self {
            Fault::UnknownKey {
                key,
                name,
                expected,
            } => {
                let suggestion = suggest(&name, &expected).map(str::to_owned);
                ConfigError::UnknownKey {
                    file,
                    key: printable(key),
                    expected: expected.iter().map(|s| (*s).to_owned()).collect(),
                    suggestion,
                }
            }
            Fault::Invalid { key, message } => ConfigError::Invalid {
                file,
                key: printable(key),
                message,
            },
        }
    }
}

/// A key path with control characters escaped (`\n`): JSON object keys
/// may contain them, and an error must stay one line.
fn printable(key: String) -> String {
    if !key.contains(char::is_control) {
        return key;
    }
    key.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The closest expected key within two edits, to catch typos and the
/// capitalised keys Go's case-insensitive decoder used to accept.
fn suggest<'a>(unknown: &str, expected: &[&'a str]) -> Option<&'a str> {
    let unknown = unknown.to_ascii_lowercase();
    expected
        .iter()
        .map(|e| (edit_distance(&unknown, e), *e))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys() {
        assert_eq!(
            suggest("balancr", &["backends", "balancer", "tls"]),
            Some("balancer")
        );
        assert_eq!(suggest("Domains", &["domains", "listen"]), Some("domains"));
        assert_eq!(suggest("zzzzzz", &["domains", "listen"]), None);
    }
}
