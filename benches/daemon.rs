//! The benchmark of issue 6: calldrift's cost and its fidelity to the rate limit.
//!
//! `cargo bench --bench daemon` builds the release binary, starts the simulated Chat API in
//! this process and the daemon as a separate process (so the simulator's cost is not
//! counted), and prints one table of medians. `BENCH_RUNS=N` sets the runs per figure
//! (default 3); `BENCH_QUICK=1` shortens the long measurements for a smoke run;
//! `BENCH_ONLY=cpu` measures CPU per poll alone.
//! Everything stays on 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use calldrift::clock::{Clock, SystemClock};
use calldrift::sim::{CallbackConfig, Scenario, SimApp, Simulator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const LIMIT: u32 = 200;

struct Sim {
    addr: SocketAddr,
    sim: Simulator,
    stop: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_sim(apps: u64) -> Sim {
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A config for `targets` apps against the simulator.
fn write_config(dir: &Path, sim: &Sim, targets: u64, settings: &str, port: u16) -> PathBuf {
    let mut yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nlog_level: error\n{settings}\nregions:\n  sim: \"http://{}\"\napps:\n",
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

fn calldrift() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_calldrift"));
    command
        .env("BENCH_KEY", KEY)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn spawn_daemon(config: &Path) -> Child {
    calldrift()
        .args(["run", "-c", config.to_str().expect("utf8")])
        .spawn()
        .expect("spawn calldrift")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User plus system CPU time of a process.
fn cpu_time(pid: u32) -> Duration {
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

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn wait_for(what: &str, within: Duration, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ready().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Largest 1-second window and achieved rate with demand at 2× the limit.
async fn rate_fidelity(measure: Duration) -> (f64, f64) {
    let sim = start_sim(2 * u64::from(LIMIT)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &sim,
        2 * u64::from(LIMIT),
        "poll:\n  interval: 1s",
        free_port(),
    );
    let _daemon = Killed(spawn_daemon(&config));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = sim.sim.stats().requests_total;
    tokio::time::sleep(measure).await;
    let stats = sim.sim.stats();
    let achieved = (stats.requests_total - before) as f64 / measure.as_secs_f64();
    (stats.max_requests_in_any_second as f64, achieved)
}

/// CPU per completed poll at the limit (demand equal to the limit).
async fn cpu_per_poll(measure: Duration) -> f64 {
    let sim = start_sim(u64::from(LIMIT)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        dir.path(),
        &sim,
        u64::from(LIMIT),
        "poll:\n  interval: 1s",
        free_port(),
    );
    let daemon = Killed(spawn_daemon(&config));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu0, polls0) = (cpu_time(daemon.0.id()), sim.sim.stats().requests_total);
    tokio::time::sleep(measure).await;
    let (cpu1, polls1) = (cpu_time(daemon.0.id()), sim.sim.stats().requests_total);
    (cpu1 - cpu0).as_secs_f64() * 1e6 / (polls1 - polls0) as f64
}

/// RSS after a full round and /metrics render times, with `targets` targets.
async fn memory_and_render(targets: u64, renders: usize) -> (f64, f64) {
    let sim = start_sim(targets).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // A high limit so a full round of 10,000 targets takes seconds, not 50 s; memory
    // depends on the number of targets, not on the pace.
    let settings = "poll:\n  interval: 10s\n  max_concurrency: 64\nrate_limit:\n  per_second: 5000\n  per_app_per_second: 200";
    let config = write_config(dir.path(), &sim, targets, settings, port);
    let daemon = Killed(spawn_daemon(&config));
    let client = http();
    let ready = format!("http://127.0.0.1:{port}/-/ready");
    wait_for("a full round", Duration::from_secs(60), async || {
        client
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let rss = rss_mib(daemon.0.id());
    let metrics = format!("http://127.0.0.1:{port}/metrics");
    let mut times = Vec::new();
    for _ in 0..renders {
        let started = Instant::now();
        let body = client
            .get(&metrics)
            .send()
            .await
            .expect("scrape")
            .bytes()
            .await
            .expect("body");
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(body.len() > 1000);
    }
    (rss, median(times))
}

/// From spawning the process to the simulator seeing its first request.
async fn startup_to_first_request() -> f64 {
    let sim = start_sim(1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &sim, 1, "poll:\n  interval: 60s", free_port());
    let started = Instant::now();
    let _daemon = Killed(spawn_daemon(&config));
    while sim.sim.stats().requests_total == 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no request");
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    started.elapsed().as_secs_f64() * 1000.0
}

/// `calldrift check` wall time for 1,000 targets at the 200/s limit.
async fn check_wall_time() -> f64 {
    let sim = start_sim(1000).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &sim, 1000, "", free_port());
    let started = Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        calldrift()
            .args(["check", "-c", config.to_str().expect("utf8")])
            .status()
            .expect("check")
    })
    .await
    .expect("join");
    assert_eq!(status.code(), Some(0));
    started.elapsed().as_secs_f64()
}

/// The simulator's own ceiling: how many `get_callback` answers per second it serves to
/// 32 concurrent keep-alive clients, with the per-app limit out of the way.
async fn simulator_ceiling(measure: Duration) -> f64 {
    let apps = 2000u64;
    let sim = start_sim(apps).await;
    let key = calldrift::secret::SecretKey::new(KEY);
    let now = SystemClock.unix_secs();
    let urls: Vec<String> = (0..apps)
        .map(|i| {
            let id = 1_400_000_000 + i;
            let sig = calldrift::tencent::usersig::mint(&key, id, "administrator", now, 86_400);
            format!(
                "http://{}/v4/call_config/get_callback?sdkappid={id}&identifier=administrator&usersig={}&random=1&contenttype=json",
                sim.addr,
                sig.expose()
            )
        })
        .collect();
    let urls = Arc::new(urls);
    let deadline = Instant::now() + measure;
    let mut workers = Vec::new();
    for w in 0..32usize {
        let (urls, client) = (urls.clone(), http());
        workers.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < deadline {
                let _ = client
                    .post(&urls[i % urls.len()])
                    .body("{}")
                    .send()
                    .await
                    .map(|r| r.bytes());
                i += 32;
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    sim.sim.stats().requests_total as f64 / measure.as_secs_f64()
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass nothing useful here.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let long = if quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(20)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var("BENCH_ONLY").is_ok_and(|only| only == "cpu") {
        // One figure, for iterating on it: `BENCH_ONLY=cpu cargo bench --bench daemon`.
        let cpu: Vec<f64> = runtime.block_on(async {
            let mut cpu = Vec::new();
            for _ in 0..runs {
                cpu.push(cpu_per_poll(long).await);
            }
            cpu
        });
        let shown: Vec<String> = cpu.iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "CPU per completed poll at 200 polls/s: median {:.1} us ({})",
            median(cpu),
            shown.join(", ")
        );
        return;
    }
    runtime.block_on(async {
        let mut windows = Vec::new();
        let mut rates = Vec::new();
        let mut cpu = Vec::new();
        let mut rss10k = Vec::new();
        let mut render10k = Vec::new();
        let mut render1k = Vec::new();
        let mut startup = Vec::new();
        let mut check = Vec::new();
        let mut ceiling = Vec::new();
        for run in 0..runs {
            eprintln!("run {}/{runs}", run + 1);
            let (window, rate) = rate_fidelity(long).await;
            windows.push(window);
            rates.push(rate);
            cpu.push(cpu_per_poll(long).await);
            let (rss, render) = memory_and_render(10_000, 5).await;
            rss10k.push(rss);
            render10k.push(render);
            render1k.push(memory_and_render(1_000, 5).await.1);
            startup.push(median(vec![
                startup_to_first_request().await,
                startup_to_first_request().await,
                startup_to_first_request().await,
            ]));
            check.push(check_wall_time().await);
            ceiling.push(simulator_ceiling(Duration::from_secs(3)).await);
        }
        let limit = f64::from(LIMIT);
        println!("| figure | target | median of {runs} | runs |");
        println!("|---|---|---|---|");
        let row = |name: &str, target: &str, values: &[f64], unit: &str| {
            let shown: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
            println!(
                "| {name} | {target} | {:.1} {unit} | {} |",
                median(values.to_vec()),
                shown.join(", ")
            );
        };
        row(
            "largest 1-s window at 2x demand",
            "<= 200",
            &windows,
            "calls",
        );
        row(
            &format!("achieved rate at 2x demand over {}s", long.as_secs()),
            ">= 196/s (98 %)",
            &rates,
            "calls/s",
        );
        println!(
            "| achieved / limit | >= 98 % | {:.1} % | |",
            median(rates.clone()) / limit * 100.0
        );
        row(
            "CPU per completed poll at 200 polls/s",
            "<= 50 us",
            &cpu,
            "us",
        );
        row(
            "RSS with 10,000 targets after a full round",
            "<= 64 MiB",
            &rss10k,
            "MiB",
        );
        row(
            "/metrics render, 10,000 targets",
            "<= 250 ms",
            &render10k,
            "ms",
        );
        row(
            "/metrics render, 1,000 targets",
            "<= 25 ms",
            &render1k,
            "ms",
        );
        row("start-up to first request", "<= 100 ms", &startup, "ms");
        row(
            "check wall time, 1,000 targets at 200/s",
            "<= 5.2 s",
            &check,
            "s",
        );
        row(
            "simulator ceiling (32 clients, not calldrift)",
            "-",
            &ceiling,
            "answers/s",
        );
    });
}
