//! The daemon against the simulated Chat API, over HTTP on loopback ports.

mod common;

use std::sync::Arc;
use std::time::Duration;

use calldrift::clock::SystemClock;
use calldrift::daemon;
use tokio_util::sync::CancellationToken;

use calldrift::sim::{CallbackConfig, FaultKind, FaultRule};
use common::*;

const FAST: &str = "poll:\n  interval: 500ms\n  timeout: 1s\n  retries: 0";

fn drift(m: &Metrics, app: &str, check: &str) -> Option<f64> {
    m.target("calldrift_drift", app, &[("check", check)])
}

async fn wait_ready(d: &Daemon) {
    wait_until(Duration::from_secs(10), "every target polled", || async {
        get(&d.url("/-/ready")).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn the_first_round_exports_up_drift_and_callback_series() {
    let sim = Sim::start(vec![
        app(1, clean()),
        app(
            2,
            Some(CallbackConfig::new(
                "http://hooks.example.com/cb",
                &[START, END, MEMBER],
            )),
        ),
        app(3, None),
    ])
    .await;
    let yaml = config_yaml(
        &sim,
        FAST,
        &[
            app_yaml("clean", 1, ""),
            app_yaml("drifted", 2, ""),
            app_yaml("missing", 3, ""),
        ],
    );
    let d = Daemon::start(&yaml).await;
    // Series exist from start-up, before any poll.
    let early = d.scrape().await;
    assert_eq!(early.value("calldrift_targets", &[]), Some(3.0));
    for app in ["clean", "drifted", "missing"] {
        assert!(
            early.target("calldrift_up", app, &[]).is_some(),
            "{app} has calldrift_up from the start"
        );
        assert!(drift(&early, app, "config_missing").is_some());
    }
    wait_ready(&d).await;
    let m = d.scrape().await;
    assert_eq!(m.target("calldrift_up", "clean", &[]), Some(1.0));
    assert_eq!(
        m.target("calldrift_callback_config_present", "clean", &[]),
        Some(1.0)
    );
    assert_eq!(
        m.target("calldrift_callback_url_https", "clean", &[]),
        Some(1.0)
    );
    assert_eq!(
        m.target(
            "calldrift_callback_command_enabled",
            "clean",
            &[("command", END)]
        ),
        Some(1.0)
    );
    for check in [
        "config_missing",
        "config_unexpected",
        "url_scheme",
        "url_mismatch",
        "command_missing",
        "command_unexpected",
    ] {
        assert_eq!(drift(&m, "clean", check), Some(0.0), "clean {check}");
    }
    assert_eq!(drift(&m, "drifted", "url_scheme"), Some(1.0));
    assert_eq!(drift(&m, "drifted", "command_unexpected"), Some(1.0));
    assert_eq!(
        m.target("calldrift_callback_url_https", "drifted", &[]),
        Some(0.0)
    );
    assert_eq!(
        m.target(
            "calldrift_callback_command_enabled",
            "drifted",
            &[("command", MEMBER)]
        ),
        Some(1.0)
    );
    assert_eq!(drift(&m, "missing", "config_missing"), Some(1.0));
    assert_eq!(
        m.target("calldrift_callback_config_present", "missing", &[]),
        Some(0.0)
    );
    assert_eq!(
        m.target("calldrift_api_error_code", "missing", &[]),
        Some(100301.0)
    );
    assert_eq!(m.target("calldrift_up", "missing", &[]), Some(1.0));
    assert!(
        m.target("calldrift_last_success_timestamp_seconds", "missing", &[])
            .is_some_and(|t| t > 1.7e9)
    );
    assert!(
        m.value("calldrift_api_requests_total", &[("region", "sim")])
            .is_some_and(|n| n >= 3.0)
    );
    assert!(m.value("process_resident_memory_bytes", &[]).is_some());
    assert!(
        m.0.contains("# HELP calldrift_up 1 if the last poll"),
        "HELP texts present"
    );

    let json = d.targets().await;
    assert_eq!(
        json["summary"],
        serde_json::json!({"targets": 3, "clean": 1, "drifted": 2, "errors": 0})
    );
    let (status, page) = get(&d.url("/")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("drifted") && page.contains("url_scheme: expected https, actual http"),
        "{page}"
    );
    assert_eq!(get(&d.url("/-/healthy")).await.0, 200);
    assert_eq!(get(&d.url("/nope")).await.0, 404);
    sim.assert_no_malformed();
}

#[tokio::test]
async fn a_change_is_seen_within_one_interval() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let d = Daemon::start(&config_yaml(&sim, FAST, &[app_yaml("a", 1, "")])).await;
    wait_ready(&d).await;
    let before = d.scrape().await;
    assert_eq!(
        before.target("calldrift_callback_config_changes_total", "a", &[]),
        Some(0.0)
    );
    assert_eq!(
        before.target(
            "calldrift_callback_config_last_change_timestamp_seconds",
            "a",
            &[]
        ),
        Some(0.0)
    );
    let fingerprint = before
        .target("calldrift_callback_config_fingerprint", "a", &[])
        .expect("fingerprint");

    sim.set_app(1, Some(CallbackConfig::new(GOOD_URL, &[START])));
    let changed_at = std::time::Instant::now();
    wait_until(Duration::from_secs(5), "the change counted", || async {
        d.scrape()
            .await
            .target("calldrift_callback_config_changes_total", "a", &[])
            == Some(1.0)
    })
    .await;
    assert!(
        changed_at.elapsed() < Duration::from_millis(1500),
        "seen within about one interval: {:?}",
        changed_at.elapsed()
    );
    let after = d.scrape().await;
    assert_ne!(
        after.target("calldrift_callback_config_fingerprint", "a", &[]),
        Some(fingerprint)
    );
    assert!(
        after
            .target(
                "calldrift_callback_config_last_change_timestamp_seconds",
                "a",
                &[]
            )
            .is_some_and(|t| t > 1.7e9)
    );
    assert_eq!(drift(&after, "a", "command_missing"), Some(1.0));

    // One transition of each kind, newest first: the change and the drift it brought.
    let (_, body) = get(&d.url("/api/v1/transitions")).await;
    let transitions: serde_json::Value = serde_json::from_str(&body).expect("json");
    let kinds: Vec<&str> = transitions
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "changed").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "drift_appeared").count(),
        1,
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_failing_poll_sets_up_to_zero_and_keeps_the_findings() {
    let sim = Sim::start(vec![app(1, None), app(2, clean())]).await;
    let d = Daemon::start(&config_yaml(
        &sim,
        FAST,
        &[app_yaml("missing", 1, ""), app_yaml("healthy", 2, "")],
    ))
    .await;
    wait_ready(&d).await;
    assert_eq!(
        drift(&d.scrape().await, "missing", "config_missing"),
        Some(1.0)
    );

    sim.set_faults(vec![FaultRule {
        sdkappid: 1,
        kind: FaultKind::HttpStatus { status: 502 },
        count: None,
    }]);
    wait_until(Duration::from_secs(5), "target down", || async {
        d.scrape().await.target("calldrift_up", "missing", &[]) == Some(0.0)
    })
    .await;
    let m = d.scrape().await;
    assert_eq!(
        drift(&m, "missing", "config_missing"),
        Some(1.0),
        "findings survive a failed poll"
    );
    assert_eq!(
        m.target("calldrift_callback_config_present", "missing", &[]),
        Some(0.0)
    );
    assert_eq!(
        m.target("calldrift_api_error_code", "missing", &[]),
        Some(-1.0)
    );
    assert!(
        m.value(
            "calldrift_api_request_failures_total",
            &[("reason", "http_status")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(m.target("calldrift_up", "healthy", &[]), Some(1.0));
    let json = d.targets().await;
    let missing = json["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["app"] == "missing")
        .expect("missing")
        .clone();
    assert_eq!(missing["status"], "error");
    assert_eq!(missing["findings"][0]["check"], "config_missing");

    sim.set_faults(Vec::new());
    wait_until(Duration::from_secs(5), "target back up", || async {
        d.scrape().await.target("calldrift_up", "missing", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(
        drift(&d.scrape().await, "missing", "config_missing"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_hanging_target_skips_ticks_and_does_not_hold_up_others() {
    let sim = Sim::start(vec![app(1, clean()), app(2, clean())]).await;
    sim.set_faults(vec![FaultRule {
        sdkappid: 1,
        kind: FaultKind::Hang,
        count: None,
    }]);
    let yaml = config_yaml(
        &sim,
        "poll:\n  interval: 200ms\n  timeout: 1s\n  retries: 0",
        &[app_yaml("hangs", 1, ""), app_yaml("fine", 2, "")],
    );
    let d = Daemon::start(&yaml).await;
    wait_until(
        Duration::from_secs(5),
        "skips counted and the hung poll timed out",
        || async {
            let m = d.scrape().await;
            m.target("calldrift_polls_skipped_total", "hangs", &[])
                .is_some_and(|n| n >= 2.0)
                && m.target("calldrift_up", "fine", &[]) == Some(1.0)
        },
    )
    .await;
    wait_until(Duration::from_secs(5), "timeout counted", || async {
        d.scrape()
            .await
            .value(
                "calldrift_api_request_failures_total",
                &[("reason", "timeout")],
            )
            .is_some_and(|n| n >= 1.0)
    })
    .await;
    let m = d.scrape().await;
    assert_eq!(
        m.target("calldrift_polls_skipped_total", "fine", &[]),
        Some(0.0)
    );
    assert_eq!(m.target("calldrift_up", "hangs", &[]), Some(0.0));
}

#[tokio::test]
async fn the_rate_limit_holds_when_targets_need_more_than_it_allows() {
    const LIMIT: u32 = 20;
    let sdkappids: Vec<u64> = (1..=60).collect();
    let sim = Sim::start(sdkappids.iter().map(|id| app(*id, clean())).collect()).await;
    let apps: Vec<String> = sdkappids
        .iter()
        .map(|id| app_yaml(&format!("app{id}"), *id, ""))
        .collect();
    let settings =
        format!("poll:\n  interval: 1s\n  timeout: 2s\nrate_limit:\n  per_second: {LIMIT}");
    let d = Daemon::start(&config_yaml(&sim, &settings, &apps)).await;
    // Let the limiter's first cell pass, then measure a steady stretch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = sim.stats().requests_total;
    let measured = Duration::from_secs(3);
    tokio::time::sleep(measured).await;
    let sent = sim.stats().requests_total - start;
    let stats = sim.stats();
    assert!(
        stats.max_requests_in_any_second <= u64::from(LIMIT),
        "largest 1-second window {} > {LIMIT}",
        stats.max_requests_in_any_second
    );
    let achieved = sent as f64 / measured.as_secs_f64();
    assert!(
        achieved >= 0.95 * f64::from(LIMIT),
        "achieved {achieved:.1}/s of {LIMIT}/s"
    );
    let m = d.scrape().await;
    assert!(
        m.value("calldrift_schedule_lag_seconds", &[])
            .is_some_and(|lag| lag > 0.5),
        "lag exported: {:?}",
        m.value("calldrift_schedule_lag_seconds", &[])
    );
    assert!(
        m.value("calldrift_rate_limit_wait_seconds_total", &[])
            .is_some_and(|w| w > 1.0)
    );
    sim.assert_no_malformed();
}

#[tokio::test]
async fn a_change_made_while_stopped_is_reported_after_restart() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let yaml = |dir: &std::path::Path| {
        config_yaml(
            &sim,
            &format!("{FAST}\nstate_file: {}", dir.join("state.json").display()),
            &[app_yaml("a", 1, "")],
        )
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let first_yaml = yaml(dir.path());
    let d = Daemon::start_in(dir, &first_yaml).await;
    wait_ready(&d).await;
    let dir = d.stop().await;
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state.json")).expect("state written"),
    )
    .expect("valid JSON");
    assert_eq!(state["targets"][0]["app"], "a");

    sim.set_app(
        1,
        Some(CallbackConfig::new(
            "http://hooks.example.com/cb",
            &[START, END],
        )),
    );
    let second_yaml = yaml(dir.path());
    let d = Daemon::start_in(dir, &second_yaml).await;
    wait_until(
        Duration::from_secs(5),
        "the change while down is counted",
        || async {
            d.scrape()
                .await
                .target("calldrift_callback_config_changes_total", "a", &[])
                == Some(1.0)
        },
    )
    .await;
    let dir = d.stop().await;
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state.json")).expect("state"),
    )
    .expect("json");
    assert_eq!(state["targets"][0]["changes"], 1);
    assert_eq!(
        state["targets"][0]["observed"]["url"],
        "http://hooks.example.com/cb"
    );
}

#[tokio::test]
async fn a_corrupt_state_file_is_moved_aside_and_a_fresh_one_written() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("state.json"), "{not json").expect("write");
    let yaml = config_yaml(
        &sim,
        &format!(
            "{FAST}\nstate_file: {}",
            dir.path().join("state.json").display()
        ),
        &[app_yaml("a", 1, "")],
    );
    let d = Daemon::start_in(dir, &yaml).await;
    wait_ready(&d).await;
    let dir = d.stop().await;
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("state.json.corrupt-")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|n| n == "state.json"),
        "a fresh state was written: {names:?}"
    );
}

#[tokio::test]
async fn a_state_file_that_cannot_be_written_at_start_stops_the_start() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let yaml = config_yaml(
        &sim,
        &format!("{FAST}\nstate_file: /nonexistent-dir/state.json"),
        &[app_yaml("a", 1, "")],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (config_path, loaded) = load_config(dir.path(), &yaml);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (_reload, inbox) = daemon::reload_channel();
    let options = daemon::Options {
        loaded,
        config_path: Some(config_path),
        resolver: None,
        shard: None,
    };
    let run = daemon::run(
        options,
        listener,
        Arc::new(SystemClock),
        CancellationToken::new(),
        inbox,
    );
    let result = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the start is refused at once");
    let message = result
        .expect_err("an unwritable state file refuses the start")
        .to_string();
    assert!(message.contains("/nonexistent-dir"), "{message}");
}

#[tokio::test]
async fn a_state_file_that_stops_being_writable_is_counted_and_polling_goes_on() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let yaml = config_yaml(
        &sim,
        &format!("{FAST}\nstate_file: {}", sub.join("state.json").display()),
        &[app_yaml("a", 1, "")],
    );
    let d = Daemon::start_in(dir, &yaml).await;
    wait_ready(&d).await;
    wait_until(Duration::from_secs(5), "a first write", || async {
        d.scrape()
            .await
            .value("calldrift_state_last_write_success_timestamp_seconds", &[])
            > Some(0.0)
    })
    .await;
    assert_eq!(
        d.scrape()
            .await
            .value("calldrift_state_write_failures_total", &[]),
        Some(0.0)
    );
    // The directory turns into a file (even root cannot write below that); a change wants
    // a write.
    std::fs::remove_dir_all(&sub).expect("rmdir");
    std::fs::write(&sub, "not a directory").expect("file");
    sim.set_app(
        1,
        Some(CallbackConfig::new(
            "http://hooks.example.com/cb",
            &[START, END],
        )),
    );
    wait_until(Duration::from_secs(5), "a failed write counted", || async {
        d.scrape()
            .await
            .value("calldrift_state_write_failures_total", &[])
            >= Some(1.0)
    })
    .await;
    let m = d.scrape().await;
    assert_eq!(m.target("calldrift_up", "a", &[]), Some(1.0));
    assert_eq!(
        m.target("calldrift_drift", "a", &[("check", "url_scheme")]),
        Some(1.0)
    );
    let before = m.value("calldrift_state_last_write_success_timestamp_seconds", &[]);
    // Fixed: the next change is written.
    std::fs::remove_file(&sub).expect("rm");
    std::fs::create_dir(&sub).expect("mkdir");
    sim.set_app(1, clean());
    wait_until(Duration::from_secs(5), "a write after the fix", || async {
        d.scrape()
            .await
            .value("calldrift_state_last_write_success_timestamp_seconds", &[])
            > before
    })
    .await;
    d.stop().await;
}

#[tokio::test]
async fn readiness_waits_for_the_first_poll_of_every_target() {
    let sim = Sim::start(vec![app(1, clean()), app(2, clean())]).await;
    // Spread over a long interval, the second target's first poll is 5 s away.
    let yaml = config_yaml(
        &sim,
        "poll:\n  interval: 10s",
        &[app_yaml("a", 1, ""), app_yaml("b", 2, "")],
    );
    let d = Daemon::start(&yaml).await;
    assert_eq!(get(&d.url("/-/ready")).await.0, 503);
    wait_until(Duration::from_secs(8), "ready", || async {
        get(&d.url("/-/ready")).await.0 == 200
    })
    .await;
}

#[tokio::test]
async fn a_reload_adds_and_drops_targets_keeps_state_and_refuses_a_bad_config() {
    let sim = Sim::start(vec![app(1, clean()), app(2, clean()), app(3, None)]).await;
    let d = Daemon::start(&config_yaml(
        &sim,
        FAST,
        &[app_yaml("a", 1, ""), app_yaml("b", 2, "")],
    ))
    .await;
    wait_ready(&d).await;
    sim.set_app(1, Some(CallbackConfig::new(GOOD_URL, &[START])));
    wait_until(Duration::from_secs(5), "change on a", || async {
        d.scrape()
            .await
            .target("calldrift_callback_config_changes_total", "a", &[])
            == Some(1.0)
    })
    .await;

    // Drop b, add c.
    std::fs::write(
        &d.config_path,
        config_yaml(&sim, FAST, &[app_yaml("a", 1, ""), app_yaml("c", 3, "")]),
    )
    .expect("write");
    let (status, _) = request(reqwest::Method::POST, &d.url("/-/reload")).await;
    assert_eq!(status, 200);
    let m = d.scrape().await;
    assert!(
        !m.0.contains("app=\"b\""),
        "dropped target's series are gone"
    );
    // Present at once (0 before its first poll, which may already have happened).
    assert!(
        m.target("calldrift_up", "c", &[]).is_some(),
        "new target's series exist at once"
    );
    assert_eq!(m.value("calldrift_targets", &[]), Some(2.0));
    assert_eq!(
        m.target("calldrift_callback_config_changes_total", "a", &[]),
        Some(1.0),
        "state kept for a"
    );
    assert_eq!(
        m.value("calldrift_config_last_reload_successful", &[]),
        Some(1.0)
    );
    wait_until(Duration::from_secs(5), "c polled", || async {
        d.scrape()
            .await
            .target("calldrift_drift", "c", &[("check", "config_missing")])
            == Some(1.0)
    })
    .await;

    // A typo is refused with its place; the old config keeps running.
    std::fs::write(&d.config_path, "pol: {}\n").expect("write");
    let (status, body) = request(reqwest::Method::POST, &d.url("/-/reload")).await;
    assert_eq!(status, 500);
    assert!(
        body.contains("calldrift.yaml:1:1: unknown field \"pol\""),
        "{body}"
    );
    let m = d.scrape().await;
    assert_eq!(
        m.value("calldrift_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(m.value("calldrift_targets", &[]), Some(2.0));
    assert_eq!(m.target("calldrift_up", "c", &[]), Some(1.0));
}

#[tokio::test]
async fn a_reload_to_a_config_without_apps_is_refused_and_the_old_targets_stay() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let yaml = config_yaml(&sim, FAST, &[app_yaml("a", 1, "")]);
    let d = Daemon::start(&yaml).await;
    wait_ready(&d).await;
    const NO_APPS: &str =
        "the config lists no apps; calldrift would watch nothing (a truncated file?)";

    // Truncated just before `apps:`: everything left is valid.
    let truncated = &yaml[..yaml.find("apps:").expect("apps")];
    std::fs::write(&d.config_path, truncated).expect("write");
    let (status, body) = request(reqwest::Method::POST, &d.url("/-/reload")).await;
    assert_eq!(status, 500);
    assert!(
        body.contains(&format!("calldrift.yaml:1:1: {NO_APPS}")),
        "{body}"
    );
    // An empty list, as SIGHUP would reload it: refused at its key.
    let empty = format!("{truncated}apps: []\n");
    let line = empty.lines().count();
    std::fs::write(&d.config_path, &empty).expect("write");
    let errors = d.reload.reload().await.expect_err("refused");
    // FAST's timeout (1s) is not shorter than its interval (500ms): warned, and a refused
    // reload reports its warnings with its errors.
    let path = d.config_path.display();
    assert_eq!(
        errors,
        [
            format!(
                "{path}:3:12: warning: poll.timeout 1s is not shorter than poll.interval 500ms: a poll may still be running when the next one is due, and that tick is skipped"
            ),
            format!("{path}:{line}:1: {NO_APPS}")
        ]
    );

    let m = d.scrape().await;
    assert_eq!(
        m.value("calldrift_config_last_reload_successful", &[]),
        Some(0.0)
    );
    assert_eq!(m.value("calldrift_targets", &[]), Some(1.0));
    assert_eq!(m.target("calldrift_up", "a", &[]), Some(1.0));
    let json = d.targets().await;
    assert_eq!(json["targets"][0]["app"], "a", "{json}");
    assert_eq!(json["summary"]["targets"], 1, "{json}");
    // The old config is still polled.
    let before = sim.stats().requests_total;
    wait_until(Duration::from_secs(5), "a polled again", || async {
        sim.stats().requests_total > before
    })
    .await;
}

/// A reload reads files (the config, secrets, certificates) on the blocking pool: while the
/// config file cannot be read yet (a FIFO nobody writes), the daemon's runtime thread, here
/// the test's own single thread, still answers scrapes.
#[tokio::test]
async fn a_reload_that_waits_for_its_file_does_not_stop_the_daemon() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let yaml = config_yaml(&sim, FAST, &[app_yaml("a", 1, "")]);
    let d = Daemon::start(&yaml).await;
    wait_ready(&d).await;
    std::fs::remove_file(&d.config_path).expect("rm config");
    let made = std::process::Command::new("mkfifo")
        .arg(&d.config_path)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let written = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Unblocks the reload after a while, from a thread of its own.
    let writer = std::thread::spawn({
        let (path, yaml, written) = (d.config_path.clone(), yaml.clone(), written.clone());
        move || {
            std::thread::sleep(Duration::from_secs(3));
            written.store(true, std::sync::atomic::Ordering::SeqCst);
            std::fs::write(path, yaml).expect("write the FIFO");
        }
    });
    let reload = tokio::spawn({
        let handle = d.reload.clone();
        async move { handle.reload().await }
    });
    // Let the reload start and block on the FIFO.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = get(&d.url("/metrics")).await;
    assert_eq!(status, 200);
    assert!(
        !written.load(std::sync::atomic::Ordering::SeqCst),
        "the scrape waited for the reload's file"
    );
    assert_eq!(reload.await.expect("join"), Ok(()));
    writer.join().expect("writer");
    d.stop().await;
}
