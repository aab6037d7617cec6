//! `calldrift run` as a process: signals, exit codes, JSON logs, the state file.

mod common;

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use calldrift::sim::CallbackConfig;
use common::*;

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_exits_zero_promptly_and_leaves_a_valid_state_file_and_one_log_event_per_change() {
    let sim = Sim::start(vec![app(1, clean()), app(2, None)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let state = dir.path().join("state.json");
    let settings = format!(
        "listen: \"127.0.0.1:{port}\"\nstate_file: {}\npoll:\n  interval: 300ms\n  timeout: 2s",
        state.display()
    );
    let yaml = config_yaml(
        &sim,
        &settings,
        &[app_yaml("a", 1, ""), app_yaml("b", 2, "")],
    );
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, yaml).expect("write");
    let mut child = spawn_run(&config);
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(10), "ready", || async {
        match http().get(format!("{base}/-/ready")).send().await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    })
    .await;

    sim.set_app(1, Some(CallbackConfig::new(GOOD_URL, &[START])));
    wait_until(Duration::from_secs(5), "change counted", || async {
        let text = get(&format!("{base}/metrics")).await.1;
        Metrics(text).target("calldrift_callback_config_changes_total", "a", &[]) == Some(1.0)
    })
    .await;
    // SIGHUP is handled (a reload), not fatal.
    signal(&child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().expect("wait").is_none(),
        "SIGHUP must not stop the daemon"
    );

    let stopping = Instant::now();
    signal(&child, "TERM");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    assert_eq!(output.status.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "shutdown within poll.timeout + 1 s: {:?}",
        stopping.elapsed()
    );

    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).expect("state file"))
            .expect("valid JSON");
    assert_eq!(saved["targets"].as_array().map(Vec::len), Some(2));

    let logs = String::from_utf8_lossy(&output.stderr);
    let events: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON log line {l:?}: {e}")))
        .collect();
    let changes: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["message"] == "callback config changed")
        .collect();
    assert_eq!(changes.len(), 1, "{logs}");
    assert_eq!(changes[0]["app"], "a");
    assert_eq!(changes[0]["sdkappid"], 1);
    assert!(
        changes[0]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let drift: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["message"] == "drift appeared")
        .collect();
    assert_eq!(
        drift.len(),
        2,
        "config_missing for b, command_missing for a: {logs}"
    );
    // Log fields read like the page: a side a finding lacks is "none", not "".
    for event in &drift {
        assert!(event["expected"] != "" && event["actual"] != "", "{event}");
    }
    assert!(
        drift
            .iter()
            .any(|e| e["check"] == "command_missing" && e["actual"] == "none"),
        "{logs}"
    );
    assert!(
        events.iter().any(|e| e["message"] == "config reloaded"),
        "{logs}"
    );
    for event in &events {
        assert!(
            !event.to_string().contains(&key_for(1)),
            "no secret key in logs"
        );
    }
}

#[tokio::test]
async fn a_port_already_in_use_exits_one_with_a_clear_message() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(
        &config,
        config_yaml(
            &sim,
            &format!("listen: \"127.0.0.1:{port}\""),
            &[app_yaml("a", 1, "")],
        ),
    )
    .expect("write");
    let child = spawn_run(&config);
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn run_with_an_invalid_config_exits_one_naming_the_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, "apps:\n  - name: a\n    sdkappid: 1\n    regions: [atlantis]\n    secret_key_file: /nonexistent\n").expect("write");
    let output = spawn_run(&config).wait_with_output().expect("output");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("calldrift.yaml:4:15: app a: unknown region \"atlantis\""),
        "{stderr}"
    );
}

#[test]
fn run_and_validate_refuse_a_config_without_apps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, "listen: \"127.0.0.1:0\"\npoll:\n  interval: 30s\n").expect("write");
    let want = "calldrift.yaml:1:1: the config lists no apps; calldrift would watch nothing (a truncated file?)";
    let output = spawn_run(&config).wait_with_output().expect("output");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(want), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_calldrift"))
        .args(["validate", "-c", config.to_str().expect("utf8")])
        .output()
        .expect("validate");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(want), "{stderr}");
}

/// Text logs written to a pipe or a file (journald, `2>log`) carry no colour codes; a
/// terminal would get them, unless NO_COLOR is set.
#[tokio::test]
async fn text_logs_into_a_pipe_have_no_escape_codes() {
    let sim = Sim::start(vec![app(1, None)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(&sim, "log_format: text", &[app_yaml("a", 1, "")]);
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, yaml).expect("write");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_calldrift"))
            .args(["check", "-c", config.to_str().expect("utf8")])
            .args(["--log-level", "debug"])
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .output()
            .expect("run check")
    })
    .await
    .expect("join");
    assert_eq!(out.status.code(), Some(2), "drift: the app has no config");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(logs.contains("DEBUG"), "debug logs were written: {logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "escape codes in piped logs: {logs:?}"
    );
}

/// A transport failure has no gateway answer: its "target is down" event carries no empty
/// `error_info` or `request_id`.
#[tokio::test]
async fn a_transport_failure_logs_no_empty_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, dead) = (free_port(), free_port());
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\npoll:\n  interval: 300ms\n  timeout: 1s\n  retries: 0\nregions:\n  sim: \"http://127.0.0.1:{dead}\"\napps:\n{}",
        app_yaml("a", 1, "")
    );
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, yaml).expect("write");
    let child = spawn_run(&config);
    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(10), "polled", || async {
        match http().get(format!("{base}/-/ready")).send().await {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    })
    .await;
    signal(&child, "TERM");
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    let logs = String::from_utf8_lossy(&output.stderr);
    let down: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("target is down"))
        })
        .collect();
    assert_eq!(down.len(), 1, "{logs}");
    assert_eq!(down[0]["reason"], "transport", "{logs}");
    assert!(down[0].get("error_info").is_none(), "{}", down[0]);
    assert!(down[0].get("request_id").is_none(), "{}", down[0]);
}
