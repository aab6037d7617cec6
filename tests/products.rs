//! TUICallKit, TUIRoomKit and TUILiveKit targets of one app, against the simulated Chat
//! API: each product is a target of its own with its own findings, metrics, reports and
//! state, and all of them share the app's rate limit.

mod common;

use std::process::Command;
use std::time::Duration;

use calldrift::drift::{Check, Observed};
use calldrift::product::Product;
use calldrift::sim::CallbackConfig;
use common::*;

const FAST: &str = "poll:\n  interval: 500ms\n  timeout: 1s\n  retries: 0";
const ALL: &str = "    products: [call, room, live]\n";
const ROOM_URL: &str = "https://hooks.example.com/tencent/room";
const LIVE_URL: &str = "https://hooks.example.com/tencent/live";

fn room() -> Option<CallbackConfig> {
    Some(CallbackConfig::new(ROOM_URL, &[ROOM_CREATED]))
}

fn live() -> Option<CallbackConfig> {
    Some(CallbackConfig::new(LIVE_URL, &[LIVE_CREATED]))
}

/// Call clean, room on plain http, live absent.
fn mixed() -> calldrift::sim::SimApp {
    app_with_products(
        1,
        clean(),
        Some(CallbackConfig::new(
            "http://hooks.example.com/tencent/room",
            &[ROOM_CREATED],
        )),
        None,
    )
}

async fn wait_ready(d: &Daemon) {
    wait_until(Duration::from_secs(10), "every target polled", || async {
        get(&d.url("/-/ready")).await.0 == 200
    })
    .await;
}

/// The checks whose `calldrift_drift` series is 1 for one product of app `a`.
fn drifting(m: &Metrics, product: Product) -> Vec<&'static str> {
    Check::ALL
        .iter()
        .filter(|c| {
            m.product("calldrift_drift", "a", product, &[("check", c.as_str())]) == Some(1.0)
        })
        .map(|c| c.as_str())
        .collect()
}

#[tokio::test]
async fn an_app_with_three_products_is_three_targets_with_their_own_findings() {
    let sim = Sim::start(vec![mixed()]).await;
    let d = Daemon::start(&config_yaml(&sim, FAST, &[app_yaml("a", 1, ALL)])).await;
    wait_ready(&d).await;
    let m = d.scrape().await;
    assert_eq!(m.value("calldrift_targets", &[]), Some(3.0));
    for product in Product::ALL {
        assert_eq!(
            m.product("calldrift_up", "a", product, &[]),
            Some(1.0),
            "{product}"
        );
    }
    assert_eq!(drifting(&m, Product::Call), Vec::<&str>::new());
    assert_eq!(drifting(&m, Product::Room), ["url_scheme"]);
    assert_eq!(drifting(&m, Product::Live), ["config_missing"]);
    let present = |p| m.product("calldrift_callback_config_present", "a", p, &[]);
    assert_eq!(Product::ALL.map(present), [Some(1.0), Some(1.0), Some(0.0)]);
    let enabled = |p, word| {
        m.product(
            "calldrift_callback_command_enabled",
            "a",
            p,
            &[("command", word)],
        )
    };
    assert_eq!(enabled(Product::Call, START), Some(1.0));
    assert_eq!(enabled(Product::Room, ROOM_CREATED), Some(1.0));
    assert_eq!(
        enabled(Product::Room, START),
        None,
        "call's words stay call's"
    );
    // Every per-target series names its product, after the app as Prometheus sorts.
    let series: Vec<&str> = m.0.lines().filter(|l| l.contains("app=\"a\"")).collect();
    assert!(series.len() > 30, "{series:?}");
    for line in series {
        assert!(line.contains("{app=\"a\",product=\""), "{line}");
    }

    let targets = d.targets().await;
    let shown: Vec<(&str, &str)> = targets["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            (
                t["product"].as_str().expect("product"),
                t["status"].as_str().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [("call", "ok"), ("room", "drift"), ("live", "drift")]
    );
    assert_eq!(targets["summary"]["targets"], 3);
    let page = get(&d.url("/")).await.1;
    // The page names each target's product: in its row's attributes and its first cell.
    for product in ["call", "room", "live"] {
        assert!(
            page.contains(&format!("data-product=\"{product}\"")),
            "{page}"
        );
        assert!(
            page.contains(&format!(" · sim · {product}</small>")),
            "{page}"
        );
    }
    sim.assert_no_malformed();
}

#[tokio::test]
async fn drift_in_one_product_leaves_the_others_alone() {
    let sim = Sim::start(vec![app_with_products(1, clean(), room(), live())]).await;
    let extra = format!(
        "{ALL}    expect:\n      room:\n        url: {ROOM_URL}\n        commands: [{ROOM_CREATED}]\n"
    );
    let d = Daemon::start(&config_yaml(&sim, FAST, &[app_yaml("a", 1, &extra)])).await;
    wait_ready(&d).await;
    let m = d.scrape().await;
    for product in Product::ALL {
        assert_eq!(drifting(&m, product), Vec::<&str>::new(), "{product}");
    }

    sim.set_product(
        1,
        Product::Room,
        Some(CallbackConfig::new(
            "https://elsewhere.example.com/room",
            &["Room.CallbackAfterMemberEnter"],
        )),
    );
    wait_until(Duration::from_secs(5), "room drifts", || async {
        drifting(&d.scrape().await, Product::Room).len() == 2
    })
    .await;
    let m = d.scrape().await;
    assert_eq!(
        drifting(&m, Product::Room),
        ["url_mismatch", "command_missing"]
    );
    assert_eq!(drifting(&m, Product::Call), Vec::<&str>::new());
    assert_eq!(drifting(&m, Product::Live), Vec::<&str>::new());
    let changes = |p| m.product("calldrift_callback_config_changes_total", "a", p, &[]);
    assert_eq!(Product::ALL.map(changes), [Some(0.0), Some(1.0), Some(0.0)]);

    let transitions: serde_json::Value =
        serde_json::from_str(&get(&d.url("/api/v1/transitions")).await.1).expect("JSON");
    let seen: Vec<(&str, &str)> = transitions
        .as_array()
        .expect("list")
        .iter()
        .map(|t| {
            (
                t["product"].as_str().expect("product"),
                t["kind"].as_str().expect("kind"),
            )
        })
        .collect();
    assert!(seen.contains(&("room", "changed")), "{seen:?}");
    assert!(seen.iter().all(|(p, _)| *p == "room"), "{seen:?}");
}

#[tokio::test]
async fn check_reports_each_product() {
    let sim = Sim::start(vec![mixed()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = load_config(
        dir.path(),
        &config_yaml(&sim, "poll:\n  timeout: 2s", &[app_yaml("a", 1, ALL)]),
    );
    // Off the runtime, which the simulator needs meanwhile.
    let run = |format: &'static str| {
        let path = path.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_calldrift"))
                .args(["check", "-c"])
                .arg(&path)
                .args(["--format", format])
                .env_remove("RUST_LOG")
                .output()
                .expect("run calldrift")
        })
    };
    let out = run("json").await.expect("join");
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let targets = report["targets"].as_array().expect("targets");
    let products: Vec<&str> = targets
        .iter()
        .map(|t| t["product"].as_str().expect("product"))
        .collect();
    assert_eq!(products, ["call", "room", "live"]);
    assert_eq!(targets[1]["findings"][0]["check"], "url_scheme");
    assert_eq!(targets[2]["findings"][0]["check"], "config_missing");
    assert_eq!(report["summary"]["drifted"], 2);

    let out = run("text").await.expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "a (1, sim, call): ok",
        "a (1, sim, room): drift",
        "a (1, sim, live): drift",
    ] {
        assert!(text.contains(line), "{line}:\n{text}");
    }
    sim.assert_no_malformed();
}

#[tokio::test]
async fn the_state_file_keeps_each_product_and_a_change_while_stopped_is_news() {
    let sim = Sim::start(vec![app_with_products(1, clean(), room(), None)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(
        &sim,
        &format!(
            "{FAST}\nstate_file: {}",
            dir.path().join("state.json").display()
        ),
        &[app_yaml("a", 1, ALL)],
    );
    let d = Daemon::start_in(dir, &yaml).await;
    wait_ready(&d).await;
    let dir = d.stop().await;
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state.json")).expect("state written"),
    )
    .expect("JSON");
    let saved: Vec<(&str, bool)> = state["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            (
                t["product"].as_str().expect("product"),
                t["observed"]["present"].as_bool().expect("present"),
            )
        })
        .collect();
    assert_eq!(saved, [("call", true), ("room", true), ("live", false)]);

    sim.set_product(1, Product::Live, live());
    let d = Daemon::start_in(dir, &yaml).await;
    wait_until(
        Duration::from_secs(5),
        "live's change is counted",
        || async {
            d.scrape().await.product(
                "calldrift_callback_config_changes_total",
                "a",
                Product::Live,
                &[],
            ) == Some(1.0)
        },
    )
    .await;
    wait_ready(&d).await;
    let m = d.scrape().await;
    for product in [Product::Call, Product::Room] {
        assert_eq!(
            m.product("calldrift_callback_config_changes_total", "a", product, &[]),
            Some(0.0),
            "{product}: unchanged across the restart"
        );
    }
}

#[tokio::test]
async fn a_state_file_from_before_products_loads_as_call() {
    let sim = Sim::start(vec![app_with_products(1, clean(), room(), None)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let fingerprint = Observed::Present {
        url: GOOD_URL.to_owned(),
        commands: vec![START.to_owned(), END.to_owned()],
    }
    .fingerprint();
    // As the previous version wrote it: no product anywhere.
    std::fs::write(
        &state,
        format!(
            r#"{{"version": 1, "targets": [{{"app": "a", "sdkappid": 1, "region": "sim",
  "observed": {{"present": true, "url": "{GOOD_URL}", "commands": ["{START}", "{END}"]}},
  "fingerprint": {fingerprint}, "last_change": 1700000000.0, "changes": 5}}]}}"#
        ),
    )
    .expect("write old state");
    let yaml = config_yaml(
        &sim,
        &format!("{FAST}\nstate_file: {}", state.display()),
        &[app_yaml("a", 1, "    products: [call, room]\n")],
    );
    let d = Daemon::start_in(dir, &yaml).await;
    wait_ready(&d).await;
    let m = d.scrape().await;
    let call = |name| m.product(name, "a", Product::Call, &[]);
    assert_eq!(
        call("calldrift_callback_config_changes_total"),
        Some(5.0),
        "the saved count, and no change: the fingerprint matches"
    );
    assert_eq!(
        call("calldrift_callback_config_last_change_timestamp_seconds"),
        Some(1_700_000_000.0)
    );
    assert_eq!(
        m.product(
            "calldrift_callback_config_changes_total",
            "a",
            Product::Room,
            &[]
        ),
        Some(0.0)
    );
    let dir = d.stop().await;
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("state.json")).expect("state"),
    )
    .expect("JSON");
    assert_eq!(state["targets"][0]["product"], "call");
    assert_eq!(state["targets"][0]["changes"], 5);
    assert_eq!(state["targets"][1]["product"], "room");
}

#[tokio::test]
async fn the_per_app_limit_counts_every_product_of_the_app() {
    const PER_APP: u32 = 12;
    let sim = Sim::start(vec![app_with_products(1, clean(), room(), live())]).await;
    // Eight regions on the one simulator, three products each: 24 targets of one app
    // polled every second, twice what its limit lets through.
    let names: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let regions: String = names
        .iter()
        .map(|n| format!("  {n}: \"{}\"\n", sim.base()))
        .collect();
    let yaml = format!(
        "poll:\n  interval: 1s\n  timeout: 2s\nrate_limit:\n  per_second: 200\n  per_app_per_second: {PER_APP}\nregions:\n{regions}apps:\n  - name: a\n    sdkappid: 1\n    regions: [{}]\n    secret_key_file: {}\n{ALL}",
        names.join(", "),
        key_file(1).display()
    );
    let d = Daemon::start(&yaml).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = sim.stats().apps["1"].requests;
    let measured = Duration::from_secs(3);
    tokio::time::sleep(measured).await;
    let stats = sim.stats();
    let app = &stats.apps["1"];
    assert!(
        app.max_requests_in_any_second <= u64::from(PER_APP),
        "largest 1-second window of the app {} > {PER_APP}",
        app.max_requests_in_any_second
    );
    assert_eq!(app.rate_limited, 0);
    let achieved = (app.requests - start) as f64 / measured.as_secs_f64();
    assert!(
        achieved >= 0.9 * f64::from(PER_APP),
        "the limit binds: achieved {achieved:.1}/s of {PER_APP}/s"
    );
    wait_ready(&d).await;
    let m = d.scrape().await;
    for product in Product::ALL {
        for region in &names {
            assert_eq!(
                m.product("calldrift_up", "a", product, &[("region", region)]),
                Some(1.0),
                "{product} in {region}"
            );
        }
    }
    sim.assert_no_malformed();
}

#[tokio::test]
async fn a_snapshot_writes_each_product_into_its_block_and_checks_clean() {
    let sim = Sim::start(vec![mixed()]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(&sim, "poll:\n  timeout: 2s", &[app_yaml("a", 1, ALL)]);
    let (_, loaded) = load_config(dir.path(), &yaml);
    let snap = calldrift::snapshot::take(
        &yaml,
        &loaded.config,
        &loaded.secrets,
        dir.path(),
        std::sync::Arc::new(calldrift::clock::SystemClock),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(snap.comments_kept);
    assert!(
        snap.text.contains(&format!(
            "    expect:\n      present: true\n      url: \"{GOOD_URL}\"\n"
        )),
        "call's at the top of the app's expect:\n{}",
        snap.text
    );
    assert!(snap.text.contains("      room:\n        present: true\n        url: \"http://hooks.example.com/tencent/room\"\n        url_scheme: http\n"), "{}", snap.text);
    assert!(
        snap.text.contains("      live:\n        present: false\n"),
        "{}",
        snap.text
    );
    let (_, again) = load_config(dir.path(), &snap.text);
    let report = calldrift::check::run(
        &again.config,
        &again.secrets,
        &[],
        std::sync::Arc::new(calldrift::clock::SystemClock),
    )
    .await
    .expect("check");
    assert_eq!(report.exit_code(), 0, "{}\n{}", report.to_text(), snap.text);
    assert_eq!(report.summary.targets, 3);
}
