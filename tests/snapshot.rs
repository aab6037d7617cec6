//! `calldrift snapshot` against the simulated Chat API: the baseline it writes checks clean,
//! keeps secrets as references and the file's comments, and nothing is written on errors.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use calldrift::check;
use calldrift::clock::SystemClock;
use calldrift::sim::CallbackConfig;
use calldrift::snapshot::{self, SnapshotError};
use common::*;

const TOKEN_URL: &str = "https://hooks.example.com/cb?token=s3cret";

/// Five apps: clean, http://, an extra command, absent, a URL with a query token.
async fn five_apps() -> Sim {
    Sim::start(vec![
        app(1, clean()),
        app(
            2,
            Some(CallbackConfig::new(
                "http://plain.example.com/cb",
                &[START, END],
            )),
        ),
        app(
            3,
            Some(CallbackConfig::new(GOOD_URL, &[MEMBER, START, END])),
        ),
        app(4, None),
        app(5, Some(CallbackConfig::new(TOKEN_URL, &[END]))),
    ])
    .await
}

/// A config for [`five_apps`] with comments, a global prefix and a stale expectation.
fn five_apps_yaml(sim: &Sim) -> String {
    config_yaml(
        sim,
        "# production callbacks\npoll:\n  timeout: 2s  # the gateway allows ~3 s\nexpect:\n  url_prefix: https://hooks.example.com/",
        &[
            app_yaml_env(
                "clean",
                1,
                "    # reviewed 2024\n    expect:\n      url: https://hooks.example.com/old\n",
            ),
            app_yaml_env("plain-http", 2, ""),
            app_yaml_env("extra", 3, ""),
            app_yaml_env("missing", 4, ""),
            app_yaml_env("token", 5, ""),
        ],
    )
}

fn calldrift(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_calldrift"));
    command.args(args).env_remove("RUST_LOG");
    for id in 1..=5u64 {
        command.env(format!("KEY_{id}"), key_for(id));
    }
    command.output().expect("run calldrift")
}

async fn calldrift_async(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        calldrift(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("join")
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Loads `baseline` as a config in `dir` and asserts that `check` finds no drift in it.
async fn assert_checks_clean(dir: &Path, baseline: &str) {
    let (_, loaded) = load_config(dir, baseline);
    let report = check::run(&loaded.config, &loaded.secrets, &[], Arc::new(SystemClock))
        .await
        .expect("check");
    assert_eq!(report.exit_code(), 0, "{}\n{baseline}", report.to_text());
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf8 path")
}

#[tokio::test]
async fn a_snapshot_of_drifting_apps_checks_clean_and_keeps_the_file() {
    let sim = five_apps().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = five_apps_yaml(&sim);
    let (path, loaded) = load_config(dir.path(), &yaml);
    let before = check::run(&loaded.config, &loaded.secrets, &[], Arc::new(SystemClock))
        .await
        .expect("check");
    assert_eq!(before.exit_code(), 2, "{}", before.to_text());

    let snap = snapshot::take(
        &yaml,
        &loaded.config,
        &loaded.secrets,
        dir.path(),
        Arc::new(SystemClock),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(snap.comments_kept);
    assert!(!snap.inline_secret);
    let out = dir.path().join("baseline.yaml");
    snapshot::write(&out, &snap).expect("written");
    let text = std::fs::read_to_string(&out).expect("read");

    assert_checks_clean(dir.path(), &text).await;

    for kept in [
        "# production callbacks\n",
        "  timeout: 2s  # the gateway allows ~3 s\n",
        "    # reviewed 2024\n",
        "    secret_key_env: KEY_1\n",
        "    secret_key_env: KEY_5\n",
    ] {
        assert!(text.contains(kept), "lost {kept:?}:\n{text}");
    }
    assert!(!text.contains("/old"), "the stale expectation is replaced");
    assert!(
        text.contains(&format!("url: \"{TOKEN_URL}\"")),
        "the URL is verbatim"
    );
    assert!(text.contains("      url_scheme: http\n"), "{text}");
    assert!(
        text.contains("    expect:\n      present: false\n"),
        "{text}"
    );
    assert!(text.contains(&format!("# From:  {}\n", path.display())));
    assert!(text.contains(&format!("# By:    calldrift {}", env!("CARGO_PKG_VERSION"))));
    let taken = text
        .lines()
        .find_map(|l| l.strip_prefix("# Taken: "))
        .expect("taken line");
    assert!(
        taken.len() == 20 && taken.ends_with('Z') && taken.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {taken}"
    );
    for id in 1..=5 {
        assert!(!text.contains(&key_for(id)), "no secret is inlined");
    }
    sim.assert_no_malformed();
}

#[tokio::test]
async fn the_binary_writes_a_baseline_that_check_accepts() {
    let sim = five_apps().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // One app with an inline key: it stays inline and makes the file private.
    let yaml = five_apps_yaml(&sim).replace(
        "    secret_key_env: KEY_4\n",
        &format!("    secret_key: \"{}\"\n", key_for(4)),
    );
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, &yaml).expect("write");
    let out = dir.path().join("baseline.yaml");

    let snap = calldrift_async(&["snapshot", "-c", path_str(&config), "-o", path_str(&out)]).await;
    assert_eq!(snap.status.code(), Some(0), "{}", stderr(&snap));
    assert!(snap.stdout.is_empty(), "with -o nothing goes to stdout");
    assert!(stderr(&snap).contains("snapshot of 5 apps (5 targets) written"));
    // What the baseline bakes in that deserves a second look is said, and written anyway.
    let warnings: Vec<String> = stderr(&snap)
        .lines()
        .filter(|l| l.starts_with("warning: snapshot: "))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        warnings,
        vec![
            "warning: snapshot: app plain-http (2, call) in sim calls back over plain http://; the baseline expects url_scheme: http",
            "warning: snapshot: app missing (4, call) in sim has no callback configuration; the baseline expects none (present: false)",
        ],
        "{}",
        stderr(&snap)
    );
    let text = std::fs::read_to_string(&out).expect("written");
    assert!(text.contains("    secret_key_env: KEY_1\n"), "{text}");
    assert!(text.contains(&format!("    secret_key: \"{}\"\n", key_for(4))));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "an inline secret makes the snapshot private");
    }

    let check = calldrift_async(&["check", "-c", path_str(&out)]).await;
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );

    // Without -o: the same document on stdout, nothing written.
    let printed = calldrift_async(&["snapshot", "-c", path_str(&config)]).await;
    assert_eq!(printed.status.code(), Some(0), "{}", stderr(&printed));
    let printed = String::from_utf8_lossy(&printed.stdout);
    let body = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("# Taken: "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(body(&printed), body(&text));
    sim.assert_no_malformed();
}

#[tokio::test]
async fn an_unreadable_target_fails_with_every_error_and_writes_nothing() {
    let sim = Sim::start(vec![app(1, clean()), app(3, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(
        &sim,
        "poll:\n  timeout: 1s\n  retries: 0",
        &[
            app_yaml("fine", 1, ""),
            // Nothing listens on port 1.
            "  - name: down\n    sdkappid: 2\n    regions: [nowhere]\n    secret_key_env: KEY_2\n"
                .to_owned(),
            format!(
                "  - name: badkey\n    sdkappid: 3\n    regions: [sim]\n    secret_key: \"{}\"\n",
                "0".repeat(64)
            ),
        ],
    )
    .replace(
        "regions:\n",
        "regions:\n  nowhere: \"http://127.0.0.1:1\"\n",
    );
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, &yaml).expect("write");
    let out = dir.path().join("baseline.yaml");
    std::fs::write(&out, "previous baseline\n").expect("write");

    let snap = calldrift_async(&["snapshot", "-c", path_str(&config), "-o", path_str(&out)]).await;
    assert_eq!(snap.status.code(), Some(1));
    let err = stderr(&snap);
    assert!(err.contains("2 of 3 targets could not be read"), "{err}");
    assert!(
        err.contains("app down (2, nowhere, call): [transport]"),
        "{err}"
    );
    assert!(
        err.contains("app badkey (3, sim, call): [auth]") && err.contains("70009"),
        "{err}"
    );
    assert!(err.contains("RequestId"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        "previous baseline\n",
        "the old file is untouched"
    );
    assert!(snap.stdout.is_empty());
    let leftovers = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .count();
    assert_eq!(leftovers, 0);
}

/// The same app in two regions, each a simulator of its own.
async fn two_regions(
    a: Option<CallbackConfig>,
    b: Option<CallbackConfig>,
) -> Result<String, SnapshotError> {
    let (sim_a, sim_b) = (
        Sim::start(vec![app(1, a)]).await,
        Sim::start(vec![app(1, b)]).await,
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = format!(
        "regions:\n  east: \"{}\"\n  west: \"{}\"\napps:\n  - name: a\n    sdkappid: 1\n    regions: [east, west]\n    secret_key_env: KEY_1\n",
        sim_a.base(),
        sim_b.base()
    );
    let (_, loaded) = load_config(dir.path(), &yaml);
    let snap = snapshot::take(
        &yaml,
        &loaded.config,
        &loaded.secrets,
        dir.path(),
        Arc::new(SystemClock),
    )
    .await?;
    assert_checks_clean(dir.path(), &snap.text).await;
    Ok(snap.text)
}

#[tokio::test]
async fn regions_that_disagree_fail_naming_both_and_regions_that_agree_share_one_expect() {
    let text = two_regions(clean(), clean())
        .await
        .expect("agreeing regions");
    assert_eq!(text.matches("\n    expect:\n").count(), 1, "{text}");

    let err = two_regions(
        clean(),
        Some(CallbackConfig::new(
            "http://plain.example.com/cb",
            &[START, END],
        )),
    )
    .await
    .expect_err("disagreeing regions")
    .to_string();
    assert!(
        err.contains(
            "app a (1, call) differs between regions: east has https://hooks.example.com/tencent/call"
        ) && err.contains("west has http://plain.example.com/cb"),
        "{err}"
    );

    let err = two_regions(clean(), None)
        .await
        .expect_err("present in one, absent in the other")
        .to_string();
    assert!(err.contains("west has absent"), "{err}");
}

/// Runs calldrift with `args` under `script`, so stdout and stderr are a terminal as at
/// an operator's shell; returns everything the terminal showed.
fn on_a_terminal(args: &[&str]) -> String {
    let command = std::iter::once(env!("CARGO_BIN_EXE_calldrift"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    let mut script = Command::new("script");
    script
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("RUST_LOG");
    for id in 1..=5u64 {
        script.env(format!("KEY_{id}"), key_for(id));
    }
    let out = script.output().expect("run script");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn snapshot_and_check_show_progress_on_a_terminal_and_not_when_quiet() {
    let sim = five_apps().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, five_apps_yaml(&sim)).expect("write");
    let out = dir.path().join("baseline.yaml");
    let (config, out) = (path_str(&config).to_owned(), path_str(&out).to_owned());

    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            on_a_terminal(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let args = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let shown = run(args(&["snapshot", "-c", &config, "-o", &out]))
        .await
        .expect("join");
    // The first read draws the line; the last clears it before the summary.
    assert!(shown.contains("reading 1/5 targets"), "{shown:?}");
    assert!(shown.contains("\r\x1b[2K"), "{shown:?}");
    assert!(
        shown.contains("snapshot of 5 apps (5 targets) written"),
        "{shown:?}"
    );
    let quiet = run(args(&["snapshot", "-q", "-c", &config, "-o", &out]))
        .await
        .expect("join");
    assert!(!quiet.contains("reading"), "{quiet:?}");
    assert!(
        quiet.contains("snapshot of 5 apps (5 targets) written"),
        "{quiet:?}"
    );

    let checked = run(args(&["check", "-c", &out])).await.expect("join");
    assert!(checked.contains("checking 1/5 targets"), "{checked:?}");
    // Piped, as in cron or CI: no line at all.
    let piped = calldrift_async(&["snapshot", "-c", &config, "-o", &out]).await;
    assert!(!stderr(&piped).contains("reading"), "{}", stderr(&piped));
}
