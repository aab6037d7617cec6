//! The daemon's `remediate:` mode against the simulated Chat API: dry-run writes nothing
//! and shows its plan, enforce restores a changed target, the per-target and total write
//! limits hold (across a restart too), unmanaged targets are never written, and the audit
//! log carries no secret. Time is driven by short poll intervals; every wait is on a
//! count, never on the clock.

mod common;

use std::process::Command;
use std::time::Duration;

use calldrift::sim::CallbackConfig;
use common::*;

/// An exact, managed expectation whose URL carries a token that must never be logged.
const TOKEN: &str = "s3cr3t-tok";
const MANAGED_URL: &str = "https://hooks.example.com/tencent/call?token=s3cr3t-tok";
const FAST: &str = "poll:\n  interval: 200ms\n  timeout: 1s\n  retries: 0";
const WAIT: Duration = Duration::from_secs(20);

fn expected() -> CallbackConfig {
    CallbackConfig::new(MANAGED_URL, &[START, END])
}

/// The managed configuration with `Call.CallbackAfterEndCall` dropped.
fn drifted() -> CallbackConfig {
    CallbackConfig::new(MANAGED_URL, &[START])
}

/// An app expecting exactly [`expected`], with `remediate` (indented YAML) as its own block.
fn managed(name: &str, sdkappid: u64, remediate: &str) -> String {
    app_yaml(
        name,
        sdkappid,
        &format!(
            "    expect:\n      url: \"{MANAGED_URL}\"\n      commands: [{START}, {END}]\n    remediate: {remediate}\n"
        ),
    )
}

fn writes(sim: &Sim, sdkappid: u64) -> u64 {
    sim.stats()
        .apps
        .get(&sdkappid.to_string())
        .map_or(0, |a| a.writes.values().sum())
}

fn requests(sim: &Sim, sdkappid: u64) -> u64 {
    sim.stats()
        .apps
        .get(&sdkappid.to_string())
        .map_or(0, |a| a.requests)
}

/// Waits until the app has had `more` further requests (polls) from now.
async fn polls_pass(sim: &Sim, sdkappid: u64, more: u64) {
    let from = requests(sim, sdkappid);
    wait_until(WAIT, "more polls", || async {
        requests(sim, sdkappid) >= from + more
    })
    .await;
}

fn remediation_of<'a>(targets: &'a serde_json::Value, app: &str) -> &'a serde_json::Value {
    targets["targets"]
        .as_array()
        .and_then(|all| all.iter().find(|t| t["app"] == app))
        .map(|t| &t["remediation"])
        .unwrap_or_else(|| panic!("no target {app} in {targets}"))
}

async fn result_count(d: &Daemon, app: &str, result: &str) -> f64 {
    d.scrape()
        .await
        .target("calldrift_remediations_total", app, &[("result", result)])
        .unwrap_or(0.0)
}

#[tokio::test]
async fn dry_run_writes_nothing_and_shows_the_planned_write() {
    let sim = Sim::start(vec![app(1, Some(drifted())), app(2, clean())]).await;
    let yaml = config_yaml(
        &sim,
        &format!("{FAST}\nremediate:\n  mode: dry-run\n  after: 2"),
        &[
            managed("trial", 1, "{}"),
            app_yaml("off", 2, "    remediate: {mode: off}\n"),
        ],
    );
    let d = Daemon::start(&yaml).await;
    wait_until(WAIT, "one dry-run decision", || async {
        result_count(&d, "trial", "dry_run").await == 1.0
    })
    .await;
    polls_pass(&sim, 1, 4).await;

    assert_eq!(sim.stats().writes_total, 0, "dry-run writes nothing");
    let m = d.scrape().await;
    assert_eq!(
        m.target(
            "calldrift_remediations_total",
            "trial",
            &[("result", "dry_run")]
        ),
        Some(1.0),
        "the same drift is reported once"
    );
    assert_eq!(
        m.target(
            "calldrift_remediations_total",
            "trial",
            &[("result", "applied")]
        ),
        Some(0.0)
    );
    assert_eq!(
        m.target("calldrift_remediation_blocked", "trial", &[]),
        Some(0.0)
    );
    assert_eq!(m.value("calldrift_remediation_paused", &[]), Some(0.0));
    assert_eq!(
        m.target("calldrift_remediations_total", "off", &[]),
        None,
        "an app with remediation off has no remediation series"
    );

    let targets = d.targets().await;
    let r = remediation_of(&targets, "trial");
    assert_eq!(r["mode"], "dry-run", "{r}");
    assert_eq!(r["action"], "set", "{r}");
    assert_eq!(r["state"], "reported", "{r}");
    assert_eq!(r["last"]["result"], "dry_run", "{r}");
    let desired = r["desired"].to_string();
    assert!(
        desired.contains(END) && !desired.contains(TOKEN),
        "{desired}"
    );
    assert!(remediation_of(&targets, "off").is_null());

    let page = get(&d.url("/")).await.1;
    assert!(page.contains("remediation (dry-run)"), "{page}");
    assert!(page.contains("planned: set"), "{page}");
    assert!(!page.contains(TOKEN));

    // A target a reload drops takes its remediation series with it.
    let fewer = config_yaml(
        &sim,
        &format!("{FAST}\nremediate:\n  mode: dry-run"),
        &[app_yaml("off", 2, "")],
    );
    std::fs::write(&d.config_path, fewer).expect("write config");
    d.reload.reload().await.expect("reload");
    let m = d.scrape().await;
    assert_eq!(m.target("calldrift_remediations_total", "trial", &[]), None);
    assert_eq!(
        m.target("calldrift_remediation_blocked", "trial", &[]),
        None
    );
    assert_eq!(
        m.target(
            "calldrift_remediations_total",
            "off",
            &[("result", "dry_run")]
        ),
        Some(0.0),
        "an app turned on by a reload gets its series at once"
    );
}

#[tokio::test]
async fn unmanaged_drifted_targets_are_never_written() {
    let sim = Sim::start(vec![
        app(1, Some(CallbackConfig::new(GOOD_URL, &[START]))),
        app(
            2,
            Some(CallbackConfig::new(
                "http://hooks.example.com/x",
                &[START, END],
            )),
        ),
    ])
    .await;
    let prefix_only = app_yaml(
        "prefix",
        1,
        "    expect:\n      url_prefix: https://hooks.example.com/\n",
    );
    let any = app_yaml("any", 2, "    expect:\n      present: any\n");
    let yaml = config_yaml(
        &sim,
        &format!("{FAST}\nremediate:\n  mode: enforce\n  after: 1"),
        &[prefix_only, any],
    );
    let d = Daemon::start(&yaml).await;
    polls_pass(&sim, 1, 5).await;
    polls_pass(&sim, 2, 5).await;

    assert_eq!(
        sim.stats().writes_total,
        0,
        "unmanaged targets are never written"
    );
    let targets = d.targets().await;
    let prefix = remediation_of(&targets, "prefix");
    assert_eq!(prefix["action"], "unmanaged", "{prefix}");
    assert_eq!(prefix["reason"], "url_prefix_only", "{prefix}");
    let any = remediation_of(&targets, "any");
    assert_eq!(any["action"], "unmanaged", "{any}");
    assert_eq!(any["reason"], "presence_any", "{any}");
    let m = d.scrape().await;
    for app in ["prefix", "any"] {
        assert_eq!(
            m.target(
                "calldrift_remediations_total",
                app,
                &[("result", "applied")]
            ),
            Some(0.0)
        );
    }
}

#[tokio::test]
async fn a_target_changed_back_after_every_fix_is_blocked_across_a_restart_until_a_reload() {
    let sim = Sim::start(vec![app(1, Some(drifted()))]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let settings = format!(
        "{FAST}\nstate_file: {}\nremediate:\n  mode: enforce\n  after: 1\n  max_per_target: 2",
        dir.path().join("state.json").display()
    );
    let yaml = config_yaml(&sim, &settings, &[managed("fought", 1, "{}")]);
    // Something else changes the configuration back after every fix.
    let fighter = {
        let sim = sim.sim.clone();
        tokio::spawn(async move {
            loop {
                if sim.callback(1) != Some(Some(drifted())) {
                    sim.set_callback(1, Some(drifted()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let d = Daemon::start_in(dir, &yaml).await;
    wait_until(WAIT, "the target blocked", || async {
        d.scrape()
            .await
            .target("calldrift_remediation_blocked", "fought", &[])
            == Some(1.0)
    })
    .await;
    assert_eq!(writes(&sim, 1), 2, "max_per_target writes, then none");
    polls_pass(&sim, 1, 5).await;
    assert_eq!(writes(&sim, 1), 2, "no further writes while blocked");
    assert_eq!(result_count(&d, "fought", "applied").await, 2.0);
    let r = remediation_of(&d.targets().await, "fought").clone();
    assert_eq!(
        (r["blocked"].as_bool(), r["writes_in_window"].as_u64()),
        (Some(true), Some(2)),
        "{r}"
    );

    let dir = d.stop().await;
    let d = Daemon::start_in(dir, &yaml).await;
    assert_eq!(
        d.scrape()
            .await
            .target("calldrift_remediation_blocked", "fought", &[]),
        Some(1.0),
        "blocked from the start after a restart"
    );
    polls_pass(&sim, 1, 5).await;
    assert_eq!(writes(&sim, 1), 2, "still blocked after the restart");

    // A reload lifts the block: the operator has looked at the config.
    d.reload.reload().await.expect("reload");
    wait_until(WAIT, "written again after the reload", || async {
        writes(&sim, 1) > 2
    })
    .await;
    fighter.abort();
}

#[tokio::test]
async fn max_total_pauses_remediation_everywhere() {
    let sim = Sim::start((1..=4).map(|id| app(id, Some(drifted()))).collect()).await;
    let apps: Vec<String> = (1..=4)
        .map(|id| managed(&format!("app{id}"), id, "{}"))
        .collect();
    let yaml = config_yaml(
        &sim,
        &format!("{FAST}\nremediate:\n  mode: enforce\n  after: 1\n  max_total: 2"),
        &apps,
    );
    let d = Daemon::start(&yaml).await;
    wait_until(WAIT, "remediation paused", || async {
        d.scrape().await.value("calldrift_remediation_paused", &[]) == Some(1.0)
    })
    .await;
    // Two targets were repaired; the others stay drifted and unwritten.
    for id in 1..=4 {
        polls_pass(&sim, id, 3).await;
    }
    assert_eq!(sim.stats().writes_total, 2, "max_total writes in all");
    let drifted_left = (1..=4)
        .filter(|id| sim.sim.callback(*id) == Some(Some(drifted())))
        .count();
    assert_eq!(drifted_left, 2);
    let targets = d.targets().await;
    let paused = targets["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter(|t| t["remediation"]["state"] == "paused")
        .count();
    assert_eq!(paused, 2, "{targets}");
}

/// `calldrift run` as a process with JSON logs: the changed target is written back within
/// `after` + 1 polls, one audit event says so, and no log line holds a key or URL token.
#[tokio::test]
async fn enforce_restores_a_changed_target_and_logs_no_secret() {
    let sim = Sim::start(vec![app(1, Some(expected()))]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let after = 2;
    let settings = format!(
        "listen: \"127.0.0.1:{port}\"\n{FAST}\nremediate:\n  mode: enforce\n  after: {after}"
    );
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(
        &config,
        config_yaml(&sim, &settings, &[managed("prod", 1, "{}")]),
    )
    .expect("write config");
    let child = spawn_run(&config);
    let base = format!("http://127.0.0.1:{port}");
    wait_until(WAIT, "ready", || async {
        matches!(http().get(format!("{base}/-/ready")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    let metrics = || async { Metrics(get(&format!("{base}/metrics")).await.1) };

    // Change it through the simulator's control endpoint, as someone at the console would.
    let changed = http()
        .put(format!("{}/__sim/apps/1", sim.base()))
        .body(serde_json::to_string(&drifted()).expect("JSON"))
        .send()
        .await
        .expect("PUT /__sim/apps/1");
    assert_eq!(changed.status().as_u16(), 200);
    let reads_before = requests(&sim, 1);
    wait_until(WAIT, "restored", || async {
        sim.sim.callback(1) == Some(Some(expected()))
    })
    .await;
    // `after` reads to see the drift, one that may have been in flight at the change, the
    // write, its read-back, and one scheduled poll that may have passed before this check.
    let since = requests(&sim, 1) - reads_before;
    assert!(since <= after + 4, "{since} requests before the fix");
    assert_eq!(writes(&sim, 1), 1);
    wait_until(WAIT, "applied counted", || async {
        metrics().await.target(
            "calldrift_remediations_total",
            "prod",
            &[("result", "applied")],
        ) == Some(1.0)
    })
    .await;
    polls_pass(&sim, 1, 3).await;
    assert_eq!(writes(&sim, 1), 1, "a clean target is not written again");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    assert_eq!(output.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&output.stderr);
    for secret in [TOKEN, key_for(1).as_str(), "usersig="] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
    let events: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["message"] == "remediation applied")
        .collect();
    assert_eq!(events.len(), 1, "{logs}");
    let e = &events[0];
    assert_eq!(
        (&e["app"], &e["sdkappid"]),
        (&serde_json::json!("prod"), &serde_json::json!(1)),
        "{e}"
    );
    assert_eq!(
        (&e["region"], &e["product"]),
        (&serde_json::json!("sim"), &serde_json::json!("call")),
        "{e}"
    );
    assert_eq!(
        (&e["action"], &e["result"]),
        (&serde_json::json!("set"), &serde_json::json!("applied")),
        "{e}"
    );
    assert!(
        e["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{e}"
    );
    let (old, new) = (e["old"].to_string(), e["new"].to_string());
    assert!(old.contains("REDACTED") && !old.contains(END), "{old}");
    assert!(new.contains("REDACTED") && new.contains(END), "{new}");
}
