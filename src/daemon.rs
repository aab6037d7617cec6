//! `calldrift run`: wires the scheduler, the HTTP server, the state file and reloads
//! around one [`Status`]. It takes its listener, clock and shutdown token as arguments;
//! binding ports and installing signal handlers stay in the `cli` module.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::{self, Config, LoadedConfig, TargetKey};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimits;
use crate::scheduler::{self, Plan};
use crate::server::{self, AppState, ReloadReply};
use crate::shard::Shard;
use crate::state::{self, SavedTarget};
use crate::status::Status;
use crate::tencent::{self, Client, ClientError, ClientSettings, Resolver};
use crate::web::{self, WebConfigError};

/// After a change, the state file is written once things settle for this long.
const STATE_WRITE_DELAY: Duration = Duration::from_millis(200);
/// After a failed write, the state file is tried again this often until a write succeeds,
/// so `calldrift_state_write_failures_total` keeps counting while the problem lasts.
const STATE_WRITE_RETRY: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("HTTP server: {0}")]
    Server(std::io::Error),
    #[error(transparent)]
    Web(#[from] WebConfigError),
    #[error(
        "{0}; fix the directory or state_file, or remove state_file to keep changes in memory only"
    )]
    StateFile(crate::state::StateError),
}

/// Asks a running daemon to reload its config (SIGHUP, `POST /-/reload`).
#[derive(Debug, Clone)]
pub struct ReloadHandle(mpsc::Sender<ReloadReply>);

impl ReloadHandle {
    /// Reloads and returns the validation errors, if any.
    pub async fn reload(&self) -> Result<(), Vec<String>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.0
            .send(reply)
            .await
            .map_err(|_| vec!["the daemon is shutting down".to_owned()])?;
        answer
            .await
            .unwrap_or_else(|_| Err(vec!["the daemon is shutting down".to_owned()]))
    }
}

/// The receiving end of [`ReloadHandle`], handed to [`run`].
#[derive(Debug)]
pub struct ReloadInbox {
    sender: mpsc::Sender<ReloadReply>,
    receiver: mpsc::Receiver<ReloadReply>,
}

/// A channel for reload requests: the handle for signal handlers, the inbox for [`run`].
pub fn reload_channel() -> (ReloadHandle, ReloadInbox) {
    let (sender, receiver) = mpsc::channel(4);
    (
        ReloadHandle(sender.clone()),
        ReloadInbox { sender, receiver },
    )
}

/// What the daemon starts from.
#[derive(Debug)]
pub struct Options {
    pub loaded: LoadedConfig,
    /// The file to read again on reload; `None` (the demo) refuses reloads.
    pub config_path: Option<PathBuf>,
    /// A DNS resolver instead of the system's (tests, embedding).
    pub resolver: Option<Resolver>,
    /// Poll only this shard's apps, at its part of the global rate; reloads keep it.
    pub shard: Option<Shard>,
}

/// Runs the daemon until `shutdown` is cancelled; then stops scheduling, lets in-flight
/// polls finish for at most `poll.timeout`, writes the state file and returns.
pub async fn run(
    options: Options,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    inbox: ReloadInbox,
) -> Result<(), DaemonError> {
    let Options {
        loaded,
        config_path,
        resolver,
        shard,
    } = options;
    let mut config = loaded.config;
    if let Some(shard) = shard {
        shard.apply(&mut config);
    }
    // First, so a bad web config stops the start before anything runs.
    let (web_config, web_warnings) = web::load_optional(config.web_config_file.as_deref())?;
    for warning in &web_warnings {
        tracing::warn!("{warning}");
    }
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        env!("CALLDRIFT_REVISION"),
    ));
    metrics.reload_successful.set(1);
    metrics.reload_success_time.set(clock.unix_f64());

    if let Some(path) = &config.state_file {
        state::check_writable(path).map_err(DaemonError::StateFile)?;
    }
    let saved = load_state(config.state_file.as_ref(), clock.as_ref());
    let status = Arc::new(Status::new(metrics.clone(), clock.clone()));
    let targets = tencent::targets(&config, &loaded.secrets);
    status.apply_targets(&targets, &saved);

    let limits = Arc::new(RateLimits::new(
        config.rate_limit.per_second,
        config.rate_limit.per_app_per_second,
    ));
    let settings = ClientSettings {
        resolver: resolver.clone(),
        ..ClientSettings::from_config(&config)
    };
    let client = Arc::new(Client::new(
        settings,
        limits,
        clock.clone(),
        metrics.clone(),
    )?);
    let (plans, plan_rx) = watch::channel(Arc::new(Plan {
        targets: targets.into_iter().map(Arc::new).collect(),
        interval: config.poll.interval,
        max_concurrency: config.poll.max_concurrency,
        client: client.clone(),
    }));
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        targets = config.target_count(),
        interval = %humantime::format_duration(config.poll.interval),
        shard = %shard.map_or_else(|| "none".to_owned(), |s| s.to_string()),
        rate_limit_per_second = config.rate_limit.per_second,
        "calldrift started"
    );

    let polls = TaskTracker::new();
    let stop_scheduling = shutdown.child_token();
    let scheduler = tokio::spawn(scheduler::run(
        plan_rx,
        status.clone(),
        metrics.clone(),
        stop_scheduling.clone(),
        polls.clone(),
    ));

    let app_state = Arc::new(AppState {
        status: status.clone(),
        metrics: metrics.clone(),
        reload: config_path.as_ref().map(|_| inbox.sender.clone()),
        web: RwLock::new(Arc::new(web_config)),
    });
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(server::run(
        listener,
        app_state.clone(),
        server_stop.clone(),
    ));

    let state_file = Arc::new(std::sync::Mutex::new(config.state_file.clone()));
    let writer_stop = CancellationToken::new();
    let writer = tokio::spawn(state_writer(
        StateWriter {
            status: status.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
        },
        state_file.clone(),
        writer_stop.clone(),
    ));

    let mut current = Current {
        config,
        client,
        resolver,
        shard,
    };
    let mut inbox = inbox;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(reply) = inbox.receiver.recv() => {
                let result = match &config_path {
                    Some(path) => reload(path, &mut current, &app_state, &plans, &clock, &saved),
                    None => Err(vec!["this daemon was not started from a config file (demo); nothing to reload".to_owned()]),
                };
                *state_file.lock().unwrap_or_else(|p| p.into_inner()) = current.config.state_file.clone();
                let _ = reply.send(result);
            }
        }
    }

    tracing::info!("shutting down: no new polls; waiting for polls in flight");
    stop_scheduling.cancel();
    let _ = scheduler.await;
    polls.close();
    if tokio::time::timeout(current.config.poll.timeout, polls.wait())
        .await
        .is_err()
    {
        tracing::warn!("some polls did not finish within poll.timeout; their results are dropped");
    }
    writer_stop.cancel();
    let _ = writer.await;
    let state_path = state_file.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let writer = StateWriter {
        status: status.clone(),
        metrics: metrics.clone(),
        clock: clock.clone(),
    };
    writer.write(state_path.as_ref());
    server_stop.cancel();
    match server.await {
        Ok(Err(e)) => return Err(DaemonError::Server(e)),
        _ => tracing::info!("stopped"),
    }
    Ok(())
}

struct Current {
    /// Already narrowed to `shard`.
    config: Config,
    client: Arc<Client>,
    resolver: Option<Resolver>,
    shard: Option<Shard>,
}

/// Reads the config (and its web config) again; only a fully valid pair replaces the
/// running one. The shard is applied again, so a reload never widens a replica to every
/// target.
fn reload(
    path: &std::path::Path,
    current: &mut Current,
    app: &AppState,
    plans: &watch::Sender<Arc<Plan>>,
    clock: &Arc<dyn Clock>,
    saved: &BTreeMap<TargetKey, SavedTarget>,
) -> Result<(), Vec<String>> {
    let (status, metrics) = (&app.status, &app.metrics);
    let attempt = config::load(path)
        .map_err(|e| e.diagnostics())
        .map(|mut loaded| {
            if let Some(shard) = current.shard {
                shard.apply(&mut loaded.config);
            }
            loaded
        })
        .and_then(|loaded| {
            let web = web::load_optional(loaded.config.web_config_file.as_deref())
                .map_err(|e| e.diagnostics())?;
            let client = client_for(&loaded.config, current, clock, metrics)
                .map_err(|e| vec![e.to_string()])?;
            Ok((loaded, web, client))
        });
    let (loaded, (web_config, web_warnings), client) = match attempt {
        Ok(ok) => ok,
        Err(errors) => {
            metrics.reload_successful.set(0);
            tracing::error!(errors = %errors.join("; "), "config reload failed; the previous config stays");
            return Err(errors);
        }
    };
    for warning in loaded.warnings.iter().chain(&web_warnings) {
        tracing::warn!("{warning}");
    }
    app.set_web(Arc::new(web_config));
    if loaded.config.listen != current.config.listen {
        tracing::warn!(old = %current.config.listen, new = %loaded.config.listen, "listen changed; it takes effect at the next restart");
    }
    let targets = tencent::targets(&loaded.config, &loaded.secrets);
    status.apply_targets(&targets, saved);
    let _ = plans.send(Arc::new(Plan {
        targets: targets.into_iter().map(Arc::new).collect(),
        interval: loaded.config.poll.interval,
        max_concurrency: loaded.config.poll.max_concurrency,
        client: client.clone(),
    }));
    metrics.reload_successful.set(1);
    metrics.reload_success_time.set(clock.unix_f64());
    tracing::info!(targets = loaded.config.target_count(), "config reloaded");
    current.config = loaded.config;
    current.client = client;
    Ok(())
}

/// Keeps the client (and its connection pool and rate limiter) when nothing it depends on
/// changed, so a reload never resets the limiter's memory of recent calls.
fn client_for(
    new: &Config,
    current: &Current,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<Client>, ClientError> {
    let old = &current.config;
    if new.poll.timeout == old.poll.timeout
        && new.poll.retries == old.poll.retries
        && new.ca_file == old.ca_file
        && new.rate_limit == old.rate_limit
    {
        return Ok(current.client.clone());
    }
    let limits = if new.rate_limit == old.rate_limit {
        current.client.limits().clone()
    } else {
        Arc::new(RateLimits::new(
            new.rate_limit.per_second,
            new.rate_limit.per_app_per_second,
        ))
    };
    let settings = ClientSettings {
        resolver: current.resolver.clone(),
        ..ClientSettings::from_config(new)
    };
    Ok(Arc::new(Client::new(
        settings,
        limits,
        clock.clone(),
        metrics.clone(),
    )?))
}

fn load_state(path: Option<&PathBuf>, clock: &dyn Clock) -> BTreeMap<TargetKey, SavedTarget> {
    let Some(path) = path else {
        return BTreeMap::new();
    };
    match state::load(path, clock.unix_secs()) {
        Ok(loaded) => {
            if let Some(recovered) = loaded.recovered {
                tracing::error!("{recovered}");
            }
            loaded.targets
        }
        Err(e) => {
            tracing::error!("{e}; starting without saved state");
            BTreeMap::new()
        }
    }
}

/// What writing the state file needs: what to write, where to count, the time.
#[derive(Clone)]
struct StateWriter {
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl StateWriter {
    /// Writes the state file if there is one; returns whether that failed.
    fn write(&self, path: Option<&PathBuf>) -> bool {
        let Some(path) = path else { return false };
        match state::save(path, self.status.saved()) {
            Ok(()) => {
                self.metrics
                    .state_write_success_time
                    .set(self.clock.unix_f64());
                false
            }
            Err(e) => {
                self.metrics.state_write_failures.inc();
                tracing::error!("{e}; retrying in {}s", STATE_WRITE_RETRY.as_secs());
                true
            }
        }
    }
}

/// Writes the state file after changes, coalescing bursts, and again every
/// [`STATE_WRITE_RETRY`] after a failure until a write succeeds.
async fn state_writer(
    writer: StateWriter,
    path: Arc<std::sync::Mutex<Option<PathBuf>>>,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        let retry = async {
            if failing {
                tokio::time::sleep(STATE_WRITE_RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = writer.status.state_changed.notified() => {}
            _ = retry => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STATE_WRITE_DELAY) => {}
        }
        let current = path.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let writer = writer.clone();
        // File IO off the async threads.
        failing = tokio::task::spawn_blocking(move || writer.write(current.as_ref()))
            .await
            .unwrap_or(true);
    }
}
