//! Secret audit: run the daemon at debug level with a known key, drive every transition and
//! error, then search every output for the key, for any UserSig and for a callback URL's
//! query token.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use calldrift::sim::{CallbackConfig, FaultKind, FaultRule};
use calldrift::tencent::usersig;
use common::*;

const TOKEN: &str = "TOPSECRETTOKEN4711";
const TOKEN2: &str = "OTHERSECRET0815";

/// Every run of UserSig alphabet long enough to be one, decoded: none may be a UserSig.
fn assert_clean(what: &str, text: &str, key: &str) {
    assert!(!text.contains(key), "{what} contains the secret key");
    assert!(
        !text.contains(TOKEN) && !text.contains(TOKEN2),
        "{what} contains a callback URL token"
    );
    assert!(
        !text.to_ascii_lowercase().contains("usersig="),
        "{what} contains a usersig parameter"
    );
    let is_sig_char = |c: char| c.is_ascii_alphanumeric() || "*-_".contains(c);
    for word in text
        .split(|c: char| !is_sig_char(c))
        .filter(|w| w.len() >= 40)
    {
        assert!(
            usersig::decode(word).is_err(),
            "{what} contains a UserSig: {word}"
        );
    }
}

#[tokio::test]
async fn no_output_leaks_a_key_a_usersig_or_a_url_token() {
    let key = key_for(1);
    let url = |token: &str| {
        format!("https://user:pw{token}@hooks.example.com/cb;jsessionid={token}?token={token}&x=1")
    };
    let sim = Sim::start(vec![
        app(1, Some(CallbackConfig::new(url(TOKEN), &[START]))),
        app(2, clean()),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let state = dir.path().join("state.json");
    let settings = format!(
        "listen: \"127.0.0.1:{port}\"\nstate_file: {}\nlog_level: debug\nlog_format: json\npoll:\n  interval: 150ms\n  timeout: 1s\n  retries: 1",
        state.display()
    );
    let yaml = config_yaml(
        &sim,
        &settings,
        &[
            app_yaml(
                "a",
                1,
                "    expect:\n      url_prefix: https://hooks.example.com/\n",
            ),
            app_yaml("b", 2, ""),
        ],
    );
    let config = dir.path().join("calldrift.yaml");
    std::fs::write(&config, &yaml).expect("write");
    let child = Command::new(env!("CARGO_BIN_EXE_calldrift"))
        .args(["run", "-c", config.to_str().expect("utf8")])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let base = format!("http://127.0.0.1:{port}");
    let scrape = || async { Metrics(get(&format!("{base}/metrics")).await.1) };
    wait_until(Duration::from_secs(10), "ready", || async {
        http()
            .get(format!("{base}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;

    // A change with a new token, drift appearing and clearing.
    sim.set_app(1, Some(CallbackConfig::new(url(TOKEN2), &[START, END])));
    wait_until(Duration::from_secs(5), "change", || async {
        scrape()
            .await
            .target("calldrift_callback_config_changes_total", "a", &[])
            == Some(1.0)
    })
    .await;
    // Down and up again, through an HTTP error and an authentication error.
    for kind in [
        FaultKind::HttpStatus { status: 502 },
        FaultKind::ErrorCode { code: 70001 },
        FaultKind::ErrorCode { code: 70009 },
    ] {
        sim.set_faults(vec![FaultRule {
            sdkappid: 1,
            kind,
            count: None,
        }]);
        wait_until(Duration::from_secs(5), "down", || async {
            scrape().await.target("calldrift_up", "a", &[]) == Some(0.0)
        })
        .await;
        sim.set_faults(Vec::new());
        wait_until(Duration::from_secs(5), "up", || async {
            scrape().await.target("calldrift_up", "a", &[]) == Some(1.0)
        })
        .await;
    }
    // A failed and a successful reload.
    std::fs::write(&config, "this: is not valid").expect("write");
    assert_eq!(
        request(reqwest::Method::POST, &format!("{base}/-/reload"))
            .await
            .0,
        500
    );
    std::fs::write(&config, &yaml).expect("write");
    assert_eq!(
        request(reqwest::Method::POST, &format!("{base}/-/reload"))
            .await
            .0,
        200
    );

    let mut outputs = Vec::new();
    for path in ["/metrics", "/", "/api/v1/targets", "/api/v1/transitions"] {
        outputs.push((path.to_owned(), get(&format!("{base}{path}")).await.1));
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    assert_eq!(out.status.code(), Some(0));
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        logs.contains("callback config changed")
            && logs.contains("target is down")
            && logs.contains("config reload failed"),
        "{logs}"
    );
    assert!(
        logs.contains("hooks.example.com/cb;jsessionid=REDACTED?token=REDACTED"),
        "URLs appear redacted in logs"
    );
    outputs.push(("logs".to_owned(), logs));
    outputs.push((
        "state file".to_owned(),
        std::fs::read_to_string(&state).expect("state"),
    ));

    // The simulator runs on this test's runtime: wait for the process off it.
    let config_arg = config.to_str().expect("utf8").to_owned();
    let check = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_calldrift"))
            .args([
                "check",
                "-c",
                &config_arg,
                "--format",
                "json",
                "--log-level",
                "debug",
            ])
            .output()
            .expect("check")
    })
    .await
    .expect("join");
    assert_eq!(
        check.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    outputs.push((
        "check stdout".to_owned(),
        String::from_utf8_lossy(&check.stdout).into_owned(),
    ));
    outputs.push((
        "check stderr".to_owned(),
        String::from_utf8_lossy(&check.stderr).into_owned(),
    ));

    for (what, text) in &outputs {
        assert!(!text.is_empty(), "{what} is empty");
        assert_clean(what, text, &key);
    }
}
