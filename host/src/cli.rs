//! Command line: `bbproxy [run] [--config FILE]`, `bbproxy check`,
//! `bbproxy demo`, `bbproxy plugin check FILE.wasm`. The original Go tool took `-config FILE`; that spelling
//! keeps working.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

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
    /// Work with plugin components.
    Plugin {
        /// What to do with the plugin.
        #[command(subcommand)]
        command: PluginCommand,
    },
}

/// `bbproxy plugin ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Load a component, say which role world(s) it implements, run its init
    /// and a few sample calls, and print the answers.
    Check(PluginCheck),
}

/// Arguments of `bbproxy plugin check`.
#[derive(Debug, clap::Args)]
pub struct PluginCheck {
    /// The component file (`.wasm`).
    pub file: PathBuf,
    /// Check this role only (default: every role the component implements).
    #[arg(long, value_enum)]
    pub role: Option<crate::plugin::inspect::Role>,
    /// The plugin's configuration, passed to its init: JSON text, or @FILE to
    /// read it from a file (the `config` of its entry in config.json).
    #[arg(long = "plugin-config", value_name = "JSON", default_value = "{}")]
    pub plugin_config: String,
    /// An upstream name the plugin sees (repeatable; 3 backends each).
    #[arg(long = "upstream", value_name = "NAME", default_values_t = [String::from("example.com")])]
    pub upstreams: Vec<String>,
    /// Decision calls made to measure the cost of one (0: do not measure).
    #[arg(long, default_value_t = 1000)]
    pub calls: u32,
    /// CPU deadline of one call, as `timeout` in config.json.
    #[arg(long, default_value = "10ms", value_parser = bbproxy_config::parse_duration)]
    pub timeout: std::time::Duration,
    /// Memory cap of one instance, as `memory_limit` in config.json.
    #[arg(long, default_value = "16MiB", value_parser = bbproxy_config::parse_size)]
    pub memory_limit: u64,
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
    try_parse_from(normalize(std::env::args_os())).unwrap_or_else(|e| e.exit())
}

/// Parses `args` (already [`normalize`]d). Besides clap's own checks:
/// `--config` names config.json, which `plugin check` does not read, so
/// giving it there is an error pointing at `--plugin-config` instead of
/// being silently ignored.
pub fn try_parse_from(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    if matches!(cli.command, Some(Command::Plugin { .. }))
        && matches.value_source("config") == Some(ValueSource::CommandLine)
    {
        return Err(command.error(
            clap::error::ErrorKind::ArgumentConflict,
            "`plugin check` reads no config.json, so --config does not apply; \
             pass the plugin's configuration with --plugin-config JSON (or --plugin-config @FILE)",
        ));
    }
    Ok(cli)
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
        try_parse_from(normalize(args.iter().map(OsString::from))).unwrap()
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
    fn plugin_check_arguments() {
        let c = cli(&["bbproxy", "plugin", "check", "lb.wasm"]);
        let Some(Command::Plugin {
            command: PluginCommand::Check(args),
        }) = c.command
        else {
            panic!("not plugin check: {c:?}");
        };
        assert_eq!(args.file, PathBuf::from("lb.wasm"));
        assert_eq!(args.role, None);
        assert_eq!(args.plugin_config, "{}");
        assert_eq!(args.upstreams, ["example.com"]);

        let c = cli(&[
            "bbproxy",
            "plugin",
            "check",
            "r.wasm",
            "--role",
            "router",
            "--plugin-config",
            r#"{"a":1}"#,
            "--upstream",
            "a.test",
            "--upstream",
            "b.test",
            "--timeout",
            "50ms",
        ]);
        let Some(Command::Plugin {
            command: PluginCommand::Check(args),
        }) = c.command
        else {
            panic!("not plugin check: {c:?}");
        };
        assert_eq!(args.role, Some(crate::plugin::inspect::Role::Router));
        assert_eq!(args.plugin_config, r#"{"a":1}"#);
        assert_eq!(args.upstreams, ["a.test", "b.test"]);
        assert_eq!(args.timeout, std::time::Duration::from_millis(50));
    }

    #[test]
    fn plugin_check_refuses_the_config_file_flag() {
        for args in [
            &["bbproxy", "plugin", "check", "x.wasm", "--config", "{}"][..],
            &["bbproxy", "--config", "c.json", "plugin", "check", "x.wasm"],
            &["bbproxy", "plugin", "check", "x.wasm", "-config", "{}"],
        ] {
            let err = try_parse_from(normalize(args.iter().map(OsString::from))).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
            assert!(err.to_string().contains("--plugin-config JSON"), "{err}");
        }
    }

    #[test]
    fn check_takes_the_config_after_the_subcommand() {
        let c = cli(&["bbproxy", "check", "--config", "x.json"]);
        assert!(matches!(c.command, Some(Command::Check)));
        assert_eq!(c.config, PathBuf::from("x.json"));
    }
}
