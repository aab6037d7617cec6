//! The realistic figures: HTTPS with the simulator's generated CA, answers 50 ms or
//! 250 ms away, and load-balancer-like connection closing.

use std::time::Duration;

use calldrift::sim::Connections;

use crate::harness::{Distance, KEPT_OPEN, LIMIT, Steady, median, steady};

/// The realistic conditions, each measured once per run; `cpu_only` keeps the first.
fn realistic_cases(cpu_only: bool) -> Vec<(&'static str, Distance, u64)> {
    let near = Distance::https(50, 20);
    let mut cases = vec![(
        "HTTPS, 50 ms ± 20 ms, kept open, 200 targets",
        near,
        u64::from(LIMIT),
    )];
    if cpu_only {
        return cases;
    }
    cases.push((
        "HTTPS, 250 ms ± 50 ms, kept open, 400 targets (2× demand)",
        Distance::https(250, 50),
        2 * u64::from(LIMIT),
    ));
    // A balancer ending each connection after 100 answers, saying so.
    cases.push((
        "HTTPS, 50 ms ± 20 ms, close_after 100, 200 targets",
        near.closing(Connections {
            close_after: Some(100),
            ..KEPT_OPEN
        }),
        u64::from(LIMIT),
    ));
    // Shorter than the 60-100 ms a connection rests between two 128 ms dispatch steps:
    // every poll on a new connection, a full handshake each.
    cases.push((
        "HTTPS, 50 ms ± 20 ms, idle_timeout 50 ms, 200 targets",
        near.closing(Connections {
            idle_timeout: Some(Duration::from_millis(50)),
            ..KEPT_OPEN
        }),
        u64::from(LIMIT),
    ));
    cases
}

/// Measures every realistic case `runs` times and prints one table.
pub(crate) async fn realistic(runs: usize, long: Duration, cpu_only: bool) {
    let cases = realistic_cases(cpu_only);
    let mut measured: Vec<Vec<Steady>> = cases.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        for (i, (name, distance, targets)) in cases.iter().enumerate() {
            eprintln!("realistic run {}/{runs}: {name}", run + 1);
            let warmup = Duration::from_secs(3);
            measured[i].push(steady(*distance, *targets, warmup, long).await);
        }
    }
    let transport = if cfg!(feature = "reqwest-transport") {
        "reqwest"
    } else {
        "calldrift's pool"
    };
    println!(
        "Realistic case, HTTP client: {transport}, default poll: settings, interval 1 s, measured over {} s",
        long.as_secs()
    );
    println!("| conditions | figure | target | median of {runs} | runs |");
    println!("|---|---|---|---|---|");
    for (i, (name, _, targets)) in cases.iter().enumerate() {
        let runs = &measured[i];
        let row = |figure: &str, target: &str, value: fn(&Steady) -> f64, unit: &str| {
            let values: Vec<f64> = runs.iter().map(value).collect();
            let shown: Vec<String> = values.iter().map(|v| format!("{v:.1}")).collect();
            println!(
                "| {name} | {figure} | {target} | {:.1} {unit} | {} |",
                median(values),
                shown.join(", ")
            );
        };
        let demand_over_limit = *targets > u64::from(LIMIT);
        if demand_over_limit {
            row("largest 1-s window", "<= 200", |r| r.max_window, "calls");
            row("achieved rate", ">= 196/s (98 %)", |r| r.rate, "calls/s");
        } else {
            row(
                "polls per second (demand 200/s)",
                "-",
                |r| r.rate,
                "polls/s",
            );
        }
        let cpu_target = if i == 0 { "<= 100 us" } else { "-" };
        row("CPU per completed poll", cpu_target, |r| r.cpu_us, "us");
        row(
            "connections opened per 1,000 polls",
            "-",
            |r| r.connections_per_1000,
            "",
        );
        row(
            "TLS handshakes per 1,000 polls",
            "-",
            |r| r.handshakes_per_1000,
            "",
        );
        row("failed requests (whole run)", "0", |r| r.failures, "");
    }
}
