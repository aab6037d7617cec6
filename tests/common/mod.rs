//! One harness for the integration tests: the simulated Chat API and the daemon on
//! loopback ports, with `scrape()`, `set_app()`, `set_product()` and `wait_until()`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calldrift::clock::SystemClock;
use calldrift::config;
use calldrift::daemon::{self, ReloadHandle};
use calldrift::product::Product;
use calldrift::sim::{CallbackConfig, FaultRule, Scenario, SimApp, SimStats, Simulator};
use calldrift::tencent::Resolver;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const START: &str = "Call.CallbackAfterStartCall";
pub const END: &str = "Call.CallbackAfterEndCall";
pub const MEMBER: &str = "Call.CallbackAfterMemberChanged";
pub const GOOD_URL: &str = "https://hooks.example.com/tencent/call";

/// A made-up 64-hex key per app, so tests can tell keys apart.
pub fn key_for(sdkappid: u64) -> String {
    format!("{:064x}", u128::from(sdkappid) * 0x9e37_79b9_7f4a_7c15)
}

/// An app whose key is [`key_for`] and whose admin is `administrator`.
pub fn app(sdkappid: u64, callback: Option<CallbackConfig>) -> SimApp {
    SimApp {
        sdkappid,
        key: key_for(sdkappid),
        admins: vec!["administrator".to_owned()],
        users: vec!["alice".to_owned()],
        callback,
        rotate: None,
        latency: None,
        room_callback: None,
        live_callback: None,
    }
}

pub fn clean() -> Option<CallbackConfig> {
    Some(CallbackConfig::new(GOOD_URL, &[START, END]))
}

/// A TUIRoomKit command word and a TUILiveKit one.
pub const ROOM_CREATED: &str = "Room.CallbackAfterCreateRoom";
pub const LIVE_CREATED: &str = "Live.CallbackAfterCreateRoom";

/// An app like [`app`] with TUIRoomKit's and TUILiveKit's configurations as well.
pub fn app_with_products(
    sdkappid: u64,
    call: Option<CallbackConfig>,
    room: Option<CallbackConfig>,
    live: Option<CallbackConfig>,
) -> SimApp {
    SimApp {
        room_callback: room,
        live_callback: live,
        ..app(sdkappid, call)
    }
}

/// A running simulator.
pub struct Sim {
    pub addr: SocketAddr,
    pub sim: Simulator,
    shutdown: CancellationToken,
}

impl Sim {
    pub async fn start(apps: Vec<SimApp>) -> Sim {
        Self::start_with(Scenario {
            apps,
            ..Scenario::default()
        })
        .await
    }

    pub async fn start_with(scenario: Scenario) -> Sim {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind sim");
        let addr = listener.local_addr().expect("addr");
        let sim = Simulator::new(scenario, Arc::new(SystemClock)).expect("simulator");
        let shutdown = CancellationToken::new();
        let (runner, token) = (sim.clone(), shutdown.clone());
        tokio::spawn(async move { runner.run(listener, token).await });
        Sim {
            addr,
            sim,
            shutdown,
        }
    }

    /// The base URL: `https://127.0.0.1:PORT` when it serves TLS.
    pub fn base(&self) -> String {
        let scheme = if self.sim.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The generated CA certificate's file, for a config's `ca_file`.
    pub fn ca_file(&self) -> Option<&Path> {
        self.sim.ca_file()
    }

    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    pub fn set_app(&self, sdkappid: u64, callback: Option<CallbackConfig>) {
        self.sim.set_callback(sdkappid, callback);
    }

    /// Replaces an app's configuration of `product`.
    pub fn set_product(&self, sdkappid: u64, product: Product, callback: Option<CallbackConfig>) {
        self.sim.set_product_callback(sdkappid, product, callback);
    }

    pub fn set_faults(&self, faults: Vec<FaultRule>) {
        self.sim.set_faults(faults);
    }

    /// The client must never send a request the gateway would reject as malformed.
    pub fn assert_no_malformed(&self) {
        assert_eq!(
            self.stats().malformed_requests,
            0,
            "the simulator saw malformed requests"
        );
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A file holding the key of `sdkappid` (mode 0600), so configs can be reloaded from
/// disk without touching the process environment.
pub fn key_file(sdkappid: u64) -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("calldrift-test-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("key dir");
        dir
    });
    let path = dir.join(format!("KEY_{sdkappid}"));
    if !path.exists() {
        let tmp = dir.join(format!(".KEY_{sdkappid}.{:?}", std::thread::current().id()));
        std::fs::write(&tmp, key_for(sdkappid)).expect("write key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        std::fs::rename(&tmp, &path).expect("rename key");
    }
    path
}

/// One `apps:` entry of a config, pointing at region `sim`.
pub fn app_yaml(name: &str, sdkappid: u64, extra: &str) -> String {
    format!(
        "  - name: {name}\n    sdkappid: {sdkappid}\n    regions: [sim]\n    secret_key_file: {}\n{extra}",
        key_file(sdkappid).display()
    )
}

/// Like [`app_yaml`], with the key named by `secret_key_env: KEY_{sdkappid}` (see
/// [`test_env`]); for tests of how environment references are kept.
pub fn app_yaml_env(name: &str, sdkappid: u64, extra: &str) -> String {
    format!(
        "  - name: {name}\n    sdkappid: {sdkappid}\n    regions: [sim]\n    secret_key_env: KEY_{sdkappid}\n{extra}"
    )
}

/// A config for `apps` against `sim`, with `settings` (top-level YAML) prepended. The
/// endpoint probe is off unless `settings` configures it: the simulator's callback URLs
/// name made-up hosts, and no test sends a DNS query off the machine.
pub fn config_yaml(sim: &Sim, settings: &str, apps: &[String]) -> String {
    let probe = if settings.contains("endpoint_probe:") {
        ""
    } else {
        "endpoint_probe:\n  enabled: false\n"
    };
    format!(
        "{settings}\n{probe}regions:\n  sim: \"{}\"\napps:\n{}",
        sim.base(),
        apps.concat()
    )
}

/// Environment lookup that knows every `KEY_{sdkappid}`.
pub fn test_env(name: &str) -> Option<String> {
    name.strip_prefix("KEY_")
        .and_then(|id| id.parse().ok())
        .map(key_for)
}

/// Writes `yaml` to a file in `dir` and loads it as `run` would.
pub fn load_config(dir: &Path, yaml: &str) -> (PathBuf, config::LoadedConfig) {
    load_config_for(dir, yaml, None)
}

/// [`load_config`] as `run --shard` would: only the secrets of `shard`'s apps are read.
pub fn load_config_for(
    dir: &Path,
    yaml: &str,
    shard: Option<calldrift::shard::Shard>,
) -> (PathBuf, config::LoadedConfig) {
    let path = dir.join("calldrift.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let loaded =
        config::load_selected(&path, &test_env, &|app| calldrift::shard::polls(shard, app))
            .unwrap_or_else(|e| panic!("config invalid:\n{e}\n{yaml}"));
    (path, loaded)
}

/// A running daemon.
pub struct Daemon {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub reload: ReloadHandle,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<Result<(), daemon::DaemonError>>>,
}

impl Daemon {
    /// Starts the daemon on `127.0.0.1:0` with `yaml` written to a fresh directory.
    pub async fn start(yaml: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, yaml).await
    }

    /// Starts the daemon with its files in `dir` (to restart over an existing state file).
    pub async fn start_in(dir: tempfile::TempDir, yaml: &str) -> Daemon {
        Self::start_full(dir, yaml, None, None).await
    }

    /// Starts the daemon with its own DNS resolver, so no lookup leaves the machine.
    pub async fn start_with(
        dir: tempfile::TempDir,
        yaml: &str,
        resolver: Option<Resolver>,
    ) -> Daemon {
        Self::start_full(dir, yaml, resolver, None).await
    }

    /// Like [`Daemon::start_in`], as `run --shard` would.
    pub async fn start_sharded(
        dir: tempfile::TempDir,
        yaml: &str,
        shard: Option<calldrift::shard::Shard>,
    ) -> Daemon {
        Self::start_full(dir, yaml, None, shard).await
    }

    async fn start_full(
        dir: tempfile::TempDir,
        yaml: &str,
        resolver: Option<Resolver>,
        shard: Option<calldrift::shard::Shard>,
    ) -> Daemon {
        let (config_path, loaded) = load_config_for(dir.path(), yaml, shard);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind daemon");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let (reload, inbox) = daemon::reload_channel();
        let options = daemon::Options {
            loaded,
            config_path: Some(config_path.clone()),
            resolver,
            shard,
        };
        let task = tokio::spawn(daemon::run(
            options,
            listener,
            Arc::new(SystemClock),
            shutdown.clone(),
            inbox,
        ));
        Daemon {
            addr,
            dir,
            config_path,
            reload,
            shutdown,
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn scrape(&self) -> Metrics {
        Metrics(get(&self.url("/metrics")).await.1)
    }

    pub async fn targets(&self) -> serde_json::Value {
        serde_json::from_str(&get(&self.url("/api/v1/targets")).await.1).expect("targets JSON")
    }

    /// Stops the daemon as SIGTERM would and waits for it; returns its files' directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await
                .expect("daemon task")
                .expect("daemon exits cleanly");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A loopback port that was free a moment ago, for a daemon run as a process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A plain HTTP GET; returns status and body.
pub async fn get(url: &str) -> (u16, String) {
    request(reqwest::Method::GET, url).await
}

pub async fn request(method: reqwest::Method, url: &str) -> (u16, String) {
    let response = http()
        .request(method, url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("test HTTP client")
}

/// Prometheus text, with lookups by name and labels.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the series `name` whose labels include every `labels` pair.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, label_text) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                if metric != name {
                    return None;
                }
                let all = labels
                    .iter()
                    .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")));
                if all { value.parse().ok() } else { None }
            })
    }

    /// Like [`Metrics::value`] for a target's series.
    pub fn target(&self, name: &str, app: &str, extra: &[(&str, &str)]) -> Option<f64> {
        let mut labels = vec![("app", app)];
        labels.extend_from_slice(extra);
        self.value(name, &labels)
    }

    /// Like [`Metrics::target`] for the target of one product of the app.
    pub fn product(
        &self,
        name: &str,
        app: &str,
        product: Product,
        extra: &[(&str, &str)],
    ) -> Option<f64> {
        let mut labels = vec![("app", app), ("product", product.as_str())];
        labels.extend_from_slice(extra);
        self.value(name, &labels)
    }
}

/// Polls `condition` every 25 ms until it holds or `within` passes.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `calldrift run -c CONFIG --log-format json` as a process, its logs on a pipe.
pub fn spawn_run(config: &Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_calldrift"))
        .args([
            "run",
            "-c",
            config.to_str().expect("utf8"),
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn calldrift run")
}
