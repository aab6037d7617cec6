//! `calldrift check` against the simulated Chat API, as a library call and as the binary.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use calldrift::check;
use calldrift::clock::SystemClock;
use calldrift::report::{Report, Verdict};
use calldrift::sim::{CallbackConfig, FaultKind, FaultRule};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn check_one(sim: &Sim, extra: &str, sdkappid: u64) -> Report {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(
        sim,
        "poll:\n  timeout: 2s",
        &[app_yaml("a", sdkappid, extra)],
    );
    let (_, loaded) = load_config(dir.path(), &yaml);
    check::run(&loaded.config, &loaded.secrets, &[], Arc::new(SystemClock))
        .await
        .expect("check runs")
}

fn findings(report: &Report) -> Vec<String> {
    report.targets[0]
        .findings
        .iter()
        .map(|f| f.to_string())
        .collect()
}

#[tokio::test]
async fn a_clean_app_exits_zero() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let report = check_one(&sim, "", 1).await;
    assert_eq!(report.exit_code(), 0, "{}", report.to_text());
    assert_eq!(report.targets[0].status, Verdict::Ok);
    assert!(
        report.targets[0]
            .request_id
            .as_deref()
            .is_some_and(|id| !id.is_empty())
    );
    sim.assert_no_malformed();
}

#[tokio::test]
async fn each_kind_of_drift_exits_two_with_the_right_findings() {
    let cases: Vec<(Option<CallbackConfig>, Vec<&str>)> = vec![
        (
            Some(CallbackConfig::new(
                "http://hooks.example.com/cb",
                &[START, END],
            )),
            vec!["url_scheme: expected https, actual http"],
        ),
        (
            Some(CallbackConfig::new(GOOD_URL, &[START])),
            vec!["command_missing: expected Call.CallbackAfterEndCall, actual none"],
        ),
        (
            Some(CallbackConfig::new(GOOD_URL, &[START, END, MEMBER])),
            vec!["command_unexpected: expected none, actual Call.CallbackAfterMemberChanged"],
        ),
        (
            None,
            vec!["config_missing: expected present, actual absent"],
        ),
    ];
    let apps = cases
        .iter()
        .enumerate()
        .map(|(i, (cb, _))| app(10 + i as u64, cb.clone()))
        .collect();
    let sim = Sim::start(apps).await;
    for (i, (_, want)) in cases.iter().enumerate() {
        let report = check_one(&sim, "", 10 + i as u64).await;
        assert_eq!(report.exit_code(), 2, "{}", report.to_text());
        assert_eq!(report.targets[0].status, Verdict::Drift);
        assert_eq!(findings(&report), *want);
    }
    sim.assert_no_malformed();
}

#[tokio::test]
async fn a_wrong_key_is_an_auth_error_with_the_request_id() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(
        &sim,
        "",
        &[format!(
            "  - name: a\n    sdkappid: 1\n    regions: [sim]\n    secret_key: \"{}\"\n",
            "0".repeat(64)
        )],
    );
    let (_, loaded) = load_config(dir.path(), &yaml);
    let report = check::run(&loaded.config, &loaded.secrets, &[], Arc::new(SystemClock))
        .await
        .expect("runs");
    assert_eq!(report.exit_code(), 1);
    let t = &report.targets[0];
    assert_eq!(t.error_class.as_deref(), Some("auth"));
    assert!(
        t.error.as_deref().is_some_and(|e| e.contains("70009")),
        "{t:?}"
    );
    let id = t.request_id.as_deref().expect("request id");
    assert!(report.to_text().contains(id), "text names the RequestId");
    assert_eq!(
        sim.stats().apps["1"].requests,
        1,
        "no retry storm on auth errors"
    );
    sim.assert_no_malformed();
}

#[tokio::test]
async fn an_identifier_that_is_not_an_admin_is_an_auth_error() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let report = check_one(&sim, "    identifier: alice\n", 1).await;
    assert_eq!(report.exit_code(), 1);
    assert_eq!(report.targets[0].error_class.as_deref(), Some("auth"));
    assert!(
        report.targets[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("60010"))
    );
    sim.assert_no_malformed();
}

#[tokio::test]
async fn internal_errors_are_retried_until_success() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    sim.set_faults(vec![FaultRule {
        sdkappid: 1,
        kind: FaultKind::ErrorCode { code: 100001 },
        count: Some(2),
    }]);
    let report = check_one(&sim, "", 1).await;
    assert_eq!(report.exit_code(), 0, "{}", report.to_text());
    assert_eq!(sim.stats().apps["1"].requests, 3);
    sim.assert_no_malformed();
}

#[tokio::test]
async fn errors_win_over_drift() {
    let sim = Sim::start(vec![app(1, None), app(2, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(
        &sim,
        "",
        &[
            app_yaml("missing", 1, ""),
            app_yaml("broken", 2, "    identifier: alice\n"),
        ],
    );
    let (_, loaded) = load_config(dir.path(), &yaml);
    let report = check::run(&loaded.config, &loaded.secrets, &[], Arc::new(SystemClock))
        .await
        .expect("runs");
    assert_eq!((report.summary.drifted, report.summary.errors), (1, 1));
    assert_eq!(report.exit_code(), 1);
    // --app narrows the pass.
    let only = check::run(
        &loaded.config,
        &loaded.secrets,
        &["missing".to_owned()],
        Arc::new(SystemClock),
    )
    .await
    .expect("runs");
    assert_eq!((only.summary.targets, only.exit_code()), (1, 2));
    assert!(
        check::run(
            &loaded.config,
            &loaded.secrets,
            &["nope".to_owned()],
            Arc::new(SystemClock)
        )
        .await
        .is_err()
    );
}

/// The built binary.
fn calldrift(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_calldrift"));
    command.args(args).env_remove("RUST_LOG");
    command.output().expect("run calldrift")
}

/// `validate` on `path`: its output, its stderr, and each stderr line from its
/// `line:column` on (the temporary directory's path cut off).
fn validate_lines(path: &std::path::Path) -> (std::process::Output, String, Vec<String>) {
    let out = calldrift(&["validate", "-c", path.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines = stderr
        .lines()
        .map(|l| {
            l.rsplit_once("c.yaml:")
                .map_or(l, |(_, rest)| rest)
                .to_owned()
        })
        .collect();
    (out, stderr, lines)
}

#[tokio::test]
async fn the_binary_exits_with_the_documented_codes_and_prints_json() {
    let sim = Sim::start(vec![
        app(1, clean()),
        app(
            2,
            Some(CallbackConfig::new(
                "http://hooks.example.com/cb?token=s3cret",
                &[START],
            )),
        ),
        app(3, clean()),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(
        &sim,
        "",
        &[
            app_yaml("clean", 1, ""),
            app_yaml("drifted", 2, ""),
            app_yaml("notadmin", 3, "    identifier: alice\n"),
        ],
    );
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).expect("write");
    let path = path.to_str().expect("utf8 path");

    let clean = tokio::task::spawn_blocking({
        let path = path.to_owned();
        move || calldrift(&["check", "-c", &path, "--app", "clean"])
    });
    let clean = clean.await.expect("join");
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stderr)
    );

    let path_owned = path.to_owned();
    let drift = tokio::task::spawn_blocking(move || {
        calldrift(&[
            "check",
            "-c",
            &path_owned,
            "--app",
            "drifted",
            "--format",
            "json",
        ])
    })
    .await
    .expect("join");
    assert_eq!(drift.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&drift.stdout).expect("one JSON document");
    assert_eq!(json["summary"]["drifted"], 1);
    let target = &json["targets"][0];
    assert_eq!(target["status"], "drift");
    assert_eq!(
        target["observed"]["url"],
        "http://hooks.example.com/cb?token=REDACTED"
    );
    assert_eq!(
        target["findings"][0],
        serde_json::json!({"check": "url_scheme", "expected": "https", "actual": "http"})
    );
    assert_eq!(
        target["findings"][1],
        serde_json::json!({"check": "command_missing", "expected": "Call.CallbackAfterEndCall", "actual": null})
    );
    assert!(!String::from_utf8_lossy(&drift.stdout).contains("s3cret"));

    let path_owned = path.to_owned();
    let all = tokio::task::spawn_blocking(move || calldrift(&["check", "-c", &path_owned]))
        .await
        .expect("join");
    assert_eq!(all.status.code(), Some(1), "errors win over drift");
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(
        text.contains("notadmin (3, sim, call): error [auth]") && text.contains("60010"),
        "{text}"
    );
    assert!(
        text.contains("3 targets: 1 clean, 1 drifted, 1 error\n"),
        "{text}"
    );
    sim.assert_no_malformed();
}

#[test]
fn a_config_with_typos_fails_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, "poll:\n  intervall: 30s\napps:\n  - name: a\n    sdkappid: 1\n    region: [china]\n    secret_key_env: KEY_1\n").expect("write");
    let path = path.to_str().expect("utf8");
    for args in [vec!["check", "-c", path], vec!["validate", "-c", path]] {
        let out = calldrift(&args);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("typo.yaml:2:3: unknown field \"intervall\""),
            "{stderr}"
        );
        assert!(
            stderr.contains("typo.yaml:6:5: unknown field \"region\""),
            "{stderr}"
        );
    }
}

#[test]
fn validate_tells_each_mistake_once_in_the_operators_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    let text = "poll:\n  max_concurency: 16\n  retries: two\nexpect:\n  url_scheme: htps\n  url: https://x.example/cb\n  commands: [Bogus.Word]\napps:\n  - name: a\n    sdkappid: \"1400000001\"\n    regions: [singapore]\n    secret_key_env: KEY_1\n    secret_key_enviroment: KEY_1\n    expect:\n      present: true\n";
    std::fs::write(&path, text).expect("write");
    let (out, stderr, lines) = validate_lines(&path);
    assert_eq!(out.status.code(), Some(1));
    // Decoding stops at the first wrong type: the keys read before it are told with it.
    assert_eq!(
        lines,
        vec![
            "2:3: unknown field \"max_concurency\" at poll.max_concurency; did you mean \"max_concurrency\"?",
            "3:12: poll.retries: expected a number, found \"two\"",
        ],
        "{stderr}"
    );

    let fixed = text.replace("  max_concurency: 16\n  retries: two\n", "");
    std::fs::write(&path, fixed).expect("write");
    let (_, stderr, lines) = validate_lines(&path);
    assert_eq!(
        lines,
        vec![
            "11:5: unknown field \"secret_key_enviroment\" at apps[0].secret_key_enviroment; did you mean \"secret_key_env\"?",
            "3:15: expect.url_scheme: url_scheme must be https or http, not \"htps\"",
            "5:14: warning: \"Bogus.Word\" is not one of the documented TUICallKit command words (Call.CallbackAfterStartCall, Call.CallbackAfterEndCall, Call.CallbackAfterMemberChanged)",
        ],
        "{stderr}"
    );

    std::fs::write(&path, "This is my calldrift config, see the wiki.\n").expect("write");
    let out = calldrift(&["validate", "-c", path.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("c.yaml:1:1: not a calldrift config: expected a YAML mapping of keys such as listen:, poll:, apps:"),
        "{stderr}"
    );
}

/// The example config with its secret file and state file in `dir`; the state file's
/// directory is `state_dir` below `dir`.
fn example_config(dir: &std::path::Path, state_dir: &str) -> std::path::PathBuf {
    let key = dir.join("key");
    std::fs::write(&key, "k").expect("write");
    let text = include_str!("../config/calldrift.example.yaml")
        .replace(
            "/run/secrets/calldrift/prod-call",
            key.to_str().expect("utf8"),
        )
        .replace(
            "/run/secrets/calldrift/prod-rooms",
            key.to_str().expect("utf8"),
        )
        .replace(
            "/var/lib/calldrift/state.json",
            dir.join(state_dir)
                .join("state.json")
                .to_str()
                .expect("utf8"),
        );
    let path = dir.join("c.yaml");
    std::fs::write(&path, text).expect("write");
    path
}

fn validate(path: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_calldrift"))
        .args(["validate", "-c", path.to_str().expect("utf8")])
        .env("CALLDRIFT_STAGING_KEY", "k2")
        .output()
        .expect("run")
}

#[test]
fn validate_accepts_the_example_with_its_secrets_and_warns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = validate(&example_config(dir.path(), ""));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (3 apps, 4 targets)"));
}

#[test]
fn validate_and_run_refuse_a_state_file_whose_directory_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = example_config(dir.path(), "missing");
    let out = validate(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("state_file") && stderr.contains("missing/state.json"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_calldrift"))
        .args(["run", "-c", path.to_str().expect("utf8")])
        .env("CALLDRIFT_STAGING_KEY", "k2")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("missing/state.json"), "{stderr}");
}

#[test]
fn usersig_takes_the_key_from_the_environment_only() {
    let out = Command::new(env!("CARGO_BIN_EXE_calldrift"))
        .args([
            "usersig",
            "--sdkappid",
            "1400000000",
            "--identifier",
            "administrator",
        ])
        .env("CALLDRIFT_SECRET_KEY", "k")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let sig = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let key = calldrift::secret::SecretKey::new("k");
    let decoded = calldrift::tencent::usersig::verify(&key, &sig, 1400000000, "administrator", now)
        .expect("valid UserSig");
    assert_eq!(decoded.expire, 86_400);
    let missing = Command::new(env!("CARGO_BIN_EXE_calldrift"))
        .args(["usersig", "--sdkappid", "1", "--identifier", "a"])
        .env_remove("CALLDRIFT_SECRET_KEY")
        .output()
        .expect("run");
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn version_names_the_revision() {
    let out = calldrift(&["--version"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!(
            "calldrift {} (revision ",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[tokio::test]
async fn bad_answers_are_clear_errors_and_retries_stay_bounded() {
    let cases = [
        (FaultKind::MalformedJson, "decode", 1),
        (FaultKind::WrongTypes, "decode", 1),
        (FaultKind::Oversized, "decode", 1),
        (FaultKind::HtmlPage, "decode", 1),
        (FaultKind::HttpStatus { status: 502 }, "http_status", 3),
        (FaultKind::Reset, "transport", 3),
        (FaultKind::ErrorCode { code: 60011 }, "rate_limited", 1),
    ];
    let sim = Sim::start(
        (0..cases.len() as u64)
            .map(|i| app(100 + i, clean()))
            .collect(),
    )
    .await;
    sim.set_faults(
        cases
            .iter()
            .enumerate()
            .map(|(i, (kind, _, _))| FaultRule {
                sdkappid: 100 + i as u64,
                kind: kind.clone(),
                count: None,
            })
            .collect(),
    );
    for (i, (kind, class, requests)) in cases.iter().enumerate() {
        let sdkappid = 100 + i as u64;
        let report = check_one(&sim, "", sdkappid).await;
        let t = &report.targets[0];
        assert_eq!(
            (report.exit_code(), t.error_class.as_deref()),
            (1, Some(*class)),
            "{kind:?}: {t:?}"
        );
        assert_eq!(
            sim.stats().apps[&sdkappid.to_string()].requests,
            *requests,
            "{kind:?}: retries bounded by poll.retries"
        );
    }
    let html = check_one(&sim, "", 103).await;
    assert!(
        html.targets[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("HTML page")),
        "{:?}",
        html.targets[0]
    );
    let big = check_one(&sim, "", 102).await;
    assert!(
        big.targets[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("larger than 1048576 bytes")),
        "{:?}",
        big.targets[0]
    );
    sim.assert_no_malformed();
}

/// `calldrift check -c PATH --format json`, with none of this process's proxy variables.
fn check_json_without_proxies(path: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_calldrift"));
    command.args([
        "check",
        "-c",
        path.to_str().expect("utf8"),
        "--format",
        "json",
    ]);
    for name in ["ALL_PROXY", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"] {
        command.env_remove(name).env_remove(name.to_lowercase());
    }
    command
}

#[tokio::test]
async fn proxy_environment_variables_are_honoured() {
    // The "proxy" is a second simulator holding a different config for the same app: an
    // answer from it proves the request went through the proxy.
    let direct = Sim::start(vec![app(1, clean())]).await;
    let proxy = Sim::start(vec![app(
        1,
        Some(CallbackConfig::new(
            "http://via-proxy.example.com/cb",
            &[START, END],
        )),
    )])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config_yaml(&direct, "", &[app_yaml("a", 1, "")])).expect("write");
    let run = |no_proxy: Option<&'static str>| {
        let (path, proxy_url) = (path.clone(), proxy.base());
        tokio::task::spawn_blocking(move || {
            let mut command = check_json_without_proxies(&path);
            command
                .env("HTTP_PROXY", &proxy_url)
                .env("http_proxy", &proxy_url);
            if let Some(list) = no_proxy {
                command.env("NO_PROXY", list);
            }
            let out = command.output().expect("run");
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
        })
    };
    let via_proxy = run(None).await.expect("join");
    assert_eq!(
        via_proxy["targets"][0]["observed"]["url"],
        "http://via-proxy.example.com/cb"
    );
    let bypassed = run(Some("127.0.0.1")).await.expect("join");
    assert_eq!(bypassed["targets"][0]["observed"]["url"], GOOD_URL);
    direct.assert_no_malformed();
    proxy.assert_no_malformed();
}

/// A TLS front for `upstream` with `certified`'s certificate: decrypts and forwards.
async fn tls_front(
    certified: &rcgen::CertifiedKey<rcgen::KeyPair>,
    upstream: SocketAddr,
) -> SocketAddr {
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)
    .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (Ok(mut tls), Ok(mut plain)) = (
                    acceptor.accept(tcp).await,
                    TcpStream::connect(upstream).await,
                ) else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    addr
}

/// A request head, read byte by byte so nothing after it is consumed; `None` at EOF.
async fn read_head(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(head)
}

/// `check` on the config at `path` with `variable` (and its lower-case form) naming the
/// proxy at `proxy` with the credentials user:pw; its output and JSON report.
async fn check_through_proxy(
    path: std::path::PathBuf,
    variable: &'static str,
    proxy: SocketAddr,
) -> (std::process::Output, serde_json::Value) {
    let out = tokio::task::spawn_blocking(move || {
        let proxy_url = format!("http://user:pw@{proxy}");
        check_json_without_proxies(&path)
            .env(variable, &proxy_url)
            .env(variable.to_lowercase(), &proxy_url)
            .output()
            .expect("run")
    })
    .await
    .expect("join");
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out, report)
}

type Heads = Arc<std::sync::Mutex<Vec<String>>>;

/// A proxy on loopback that keeps each request head it reads, then hands the connection
/// to `serve`.
async fn recording_proxy<F, Fut>(serve: F) -> (SocketAddr, Heads)
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads: Heads = Arc::default();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let Some(head) = read_head(&mut client).await else {
                continue;
            };
            heads
                .lock()
                .expect("lock")
                .push(String::from_utf8_lossy(&head).into_owned());
            tokio::spawn(serve(client));
        }
    });
    (addr, seen)
}

/// A CONNECT proxy that tunnels every request to `to`.
async fn connect_proxy(to: SocketAddr) -> (SocketAddr, Heads) {
    recording_proxy(move |mut client| async move {
        let Ok(mut upstream) = TcpStream::connect(to).await else {
            return;
        };
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    })
    .await
}

#[tokio::test]
async fn https_through_a_proxy_is_tunnelled_with_the_proxy_credentials() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let certified =
        rcgen::generate_simple_self_signed(vec!["gateway.localhost".to_owned()]).expect("cert");
    let front = tls_front(&certified, sim.addr).await;
    let (proxy, heads) = connect_proxy(front).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, certified.cert.pem()).expect("write ca");
    let path = dir.path().join("c.yaml");
    // gateway.localhost need not resolve here: through a proxy, the proxy resolves it.
    let yaml = format!(
        "ca_file: {}\nregions:\n  sim: \"https://gateway.localhost:{}\"\napps:\n{}",
        ca.display(),
        front.port(),
        app_yaml("a", 1, "")
    );
    std::fs::write(&path, yaml).expect("write");
    let (out, report) = check_through_proxy(path, "HTTPS_PROXY", proxy).await;
    assert_eq!(
        report["targets"][0]["observed"]["url"], GOOD_URL,
        "{report}"
    );
    assert_eq!(out.status.code(), Some(0), "{report}");
    let heads = heads.lock().expect("lock").clone();
    assert!(!heads.is_empty(), "no request reached the proxy");
    for head in &heads {
        let port = front.port();
        assert!(
            head.starts_with(&format!("CONNECT gateway.localhost:{port} HTTP/1.1\r\n")),
            "{head}"
        );
        // Basic user:pw
        assert!(
            head.to_ascii_lowercase()
                .contains("proxy-authorization: basic dxnlcjpwdw==\r\n"),
            "{head}"
        );
    }
    sim.assert_no_malformed();
}

/// An HTTP proxy that answers every request itself with a clean configuration.
async fn answering_proxy() -> (SocketAddr, Heads) {
    recording_proxy(|mut client| async move {
        let mut body = [0u8; 2];
        if client.read_exact(&mut body).await.is_err() {
            return;
        }
        let json = format!(
            "{{\"ActionStatus\":\"OK\",\"ErrorCode\":0,\"ErrorInfo\":\"\",\"RequestId\":\"r\",\
             \"Response\":{{\"Url\":\"{GOOD_URL}\",\"CallbackCommandList\":[\"{START}\",\"{END}\"]}}}}"
        );
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{json}",
            json.len()
        );
        let _ = client.write_all(answer.as_bytes()).await;
    })
    .await
}

#[tokio::test]
async fn http_through_a_proxy_goes_in_absolute_form_with_the_proxy_credentials() {
    let (proxy, heads) = answering_proxy().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    // Nothing listens on the gateway's port: only the proxy can answer.
    let yaml = format!(
        "regions:\n  sim: \"http://gateway.localhost:9\"\napps:\n{}",
        app_yaml("a", 1, "")
    );
    std::fs::write(&path, yaml).expect("write");
    let (out, report) = check_through_proxy(path, "HTTP_PROXY", proxy).await;
    assert_eq!(out.status.code(), Some(0), "{report}");
    let heads = heads.lock().expect("lock").clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = &heads[0];
    assert!(
        head.starts_with("POST http://gateway.localhost:9/v4/call_config/get_callback?sdkappid=1&"),
        "{head}"
    );
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("\r\nhost: gateway.localhost:9\r\n"),
        "{head}"
    );
    assert!(
        lower.contains("\r\nproxy-authorization: basic dxnlcjpwdw==\r\n"),
        "{head}"
    );
}

/// `check --app a` reads only a's key: another app's key may be missing (an operator with
/// access to one app's key checks that app), while the whole pass needs every key.
#[tokio::test]
async fn check_of_named_apps_reads_only_their_keys() {
    let sim = Sim::start(vec![app(1, clean()), app(2, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = config_yaml(
        &sim,
        "",
        &[
            app_yaml("one", 1, ""),
            app_yaml_env("two", 2, "").replace("KEY_2", "CALLDRIFT_TEST_UNSET_KEY"),
        ],
    );
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, yaml).expect("write");
    let path = path.to_str().expect("utf8").to_owned();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            calldrift(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };
    let args = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let one = run(args(&["check", "-c", &path, "--app", "one"]))
        .await
        .expect("join");
    assert_eq!(
        one.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    let all = run(args(&["check", "-c", &path])).await.expect("join");
    assert_eq!(all.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&all.stderr);
    assert!(stderr.contains("CALLDRIFT_TEST_UNSET_KEY"), "{stderr}");
}
