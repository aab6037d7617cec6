//! The status page as a person sees it: a running daemon's `/` loaded in headless
//! Chromium, with scripts off (the page needs none), asserting on the rendered DOM.
//!
//! Without `chromium` on PATH (or `$CALLDRIFT_CHROMIUM`) the test prints a SKIP note and
//! passes, unless `CI` is set: there a missing browser is a failure (`.ci/run` installs
//! Debian's `chromium`).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use calldrift::sim::{CallbackConfig, FaultKind, FaultRule};
use common::*;

const MEMBER: &str = "Call.CallbackAfterMemberChanged";

fn chromium() -> Option<PathBuf> {
    let named = std::env::var_os("CALLDRIFT_CHROMIUM").map(PathBuf::from);
    let found = named.or_else(|| {
        ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .map(|name| PathBuf::from("/usr/bin").join(name))
            .find(|path| path.exists())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium for the page test"
        );
        eprintln!("SKIP: no chromium on this machine; the page was not checked in a browser");
    }
    found
}

/// The DOM Chromium builds from `url`; with `scripts: false`, with JavaScript disabled.
/// (`--blink-settings=scriptEnabled=false` would also stop `--dump-dom` itself, which
/// reads the DOM with a script; `--disable-javascript` keeps the page's scripts off only.)
fn dump_dom(browser: &PathBuf, url: &str, scripts: bool) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=2000",
        ])
        .args((!scripts).then_some("--disable-javascript"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 DOM")
}

/// The `<tr ...>` of the targets table whose `data-app` is `app`.
fn row<'a>(dom: &'a str, app: &str) -> &'a str {
    let start = dom
        .find(&format!("data-app=\"{app}\""))
        .unwrap_or_else(|| panic!("no row for {app}"));
    let end = dom[start..].find("</tr>").expect("row end") + start;
    &dom[start..end]
}

#[tokio::test]
async fn the_status_page_shows_what_is_wrong_first_expected_beside_observed() {
    let Some(browser) = chromium() else { return };
    let sim = Sim::start(vec![
        app(1, clean()),
        app(2, Some(CallbackConfig::new(GOOD_URL, &[START, MEMBER]))),
        app(3, clean()),
    ])
    .await;
    sim.set_faults(vec![FaultRule {
        sdkappid: 3,
        kind: FaultKind::HttpStatus { status: 502 },
        count: None,
    }]);
    let yaml = config_yaml(
        &sim,
        "poll:\n  interval: 300ms\n  timeout: 1s\n  retries: 0",
        &[
            app_yaml("fine", 1, ""),
            app_yaml("drifted", 2, ""),
            app_yaml("failing", 3, ""),
        ],
    );
    let d = Daemon::start(&yaml).await;
    wait_until(Duration::from_secs(10), "every target polled", || async {
        get(&d.url("/-/ready")).await.0 == 200
    })
    .await;
    let url = d.url("/");
    let (dom, without_scripts) = tokio::task::spawn_blocking(move || {
        (
            dump_dom(&browser, &url, true),
            dump_dom(&browser, &url, false),
        )
    })
    .await
    .expect("join");
    // The page renders the same without scripts (it has none); only the last poll's time,
    // the row's last cell, moves between the two loads.
    let settled = |dom: &str, app: &str| {
        row(dom, app)
            .rsplit_once("<td>")
            .map(|(head, _)| head.to_owned())
    };
    for app in ["fine", "drifted", "failing"] {
        assert_eq!(settled(&dom, app), settled(&without_scripts, app));
    }

    assert!(!dom.contains("<script"), "the page needs no script");
    assert!(
        dom.contains(&format!("calldrift {}", env!("CARGO_PKG_VERSION"))),
        "{dom}"
    );
    assert!(
        dom.contains(" · up ") && dom.contains("config loaded "),
        "{dom}"
    );
    assert!(
        dom.contains("3 targets: 1 clean, 1 drifted, 1 error."),
        "{dom}"
    );
    for link in ["/api/v1/targets", "/api/v1/transitions", "/metrics"] {
        assert!(dom.contains(&format!("href=\"{link}\"")), "{link}");
    }
    // Failed polls first, then drift, then the rest.
    let at = |app: &str| dom.find(&format!("data-app=\"{app}\"")).expect("row");
    assert!(at("failing") < at("drifted") && at("drifted") < at("fine"));

    let drifted = row(&dom, "drifted");
    assert!(drifted.contains("class=\"drift\""), "{drifted}");
    assert!(drifted.contains("since "), "{drifted}");
    // Expected beside observed, the missing and the unexpected word marked.
    assert!(
        drifted.contains(&format!(
            "<code class=\"missing\" title=\"missing\">{END}</code>"
        )),
        "{drifted}"
    );
    assert!(
        drifted.contains(&format!(
            "<code class=\"unexpected\" title=\"unexpected\">{MEMBER}</code>"
        )),
        "{drifted}"
    );
    assert!(drifted.contains(GOOD_URL), "{drifted}");
    let failing = row(&dom, "failing");
    assert!(
        failing.contains("class=\"error\"") && failing.contains("HTTP status 502"),
        "{failing}"
    );
    let fine = row(&dom, "fine");
    assert!(
        fine.contains("class=\"ok\"") && !fine.contains("class=\"missing\""),
        "{fine}"
    );
    assert!(dom.contains("id=\"transitions\""), "{dom}");
    d.stop().await;
}
