//! The command line (see README.md, "Command line"): argument parsing, then one function
//! per subcommand that turns library results into output and exit codes. `serve`: `run`
//! and `simulate`; `commands`: `check`, `validate`, `snapshot`, `usersig`; `remediation`:
//! `plan` and `apply`; `demo`; `logging`.

mod commands;
mod demo;
mod logging;
mod progress;
mod remediation;
mod serve;
mod stdout;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{self, LogFormat};
use crate::shard::Shard;

pub use self::logging::init_logging;

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

/// What `check` covers: the apps (all if none), the shard, and whether endpoints are probed.
#[derive(Debug)]
struct CheckScope {
    apps: Vec<String>,
    shard: ShardArg,
    endpoint: bool,
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
        /// No progress line on stderr (there is none anyway when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
        /// Also probe each callback endpoint (DNS, TLS handshake, certificate expiry; no
        /// HTTP request) and report it; the exit status still reflects the configuration only.
        #[arg(long)]
        endpoint: bool,
    },
    /// One pass, then the writes that would make every managed target match its
    /// expectation (set, update or delete); unmanaged drifted targets are listed with the
    /// reason. Nothing is written. Exit 0 nothing to do, 2 changes planned, 1 some target
    /// could not be read.
    Plan {
        #[command(flatten)]
        config: ConfigArg,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// Only these apps (repeatable).
        #[arg(long = "app", value_name = "NAME")]
        apps: Vec<String>,
        /// No progress line on stderr (there is none anyway when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
    /// The plan, shown; then, once confirmed (on a terminal) or with --yes, its writes
    /// under the same rate limiter, each target read back. Without a terminal and without
    /// --yes it refuses and writes nothing. Exit 0 all applied and verified clean, 1 any
    /// failure or refusal.
    Apply {
        #[command(flatten)]
        config: ConfigArg,
        /// Only these apps (repeatable).
        #[arg(long = "app", value_name = "NAME")]
        apps: Vec<String>,
        /// Write without asking.
        #[arg(long)]
        yes: bool,
        /// No progress line on stderr (there is none anyway when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
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
        /// No progress line on stderr (there is none anyway when stderr is not a terminal).
        #[arg(long, short)]
        quiet: bool,
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
        #[command(flatten)]
        gateway: crate::sim::GatewayFlags,
    },
    /// Print a UserSig for manual debugging (for example with curl; see README.md). The
    /// secret key comes from $CALLDRIFT_SECRET_KEY or --key-file, never from an argument
    /// (arguments show in `ps` and shell history); without a key it exits 1.
    Usersig {
        /// The app's SDKAppID, e.g. 1400000001.
        #[arg(long)]
        sdkappid: u64,
        /// The App admin account the UserSig is for, e.g. administrator; the REST API
        /// accepts only admin accounts.
        #[arg(long)]
        identifier: String,
        /// How long the UserSig stays valid, e.g. 10m or 24h.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        expire: Duration,
        /// A file holding the app's secret key (surrounding whitespace is ignored);
        /// without it, $CALLDRIFT_SECRET_KEY is read.
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

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (level, format) = (cli.log_level, cli.log_format);
    match cli.command {
        Command::Run { config, shard } => serve::run_daemon(config, shard, &level, format),
        Command::Demo { listen } => {
            init_logging(
                level.as_deref(),
                "info",
                logging::log_format(format, LogFormat::Text),
            );
            runtime()?.block_on(demo::demo(listen))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Simulate {
            scenario,
            listen,
            gateway,
        } => serve::simulate(&scenario, listen, gateway, level.as_deref(), format),
        Command::Validate { config } => Ok(commands::validate(&config.config)),
        Command::Snapshot {
            config,
            output,
            quiet,
        } => commands::snapshot(
            &config.config,
            output.as_deref(),
            quiet,
            level.as_deref(),
            format,
        ),
        Command::Check {
            config,
            format: report,
            apps,
            shard,
            quiet,
            endpoint,
        } => commands::check(
            config,
            report,
            CheckScope {
                apps,
                shard,
                endpoint,
            },
            quiet,
            &level,
            format,
        ),
        Command::Plan {
            config,
            format: report,
            apps,
            quiet,
        } => remediation::plan(&config, report, apps, quiet, &level, format),
        Command::Apply {
            config,
            apps,
            yes,
            quiet,
        } => remediation::apply(&config, apps, yes, quiet, &level, format),
        Command::Usersig {
            sdkappid,
            identifier,
            expire,
            key_file,
        } => commands::usersig(sdkappid, &identifier, expire, key_file.as_deref()),
    }
}
