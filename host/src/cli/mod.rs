//! Command line: `bbproxy [run] [--config FILE]`, `bbproxy check`,
//! `bbproxy demo`, `bbproxy plugin check FILE.wasm` (in
//! [`plugin_check`]), `bbproxy completions SHELL`, `bbproxy man`. The
//! original Go tool took `-config FILE`; that spelling keeps working.

pub mod plugin_check;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Reverse proxy whose routing, load balancing and circuit breaking are
/// WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "bbproxy")]
pub struct Cli {
    /// Path of config.json.
    // Not `global`: `plugin check` reads no config.json, and its --help must
    // not offer one. `run` and `check` take it after their name too.
    #[arg(long, short = 'c', default_value = "./config.json")]
    pub config: PathBuf,
    /// Log format (default: the config's `log_format`, else human).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve traffic with the config file (the default).
    Run(ConfigFile),
    /// Validate the config and every plugin it names, without serving.
    Check(ConfigFile),
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
    /// Print a completion script for a shell (e.g. `bbproxy completions
    /// bash > /etc/bash_completion.d/bbproxy`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff; `bbproxy man | man -l -`).
    Man,
}

/// The wasmtime this build runs plugins on (pinned in the workspace's
/// Cargo.toml; a test checks it against Cargo.lock).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// `bbproxy --version`: the version, the wasmtime it embeds and the plugin
/// contract versions it speaks.
pub fn version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let contracts: Vec<String> = crate::plugin::CONTRACT_VERSIONS
            .iter()
            .map(|v| format!("bbproxy:plugin@{v}"))
            .collect();
        format!(
            "{} (wasmtime {WASMTIME_VERSION}; plugin contract {})",
            env!("CARGO_PKG_VERSION"),
            contracts.join(", ")
        )
    })
}

/// The clap command with its version text.
pub fn command() -> clap::Command {
    Cli::command().version(version())
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut command(), "bbproxy", out);
}

/// Writes the manual page (roff) to `out`.
pub fn man(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(command()).render(out)
}

/// `--config` after `run` or `check`.
#[derive(Debug, clap::Args)]
pub struct ConfigFile {
    /// Path of config.json [default: ./config.json].
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

impl Cli {
    /// The config file: the one given after the subcommand, else the one
    /// given before it, else `./config.json`.
    pub fn config_path(&self) -> &Path {
        match &self.command {
            Some(Command::Run(ConfigFile { config: Some(c) }))
            | Some(Command::Check(ConfigFile { config: Some(c) })) => c,
            _ => &self.config,
        }
    }
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
    pub role: Option<plugin_check::Role>,
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
    /// Host of the request the samples are decided for [default: the first
    /// --upstream].
    #[arg(long)]
    pub host: Option<String>,
    /// Path (and query) of that request [default: /].
    #[arg(long, value_parser = parse_path)]
    pub path: Option<String>,
    /// A header of that request, `name:value` (repeatable), for a plugin
    /// that decides by header.
    #[arg(long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Not an option of `plugin check` (it reads no config.json): refused
    /// with a pointer to --plugin-config.
    #[arg(long, short = 'c', hide = true)]
    pub config: Option<String>,
}

impl PluginCheck {
    /// The request given with --host, --path and --header, if any.
    pub fn request(&self) -> Option<plugin_check::SampleRequest> {
        if self.host.is_none() && self.path.is_none() && self.headers.is_empty() {
            return None;
        }
        Some(plugin_check::SampleRequest {
            host: self.host.clone(),
            path: self.path.clone(),
            headers: self.headers.clone(),
        })
    }
}

/// `name:value`, both valid in HTTP.
fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("expected NAME:VALUE, like x-user:alice, got {s:?}"))?;
    let (name, value) = (name.trim(), value.trim());
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a valid header name"))?;
    http::HeaderValue::from_str(value)
        .map_err(|_| format!("{value:?} is not a valid header value"))?;
    Ok((name.to_ascii_lowercase(), value.to_owned()))
}

/// A request target: starts with `/`, valid as a URI path and query.
fn parse_path(s: &str) -> Result<String, String> {
    match s.parse::<http::uri::PathAndQuery>() {
        Ok(p) if s.starts_with('/') => Ok(p.as_str().to_owned()),
        _ => Err(format!("expected a path like /api/items?page=2, got {s:?}")),
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl From<bbproxy_config::LogFormat> for LogFormat {
    fn from(f: bbproxy_config::LogFormat) -> Self {
        match f {
            bbproxy_config::LogFormat::Human => LogFormat::Human,
            bbproxy_config::LogFormat::Json => LogFormat::Json,
        }
    }
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
    let mut command = command();
    let matches = command.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let config_given = matches.value_source("config") == Some(ValueSource::CommandLine)
        || matches!(
            &cli.command,
            Some(Command::Plugin {
                command: PluginCommand::Check(PluginCheck {
                    config: Some(_),
                    ..
                })
            })
        );
    if matches!(cli.command, Some(Command::Plugin { .. })) && config_given {
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
            cli(&["bbproxy", "-config", "a.json"]).config_path(),
            Path::new("a.json")
        );
        assert_eq!(
            cli(&["bbproxy", "-config=b.json"]).config_path(),
            Path::new("b.json")
        );
        assert_eq!(
            cli(&["bbproxy", "--config", "c.json"]).config_path(),
            Path::new("c.json")
        );
        assert_eq!(
            cli(&["bbproxy", "run", "-config", "d.json"]).config_path(),
            Path::new("d.json")
        );
        assert_eq!(cli(&["bbproxy"]).config_path(), Path::new("./config.json"));
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
        assert_eq!(args.role, Some(plugin_check::Role::Router));
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
    fn plugin_check_help_offers_no_config_file() {
        let mut command = Cli::command();
        let help = command
            .find_subcommand_mut("plugin")
            .and_then(|p| p.find_subcommand_mut("check"))
            .map(|c| c.render_long_help().to_string())
            .unwrap();
        assert!(!help.contains("--config"), "{help}");
        assert!(help.contains("--header <NAME:VALUE>"), "{help}");
    }

    #[test]
    fn plugin_check_takes_a_request() {
        let c = cli(&[
            "bbproxy",
            "plugin",
            "check",
            "x.wasm",
            "--host",
            "a.test",
            "--path",
            "/p?q=1",
            "--header",
            "X-User: alice",
            "--header",
            "cookie:k=v",
        ]);
        let Some(Command::Plugin {
            command: PluginCommand::Check(args),
        }) = c.command
        else {
            panic!("not plugin check: {c:?}");
        };
        let r = args.request().unwrap();
        assert_eq!(r.host.as_deref(), Some("a.test"));
        assert_eq!(r.path.as_deref(), Some("/p?q=1"));
        assert_eq!(
            r.headers,
            [
                ("x-user".into(), "alice".into()),
                ("cookie".into(), "k=v".into())
            ]
        );
        for bad in [
            ["--header", "no-colon"],
            ["--header", "bad name:v"],
            ["--path", "nope"],
        ] {
            let args = ["bbproxy", "plugin", "check", "x.wasm", bad[0], bad[1]];
            assert!(
                try_parse_from(normalize(args.iter().map(OsString::from))).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_wasmtime_version_is_the_one_in_cargo_lock() {
        let lock = include_str!("../../../Cargo.lock");
        let at = lock
            .find("name = \"wasmtime\"\n")
            .expect("wasmtime in Cargo.lock");
        let version = lock[at..]
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("version = \""))
            .map(|v| v.trim_end_matches('"'));
        assert_eq!(version, Some(WASMTIME_VERSION));
    }

    #[test]
    fn check_takes_the_config_after_the_subcommand() {
        let c = cli(&["bbproxy", "check", "--config", "x.json"]);
        assert!(matches!(c.command, Some(Command::Check(_))));
        assert_eq!(c.config_path(), Path::new("x.json"));
        let c = cli(&["bbproxy", "--config", "y.json", "check"]);
        assert_eq!(c.config_path(), Path::new("y.json"));
    }
}
