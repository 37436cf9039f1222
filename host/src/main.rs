//! The `bbproxy` binary: a thin layer over the library that turns errors
//! into one line on stderr and a non-zero exit.

use std::process::ExitCode;

use anyhow::Context;
use bbproxy::app::{self, Options};
use bbproxy::cli::{self, Command, LogFormat};
use bbproxy::demo;
use tracing_subscriber::EnvFilter;

// glibc's malloc and free were about a tenth of the proxy's CPU under load
// (per-request header maps, buffers, futures); mimalloc's thread-local free
// lists cost a fraction of that. The library and its tests keep the system
// allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::parse();
    // Serving and checking read the config before logging starts: it may
    // set the log format (the command line wins). A config that does not
    // load is reported in the command line's format.
    let config = matches!(
        cli.command,
        None | Some(Command::Run(_) | Command::Check(_))
    )
    .then(|| bbproxy_config::load(cli.config_path()));
    let from_config = config
        .as_ref()
        .and_then(|c| c.as_ref().ok())
        .and_then(|c| c.log_format);
    let format = cli
        .log_format
        .or(from_config.map(LogFormat::from))
        .unwrap_or(LogFormat::Human);
    init_logging(format);
    match run(cli, config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_fatal(format, &e);
            ExitCode::FAILURE
        }
    }
}

/// The one line a failed run ends with: plain text, or under
/// `--log-format json` a JSON line like every other, so a log pipeline does
/// not choke on the line that matters most. It bypasses `RUST_LOG`, which
/// must not be able to hide why the process exited.
fn report_fatal(format: LogFormat, e: &anyhow::Error) {
    let line = format!("bbproxy: error: {e:#}");
    match format {
        LogFormat::Human => eprintln!("{line}"),
        LogFormat::Json => {
            let unfiltered = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(std::io::stderr)
                .finish();
            tracing::subscriber::with_default(unfiltered, || tracing::error!("{line}"));
        }
    }
}

fn init_logging(format: LogFormat) {
    // An unusable RUST_LOG must not silently log something else than asked.
    let (filter, invalid) = match std::env::var("RUST_LOG") {
        Ok(spec) => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some((spec, e))),
        },
        Err(_) => (EnvFilter::new("info"), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some((spec, e)) = invalid {
        tracing::warn!("RUST_LOG={spec:?} is not a valid filter ({e}); logging at info instead");
    }
}

/// Colours only for a person at a terminal: a log redirected to a file or a
/// pipe (systemd, docker, `2>log`) must not fill with escape codes.
/// `NO_COLOR` (no-color.org) turns them off on a terminal too.
fn colours() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The runtime of the control plane (admin endpoints, reloads, ACME,
/// health checks, signals). Requests are served by the worker threads the
/// proxy starts, one single-threaded runtime per CPU (see
/// `server::workers`), so this one needs no more than a thread.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Runs the command; `config` is the config file as `main` loaded it, for
/// the commands that read it.
fn run(
    cli: cli::Cli,
    config: Option<Result<bbproxy_config::Config, bbproxy_config::ConfigError>>,
) -> anyhow::Result<()> {
    let runtime = runtime().context("cannot start the async runtime")?;
    let config_path = cli.config_path().to_path_buf();
    let config = || -> anyhow::Result<bbproxy_config::Config> {
        match config {
            Some(loaded) => Ok(loaded?),
            None => Ok(bbproxy_config::load(&config_path)?),
        }
    };
    match cli
        .command
        .unwrap_or(Command::Run(cli::ConfigFile { config: None }))
    {
        Command::Run(_) => {
            let config = config()?;
            raise_nofile_limit();
            match bbproxy::server::workers::default_count() {
                1 => tracing::info!(
                    "1 CPU available: one single-threaded async worker (a thread and a listener socket)"
                ),
                n => tracing::info!(
                    "{n} CPUs available: {n} single-threaded async workers (a thread and a listener socket each)"
                ),
            }
            runtime.block_on(serve(config))
        }
        Command::Check(_) => {
            let config = config()?;
            print!("{}", app::check(config)?);
            Ok(())
        }
        Command::Completions { shell } => {
            cli::completions(shell, &mut std::io::stdout());
            Ok(())
        }
        Command::Man => cli::man(&mut std::io::stdout()).context("cannot write the manual page"),
        Command::Demo { listen } => runtime.block_on(run_demo(listen)),
        Command::Plugin {
            command: cli::PluginCommand::Check(args),
        } => plugin_check(args),
    }
}

/// Every connection is a descriptor: take what the hard limit allows.
fn raise_nofile_limit() {
    match bbproxy::server::capacity::raise_nofile_limit() {
        Ok(l) if l.before < l.now => tracing::info!(
            "open file limit raised from {} to {} (the hard limit)",
            l.before,
            l.now
        ),
        Ok(l) => tracing::info!("open file limit is {} (the hard limit)", l.now),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
}

fn plugin_check(args: cli::PluginCheck) -> anyhow::Result<()> {
    use bbproxy::cli::plugin_check as inspect;
    let config = match args.plugin_config.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the plugin config file {path}"))?,
        None => args.plugin_config.clone(),
    };
    let options = inspect::CheckOptions {
        role: args.role,
        config,
        upstreams: args.upstreams.clone(),
        calls: args.calls,
        limits: bbproxy::plugin::Limits::new(args.timeout, args.memory_limit),
        request: args.request(),
    };
    print!("{}", inspect::check(&args.file, &options)?);
    Ok(())
}

async fn serve(config: bbproxy_config::Config) -> anyhow::Result<()> {
    let grace = config.shutdown_grace;
    let running = app::start(config, Options::default()).await?;
    // Listened for as soon as the proxy serves, before anything else runs:
    // a signal that comes then is kept for the task below, not left to the
    // default action (which ends the process at once, without draining).
    // During start-up the default action stays: a stop then ends it.
    let mut signals = Signals::listen();
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutting down: no new connections, finishing open ones (up to {grace:?})");
        let _ = stop.send(true);
        // A second signal means "now".
        signals.next().await;
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(1);
    });
    release_start_up_pages();
    running.wait().await;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Start-up is over: the binary's pages that only it read (config
/// parsing, the plugin runtime's set-up, the CLI) stop counting in the
/// resident set. What the proxy runs from now on faults back in from the
/// file (`bbproxy::residency`).
fn release_start_up_pages() {
    const MIB: f64 = 1024.0 * 1024.0;
    match bbproxy::residency::release_start_up_pages() {
        Ok((before, after)) => tracing::info!(
            "start-up done: the binary's resident pages went from {:.1} to {:.1} MiB (pages only start-up used are read back from the file if used again)",
            before as f64 / MIB,
            after as f64 / MIB
        ),
        Err(e) => tracing::debug!("cannot read /proc/self/smaps to release start-up pages: {e}"),
    }
}

/// SIGTERM and SIGINT (Ctrl-C), each listened for from [`Signals::listen`]
/// on: one that arrives before [`Signals::next`] is awaited is kept.
struct Signals {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Installs the handlers (inside the runtime). A signal whose handler
    /// cannot be installed keeps its default action.
    fn listen() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            term: signal(SignalKind::terminate()).ok(),
            int: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            if let Some(s) = signal
                && s.recv().await.is_some()
            {
                return;
            }
            // Closed or never installed: only the other one can come.
            std::future::pending().await
        }
        tokio::select! {
            _ = recv(&mut self.term) => {}
            _ = recv(&mut self.int) => {}
        }
    }
}

async fn run_demo(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let mut backends = Vec::new();
    for name in ["demo backend 1", "demo backend 2", "demo backend 3"] {
        backends.push(
            demo::backend(name)
                .await
                .context("cannot start a demo backend")?,
        );
    }
    // Fall back to any free port rather than failing the demo.
    let listen = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l.local_addr()?,
        Err(_) => std::net::SocketAddr::new(listen.ip(), 0),
    };
    let options = Options {
        watch: false,
        ..Options::default()
    };
    let running = app::start(demo::config(listen, &backends)?, options).await?;
    let mut signals = Signals::listen();
    let addr = running
        .http
        .context("the demo proxy has no HTTP listener")?;
    println!("BBProxy demo: proxy on http://{addr}, backends on {backends:?}");
    println!("Requests rotate across the three backends (round-robin, decided in Wasm):");
    println!("  for i in 1 2 3 4 5 6; do curl -s http://{addr}/; done");
    println!("Press Ctrl-C to stop.");
    let stop = running.shutdown_handle();
    tokio::spawn(async move {
        signals.next().await;
        let _ = stop.send(true);
    });
    release_start_up_pages();
    running.wait().await;
    Ok(())
}
