//! `--shard INDEX/COUNT` against the simulated Chat API: replicas together poll every target
//! exactly once, each app whole in one shard, a daemon keeps its shard across reloads, and
//! a replica needs only its own apps' keys.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use calldrift::shard::Shard;
use common::*;

const APPS: std::ops::RangeInclusive<u64> = 1..=12;

/// Twelve apps, each in two regions that both point at the simulator; `secret` is the
/// secret line of app `id`.
fn sharded_yaml(sim: &Sim, secret: impl Fn(u64) -> String) -> String {
    let apps: Vec<String> = APPS
        .map(|id| {
            format!(
                "  - name: app{id}\n    sdkappid: {id}\n    regions: [sim, sim2]\n    {}\n",
                secret(id)
            )
        })
        .collect();
    format!(
        "poll:\n  interval: 1s\n  timeout: 2s\nendpoint_probe:\n  enabled: false\nregions:\n  sim: \"{base}\"\n  sim2: \"{base}\"\napps:\n{}",
        apps.concat(),
        base = sim.base()
    )
}

/// Writes the key file `key{id}` (mode 0600) of each app in `ids` into `dir`.
fn write_keys(dir: &Path, ids: impl Iterator<Item = u64>) {
    for id in ids {
        let key = dir.join(format!("key{id}"));
        std::fs::write(&key, key_for(id)).expect("write key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
    }
}

fn calldrift(args: &[&str], shard_env: Option<&str>) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_calldrift"));
    command
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CALLDRIFT_SHARD");
    if let Some(shard) = shard_env {
        command.env("CALLDRIFT_SHARD", shard);
    }
    for id in APPS {
        command.env(format!("KEY_{id}"), key_for(id));
    }
    command.output().expect("run calldrift")
}

#[tokio::test]
async fn two_shards_together_check_every_target_exactly_once() {
    let sim = Sim::start(APPS.map(|id| app(id, clean())).collect()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    let yaml = sharded_yaml(&sim, |id| format!("secret_key_env: KEY_{id}"));
    std::fs::write(&path, yaml).expect("write");
    let path = path.to_str().expect("utf8").to_owned();

    let runs = tokio::task::spawn_blocking(move || {
        [
            calldrift(
                &["check", "-c", &path, "--format", "json", "--shard", "0/2"],
                None,
            ),
            // The same flag from the environment, as a StatefulSet may pass it.
            calldrift(&["check", "-c", &path, "--format", "json"], Some("1/2")),
        ]
    })
    .await
    .expect("join");

    let mut seen: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for (index, out) in runs.iter().enumerate() {
        assert_eq!(
            out.status.code(),
            Some(0),
            "shard {index}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
        let targets = json["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "shard {index} polls something");
        for t in targets {
            let sdkappid = t["sdkappid"].as_u64().expect("sdkappid");
            let region = t["region"].as_str().expect("region").to_owned();
            let shard = Shard {
                index: index as u32,
                count: 2,
            };
            assert!(shard.owns(sdkappid), "{sdkappid} polled by {shard}");
            *seen.entry((sdkappid, region)).or_default() += 1;
        }
    }
    let want: Vec<(u64, String)> = APPS
        .flat_map(|id| [(id, "sim".to_owned()), (id, "sim2".to_owned())])
        .collect();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), want);
    assert!(
        seen.values().all(|n| *n == 1),
        "every target exactly once: {seen:?}"
    );
    sim.assert_no_malformed();
}

#[test]
fn a_bad_shard_is_a_usage_error_that_exits_one() {
    for (args, env) in [
        (vec!["check", "-c", "/nonexistent", "--shard", "3/3"], None),
        (vec!["run", "-c", "/nonexistent"], Some("1/0")),
    ] {
        let out = calldrift(&args, env);
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("INDEX must be below COUNT")
                || stderr.contains("COUNT must be at least 1"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn a_sharded_daemon_counts_and_polls_only_its_targets_across_reloads() {
    let sim = Sim::start(APPS.map(|id| app(id, clean())).collect()).await;
    let shard = Shard { index: 1, count: 3 };
    let owned: Vec<u64> = APPS.filter(|id| shard.owns(*id)).collect();
    assert!(!owned.is_empty() && owned.len() < APPS.count());
    // Key files, not the environment: a reload reads secrets again in this process. Only
    // this shard's: the other apps name key files that do not exist.
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path(), owned.iter().copied());
    let yaml = sharded_yaml(&sim, |id| format!("secret_key_file: key{id}"));
    let daemon = Daemon::start_sharded(dir, &yaml, Some(shard)).await;
    let want = (owned.len() * 2) as f64;

    let targets_and_ready = || async {
        let metrics = daemon.scrape().await;
        let ready = get(&daemon.url("/-/ready")).await.0 == 200;
        (metrics.value("calldrift_targets", &[]), ready)
    };
    wait_until(Duration::from_secs(10), "ready", || async {
        targets_and_ready().await.1
    })
    .await;
    assert_eq!(targets_and_ready().await.0, Some(want));
    daemon.reload.reload().await.expect("reload succeeds");
    assert_eq!(
        targets_and_ready().await.0,
        Some(want),
        "a reload keeps the shard"
    );

    let stats = sim.stats();
    for id in APPS {
        let polled = stats.apps.get(&id.to_string()).map_or(0, |a| a.requests);
        assert_eq!(
            polled > 0,
            owned.contains(&id),
            "app {id}: polled {polled} times"
        );
    }
    daemon.stop().await;
}

#[tokio::test]
async fn check_with_a_shard_reads_only_its_own_keys_and_validate_reads_all() {
    let sim = Sim::start(APPS.map(|id| app(id, clean())).collect()).await;
    for index in 0..2 {
        let shard = Shard { index, count: 2 };
        let owned: Vec<u64> = APPS.filter(|id| shard.owns(*id)).collect();
        let dir = tempfile::tempdir().expect("tempdir");
        write_keys(dir.path(), owned.iter().copied());
        let path = dir.path().join("c.yaml");
        let yaml = sharded_yaml(&sim, |id| format!("secret_key_file: key{id}"));
        std::fs::write(&path, yaml).expect("write");
        let path = path.to_str().expect("utf8").to_owned();
        let flag = shard.to_string();
        let (check, validate) = tokio::task::spawn_blocking(move || {
            (
                calldrift(
                    &["check", "-c", &path, "--format", "json", "--shard", &flag],
                    None,
                ),
                calldrift(&["validate", "-c", &path], None),
            )
        })
        .await
        .expect("join");

        let stderr = String::from_utf8_lossy(&check.stderr);
        assert_eq!(check.status.code(), Some(0), "shard {shard}: {stderr}");
        let json: serde_json::Value = serde_json::from_slice(&check.stdout).expect("JSON report");
        assert_eq!(
            json["targets"].as_array().map(Vec::len),
            Some(owned.len() * 2),
            "shard {shard}"
        );
        // Without --shard every app's key is read, and the others' are missing.
        let stderr = String::from_utf8_lossy(&validate.stderr);
        assert_eq!(validate.status.code(), Some(1), "{stderr}");
        let other = APPS
            .clone()
            .find(|id| !shard.owns(*id))
            .expect("an app of the other shard");
        assert!(
            stderr.contains(&format!("app app{other}: cannot read secret file")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn run_with_a_shard_starts_and_reloads_with_only_its_own_keys() {
    let sim = Sim::start(APPS.map(|id| app(id, clean())).collect()).await;
    let shard = Shard { index: 0, count: 2 };
    let dir = tempfile::tempdir().expect("tempdir");
    write_keys(dir.path(), APPS.filter(|id| shard.owns(*id)));
    let port = free_port();
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\n{}",
        sharded_yaml(&sim, |id| format!("secret_key_file: key{id}"))
    );
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_calldrift"))
        .args(["run", "-c", path.to_str().expect("utf8"), "--shard", "0/2"])
        .env_remove("RUST_LOG")
        .env_remove("CALLDRIFT_SHARD")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn calldrift run");

    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ready = false;
    while !ready && Instant::now() < deadline && child.try_wait().expect("wait").is_none() {
        tokio::time::sleep(Duration::from_millis(25)).await;
        ready = matches!(http().get(format!("{base}/-/ready")).send().await, Ok(r) if r.status() == 200);
    }
    let reload = if ready {
        request(reqwest::Method::POST, &format!("{base}/-/reload")).await
    } else {
        (0, String::new())
    };
    if child.try_wait().expect("wait").is_none() {
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(ready, "the replica never became ready: {stderr}");
    assert_eq!(reload.0, 200, "reload: {} {stderr}", reload.1);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}
