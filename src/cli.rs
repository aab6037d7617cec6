//! The command line (see README.md, "Command line"): argument parsing, logging set-up, and one
//! function per subcommand that turns library results into output and exit codes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::{Clock, SystemClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, LogFormat};
use crate::daemon::{self, ReloadHandle};
use crate::secret::SecretKey;
use crate::shard::Shard;
use crate::sim::{Scenario, Simulator};
use crate::tencent::usersig;
use crate::web;

#[derive(Debug, Parser)]
#[command(name = "calldrift", version = crate::VERSION, about = "Watches the TUICallKit, TUIRoomKit and TUILiveKit callback configurations of Tencent Cloud Chat apps")]
pub struct Cli {
    /// Log level or RUST_LOG-style filter; overrides the config file and RUST_LOG.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Log format; overrides the config file.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormatArg>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(short, long, env = "CALLDRIFT_CONFIG", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
}

#[derive(Debug, Args)]
pub struct ShardArg {
    /// Poll only this replica's part of the apps: INDEX/COUNT, INDEX 0-based (e.g. 0/3).
    /// Each SDKAppID stays whole in one shard; the global rate limit is divided by COUNT.
    #[arg(long, env = "CALLDRIFT_SHARD", value_name = "INDEX/COUNT")]
    pub shard: Option<Shard>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: polls on schedule and serves HTTP until SIGTERM/SIGINT; SIGHUP reloads.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        shard: ShardArg,
    },
    /// One pass over every target, then a report. Exit 0 no drift, 2 drift, 1 errors.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// Only these apps (repeatable).
        #[arg(long = "app", value_name = "NAME")]
        apps: Vec<String>,
        #[command(flatten)]
        shard: ShardArg,
    },
    /// Read every target once and write the config back with each app's expect: set to
    /// what was observed: a baseline to review and commit, on which `check` exits 0.
    ///
    /// Secrets stay as written (file and environment references stay references). The
    /// callback URLs are written verbatim, query tokens included, since `url:` must match
    /// exactly: treat the snapshot like the config. Comments outside the replaced expect:
    /// blocks are kept when the file can be edited in place; the header says when not.
    /// Exit 0 written; 1 on any error, with nothing written.
    Snapshot {
        #[command(flatten)]
        config: ConfigArg,
        /// Write the snapshot here (atomically) instead of to stdout. Relative paths in the
        /// config are taken from the config's directory, so keep it beside the config.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Parse and validate the config and resolve secrets; no network.
    Validate {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The simulated Chat API with a scripted story, and the daemon against it.
    Demo {
        /// Where the daemon serves HTTP.
        #[arg(long, default_value = "127.0.0.1:9797")]
        listen: SocketAddr,
    },
    /// The simulated Chat API alone, for testing alerting end to end.
    Simulate {
        /// Scenario YAML (see config/sim-scenario.example.yaml).
        #[arg(long)]
        scenario: PathBuf,
        /// Where to listen; loopback unless you ask otherwise.
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
    },
    /// Print a UserSig for manual debugging; the key comes from $CALLDRIFT_SECRET_KEY or --key-file.
    Usersig {
        #[arg(long)]
        sdkappid: u64,
        #[arg(long)]
        identifier: String,
        /// Validity, e.g. 24h.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        expire: Duration,
        /// File holding the secret key.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// Parses arguments, runs the subcommand, returns its exit status.
pub fn main() -> ExitCode {
    // clap exits 2 on a usage error, which `check` uses for "drift found"; a script must
    // never read a bad flag (say `--shard 3/3`) as drift, so usage errors exit 1.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("calldrift: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// One thread runs everything: at a few hundred calls per second the work is small, and
/// tasks hopping between worker threads cost more CPU (futex wake-ups, context switches)
/// than the polls themselves. File IO and bcrypt run on tokio's blocking pool.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Fixed just before tokio's timer wheel starts, so that grid timers line up with it.
    crate::clock::grid_origin();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Sets up tracing: `--log-level` wins, then RUST_LOG, then the config's level.
pub fn init_logging(cli_level: Option<&str>, config_level: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = cli_level
        .map(EnvFilter::try_new)
        .or_else(|| {
            std::env::var("RUST_LOG")
                .ok()
                .filter(|v| !v.is_empty())
                .map(EnvFilter::try_new)
        })
        .unwrap_or_else(|| EnvFilter::try_new(config_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling the CLI twice) is harmless, so its error is ignored.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

fn log_format(cli: Option<LogFormatArg>, config: LogFormat) -> LogFormat {
    match cli {
        Some(LogFormatArg::Json) => LogFormat::Json,
        Some(LogFormatArg::Text) => LogFormat::Text,
        None => config,
    }
}

/// Loads the config (printing every problem on failure), then sets up logging from it and
/// logs its warnings: the start of `run` and `check`.
fn load_and_start_logging(
    path: &Path,
    cli_level: &Option<String>,
    cli_format: Option<LogFormatArg>,
) -> Option<config::LoadedConfig> {
    let loaded = match config::load(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            for line in e.diagnostics() {
                eprintln!("{line}");
            }
            return None;
        }
    };
    init_logging(
        cli_level.as_deref(),
        &loaded.config.log_level,
        log_format(cli_format, loaded.config.log_format),
    );
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    Some(loaded)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, shard } => {
            let Some(loaded) =
                load_and_start_logging(&config.config, &cli.log_level, cli.log_format)
            else {
                return Ok(ExitCode::from(1));
            };
            // Checked before binding so a bad web config never opens the port; the
            // daemon loads it again (and logs its warnings) as it starts.
            if let Err(e) = web::load_optional(loaded.config.web_config_file.as_deref()) {
                for line in e.diagnostics() {
                    eprintln!("{line}");
                }
                return Ok(ExitCode::from(1));
            }
            // Before binding too: a daemon that cannot keep its state must not start.
            if let Some(state_file) = &loaded.config.state_file {
                if let Err(e) = crate::state::check_writable(state_file) {
                    eprintln!(
                        "{e}; fix the directory or state_file, or remove state_file to keep changes in memory only"
                    );
                    return Ok(ExitCode::from(1));
                }
            }
            let listen = loaded.config.listen;
            let options = daemon::Options {
                loaded,
                config_path: Some(config.config),
                resolver: None,
                shard: shard.shard,
            };
            runtime()?.block_on(async move {
                let listener = bind(listen).await?;
                serve_until_signalled(options, listener).await
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen } => {
            init_logging(
                cli.log_level.as_deref(),
                "info",
                log_format(cli.log_format, LogFormat::Text),
            );
            runtime()?.block_on(demo(listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate { scenario, listen } => {
            init_logging(
                cli.log_level.as_deref(),
                "info",
                log_format(cli.log_format, LogFormat::Text),
            );
            let scenario = Scenario::load(&scenario)?;
            runtime()?.block_on(async move {
                let listener = bind(listen).await?;
                if !listen.ip().is_loopback() {
                    tracing::warn!(%listen, "the simulator is reachable from other hosts; it has no authentication");
                }
                let simulator = Simulator::new(scenario, Arc::new(SystemClock));
                println!("simulated Chat API listening on http://{}", listener.local_addr()?);
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone(), None));
                simulator.run(listener, shutdown).await.context("simulator")
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => Ok(validate(&config.config)),
        Command::Snapshot { config, output } => snapshot(
            &config.config,
            output.as_deref(),
            cli.log_level.as_deref(),
            cli.log_format,
        ),
        Command::Check {
            config,
            format,
            apps,
            shard,
        } => {
            let Some(loaded) =
                load_and_start_logging(&config.config, &cli.log_level, cli.log_format)
            else {
                return Ok(ExitCode::from(1));
            };
            let clock: Arc<dyn Clock> = Arc::new(SystemClock);
            let selection = crate::check::Selection {
                apps,
                shard: shard.shard,
            };
            let report = runtime()?.block_on(crate::check::run_selected(
                &loaded.config,
                &loaded.secrets,
                &selection,
                clock,
            ))?;
            match format {
                ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                ReportFormat::Text => print!("{}", report.to_text()),
            }
            Ok(ExitCode::from(report.exit_code()))
        }
        Command::Usersig {
            sdkappid,
            identifier,
            expire,
            key_file,
        } => {
            let key = read_key(key_file.as_deref())?;
            let sig = usersig::mint(
                &key,
                sdkappid,
                &identifier,
                SystemClock.unix_secs(),
                expire.as_secs(),
            );
            println!("{}", sig.expose());
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Cancels `token` on SIGTERM or SIGINT; reloads through `reload` on SIGHUP.
async fn cancel_on_signal(token: CancellationToken, reload: Option<ReloadHandle>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
                _ = int.recv() => { tracing::info!("SIGINT received"); break; }
                _ = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading the config");
                    match &reload {
                        Some(handle) => { let _ = handle.reload().await; }
                        None => tracing::warn!("nothing to reload here"),
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    token.cancel();
}

async fn serve_until_signalled(
    options: daemon::Options,
    listener: TcpListener,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (handle, inbox) = daemon::reload_channel();
    tokio::spawn(cancel_on_signal(shutdown.clone(), Some(handle)));
    daemon::run(options, listener, Arc::new(SystemClock), shutdown, inbox).await?;
    Ok(())
}

/// Names the demo gives the apps of the example scenario, in order.
const DEMO_NAMES: [&str; 4] = ["clean", "plain-http", "missing", "rotating"];

async fn demo(listen: SocketAddr) -> anyhow::Result<()> {
    let scenario = Scenario::example()?;
    let sim_listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let sim_addr = sim_listener.local_addr()?;
    let listener = bind(listen).await?;
    let listen = listener.local_addr()?;

    let mut yaml = format!(
        "listen: \"{listen}\"\npoll:\n  interval: 5s\nregions:\n  sim: \"http://{sim_addr}\"\napps:\n"
    );
    for (index, app) in scenario.apps.iter().enumerate() {
        let name = DEMO_NAMES
            .get(index)
            .map_or_else(|| format!("app-{index}"), |n| (*n).to_owned());
        let admin = app.admins.first().map_or("administrator", String::as_str);
        // An app the scenario gives a TUIRoomKit configuration is watched for it too.
        let products = if app.room_callback.is_some() {
            "    products: [call, room]\n"
        } else {
            ""
        };
        yaml.push_str(&format!(
            "  - name: {name}\n    sdkappid: {}\n    regions: [sim]\n    identifier: {admin}\n    secret_key: \"{}\"\n{products}",
            app.sdkappid, app.key
        ));
    }
    let (config, _) = config::parse(&yaml, "demo", Path::new("."))
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let (secrets, _) = config::resolve_secrets(&config, &|_| None)
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;

    let shutdown = CancellationToken::new();
    let simulator = Simulator::new(scenario, Arc::new(SystemClock));
    let sim_shutdown = shutdown.clone();
    let sim_task = tokio::spawn(async move { simulator.run(sim_listener, sim_shutdown).await });
    println!(
        "calldrift demo: a simulated Chat API on http://{sim_addr} tells a story of four apps:"
    );
    println!("  clean (https, both commands, and a TUIRoomKit config watched as a second target),");
    println!("  plain-http (http:// URL), missing (no config), rotating (its commands change");
    println!("  every 30 s). calldrift polls each every 5 s.");
    println!();
    println!("  landing page   http://{listen}/");
    println!("  metrics        http://{listen}/metrics");
    println!("  JSON           http://{listen}/api/v1/targets");
    println!();
    println!(
        "  curl -s http://{listen}/metrics | grep -E '^calldrift_(drift|up|callback_config_changes_total)'"
    );
    println!();
    println!("Ctrl-C stops it.");
    let (handle, inbox) = daemon::reload_channel();
    tokio::spawn(cancel_on_signal(shutdown.clone(), Some(handle)));
    let options = daemon::Options {
        loaded: config::LoadedConfig {
            config,
            secrets,
            warnings: Vec::new(),
        },
        config_path: None,
        resolver: None,
        shard: None,
    };
    let result = daemon::run(
        options,
        listener,
        Arc::new(SystemClock),
        shutdown.clone(),
        inbox,
    )
    .await;
    shutdown.cancel();
    let _ = sim_task.await;
    result?;
    Ok(())
}

/// `calldrift snapshot`: reads the config text once, so the file rewritten is the one the
/// targets were read from.
fn snapshot(
    path: &Path,
    output: Option<&Path>,
    log_level: Option<&str>,
    format: Option<LogFormatArg>,
) -> anyhow::Result<ExitCode> {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{origin}: cannot read config: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    // As config::load does it, so the same relative paths result.
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let parsed = config::parse(&text, &origin, base_dir).and_then(|(config, mut warnings)| {
        let (secrets, more) = config::resolve_secrets(&config, &|name| std::env::var(name).ok())?;
        warnings.extend(more);
        Ok((config, secrets, warnings))
    });
    let (config, secrets, warnings) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            for line in e.diagnostics() {
                eprintln!("{line}");
            }
            return Ok(ExitCode::from(1));
        }
    };
    init_logging(
        log_level,
        &config.log_level,
        log_format(format, config.log_format),
    );
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    // Relative paths in the snapshot resolve from where it is written.
    let out_dir = match output {
        None => base_dir.to_owned(),
        Some(out) => {
            let dir = match out.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            let same = |a: &Path, b: &Path| {
                let here = Path::new(".");
                let a = if a.as_os_str().is_empty() { here } else { a };
                let b = if b.as_os_str().is_empty() { here } else { b };
                matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
            };
            if same(dir, base_dir) {
                base_dir.to_owned()
            } else {
                dir.canonicalize().with_context(|| {
                    format!("snapshot: cannot write {}: its directory", out.display())
                })?
            }
        }
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let snapshot = runtime()?.block_on(crate::snapshot::take(
        &text, &config, &secrets, &out_dir, clock,
    ))?;
    match output {
        Some(out) => {
            crate::snapshot::write(out, &snapshot)?;
            let kept = if snapshot.comments_kept {
                "comments kept"
            } else {
                "rewritten from its data: comments are gone"
            };
            eprintln!(
                "{}: snapshot of {} apps ({} targets) written from {origin}; {kept}",
                out.display(),
                snapshot.apps.len(),
                config.target_count()
            );
        }
        None => print!("{}", snapshot.text),
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            match web::load_optional(loaded.config.web_config_file.as_deref()) {
                Ok((_, warnings)) => {
                    for warning in &warnings {
                        eprintln!("{warning}");
                    }
                }
                Err(e) => {
                    for line in e.diagnostics() {
                        eprintln!("{line}");
                    }
                    return ExitCode::from(1);
                }
            }
            // `run` refuses to start without a writable state file; say so now.
            if let Some(state_file) = &loaded.config.state_file {
                if let Err(e) = crate::state::check_writable(state_file) {
                    eprintln!("{}: state_file: {e}", path.display());
                    return ExitCode::from(1);
                }
            }
            println!(
                "{}: valid ({} apps, {} targets)",
                path.display(),
                loaded.config.apps.len(),
                loaded.config.target_count()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.diagnostics() {
                eprintln!("{line}");
            }
            ExitCode::from(1)
        }
    }
}

fn read_key(key_file: Option<&Path>) -> anyhow::Result<SecretKey> {
    let key = match key_file {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read key file {}", path.display()))?,
        None => std::env::var("CALLDRIFT_SECRET_KEY")
            .context("no key: set $CALLDRIFT_SECRET_KEY or pass --key-file (never the key itself as an argument)")?,
    };
    let key = key.trim();
    anyhow::ensure!(!key.is_empty(), "the secret key is empty");
    Ok(SecretKey::new(key))
}
