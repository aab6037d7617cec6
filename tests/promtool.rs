//! Prometheus' own linter on calldrift's artifacts: the alert rules and their unit tests
//! (as deploy/verify runs them), and a real scrape of a running daemon through
//! `promtool check metrics`.
//!
//! Without `promtool` on PATH these tests print a SKIP note and pass, unless `CI` is set:
//! there a missing promtool is a failure, so CI cannot go green without checking.
//! (`apt-get install --no-install-recommends prometheus` provides it.)

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use calldrift::sim::{FaultKind, FaultRule};
use common::*;

/// `Some(path)` of promtool; `None` when it is missing and skipping is allowed.
fn promtool(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
        assert!(
            !ci,
            "{test}: promtool is not on PATH and CI is set; install it (apt-get install --no-install-recommends prometheus)"
        );
        println!(
            "SKIP: {test}: promtool is not on PATH (apt-get install --no-install-recommends prometheus)"
        );
    }
    found
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool("alert rules") else {
        return;
    };
    let rules = "deploy/prometheus/calldrift-alerts.yml";
    let check = Command::new(&promtool)
        .args(["check", "rules", rules])
        .current_dir(repo())
        .output()
        .expect("run promtool check rules");
    assert!(
        check.status.success(),
        "promtool check rules {rules}:\n{}",
        text(&check)
    );

    let mut tests: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/prometheus/tests"))
        .expect("deploy/prometheus/tests")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yml"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no rule unit tests found");
    let run = Command::new(&promtool)
        .args(["test", "rules"])
        .args(&tests)
        .current_dir(repo())
        .output()
        .expect("run promtool test rules");
    assert!(
        run.status.success(),
        "promtool test rules {tests:?}:\n{}",
        text(&run)
    );
}

#[tokio::test]
async fn a_real_scrape_passes_promtool_check_metrics() {
    let Some(promtool) = promtool("check metrics") else {
        return;
    };
    let mut wrong_key = app(5, clean());
    wrong_key.key = key_for(55);
    let sim = Sim::start(vec![
        app(1, clean()),
        app(
            2,
            Some(calldrift::sim::CallbackConfig::new(
                "http://hooks.example.com/cb",
                &[START, MEMBER],
            )),
        ),
        app(3, None),
        app(4, clean()),
        wrong_key,
    ])
    .await;
    sim.set_faults(vec![FaultRule {
        sdkappid: 4,
        kind: FaultKind::HttpStatus { status: 502 },
        count: None,
    }]);
    let yaml = config_yaml(
        &sim,
        // Start times spread over the interval: short, so all are polled soon.
        "poll:\n  interval: 2s\n  timeout: 2s\n  retries: 0",
        &[
            app_yaml("clean", 1, ""),
            app_yaml("drifted", 2, ""),
            app_yaml("absent", 3, ""),
            app_yaml("failing", 4, ""),
            app_yaml("wrong-key", 5, ""),
        ],
    );
    let daemon = Daemon::start(&yaml).await;
    let ready = daemon.url("/-/ready");
    wait_until(Duration::from_secs(15), "every target polled", || async {
        get(&ready).await.0 == 200
    })
    .await;
    let (status, body) = get(&daemon.url("/metrics")).await;
    assert_eq!(status, 200);

    // The scrape is the real thing: every kind of target shows.
    let metrics = Metrics(body.clone());
    assert_eq!(metrics.target("calldrift_up", "clean", &[]), Some(1.0));
    assert_eq!(
        metrics.target("calldrift_drift", "drifted", &[("check", "url_scheme")]),
        Some(1.0)
    );
    assert_eq!(
        metrics.target("calldrift_callback_config_present", "absent", &[]),
        Some(0.0)
    );
    assert_eq!(metrics.target("calldrift_up", "failing", &[]), Some(0.0));
    assert_eq!(metrics.target("calldrift_up", "wrong-key", &[]), Some(0.0));
    assert!(
        body.contains("calldrift_api_request_failures_total{"),
        "{body}"
    );
    assert!(body.contains("process_cpu_seconds_total"), "{body}");

    assert_promtool_accepts(&promtool, &body);
}

/// `promtool check metrics` on `body` succeeds without a complaint.
fn assert_promtool_accepts(promtool: &Path, body: &str) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write the scrape to promtool");
    let output = child.wait_with_output().expect("promtool check metrics");
    let complaints = text(&output);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "promtool check metrics complains ({}):\n{complaints}",
        output.status
    );
}

#[tokio::test]
async fn a_scrape_with_remediation_on_passes_promtool_check_metrics() {
    let Some(promtool) = promtool("check metrics with remediation") else {
        return;
    };
    let sim = Sim::start(vec![app(
        1,
        Some(calldrift::sim::CallbackConfig::new(GOOD_URL, &[START])),
    )])
    .await;
    let expect = format!("    expect:\n      url: {GOOD_URL}\n      commands: [{START}, {END}]\n");
    let yaml = config_yaml(
        &sim,
        "poll:\n  interval: 200ms\n  timeout: 2s\n  retries: 0\nremediate:\n  mode: dry-run\n  after: 1",
        &[app_yaml("trial", 1, &expect)],
    );
    let daemon = Daemon::start(&yaml).await;
    wait_until(Duration::from_secs(15), "a dry-run decision", || async {
        daemon.scrape().await.target(
            "calldrift_remediations_total",
            "trial",
            &[("result", "dry_run")],
        ) == Some(1.0)
    })
    .await;
    let body = daemon.scrape().await.0;
    assert!(body.contains("calldrift_remediation_blocked{"), "{body}");
    assert!(body.contains("calldrift_remediation_paused 0"), "{body}");
    assert_promtool_accepts(&promtool, &body);
}
