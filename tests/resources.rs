//! Resource bounds: slow or flooding HTTP clients cannot starve polling, oversized request
//! heads are refused, and a SIGKILL never leaves an unreadable state file.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calldrift::sim::{Rotate, Scenario};
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Requests the simulator saw during `window`.
async fn requests_during(sim: &Sim, window: Duration) -> u64 {
    let before = sim.stats().requests_total;
    tokio::time::sleep(window).await;
    sim.stats().requests_total - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_slow_clients_do_not_delay_polling() {
    let sim = Sim::start((1..=5).map(|id| app(id, clean())).collect()).await;
    let apps: Vec<String> = (1..=5)
        .map(|id| app_yaml(&format!("a{id}"), id, ""))
        .collect();
    let d = Daemon::start(&config_yaml(&sim, "poll:\n  interval: 100ms", &apps)).await;
    wait_until(Duration::from_secs(5), "ready", || async {
        get(&d.url("/-/ready")).await.0 == 200
    })
    .await;
    let window = Duration::from_secs(2);
    let baseline = requests_during(&sim, window).await;

    // Slowloris: 200 connections that each dribble a request head, one byte at a time.
    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(d.addr).await.expect("connect");
        slow.push(tokio::spawn(async move {
            let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            let _ = stream.write_all(head).await;
            for _ in 0..40 {
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    let under_load = requests_during(&sim, window).await;
    assert!(
        under_load as f64 >= 0.9 * baseline as f64,
        "polls in {window:?}: {baseline} before, {under_load} with 200 slow clients"
    );
    // A well-behaved scraper still gets its answer promptly.
    let started = Instant::now();
    let (status, _) = get(&d.url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "scrape took {:?}",
        started.elapsed()
    );
    for task in slow {
        task.abort();
    }
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let d = Daemon::start(&config_yaml(&sim, "", &[app_yaml("a", 1, "")])).await;
    let huge = "x".repeat(64 * 1024);
    let response = http()
        .get(d.url("/metrics"))
        .header("X-Huge", huge)
        .send()
        .await;
    // Either a 431 or a closed connection: refused all the same.
    if let Ok(r) = response {
        assert_eq!(r.status().as_u16(), 431, "header too large");
    }
    assert_eq!(get(&d.url("/-/healthy")).await.0, 200, "still serving");
}

#[tokio::test]
async fn sigkill_during_heavy_change_activity_never_leaves_an_unreadable_state_file() {
    // Twenty apps whose configuration changes every 50 ms, polled every 50 ms: the state
    // file is rewritten constantly.
    let rotate = || Rotate {
        every: Duration::from_millis(50),
        configs: vec![
            clean(),
            None,
            Some(calldrift::sim::CallbackConfig::new("http://h/cb", &[START])),
        ],
    };
    let apps = (1..=20)
        .map(|id| calldrift::sim::SimApp {
            rotate: Some(rotate()),
            callback: None,
            ..app(id, None)
        })
        .collect();
    let sim = Sim::start_with(Scenario {
        apps,
        faults: Vec::new(),
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let app_list: Vec<String> = (1..=20)
        .map(|id| app_yaml(&format!("a{id}"), id, ""))
        .collect();
    let yaml = config_yaml(
        &sim,
        &format!(
            "listen: \"127.0.0.1:0\"\nstate_file: {}\npoll:\n  interval: 50ms",
            state.display()
        ),
        &app_list,
    );
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, yaml).expect("write");

    let mut kills = 0;
    for round in 0..6u64 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_calldrift"))
            .args([
                "run",
                "-c",
                config.to_str().expect("utf8"),
                "--log-level",
                "error",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // Let it poll and write for a varying while, then kill it without warning.
        tokio::time::sleep(Duration::from_millis(400 + 97 * round)).await;
        let status = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        kills += 1;
        let loaded = calldrift::state::load(&state, 0).expect("state readable");
        assert!(
            loaded.recovered.is_none(),
            "round {round}: state file was corrupt"
        );
        assert!(
            !loaded.targets.is_empty(),
            "round {round}: state file holds the targets"
        );
        let leftovers = std::fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .count();
        assert!(
            leftovers <= 1,
            "temporary files do not pile up: {leftovers}"
        );
    }
    assert_eq!(kills, 6);
    let changes: u64 = calldrift::state::load(&state, 0)
        .expect("state")
        .targets
        .values()
        .map(|t| t.changes)
        .sum();
    assert!(
        changes > 20,
        "the test did produce heavy change activity ({changes} changes)"
    );
}
