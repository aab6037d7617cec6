//! Remediation against the simulated Chat API: the client's writes (the family switch, the
//! race between a read and a write, what is sent once), and `calldrift plan` / `apply` as
//! the binary.

mod common;

use std::sync::Arc;

use calldrift::check;
use calldrift::clock::SystemClock;
use calldrift::drift::Observed;
use calldrift::product::Product;
use calldrift::remedy::{self, Desired, Remedy, Write};
use calldrift::sim::{CallbackConfig, FaultKind, FaultRule};
use calldrift::tencent::{self, Target, WriteApi, WriteError, Written};
use common::*;

const ROOM_URL: &str = "https://hooks.example.com/room?token=s3cr3t-room";
const DESTROYED: &str = "Room.CallbackAfterDestroyRoom";

/// The client and targets of a config for `apps` against `sim`.
fn client_and_targets(sim: &Sim, apps: &[String]) -> (Arc<tencent::Client>, Vec<Target>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(sim, "poll:\n  timeout: 1s\n  retries: 0", apps);
    let (_, loaded) = load_config(dir.path(), &yaml);
    let client = check::client(&loaded.config, Arc::new(SystemClock)).expect("client");
    (client, tencent::targets(&loaded.config, &loaded.secrets))
}

fn room_app(sdkappid: u64) -> String {
    app_yaml(
        "r",
        sdkappid,
        &format!(
            "    products: [room]\n    expect:\n      url: \"{ROOM_URL}\"\n      room:\n        commands: [{ROOM_CREATED}]\n"
        ),
    )
}

fn room_desired() -> Desired {
    Desired {
        url: ROOM_URL.to_owned(),
        commands: vec![ROOM_CREATED.to_owned()],
    }
}

fn writes(sim: &Sim, sdkappid: u64) -> Vec<(String, u64)> {
    sim.stats().apps[&sdkappid.to_string()]
        .writes
        .iter()
        .map(|(api, n)| (api.clone(), *n))
        .collect()
}

#[tokio::test]
async fn a_room_config_created_between_read_and_write_ends_updated() {
    let sim = Sim::start(vec![app_with_products(1, clean(), None, None)]).await;
    let (client, targets) = client_and_targets(&sim, &[room_app(1)]);
    let target = &targets[0];
    let read = client.get_callback(target).await;
    assert_eq!(read.result.as_deref(), Ok(&Observed::Absent));
    let write = match remedy::decide(Product::Room, &target.expect, &Observed::Absent) {
        Remedy::Write(write) => write,
        other => panic!("{other:?}"),
    };
    assert_eq!(write, Write::Set(room_desired()));
    // Someone creates one meanwhile.
    sim.set_product(
        1,
        Product::Room,
        Some(CallbackConfig::new(
            "https://other.example.com/",
            &[DESTROYED],
        )),
    );
    let outcome = client.write(target, &write).await;
    assert_eq!(outcome.result, Ok(Written::Applied), "{outcome:?}");
    assert_eq!((outcome.api, outcome.requests), (WriteApi::Update, 2));
    assert!(outcome.request_id.is_some());
    assert_eq!(
        sim.sim.product_callback(1, Product::Room),
        Some(Some(CallbackConfig::new(ROOM_URL, &[ROOM_CREATED])))
    );
    assert_eq!(
        writes(&sim, 1),
        [
            ("room_config/set_callback".to_owned(), 1),
            ("room_config/update_callback".to_owned(), 1)
        ]
    );
    sim.assert_no_malformed();
}

#[tokio::test]
async fn a_room_config_deleted_between_read_and_write_ends_set() {
    let old = CallbackConfig::new("https://other.example.com/", &[DESTROYED]);
    let sim = Sim::start(vec![app_with_products(1, clean(), Some(old), None)]).await;
    let (client, targets) = client_and_targets(&sim, &[room_app(1)]);
    sim.set_product(1, Product::Room, None);
    let outcome = client
        .write(&targets[0], &Write::Update(room_desired()))
        .await;
    assert_eq!(outcome.result, Ok(Written::Applied), "{outcome:?}");
    assert_eq!((outcome.api, outcome.requests), (WriteApi::Set, 2));
    assert_eq!(
        sim.sim.product_callback(1, Product::Room),
        Some(Some(CallbackConfig::new(ROOM_URL, &[ROOM_CREATED])))
    );
}

#[tokio::test]
async fn a_refused_write_is_reported_and_a_lost_one_is_not_sent_again() {
    let sim = Sim::start(vec![app(1, None), app(2, None)]).await;
    let apps = [app_yaml("a", 1, ""), app_yaml("b", 2, "")];
    let (client, targets) = client_and_targets(&sim, &apps);
    let desired = Desired {
        url: GOOD_URL.to_owned(),
        commands: vec![START.to_owned(), END.to_owned()],
    };
    sim.set_faults(vec![
        FaultRule {
            sdkappid: 1,
            kind: FaultKind::ErrorCode { code: 100_001 },
            count: Some(1),
        },
        FaultRule {
            sdkappid: 2,
            kind: FaultKind::Delay {
                delay: std::time::Duration::from_secs(3),
            },
            count: Some(1),
        },
    ]);
    let refused = client
        .write(&targets[0], &Write::Set(desired.clone()))
        .await;
    match &refused.result {
        Err(WriteError::Refused(answer)) => {
            assert_eq!(answer.code, 100_001);
            assert!(answer.request_id.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(refused.requests, 1, "not retried");
    let lost = client.write(&targets[1], &Write::Set(desired)).await;
    assert!(matches!(lost.result, Err(WriteError::Lost(_))), "{lost:?}");
    assert_eq!(lost.requests, 1);
    // Whether it was carried out is for the next read to tell; it went out once.
    assert_eq!(
        writes(&sim, 2),
        [("call_config/set_callback".to_owned(), 1)],
        "sent once"
    );
}

#[tokio::test]
async fn a_delete_of_nothing_is_already_absent_and_call_is_set_not_updated() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let (client, targets) = client_and_targets(&sim, &[app_yaml("a", 1, "")]);
    let deleted = client.write(&targets[0], &Write::Delete).await;
    assert_eq!(deleted.result, Ok(Written::Applied));
    assert_eq!(sim.sim.callback(1), Some(None));
    // The simulator answers 0 for deleting nothing; 100301 is taken as already absent.
    sim.set_faults(vec![FaultRule {
        sdkappid: 1,
        kind: FaultKind::ErrorCode { code: 100_301 },
        count: Some(1),
    }]);
    let again = client.write(&targets[0], &Write::Delete).await;
    assert_eq!(again.result, Ok(Written::AlreadyAbsent));
    let desired = Desired {
        url: GOOD_URL.to_owned(),
        commands: vec![START.to_owned()],
    };
    let set = client.write(&targets[0], &Write::Update(desired)).await;
    assert_eq!((set.api, set.result), (WriteApi::Set, Ok(Written::Applied)));
    assert_eq!(
        writes(&sim, 1),
        [
            ("call_config/delete_callback".to_owned(), 2),
            ("call_config/set_callback".to_owned(), 1)
        ]
    );
    sim.assert_no_malformed();
}

const OLD_CALL: &str = "http://old.example.com/cb?token=s3cr3t-old";
const LIVE_URL_OLD: &str = "https://old.example.com/live?sig=s3cr3t-live";

/// Runs the binary with `args` off the runtime the simulator runs on.
async fn calldrift(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_calldrift"))
            .args(&args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run calldrift")
    })
    .await
    .expect("join")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Nothing secret in `output`: no key, no UserSig, no URL token.
fn assert_no_secret(output: &str) {
    // A UserSig is base64 of zlib-framed JSON: its first three bytes are always the same.
    let key = calldrift::secret::SecretKey::new(key_for(1));
    let sig = tencent::usersig::mint(&key, 1, "administrator", 1_700_000_000, 86_400);
    let usersig_start = &sig.expose()[..4];
    for sdkappid in 1..=6 {
        assert!(!output.contains(&key_for(sdkappid)), "a key in:\n{output}");
    }
    for secret in ["s3cr3t", "usersig=", usersig_start] {
        assert!(!output.contains(secret), "{secret} in:\n{output}");
    }
}

/// A fleet with one target of each kind: clean; a drifted managed call; a drifted
/// unmanaged one; a config that should not exist; room and live configs to update; a
/// room config to create.
async fn mixed_fleet() -> (Sim, tempfile::TempDir, String) {
    let old_room = CallbackConfig::new("https://old.example.com/room", &[DESTROYED]);
    let old_live = CallbackConfig::new(LIVE_URL_OLD, &[LIVE_CREATED]);
    let sim = Sim::start(vec![
        app(1, clean()),
        app(2, Some(CallbackConfig::new(OLD_CALL, &[START, MEMBER]))),
        app(3, Some(CallbackConfig::new(OLD_CALL, &[START, END]))),
        app(4, clean()),
        app_with_products(5, None, Some(old_room), Some(old_live)),
        app_with_products(6, None, None, None),
    ])
    .await;
    let exact = format!("    expect:\n      url: {GOOD_URL}\n");
    let apps = [
        app_yaml("clean", 1, &exact),
        app_yaml("drifted", 2, &exact),
        app_yaml(
            "loose",
            3,
            "    expect:\n      url_prefix: https://hooks.example.com/\n",
        ),
        app_yaml("gone", 4, "    expect:\n      present: false\n"),
        app_yaml(
            "rooms",
            5,
            &format!(
                "    products: [room, live]\n    expect:\n      url: \"{ROOM_URL}\"\n      room:\n        commands: [{ROOM_CREATED}]\n      live:\n        commands: [{LIVE_CREATED}]\n"
            ),
        ),
        room_app_named("newroom", 6),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config_yaml(&sim, "", &apps)).expect("write");
    let path = path.to_str().expect("utf8").to_owned();
    (sim, dir, path)
}

fn room_app_named(name: &str, sdkappid: u64) -> String {
    room_app(sdkappid).replacen("name: r\n", &format!("name: {name}\n"), 1)
}

#[tokio::test]
async fn plan_lists_each_action_writes_nothing_and_exits_two() {
    let (sim, _dir, path) = mixed_fleet().await;
    let out = calldrift(&["plan", "-c", &path, "--format", "json"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_no_secret(&text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        json["summary"],
        serde_json::json!({"targets": 7, "changes": 5, "unmanaged": 1, "errors": 0})
    );
    // The JSON's actions are none, set, delete and unmanaged for every product; `api`
    // says which call a write makes (room and live: set creates, update modifies).
    let row = |t: &serde_json::Value| {
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_owned();
        [
            &t["app"],
            &t["product"],
            &t["action"],
            &t["api"],
            &t["reason"],
        ]
        .map(s)
    };
    let rows: Vec<[String; 5]> = json["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(row)
        .collect();
    let want = [
        ["clean", "call", "none", "-", "-"],
        ["drifted", "call", "set", "call_config/set_callback", "-"],
        ["loose", "call", "unmanaged", "-", "url_prefix_only"],
        ["gone", "call", "delete", "call_config/delete_callback", "-"],
        ["rooms", "room", "set", "room_config/update_callback", "-"],
        ["rooms", "live", "set", "live_config/update_callback", "-"],
        ["newroom", "room", "set", "room_config/set_callback", "-"],
    ]
    .map(|r| r.map(str::to_owned));
    assert_eq!(rows, want);
    let drifted = &json["targets"][1];
    assert_eq!(drifted["sdkappid"], 2);
    assert_eq!(drifted["region"], "sim");
    assert_eq!(
        drifted["current"],
        serde_json::json!({"present": true, "url": "http://old.example.com/cb?token=REDACTED", "commands": [START, MEMBER]})
    );
    assert_eq!(
        drifted["desired"],
        serde_json::json!({"present": true, "url": GOOD_URL, "commands": [START, END]})
    );
    assert_eq!(json["targets"][3]["desired"]["present"], false);
    assert_eq!(
        json["targets"][4]["desired"]["url"],
        "https://hooks.example.com/room?token=REDACTED"
    );
    assert_eq!(json["targets"][0]["desired"], serde_json::Value::Null);

    let out = calldrift(&["plan", "-c", &path]).await;
    assert_eq!(out.status.code(), Some(2));
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert_no_secret(&shown);
    for line in [
        "clean (1, sim, call): none",
        &format!(
            "drifted (2, sim, call): set url http://old.example.com/cb?token=REDACTED -> {GOOD_URL}, commands +{END} -{MEMBER}"
        ),
        "loose (3, sim, call): unmanaged (url_prefix_only): ",
        &format!("gone (4, sim, call): delete {GOOD_URL} [{START}, {END}] -> absent"),
        "rooms (5, sim, room): update url https://old.example.com/room -> https://hooks.example.com/room?token=REDACTED, commands +Room.CallbackAfterCreateRoom",
        "rooms (5, sim, live): update url https://old.example.com/live?sig=REDACTED -> https://hooks.example.com/room?token=REDACTED",
        "newroom (6, sim, room): set absent -> https://hooks.example.com/room?token=REDACTED [Room.CallbackAfterCreateRoom]",
        "7 targets: 5 changes planned, 1 unmanaged, 0 errors",
    ] {
        assert!(
            shown.lines().any(|l| l.starts_with(line)),
            "no line {line:?} in:\n{shown}"
        );
    }
    assert_eq!(sim.stats().writes_total, 0, "plan writes nothing");
    sim.assert_no_malformed();
}

#[tokio::test]
async fn apply_needs_yes_without_a_terminal_then_writes_exactly_the_plan() {
    let (sim, _dir, path) = mixed_fleet().await;
    let refused = calldrift(&["apply", "-c", &path]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("refusing to write without --yes"));
    assert!(String::from_utf8_lossy(&refused.stdout).contains("drifted (2, sim, call): set"));
    assert_eq!(sim.stats().writes_total, 0, "a refusal writes nothing");

    let applied = calldrift(&["apply", "-c", &path, "--yes"]).await;
    let shown = text(&applied);
    assert_eq!(applied.status.code(), Some(0), "{shown}");
    assert_no_secret(&shown);
    assert!(
        shown.contains("5 writes: 5 applied and verified, 0 failed"),
        "{shown}"
    );
    assert!(
        shown.contains("drifted (2, sim, call): set applied (RequestId Id-"),
        "{shown}"
    );
    let stats = sim.stats();
    assert_eq!(stats.writes_total, 5);
    let one = |api: &str| vec![(api.to_owned(), 1)];
    assert_eq!(writes(&sim, 1), []);
    assert_eq!(writes(&sim, 2), one("call_config/set_callback"));
    assert_eq!(writes(&sim, 3), [], "unmanaged: never written");
    assert_eq!(writes(&sim, 4), one("call_config/delete_callback"));
    assert_eq!(
        writes(&sim, 5),
        [
            ("live_config/update_callback".to_owned(), 1),
            ("room_config/update_callback".to_owned(), 1)
        ]
    );
    assert_eq!(writes(&sim, 6), one("room_config/set_callback"));
    assert_eq!(sim.sim.callback(2), Some(clean()));
    assert_eq!(sim.sim.callback(4), Some(None));
    // Room's other words are allowed (no extra_commands: drift), so they stay.
    assert_eq!(
        sim.sim.product_callback(5, Product::Room),
        Some(Some(CallbackConfig::new(
            ROOM_URL,
            &[ROOM_CREATED, DESTROYED]
        )))
    );
    assert_eq!(
        sim.sim.product_callback(6, Product::Room),
        Some(Some(CallbackConfig::new(ROOM_URL, &[ROOM_CREATED])))
    );
    assert_eq!(
        sim.sim.product_callback(5, Product::Live),
        Some(Some(CallbackConfig::new(ROOM_URL, &[LIVE_CREATED])))
    );

    let mut args = vec!["check", "-c", &path];
    for name in ["clean", "drifted", "gone", "rooms", "newroom"] {
        args.extend(["--app", name]);
    }
    let check = calldrift(&args).await;
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    // Only the unmanaged drift is left: nothing to plan.
    let again = calldrift(&["plan", "-c", &path]).await;
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert_eq!(sim.stats().writes_total, 5);
    sim.assert_no_malformed();
}

#[tokio::test]
async fn plan_on_a_clean_fleet_exits_zero_and_apply_has_nothing_to_do() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    let exact = format!("    expect:\n      url: {GOOD_URL}\n");
    std::fs::write(&path, config_yaml(&sim, "", &[app_yaml("a", 1, &exact)])).expect("write");
    let path = path.to_str().expect("utf8");
    let plan = calldrift(&["plan", "-c", path]).await;
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan));
    assert!(text(&plan).contains("1 target: 0 changes planned, 0 unmanaged, 0 errors"));
    let apply = calldrift(&["apply", "-c", path]).await;
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(text(&apply).contains("nothing to apply"));
    let unknown = calldrift(&["plan", "-c", path, "--app", "nope"]).await;
    assert_eq!(unknown.status.code(), Some(1));
    assert_eq!(sim.stats().writes_total, 0);
}

#[tokio::test]
async fn a_target_that_cannot_be_read_is_an_error_and_apply_fails() {
    let sim = Sim::start(vec![app(1, None), app(2, None)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    let exact = format!("    expect:\n      url: {GOOD_URL}\n");
    let apps = [
        app_yaml("a", 1, &exact),
        app_yaml("b", 2, &format!("{exact}    identifier: alice\n")),
    ];
    std::fs::write(&path, config_yaml(&sim, "", &apps)).expect("write");
    let path = path.to_str().expect("utf8");
    let plan = calldrift(&["plan", "-c", path, "--format", "json"]).await;
    assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
    let json: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("JSON");
    assert_eq!(json["targets"][1]["action"], serde_json::Value::Null);
    assert!(
        json["targets"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("60010"))
    );
    assert_eq!(json["summary"]["errors"], 1);
    let apply = calldrift(&["apply", "-c", path, "--yes"]).await;
    assert_eq!(apply.status.code(), Some(1), "{}", text(&apply));
    // The readable target was still restored.
    assert_eq!(sim.sim.callback(1), Some(clean()));
    assert_eq!(sim.stats().writes_total, 1);
}

#[tokio::test]
async fn writes_and_reads_share_the_one_rate_limit() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(
        &sim,
        "rate_limit:\n  per_second: 20",
        &[app_yaml("a", 1, "")],
    );
    let (_, loaded) = load_config(dir.path(), &yaml);
    let client = check::client(&loaded.config, Arc::new(SystemClock)).expect("client");
    let target = tencent::targets(&loaded.config, &loaded.secrets).remove(0);
    let write = Write::Set(Desired {
        url: GOOD_URL.to_owned(),
        commands: vec![START.to_owned(), END.to_owned()],
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (client, target, write) = (client.clone(), target.clone(), write.clone());
        tasks.spawn(async move {
            if i % 2 == 0 {
                assert!(client.write(&target, &write).await.is_written());
            } else {
                assert!(client.get_callback(&target).await.result.is_ok());
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }
    let stats = sim.stats();
    assert_eq!(stats.requests_total, 50);
    assert_eq!(stats.writes_total, 25);
    assert!(
        stats.max_requests_in_any_second <= 20,
        "{} in one second",
        stats.max_requests_in_any_second
    );
}

/// Runs calldrift with `args` under `script`, so stdin, stdout and stderr are a terminal
/// as at an operator's shell, typing `typed`; returns the exit code and what it showed.
async fn on_a_terminal(args: &[&str], typed: &'static str) -> (Option<i32>, String) {
    let command = std::iter::once(env!("CARGO_BIN_EXE_calldrift"))
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ");
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("script")
            .args(["-q", "-e", "-c", &command, "/dev/null"])
            .env_remove("RUST_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run script");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(typed.as_bytes()).expect("type");
        // Typed, then held open until the program is done: closing a terminal's input
        // early would hang it up.
        let out = std::thread::scope(|s| {
            let waited = s.spawn(|| child.wait_with_output().expect("wait"));
            let out = waited.join().expect("join");
            drop(stdin);
            out
        });
        (out.status.code(), text(&out))
    })
    .await
    .expect("join")
}

#[tokio::test]
async fn apply_on_a_terminal_asks_and_writes_only_after_yes() {
    let (sim, _dir, path) = mixed_fleet().await;
    let (code, shown) = on_a_terminal(&["apply", "-c", &path], "no\n").await;
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains("Apply 5 changes? Only 'yes' is accepted: "),
        "{shown}"
    );
    assert!(shown.contains("not confirmed; nothing written"), "{shown}");
    assert_eq!(sim.stats().writes_total, 0, "a no writes nothing");

    let (code, shown) = on_a_terminal(&["apply", "-c", &path], "yes\n").await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("5 writes: 5 applied and verified, 0 failed"),
        "{shown}"
    );
    assert_no_secret(&shown);
    assert_eq!(sim.stats().writes_total, 5);
}

/// `calldrift plan --format json | head -1` closes the pipe early: no panic, the exit
/// status still says what the plan found; `check` and `validate` alike.
#[tokio::test]
async fn a_reader_that_stops_early_is_no_panic() {
    let (sim, _dir, path) = mixed_fleet().await;
    let cases: [(&[&str], i32); 3] = [
        (&["plan", "--format", "json"], 2),
        (&["check"], 2),
        (&["validate"], 0),
    ];
    for (args, code) in cases {
        let mut args = args.to_vec();
        args.extend(["-c", &path]);
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let out = tokio::task::spawn_blocking(move || {
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_calldrift"))
                .args(&args)
                .env_remove("RUST_LOG")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn");
            // The reader is gone before anything is written.
            drop(child.stdout.take());
            child.wait_with_output().expect("wait")
        })
        .await
        .expect("join");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(out.status.code(), Some(code), "{stderr}");
    }
    assert_eq!(sim.stats().writes_total, 0);
}
