//! The benchmark of issue 6: calldrift's cost and its fidelity to the rate limit.
//!
//! `cargo bench --bench daemon` builds the release binary, starts the simulated Chat API in
//! this process and the daemon as a separate process (so the simulator's cost is not
//! counted), and prints two tables of medians: the ideal case (plain HTTP, answers at
//! once) and the realistic one (HTTPS with the simulator's generated CA, answers 50 ms or
//! 250 ms away, load-balancer-like connection closing). `BENCH_RUNS=N` sets the runs per
//! figure (default 3); `BENCH_QUICK=1` shortens the long measurements for a smoke run;
//! `BENCH_ONLY=cpu` measures the ideal CPU per poll alone, `BENCH_ONLY=ideal` the ideal
//! table, `BENCH_ONLY=realistic` the realistic one, `BENCH_ONLY=realistic-cpu` the
//! realistic CPU per poll alone, `BENCH_ONLY=memory` the RSS with 10,000 targets alone;
//! `CALLDRIFT=PATH` measures that binary instead of this build's (another commit's).
//! `--features reqwest-transport` builds the daemon with
//! reqwest as its HTTP client, for comparison.
//! Everything stays on 127.0.0.1.

#[path = "daemon/harness.rs"]
mod harness;
#[path = "daemon/realistic.rs"]
mod realistic;

use std::sync::Arc;
use std::time::{Duration, Instant};

use calldrift::clock::{Clock, SystemClock};

use harness::*;

/// Largest 1-second window and achieved rate with demand at 2× the limit.
async fn rate_fidelity(measure: Duration) -> (f64, f64) {
    let run = steady(
        Distance::LOOPBACK,
        2 * u64::from(LIMIT),
        Duration::from_secs(2),
        measure,
    )
    .await;
    (run.max_window, run.rate)
}

/// CPU per completed poll at the limit (demand equal to the limit).
async fn cpu_per_poll(measure: Duration) -> f64 {
    steady(
        Distance::LOOPBACK,
        u64::from(LIMIT),
        Duration::from_secs(3),
        measure,
    )
    .await
    .cpu_us
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

/// The ideal table's rows: figure, target, unit.
const IDEAL_ROWS: [(&str, &str, &str); 10] = [
    ("largest 1-s window at 2x demand", "<= 200", "calls"),
    ("achieved rate at 2x demand", ">= 196/s (98 %)", "calls/s"),
    ("achieved / limit", ">= 98 %", "%"),
    ("CPU per completed poll at 200 polls/s", "<= 50 us", "us"),
    (
        "RSS with 10,000 targets after a full round",
        "<= 64 MiB",
        "MiB",
    ),
    ("/metrics render, 10,000 targets", "<= 250 ms", "ms"),
    ("/metrics render, 1,000 targets", "<= 25 ms", "ms"),
    ("start-up to first request", "<= 100 ms", "ms"),
    ("check wall time, 1,000 targets at 200/s", "<= 5.2 s", "s"),
    (
        "simulator ceiling (32 clients, not calldrift)",
        "-",
        "answers/s",
    ),
];

/// One run of every ideal figure, in the order of [`IDEAL_ROWS`].
async fn ideal_run(long: Duration) -> [f64; 10] {
    let (window, rate) = rate_fidelity(long).await;
    let cpu = cpu_per_poll(long).await;
    let (rss10k, render10k) = memory_and_render(10_000, 5).await;
    let render1k = memory_and_render(1_000, 5).await.1;
    let startup = median(vec![
        startup_to_first_request().await,
        startup_to_first_request().await,
        startup_to_first_request().await,
    ]);
    let check = check_wall_time().await;
    let ceiling = simulator_ceiling(Duration::from_secs(3)).await;
    let share = rate / f64::from(LIMIT) * 100.0;
    [
        window, rate, share, cpu, rss10k, render10k, render1k, startup, check, ceiling,
    ]
}

/// The ideal figures (plain HTTP on loopback, answers at once), `runs` times each.
async fn ideal(runs: usize, long: Duration) {
    let mut measured = Vec::new();
    for run in 0..runs {
        eprintln!("run {}/{runs}", run + 1);
        measured.push(ideal_run(long).await);
    }
    println!(
        "Ideal case: plain HTTP on loopback, answers at once; rates over {} s",
        long.as_secs()
    );
    println!("| figure | target | median of {runs} | runs |");
    println!("|---|---|---|---|");
    for (i, (name, target, unit)) in IDEAL_ROWS.iter().enumerate() {
        let values: Vec<f64> = measured.iter().map(|run| run[i]).collect();
        let shown: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
        println!(
            "| {name} | {target} | {:.1} {unit} | {} |",
            median(values),
            shown.join(", ")
        );
    }
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
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    runtime.block_on(async {
        match only.as_str() {
            "cpu" => {
                // One figure, for iterating on it: `BENCH_ONLY=cpu cargo bench --bench daemon`.
                let mut cpu = Vec::new();
                for _ in 0..runs {
                    cpu.push(cpu_per_poll(long).await);
                }
                let shown: Vec<String> = cpu.iter().map(|v| format!("{v:.1}")).collect();
                println!(
                    "CPU per completed poll at 200 polls/s: median {:.1} us ({})",
                    median(cpu),
                    shown.join(", ")
                );
            }
            "memory" => {
                // RSS alone, for chasing a change in it: `BENCH_ONLY=memory`.
                let mut rss = Vec::new();
                for _ in 0..runs {
                    rss.push(memory_and_render(10_000, 1).await.0);
                }
                let shown: Vec<String> = rss.iter().map(|v| format!("{v:.1}")).collect();
                println!(
                    "RSS with 10,000 targets after a full round: median {:.1} MiB ({})",
                    median(rss),
                    shown.join(", ")
                );
            }
            "ideal" => ideal(runs, long).await,
            "realistic" => realistic::realistic(runs, long, false).await,
            "realistic-cpu" => realistic::realistic(runs, long, true).await,
            _ => {
                ideal(runs, long).await;
                realistic::realistic(runs, long, false).await;
            }
        }
    });
}
