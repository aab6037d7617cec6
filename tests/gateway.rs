//! The daemon against a gateway as users meet it: over HTTPS with a private CA, answers
//! 100 ms away, and load balancers that close keep-alive connections after a few answers
//! (saying so or not) or when idle. No poll may fail for any of that.

mod common;

use std::time::Duration;

use calldrift::sim::{Connections, Distribution, Latency, Scenario, SimStats};
use common::*;

/// Targets per daemon: several, so connections are shared and reused between them.
const APPS: u64 = 4;
/// No poll-level retry: a connection closed under a poll must be handled below it.
const POLL: &str = "poll:\n  interval: 200ms\n  timeout: 2s\n  retries: 0\n";

fn scenario(tls: bool) -> Scenario {
    Scenario {
        apps: (1..=APPS).map(|id| app(id, clean())).collect(),
        tls: tls.then(|| calldrift::sim::TlsSettings {
            generate: true,
            ..Default::default()
        }),
        ..Scenario::default()
    }
}

/// `ca_file: PATH` naming the simulator's CA, when it has one.
fn ca_setting(sim: &Sim) -> String {
    sim.ca_file()
        .map(|p| format!("ca_file: {}\n", p.display()))
        .unwrap_or_default()
}

fn apps_yaml() -> Vec<String> {
    (1..=APPS)
        .map(|id| app_yaml(&format!("a{id}"), id, ""))
        .collect()
}

/// The sum of every series of `name` (0 when there is none yet).
fn total(m: &Metrics, name: &str) -> f64 {
    m.0.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Every value of the series of `name`.
fn values(m: &Metrics, name: &str) -> Vec<f64> {
    m.0.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse().ok())
        .collect()
}

async fn wait_ready(d: &Daemon) {
    wait_until(Duration::from_secs(10), "every target polled", || async {
        get(&d.url("/-/ready")).await.0 == 200
    })
    .await;
}

/// Runs a daemon with `poll` settings against `sim` until the simulator answered
/// `requests` requests, sampling all along that every target stays up; then checks that
/// no request failed.
async fn poll_without_failure(sim: &Sim, poll: &str, requests: u64) -> SimStats {
    let settings = format!("{poll}{}", ca_setting(sim));
    let d = Daemon::start(&config_yaml(sim, &settings, &apps_yaml())).await;
    wait_ready(&d).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut samples = 0;
    while sim.stats().requests_total < requests {
        let m = d.scrape().await;
        if values(&m, "calldrift_up") != vec![1.0; APPS as usize] {
            panic!("a target went down:\n{}\n{}", d.targets().await, m.0);
        }
        samples += 1;
        assert!(std::time::Instant::now() < deadline, "too few polls");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let m = d.scrape().await;
    assert_eq!(
        total(&m, "calldrift_api_request_failures_total"),
        0.0,
        "{}",
        m.0
    );
    assert!(total(&m, "calldrift_api_requests_total") >= requests as f64);
    assert!(samples >= 5, "calldrift_up sampled {samples} times only");
    d.stop().await;
    sim.assert_no_malformed();
    sim.stats()
}

/// [`poll_without_failure`] over plain HTTP and over HTTPS at once.
async fn both_schemes(connections: Connections, poll: &str, requests: u64) -> [SimStats; 2] {
    let start = |tls| {
        let mut scenario = scenario(tls);
        scenario.connections = connections;
        Sim::start_with(scenario)
    };
    let (plain, tls) = (start(false).await, start(true).await);
    let (plain_stats, tls_stats) = tokio::join!(
        poll_without_failure(&plain, poll, requests),
        poll_without_failure(&tls, poll, requests)
    );
    assert_eq!(plain_stats.tls_handshakes, 0);
    assert_eq!(
        tls_stats.tls_handshakes, tls_stats.connections_accepted,
        "every connection made its handshake"
    );
    [plain_stats, tls_stats]
}

#[tokio::test]
async fn https_with_the_generated_ca_polls_every_target_up() {
    let sim = Sim::start_with(scenario(true)).await;
    assert!(sim.base().starts_with("https://127.0.0.1:"));
    let settings = format!("{POLL}{}", ca_setting(&sim));
    let d = Daemon::start(&config_yaml(&sim, &settings, &apps_yaml())).await;
    wait_ready(&d).await;
    let m = d.scrape().await;
    assert_eq!(values(&m, "calldrift_up"), vec![1.0; APPS as usize]);
    let drift = values(&m, "calldrift_drift");
    assert!(
        !drift.is_empty() && drift.iter().all(|v| *v == 0.0),
        "{}",
        m.0
    );
    assert_eq!(total(&m, "calldrift_api_request_failures_total"), 0.0);
    assert!(sim.stats().tls_handshakes >= 1);
    sim.assert_no_malformed();
}

#[tokio::test]
async fn without_the_ca_the_gateway_certificate_is_refused() {
    let sim = Sim::start_with(scenario(true)).await;
    let d = Daemon::start(&config_yaml(&sim, POLL, &apps_yaml())).await;
    wait_ready(&d).await;
    let m = d.scrape().await;
    assert_eq!(values(&m, "calldrift_up"), vec![0.0; APPS as usize]);
    assert!(
        m.value(
            "calldrift_api_request_failures_total",
            &[("reason", "transport")]
        )
        .is_some_and(|n| n >= APPS as f64),
        "{}",
        m.0
    );
    let targets = d.targets().await;
    for target in targets["targets"].as_array().expect("targets") {
        assert_eq!(target["error_class"], "transport", "{target}");
        let error = target["error"].as_str().expect("error");
        assert!(error.contains("UnknownIssuer"), "{error}");
    }
    let stats = sim.stats();
    assert_eq!(stats.requests_total, 0, "no request went out unprotected");
    assert_eq!(stats.tls_handshakes, 0);
}

#[tokio::test]
async fn connections_closed_after_three_announced_answers_fail_no_poll() {
    let connections = Connections {
        close_after: Some(3),
        announce: true,
        idle_timeout: None,
    };
    for stats in both_schemes(connections, POLL, 40).await {
        // Each connection gave three answers at most, so the closes did happen.
        assert!(
            stats.connections_accepted * 3 >= stats.requests_total,
            "{stats:?}"
        );
    }
}

#[tokio::test]
async fn connections_closed_silently_after_three_answers_fail_no_poll() {
    let connections = Connections {
        close_after: Some(3),
        announce: false,
        idle_timeout: None,
    };
    for stats in both_schemes(connections, POLL, 40).await {
        // The fourth request on each connection met the close and was sent again on a
        // new one: three answers per connection at most.
        assert!(
            stats.connections_accepted * 3 >= stats.requests_total,
            "{stats:?}"
        );
    }
}

#[tokio::test]
async fn connections_closed_when_idle_between_polls_fail_no_poll() {
    let connections = Connections {
        close_after: None,
        announce: true,
        idle_timeout: Some(Duration::from_millis(40)),
    };
    // Polls go out in batches on an 80 ms grid (a fifth of the interval): the
    // connections idle past the timeout between batches, and a batch may meet a close.
    let poll = "poll:\n  interval: 400ms\n  timeout: 2s\n  retries: 0\n";
    for stats in both_schemes(connections, poll, 24).await {
        // Without closes a handful of connections would serve every poll.
        assert!(stats.connections_accepted >= 6, "{stats:?}");
    }
}

#[tokio::test]
async fn injected_latency_shows_in_the_request_duration_histogram() {
    let mut scenario = scenario(true);
    scenario.latency = Some(Latency {
        fixed: Duration::from_millis(100),
        jitter: Duration::from_millis(20),
        distribution: Distribution::Uniform,
    });
    // One app is near: its own latency replaces the global one.
    scenario.apps[3].latency = Some(Latency {
        fixed: Duration::ZERO,
        jitter: Duration::ZERO,
        distribution: Distribution::Uniform,
    });
    let sim = Sim::start_with(scenario).await;
    let yaml = format!(
        "{POLL}{}regions:\n  far: \"{base}\"\n  near: \"{base}\"\napps:\n{}{}",
        ca_setting(&sim),
        (1..APPS)
            .map(|id| app_yaml(&format!("a{id}"), id, "").replace("[sim]", "[far]"))
            .collect::<String>(),
        app_yaml("near", APPS, "").replace("[sim]", "[near]"),
        base = sim.base(),
    );
    let d = Daemon::start(&yaml).await;
    let histogram = |m: &Metrics, region: &str, part: &str| {
        m.value(
            &format!("calldrift_api_request_duration_seconds_{part}"),
            &[("region", region)],
        )
        .unwrap_or(0.0)
    };
    wait_until(Duration::from_secs(15), "enough requests", || async {
        let m = d.scrape().await;
        histogram(&m, "far", "count") >= 15.0 && histogram(&m, "near", "count") >= 5.0
    })
    .await;
    let m = d.scrape().await;
    let far_mean = histogram(&m, "far", "sum") / histogram(&m, "far", "count");
    let near_mean = histogram(&m, "near", "sum") / histogram(&m, "near", "count");
    assert!(far_mean >= 0.08, "far: {far_mean} s on average\n{}", m.0);
    // Every far answer waited 80 ms at least: none is in the 50 ms bucket.
    let fast_far = m.value(
        "calldrift_api_request_duration_seconds_bucket",
        &[("region", "far"), ("le", "0.05")],
    );
    assert_eq!(fast_far, Some(0.0), "{}", m.0);
    assert!(near_mean < far_mean, "near {near_mean} s, far {far_mean} s");
    assert_eq!(total(&m, "calldrift_api_request_failures_total"), 0.0);
    sim.assert_no_malformed();
}
