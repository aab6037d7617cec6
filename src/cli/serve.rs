//! The long-running commands: `run` and `simulate`, their listeners and signals.

use super::stdout::emit;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::clock::SystemClock;
use crate::config::LogFormat;
use crate::daemon::{self, ReloadHandle};
use crate::sim::{Scenario, Simulator};
use crate::web;

use super::logging::{init_logging, load_and_start_logging, log_format};
use super::{ConfigArg, LogFormatArg, ShardArg, runtime};

/// `calldrift run`: checks what can refuse the start before binding, then the daemon
/// until SIGTERM or SIGINT.
pub(super) fn run_daemon(
    config: ConfigArg,
    shard: ShardArg,
    cli_level: &Option<String>,
    cli_format: Option<LogFormatArg>,
) -> anyhow::Result<ExitCode> {
    let Some(loaded) =
        load_and_start_logging(&config.config, shard.shard, &[], cli_level, cli_format)
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
            eprintln!("{}", daemon::DaemonError::StateFile(e));
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

/// `calldrift simulate`: the simulated Chat API alone, until SIGTERM or SIGINT.
pub(super) fn simulate(
    scenario: &Path,
    listen: SocketAddr,
    gateway: crate::sim::GatewayFlags,
    cli_level: Option<&str>,
    cli_format: Option<LogFormatArg>,
) -> anyhow::Result<ExitCode> {
    init_logging(cli_level, "info", log_format(cli_format, LogFormat::Text));
    let origin = scenario.display().to_string();
    let mut scenario = Scenario::load(scenario)?;
    gateway
        .apply(&mut scenario)
        .map_err(|e| anyhow::anyhow!("{origin} with the flags given: {e}"))?;
    runtime()?.block_on(async move {
        let listener = bind(listen).await?;
        if !listen.ip().is_loopback() {
            tracing::warn!(%listen, "the simulator is reachable from other hosts; it has no authentication");
        }
        let simulator = Simulator::new(scenario, Arc::new(SystemClock))?;
        let scheme = if simulator.is_tls() { "https" } else { "http" };
        emit(format!(
            "simulated Chat API listening on {scheme}://{}\n",
            listener.local_addr()?
        ))?;
        if let Some(ca) = simulator.ca_file() {
            emit(format!(
                "its CA certificate (a config's ca_file): {}\n",
                ca.display()
            ))?;
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone(), None));
        simulator.run(listener, shutdown).await.context("simulator")
    })?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

/// Cancels `token` on SIGTERM or SIGINT; reloads through `reload` on SIGHUP.
pub(super) async fn cancel_on_signal(token: CancellationToken, reload: Option<ReloadHandle>) {
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
