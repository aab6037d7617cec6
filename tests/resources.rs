//! Resource bounds: slow or flooding HTTP clients cannot starve polling or other
//! scrapers, idle connections are closed, oversized request heads are refused, and a
//! SIGKILL never leaves an unreadable state file.

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use calldrift::server::{HEADER_TIMEOUT, MAX_CONNECTIONS_PER_PEER};
use calldrift::sim::{Rotate, Scenario};
use common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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

    // Slowloris: 200 connections that each dribble a request head, one byte at a time,
    // from ten addresses other than the scraper's, so each stays under the per-address
    // bound and all 200 are held.
    let mut slow = Vec::new();
    for i in 0..200 {
        let from = format!("127.0.0.{}", 10 + i % 10);
        let mut stream = connect_from(&from, d.addr).await.expect("connect");
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

/// The soft limit on open files of this process, from `/proc/self/limits` (Linux).
fn open_files_soft_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// What happened to the flood's connections so far.
#[derive(Default)]
struct Flood {
    connected: AtomicUsize,
    closed_by_server: AtomicUsize,
}

/// Connects to `addr` and holds the connection until the server closes it or `until`;
/// with `trickle`, sends a request head one byte per second meanwhile.
async fn hold(addr: SocketAddr, trickle: bool, flood: Arc<Flood>, until: Instant) {
    let connect = tokio::time::timeout_at(until.into(), TcpStream::connect(addr));
    let Ok(Ok(stream)) = connect.await else {
        return;
    };
    flood.connected.fetch_add(1, Ordering::SeqCst);
    let (mut read, mut write) = stream.into_split();
    let watch = async move {
        let mut buf = [0u8; 256];
        while let Ok(n) = read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let dribble = async move {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for byte in head.iter().chain(std::iter::repeat(&b'a')) {
            if !trickle || write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = watch => { flood.closed_by_server.fetch_add(1, Ordering::SeqCst); }
        _ = dribble => {}
        _ = tokio::time::sleep_until(until.into()) => {}
    }
}

/// A connection to `to` from the loopback address `from` (all of 127.0.0.0/8 is
/// loopback on Linux).
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().expect("address"))?;
    socket.connect(to).await
}

/// `GET /metrics` over a connection from `from`; returns the status line.
async fn scrape_from(from: &str, to: SocketAddr) -> std::io::Result<String> {
    let mut stream = connect_from(from, to).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: calldrift\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_from_one_address_do_not_starve_another_scraper() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let d = Daemon::start(&config_yaml(&sim, "", &[app_yaml("a", 1, "")])).await;
    assert_eq!(get(&d.url("/-/healthy")).await.0, 200);
    // This process holds both ends (the flood's sockets and the daemon's accepted ones),
    // so with a low soft limit on open files the flood is made smaller to fit.
    let flood = open_files_soft_limit().map_or(1000, |soft| 1000.min(soft.saturating_sub(256) / 2));
    if flood < 1000 {
        eprintln!("open-file soft limit is low: flooding with {flood} connections, not 1000");
    }
    // Half of them idle, half dribbling a request head one byte per second, all from
    // 127.0.0.1; every task ends by itself within 20 s and is aborted below anyway.
    let state = Arc::new(Flood::default());
    let until = Instant::now() + Duration::from_secs(20);
    // Opened in batches that fit the listen backlog (128): a burst beyond it makes the
    // kernel answer with SYN cookies, and an idle client whose final ACK was then dropped
    // believes it is connected while the server never hears of it. The old server stopped
    // accepting once its slots were taken, so a batch that does not connect within 1 s
    // ends the flood early.
    let mut held = Vec::with_capacity(flood);
    for i in 0..flood {
        held.push(tokio::spawn(hold(d.addr, i % 2 == 1, state.clone(), until)));
        if (i + 1) % 64 == 0 || i + 1 == flood {
            let batch = tokio::time::timeout(Duration::from_secs(1), async {
                while state.connected.load(Ordering::SeqCst) <= i {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            if batch.await.is_err() {
                break;
            }
        }
    }
    let connected = state.connected.load(Ordering::SeqCst);

    // A scraper on another address is answered at once.
    let started = Instant::now();
    let answer =
        tokio::time::timeout(Duration::from_secs(1), scrape_from("127.0.0.2", d.addr)).await;
    let elapsed = started.elapsed();
    // All but a peer's share of the flood was refused at once, not queued or held.
    let refused_quickly = tokio::time::timeout(Duration::from_secs(2), async {
        while state.closed_by_server.load(Ordering::SeqCst) + MAX_CONNECTIONS_PER_PEER < flood {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    let closed = state.closed_by_server.load(Ordering::SeqCst);
    for task in &held {
        task.abort();
    }
    let status = answer
        .unwrap_or_else(|_| panic!("no answer within 1 s; {connected} of {flood} connections held"))
        .expect("scrape from 127.0.0.2");
    assert_eq!(status, "HTTP/1.1 200 OK", "after {elapsed:?}");
    assert!(
        refused_quickly.is_ok(),
        "only {closed} of {flood} flood connections ({connected} connected) were closed by the server"
    );
}

/// How long the server takes to close `stream`, reading (and dropping) what it sends.
async fn time_to_close(mut stream: impl AsyncRead + Unpin, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_after_the_header_timeout() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let d = Daemon::start(&config_yaml(&sim, "", &[app_yaml("a", 1, "")])).await;
    let limit = HEADER_TIMEOUT + Duration::from_secs(1);
    // Silent from the start.
    let silent = TcpStream::connect(d.addr).await.expect("connect");
    // Kept alive after an answer, then silent.
    let mut kept = TcpStream::connect(d.addr).await.expect("connect");
    kept.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut answer = Vec::new();
    while !answer.ends_with(b"Healthy\n") {
        let mut buf = [0u8; 256];
        let n = kept.read(&mut buf).await.expect("answer");
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&buf[..n]);
    }
    // Sending a request head one byte per second.
    let (slow, mut slow_write) = TcpStream::connect(d.addr)
        .await
        .expect("connect")
        .into_split();
    let dribble = tokio::spawn(async move {
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa" {
            if slow_write.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let within = limit + Duration::from_secs(5);
    let closes = tokio::join!(
        time_to_close(silent, within),
        time_to_close(kept, within),
        time_to_close(slow, within),
    );
    dribble.abort();
    let closes = [
        ("a silent connection", closes.0),
        ("an idle kept-alive connection", closes.1),
        ("a slow request head", closes.2),
    ];
    for (what, closed) in closes {
        let closed = closed.unwrap_or_else(|| panic!("{what} was still open after {within:?}"));
        assert!(
            closed <= limit,
            "{what} was closed after {closed:?}, not within {limit:?}"
        );
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
        ..Scenario::default()
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
