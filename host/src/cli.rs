//! Command line: `bbproxy [run] [--config FILE]`, `bbproxy check`,
//! `bbproxy demo`. The original Go tool took `-config FILE`; that spelling
//! keeps working.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Reverse proxy whose routing, load balancing and circuit breaking are
/// WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "bbproxy", version)]
pub struct Cli {
    /// Path of config.json.
    #[arg(long, short = 'c', global = true, default_value = "./config.json")]
    pub config: PathBuf,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic with the config file (the default).
    Run,
    /// Validate the config and every plugin it names, without serving.
    Check,
    /// Start the proxy with three built-in demo backends on 127.0.0.1.
    Demo {
        /// Address the demo proxy listens on (another free port is used if
        /// this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Parses the process arguments, accepting Go-style single-dash long flags.
pub fn parse() -> Cli {
    Cli::parse_from(normalize(std::env::args_os()))
}

/// Rewrites `-config X` / `-config=X` (the original tool's flag syntax) to
/// `--config`.
pub fn normalize(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some("-config") => OsString::from("--config"),
            Some(s) if s.starts_with("-config=") => OsString::from(format!("-{s}")),
            _ => a,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(normalize(args.iter().map(OsString::from))).unwrap()
    }

    #[test]
    fn go_style_flag_is_accepted() {
        assert_eq!(
            cli(&["bbproxy", "-config", "a.json"]).config,
            PathBuf::from("a.json")
        );
        assert_eq!(
            cli(&["bbproxy", "-config=b.json"]).config,
            PathBuf::from("b.json")
        );
        assert_eq!(
            cli(&["bbproxy", "--config", "c.json"]).config,
            PathBuf::from("c.json")
        );
        assert_eq!(cli(&["bbproxy"]).config, PathBuf::from("./config.json"));
    }

    #[test]
    fn check_takes_the_config_after_the_subcommand() {
        let c = cli(&["bbproxy", "check", "--config", "x.json"]);
        assert!(matches!(c.command, Some(Command::Check)));
        assert_eq!(c.config, PathBuf::from("x.json"));
    }
}
