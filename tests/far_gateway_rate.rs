//! The full rate limit against a far gateway, in a test binary of its own: cargo runs
//! test binaries one after another, so no other test's TLS handshakes or daemons compete
//! for the two cores while the 1-second windows are measured.

mod common;

use std::time::Duration;

use calldrift::sim::{Distribution, Latency, Scenario};
use common::*;

/// With answers 250 ms ± 50 ms away and the default `poll:` settings (only the interval
/// shortened so demand exceeds the limit), the daemon keeps the rate at the limit: the
/// in-flight bound follows rate × timeout. A fixed bound of 16 held it at 16 / 0.25 s =
/// 64 calls/s.
#[tokio::test]
async fn the_full_rate_holds_with_the_gateway_far_away_and_default_settings() {
    const LIMIT: u64 = 200;
    // 500 targets every 2 s: 250 calls/s wanted, 200 allowed.
    let apps = 500;
    let sim = Sim::start_with(Scenario {
        apps: (1..=apps).map(|id| app(id, clean())).collect(),
        latency: Some(Latency {
            fixed: Duration::from_millis(250),
            jitter: Duration::from_millis(50),
            distribution: Distribution::Uniform,
        }),
        ..Scenario::default()
    })
    .await;
    let names: Vec<String> = (1..=apps)
        .map(|id| app_yaml(&format!("a{id}"), id, ""))
        .collect();
    let d = Daemon::start(&config_yaml(&sim, "poll:\n  interval: 2s", &names)).await;
    // Past the start, measure the rate over a few seconds.
    wait_until(Duration::from_secs(20), "the first 400 calls", || async {
        sim.stats().requests_total >= 400
    })
    .await;
    let (before, started) = (sim.stats().requests_total, std::time::Instant::now());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stats = sim.stats();
    let rate = (stats.requests_total - before) as f64 / started.elapsed().as_secs_f64();
    assert!(
        rate >= 0.9 * LIMIT as f64,
        "{rate:.1} calls/s at a limit of {LIMIT} with answers 250 ms away"
    );
    // The limiter keeps sends to `LIMIT` in any 1.01 s (its unit tests show that on a
    // controlled clock); what the simulator reads trails the sends by the time the two
    // processes wait for a core, so the window asserted here is 20 ms shorter.
    assert!(
        stats.max_requests_in_any_980ms <= LIMIT,
        "{} calls within 980 ms ({} within one second)",
        stats.max_requests_in_any_980ms,
        stats.max_requests_in_any_second
    );
    d.stop().await;
}
