//! `calldrift run`: wires the scheduler, the HTTP server, the state file and reloads
//! around one [`Status`]. It takes its listener, clock and shutdown token as arguments;
//! binding ports and installing signal handlers stay in the `cli` module.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod persist;
mod reload;

use self::persist::{StatePath, StateWriter, load_state};
use self::reload::{Current, Prepared};
use crate::clock::Clock;
use crate::config::{Config, LoadedConfig, TargetKey};
use crate::enforce::Enforcer;
use crate::metrics::Metrics;
use crate::probe::{self, ProbeError, Prober};
use crate::ratelimit::RateLimits;
use crate::scheduler::{self, Plan};
use crate::server::{self, AppState, ReloadReply};
use crate::shard::Shard;
use crate::state::{self, SavedTarget};
use crate::status::Status;
use crate::tencent::{self, Client, ClientError, ClientSettings, Resolver, Target};
use crate::web::{self, WebConfigError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("HTTP server: {0}")]
    Server(std::io::Error),
    #[error(transparent)]
    Web(#[from] WebConfigError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
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
    mut inbox: ReloadInbox,
) -> Result<(), DaemonError> {
    let mut daemon = start(options, listener, clock, &shutdown, &inbox)?;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(reply) = inbox.receiver.recv() => {
                let result = daemon.reload().await;
                let _ = reply.send(result);
            }
        }
    }
    daemon.stop().await
}

/// A started daemon: its parts and the tasks that run them.
struct Running {
    current: Current,
    config_path: Option<PathBuf>,
    clock: Arc<dyn Clock>,
    status: Arc<Status>,
    enforcer: Arc<Enforcer>,
    metrics: Arc<Metrics>,
    app_state: Arc<AppState>,
    plans: watch::Sender<Arc<Plan>>,
    probers: watch::Sender<Option<Arc<Prober>>>,
    saved: BTreeMap<TargetKey, SavedTarget>,
    state_path: StatePath,
    tasks: Tasks,
}

/// A spawned task and the token that stops it.
struct Task<T> {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<T>,
}

impl<T> Task<T> {
    async fn stop(self) -> Option<T> {
        self.stop.cancel();
        self.handle.await.ok()
    }
}

fn spawn<T: Send + 'static>(
    stop: CancellationToken,
    task: impl std::future::Future<Output = T> + Send + 'static,
) -> Task<T> {
    Task {
        stop,
        handle: tokio::spawn(task),
    }
}

/// Builds every part from `options` and starts the scheduler, the server and the state
/// writer. Everything that can refuse the start (web config, state file, client) comes
/// before anything runs.
fn start(
    options: Options,
    listener: TcpListener,
    clock: Arc<dyn Clock>,
    shutdown: &CancellationToken,
    inbox: &ReloadInbox,
) -> Result<Running, DaemonError> {
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
    let web_config = check_start(&config)?;
    let metrics = started_metrics(clock.as_ref());
    let client = new_client(&config, resolver.clone(), &clock, &metrics)?;
    let prober = reload::new_prober(&config, resolver.clone(), &clock)?;

    let (saved, writes) = load_state(config.state_file.as_ref(), clock.as_ref());
    let status = Arc::new(Status::new(metrics.clone(), clock.clone()));
    let targets = shared(tencent::targets(&config, &loaded.secrets));
    status.apply_targets(&targets, &saved);
    let enforcer = Arc::new(Enforcer::new(
        &config,
        writes,
        status.clone(),
        metrics.clone(),
        clock.clone(),
    ));
    let (plans, plan_rx) = watch::channel(plan(targets, &config, &client, &enforcer));
    let (probers, prober_rx) = watch::channel(prober.clone());
    log_start(&listener, &config, shard);

    let app_state = Arc::new(AppState {
        started: std::time::Instant::now(),
        status: status.clone(),
        metrics: metrics.clone(),
        reload: config_path.as_ref().map(|_| inbox.sender.clone()),
        web: RwLock::new(Arc::new(web_config)),
    });
    let state_path: StatePath = Arc::new(std::sync::Mutex::new(config.state_file.clone()));
    let tasks = Tasks::spawn(
        plan_rx,
        prober_rx,
        StateWriter::new(&status, &enforcer, &metrics, &clock),
        listener,
        app_state.clone(),
        state_path.clone(),
        shutdown,
    );
    Ok(Running {
        current: Current {
            config,
            client,
            prober,
            resolver,
            shard,
        },
        config_path,
        clock,
        status,
        enforcer,
        metrics,
        app_state,
        plans,
        probers,
        saved,
        state_path,
        tasks,
    })
}

/// The process's metrics, the start counting as the first successful load.
fn started_metrics(clock: &dyn Clock) -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new(
        env!("CARGO_PKG_VERSION"),
        env!("CALLDRIFT_REVISION"),
    ));
    metrics.reload_successful.set(1);
    metrics.reload_success_time.set(clock.unix_f64());
    metrics
}

/// What can refuse the start, before anything runs: the web config (its warnings logged)
/// and a state file that cannot be written.
fn check_start(config: &Config) -> Result<web::WebConfig, DaemonError> {
    let (web_config, web_warnings) = web::load_optional(config.web_config_file.as_deref())?;
    for warning in &web_warnings {
        tracing::warn!("{warning}");
    }
    if let Some(path) = &config.state_file {
        state::check_writable(path).map_err(DaemonError::StateFile)?;
    }
    Ok(web_config)
}

fn log_start(listener: &TcpListener, config: &Config, shard: Option<Shard>) {
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        targets = config.target_count(),
        interval = %humantime::format_duration(config.poll.interval),
        shard = %shard.map_or_else(|| "none".to_owned(), |s| s.to_string()),
        rate_limit_per_second = config.rate_limit.per_second,
        "calldrift started"
    );
}

fn new_client(
    config: &Config,
    resolver: Option<Resolver>,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
) -> Result<Arc<Client>, ClientError> {
    let limits = Arc::new(RateLimits::new(
        config.rate_limit.per_second,
        config.rate_limit.per_app_per_second,
    ));
    let settings = ClientSettings {
        resolver,
        ..ClientSettings::from_config(config)
    };
    Ok(Arc::new(Client::new(
        settings,
        limits,
        clock.clone(),
        metrics.clone(),
    )?))
}

/// The daemon's tasks: the scheduler (and the polls it spawns), the endpoint prober, the
/// HTTP server and the state writer.
struct Tasks {
    scheduler: Task<()>,
    polls: TaskTracker,
    probe: Task<()>,
    server: Task<std::io::Result<()>>,
    writer: Task<()>,
}

impl Tasks {
    fn spawn(
        plans: watch::Receiver<Arc<Plan>>,
        probers: watch::Receiver<Option<Arc<Prober>>>,
        writer: StateWriter,
        listener: TcpListener,
        app_state: Arc<AppState>,
        state_path: StatePath,
        shutdown: &CancellationToken,
    ) -> Self {
        let (status, metrics) = (writer.status.clone(), writer.metrics.clone());
        let polls = TaskTracker::new();
        let stop = shutdown.child_token();
        let scheduler = spawn(
            stop.clone(),
            scheduler::run(
                plans,
                status.clone(),
                writer.enforcer.clone(),
                metrics,
                stop,
                polls.clone(),
            ),
        );
        // Its own task and concurrency bound: probes never hold a poll's slot or the limiter.
        let stop = shutdown.child_token();
        let probe = spawn(stop.clone(), probe::run(probers, status, stop));
        let stop = CancellationToken::new();
        let server = spawn(stop.clone(), server::run(listener, app_state, stop));
        let stop = CancellationToken::new();
        let writer = spawn(
            stop.clone(),
            persist::state_writer(writer, state_path, stop),
        );
        Tasks {
            scheduler,
            polls,
            probe,
            server,
            writer,
        }
    }
}

/// What the scheduler polls, as a whole.
/// One copy of each target, for the scheduler's plan and the status together.
pub(super) fn shared(targets: Vec<Target>) -> Vec<Arc<Target>> {
    targets.into_iter().map(Arc::new).collect()
}

fn plan(
    targets: Vec<Arc<Target>>,
    config: &Config,
    client: &Arc<Client>,
    enforcer: &Enforcer,
) -> Arc<Plan> {
    Arc::new(Plan {
        targets,
        interval: config.poll.interval,
        max_concurrency: config.poll.max_concurrency,
        client: client.clone(),
        generation: enforcer.generation(),
    })
}

/// The same prober (or none twice): nothing for the probe loop to take in.
fn same_prober(a: Option<&Arc<Prober>>, b: Option<&Arc<Prober>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

impl Running {
    /// Reads and checks the config on the blocking pool, then swaps it in; a failure keeps
    /// the running config.
    async fn reload(&mut self) -> Result<(), Vec<String>> {
        let Some(path) = self.config_path.clone() else {
            return Err(vec![
                "this daemon was not started from a config file (demo); nothing to reload"
                    .to_owned(),
            ]);
        };
        let inputs = reload::Inputs::new(path, &self.current, &self.clock, &self.metrics);
        // Until the new config is in or refused, nothing is written: its expectations may
        // replace the ones a write would restore.
        self.enforcer.reload_started();
        let prepared = tokio::task::spawn_blocking(move || reload::prepare(inputs))
            .await
            .unwrap_or_else(|e| Err(vec![format!("the reload stopped unexpectedly: {e}")]));
        match prepared {
            Ok(prepared) => {
                self.swap(prepared);
                Ok(())
            }
            Err(errors) => {
                self.enforcer.reload_failed();
                self.metrics.reload_successful.set(0);
                tracing::error!(errors = %errors.join("; "), "config reload failed; the previous config stays");
                Err(errors)
            }
        }
    }

    fn swap(&mut self, prepared: Prepared) {
        let Prepared {
            loaded,
            web,
            warnings,
            client,
            prober,
            targets,
        } = prepared;
        for warning in &warnings {
            tracing::warn!("{warning}");
        }
        self.app_state.set_web(Arc::new(web));
        let (old, new) = (&self.current.config, &loaded.config);
        if new.listen != old.listen {
            tracing::warn!(old = %old.listen, new = %new.listen, "listen changed; it takes effect at the next restart");
        }
        self.status.apply_targets(&targets, &self.saved);
        self.enforcer.reloaded(new);
        let _ = self.plans.send(plan(targets, new, &client, &self.enforcer));
        self.probers.send_if_modified(|current| {
            let changed = !same_prober(current.as_ref(), prober.as_ref());
            *current = prober.clone();
            changed
        });
        self.metrics.reload_successful.set(1);
        self.metrics.reload_success_time.set(self.clock.unix_f64());
        tracing::info!(targets = new.target_count(), "config reloaded");
        *self.state_path.lock().unwrap_or_else(|p| p.into_inner()) = new.state_file.clone();
        self.current.config = loaded.config;
        self.current.client = client;
        self.current.prober = prober;
    }

    /// Stops scheduling, waits for polls in flight (at most `poll.timeout`), writes the
    /// state file and stops the server.
    async fn stop(self) -> Result<(), DaemonError> {
        tracing::info!("shutting down: no new polls; waiting for polls in flight");
        self.tasks.scheduler.stop().await;
        self.tasks.probe.stop().await;
        self.tasks.polls.close();
        let in_flight =
            tokio::time::timeout(self.current.config.poll.timeout, self.tasks.polls.wait());
        if in_flight.await.is_err() {
            tracing::warn!(
                "some polls did not finish within poll.timeout; their results are dropped"
            );
        }
        self.tasks.writer.stop().await;
        let state_path = self
            .state_path
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let writer = StateWriter::new(&self.status, &self.enforcer, &self.metrics, &self.clock);
        // File IO off the runtime thread, as every write is.
        let _ = tokio::task::spawn_blocking(move || writer.write(state_path.as_ref())).await;
        match self.tasks.server.stop().await {
            Some(Err(e)) => Err(DaemonError::Server(e)),
            _ => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}
