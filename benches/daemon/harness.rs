//! What every figure needs: the simulator in this process at a distance, the daemon as a
//! separate process with a config naming it, and readings of both.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calldrift::clock::SystemClock;
use calldrift::sim::{
    CallbackConfig, Connections, Distribution, Latency, Scenario, SimApp, Simulator, TlsSettings,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
pub(crate) const LIMIT: u32 = 200;

pub(crate) struct Sim {
    pub(crate) addr: SocketAddr,
    pub(crate) sim: Simulator,
    stop: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How the daemon reaches the simulated gateway.
#[derive(Clone, Copy)]
pub(crate) struct Distance {
    /// Every answer waits this long, in ms: fixed, and uniform jitter around it.
    latency: Option<(u64, u64)>,
    tls: bool,
    connections: Connections,
}

/// Keep-alive connections left open, as the simulator does by default.
pub(crate) const KEPT_OPEN: Connections = Connections {
    close_after: None,
    announce: true,
    idle_timeout: None,
};

impl Distance {
    /// Plain HTTP on loopback, answers at once: the ideal figures.
    pub(crate) const LOOPBACK: Distance = Distance {
        latency: None,
        tls: false,
        connections: KEPT_OPEN,
    };

    /// HTTPS (a generated CA, named by the daemon's `ca_file`), answers `fixed_ms` ±
    /// `jitter_ms` away, connections kept open.
    pub(crate) fn https(fixed_ms: u64, jitter_ms: u64) -> Distance {
        Distance {
            latency: Some((fixed_ms, jitter_ms)),
            tls: true,
            connections: KEPT_OPEN,
        }
    }

    pub(crate) fn closing(self, connections: Connections) -> Distance {
        Distance {
            connections,
            ..self
        }
    }
}

pub(crate) async fn start_sim(apps: u64) -> Sim {
    start_sim_at(apps, Distance::LOOPBACK).await
}

pub(crate) async fn start_sim_at(apps: u64, distance: Distance) -> Sim {
    let apps = (0..apps)
        .map(|i| SimApp {
            sdkappid: 1_400_000_000 + i,
            key: KEY.to_owned(),
            admins: vec!["administrator".to_owned()],
            users: Vec::new(),
            callback: Some(CallbackConfig::new(
                "https://hooks.example.com/tencent/call",
                &["Call.CallbackAfterStartCall", "Call.CallbackAfterEndCall"],
            )),
            rotate: None,
            latency: None,
            room_callback: None,
            live_callback: None,
        })
        .collect();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sim = Simulator::new(
        Scenario {
            apps,
            latency: distance.latency.map(|(fixed, jitter)| Latency {
                fixed: Duration::from_millis(fixed),
                jitter: Duration::from_millis(jitter),
                distribution: Distribution::Uniform,
            }),
            tls: distance.tls.then(|| TlsSettings {
                generate: true,
                ..TlsSettings::default()
            }),
            connections: distance.connections,
            ..Scenario::default()
        },
        Arc::new(SystemClock),
    )
    .expect("simulator");
    let stop = CancellationToken::new();
    let (runner, token) = (sim.clone(), stop.clone());
    tokio::spawn(async move { runner.run(listener, token).await });
    Sim { addr, sim, stop }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A config for `targets` apps against the simulator (over HTTPS with its CA as
/// `ca_file` when it serves TLS).
pub(crate) fn write_config(
    dir: &Path,
    sim: &Sim,
    targets: u64,
    settings: &str,
    port: u16,
) -> PathBuf {
    let (scheme, ca_file) = match sim.sim.ca_file() {
        Some(ca) => ("https", format!("ca_file: {}\n", ca.display())),
        None => ("http", String::new()),
    };
    let mut yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nlog_level: error\n{ca_file}{settings}\nregions:\n  sim: \"{scheme}://{}\"\napps:\n",
        sim.addr
    );
    for i in 0..targets {
        yaml.push_str(&format!(
            "  - name: a{i}\n    sdkappid: {}\n    regions: [sim]\n    secret_key_env: BENCH_KEY\n",
            1_400_000_000 + i
        ));
    }
    let path = dir.join("calldrift.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// The daemon's binary: this build's, or `$CALLDRIFT` (another commit's, to compare).
pub(crate) fn calldrift() -> Command {
    let binary =
        std::env::var_os("CALLDRIFT").unwrap_or_else(|| env!("CARGO_BIN_EXE_calldrift").into());
    let mut command = Command::new(binary);
    command
        .env("BENCH_KEY", KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

pub(crate) fn spawn_daemon(config: &Path) -> Child {
    calldrift()
        .args(["run", "-c", config.to_str().expect("utf8")])
        .spawn()
        .expect("spawn calldrift")
}

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU time of a process.
pub(crate) fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').expect("stat format").1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub(crate) async fn wait_for(what: &str, within: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// What one daemon run at a steady load measured.
pub(crate) struct Steady {
    /// User + system CPU per completed poll, µs.
    pub(crate) cpu_us: f64,
    /// Polls the simulator saw per second.
    pub(crate) rate: f64,
    /// The simulator's largest 1-second window over the whole run, warm-up included.
    pub(crate) max_window: f64,
    /// TCP connections accepted and TLS handshakes per 1,000 polls.
    pub(crate) connections_per_1000: f64,
    pub(crate) handshakes_per_1000: f64,
    /// Gateway requests the daemon counted as failed over the whole run.
    pub(crate) failures: f64,
}

/// `targets` targets polled every 1 s (default `poll:` settings otherwise) against the
/// simulator at `distance`; measured for `measure` after `warmup`.
pub(crate) async fn steady(
    distance: Distance,
    targets: u64,
    warmup: Duration,
    measure: Duration,
) -> Steady {
    let sim = start_sim_at(targets, distance).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = write_config(dir.path(), &sim, targets, "poll:\n  interval: 1s", port);
    let daemon = Killed(spawn_daemon(&config));
    tokio::time::sleep(warmup).await;
    let (cpu0, stats0) = (cpu_time(daemon.0.id()), sim.sim.stats());
    tokio::time::sleep(measure).await;
    let (cpu1, stats1) = (cpu_time(daemon.0.id()), sim.sim.stats());
    let polls = (stats1.requests_total - stats0.requests_total) as f64;
    let per_1000 = |before: u64, after: u64| (after - before) as f64 * 1000.0 / polls;
    Steady {
        cpu_us: (cpu1 - cpu0).as_secs_f64() * 1e6 / polls,
        rate: polls / measure.as_secs_f64(),
        max_window: stats1.max_requests_in_any_second as f64,
        connections_per_1000: per_1000(stats0.connections_accepted, stats1.connections_accepted),
        handshakes_per_1000: per_1000(stats0.tls_handshakes, stats1.tls_handshakes),
        failures: failed_requests(port).await,
    }
}

/// The sum of `calldrift_api_request_failures_total` over every series.
async fn failed_requests(port: u16) -> f64 {
    let body = http()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics");
    body.lines()
        .filter(|l| l.starts_with("calldrift_api_request_failures_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold(0.0, |total, v| total + v)
}
