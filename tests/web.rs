//! `web_config_file`: basic auth on every path but the probes, TLS on the listener,
//! reloads that swap it or are refused, and start-up failures. Certificates and bcrypt
//! hashes are made here, at test time.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use calldrift::clock::SystemClock;
use calldrift::daemon;
use common::*;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";
const APP: u64 = 1_400_000_001;

/// A bcrypt hash at the lowest cost, so tests stay fast.
fn hash(password: &str) -> String {
    bcrypt::hash(password, 4).expect("bcrypt hash")
}

/// Writes `server.crt` and `server.key` for 127.0.0.1 and localhost; returns the PEM
/// certificate for clients to trust.
fn write_cert(dir: &Path) -> String {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("certificate");
    let pem = certified.cert.pem();
    std::fs::write(dir.join("server.crt"), &pem).expect("write cert");
    std::fs::write(
        dir.join("server.key"),
        certified.signing_key.serialize_pem(),
    )
    .expect("write key");
    pem
}

fn users_yaml(password: &str) -> String {
    format!("basic_auth_users:\n  {USER}: \"{}\"\n", hash(password))
}

const TLS_YAML: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

/// The daemon's config in `dir`: one clean app, a web config beside it, polls rare
/// enough that only the first one happens during a test. The key is in a file (not the
/// harness's made-up environment) so reloads, which read the real environment, find it.
fn daemon_yaml(sim: &Sim, dir: &Path) -> String {
    let key_file = dir.join("app.key");
    std::fs::write(&key_file, key_for(APP)).expect("write key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod key");
    }
    format!(
        "web_config_file: web.yml\npoll:\n  interval: 1h\n  timeout: 2s\nregions:\n  sim: \"{}\"\n\
         apps:\n  - name: clean\n    sdkappid: {APP}\n    regions: [sim]\n    secret_key_file: {}\n",
        sim.base(),
        key_file.display()
    )
}

/// Starts the simulator and a daemon whose directory holds `web.yml` (and a server
/// certificate); returns them with the certificate's PEM.
async fn start(web_yaml: &str) -> (Sim, Daemon, String) {
    let sim = Sim::start(vec![app(APP, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = write_cert(dir.path());
    std::fs::write(dir.path().join("web.yml"), web_yaml).expect("write web.yml");
    let yaml = daemon_yaml(&sim, dir.path());
    let daemon = Daemon::start_in(dir, &yaml).await;
    (sim, daemon, cert)
}

/// A client that trusts only `cert_pem`.
fn tls_client(cert_pem: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("PEM certificate");
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([cert])
        .build()
        .expect("TLS client")
}

async fn status_of(request: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.expect("body"))
}

async fn wait_ready(client: &reqwest::Client, url: &str) {
    wait_until(
        Duration::from_secs(10),
        "the daemon to be ready",
        || async {
            client
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200)
        },
    )
    .await;
}

#[tokio::test]
async fn basic_auth_guards_every_path_but_the_probes() {
    let (_sim, daemon, _) = start(&users_yaml(PASSWORD)).await;
    let client = http();
    wait_ready(&client, &daemon.url("/-/ready")).await;
    for path in [
        "/metrics",
        "/",
        "/api/v1/targets",
        "/api/v1/transitions",
        "/nowhere",
    ] {
        let url = daemon.url(path);
        let (status, headers, _) = status_of(client.get(&url)).await;
        assert_eq!(status, 401, "{path} without credentials");
        assert_eq!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Basic realm=\"calldrift\""),
            "{path}"
        );
        let wrong = client.get(&url).basic_auth(USER, Some("wrong password"));
        assert_eq!(
            status_of(wrong).await.0,
            401,
            "{path} with a wrong password"
        );
        let stranger = client.get(&url).basic_auth("stranger", Some(PASSWORD));
        assert_eq!(
            status_of(stranger).await.0,
            401,
            "{path} with an unknown user"
        );
    }
    for path in ["/metrics", "/", "/api/v1/targets"] {
        let right = client
            .get(daemon.url(path))
            .basic_auth(USER, Some(PASSWORD));
        let (status, _, body) = status_of(right).await;
        assert_eq!(status, 200, "{path} with credentials");
        if path == "/metrics" {
            assert!(body.contains("calldrift_up{"), "{body}");
        }
    }
    // Reload is guarded too: without credentials it must not even be attempted.
    let reload = client.post(daemon.url("/-/reload"));
    assert_eq!(status_of(reload).await.0, 401);
    for probe in ["/-/healthy", "/-/ready"] {
        assert_eq!(get(&daemon.url(probe)).await.0, 200, "{probe} stays open");
    }
}

#[tokio::test]
async fn repeated_scrapes_reuse_the_verified_credentials() {
    let (_sim, daemon, _) = start(&format!(
        "basic_auth_users:\n  {USER}: \"{}\"\n",
        // A realistic cost: ~100 ms or more per check in a debug build.
        bcrypt::hash(PASSWORD, 10).expect("bcrypt hash")
    ))
    .await;
    let client = http();
    let metrics = daemon.url("/metrics");
    let first = std::time::Instant::now();
    assert_eq!(
        status_of(client.get(&metrics).basic_auth(USER, Some(PASSWORD)))
            .await
            .0,
        200
    );
    let one_check = first.elapsed();
    let rest = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(
            status_of(client.get(&metrics).basic_auth(USER, Some(PASSWORD)))
                .await
                .0,
            200
        );
    }
    // Ten cached scrapes together cost less than the one bcrypt check.
    assert!(
        rest.elapsed() < one_check,
        "10 scrapes took {:?}, the first alone {one_check:?}",
        rest.elapsed()
    );
}

/// How long the daemon takes to refuse `user` with `password` on `/metrics`.
async fn time_to_refuse(
    client: &reqwest::Client,
    daemon: &Daemon,
    user: &str,
    password: &str,
) -> Duration {
    let start = std::time::Instant::now();
    let (status, _, _) = status_of(
        client
            .get(daemon.url("/metrics"))
            .basic_auth(user, Some(password)),
    )
    .await;
    assert_eq!(status, 401, "{user}");
    start.elapsed()
}

#[tokio::test]
async fn unknown_users_take_as_long_to_refuse_as_wrong_passwords() {
    // Cost 12 (~350 ms per check): a gap between the two would be plain.
    let (_sim, daemon, _) = start(&format!(
        "basic_auth_users:\n  {USER}: \"{}\"\n",
        bcrypt::hash(PASSWORD, 12).expect("bcrypt hash")
    ))
    .await;
    let client = http();
    wait_ready(&client, &daemon.url("/-/ready")).await;
    let (mut known, mut unknown) = (Duration::MAX, Duration::MAX);
    // Interleaved, keeping each kind's fastest: other tests share the bcrypt slot and the
    // cores, and can only make a request slower. The two are compared with each other,
    // never with a wall-clock constant.
    for _ in 0..3 {
        known = known.min(time_to_refuse(&client, &daemon, USER, "wrong password").await);
        unknown = unknown.min(time_to_refuse(&client, &daemon, "stranger", PASSWORD).await);
    }
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.5..=2.0).contains(&ratio),
        "refusing an unknown user took {unknown:?}, a wrong password {known:?}"
    );
}

#[tokio::test]
async fn refused_credentials_are_counted_by_reason_without_user_names() {
    let (_sim, daemon, _) = start(&users_yaml(PASSWORD)).await;
    let client = http();
    wait_ready(&client, &daemon.url("/-/ready")).await;
    let metrics = daemon.url("/metrics");
    let refusals = [
        client.get(&metrics),
        client.get(&metrics).header("authorization", "Bearer abc"),
        client.get(&metrics).basic_auth("stranger", Some(PASSWORD)),
        client.get(&metrics).basic_auth("stranger", Some("other")),
        client
            .get(&metrics)
            .basic_auth(USER, Some("wrong password")),
        client.get(&metrics).basic_auth(USER, Some("wrong again")),
        client.get(&metrics).basic_auth(USER, Some("and again")),
    ];
    for request in refusals {
        assert_eq!(status_of(request).await.0, 401);
    }
    // The probes ask for nothing, so they count nothing.
    assert_eq!(get(&daemon.url("/-/healthy")).await.0, 200);
    let (status, _, body) = status_of(client.get(&metrics).basic_auth(USER, Some(PASSWORD))).await;
    assert_eq!(status, 200);
    let scraped = common::Metrics(body.clone());
    let count =
        |reason: &str| scraped.value("calldrift_http_auth_failures_total", &[("reason", reason)]);
    assert_eq!(count("missing"), Some(1.0), "{body}");
    assert_eq!(count("malformed"), Some(1.0), "{body}");
    assert_eq!(count("unknown_user"), Some(2.0), "{body}");
    assert_eq!(count("wrong_password"), Some(3.0), "{body}");
    let family: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("calldrift_http_auth_failures_total"))
        .collect();
    assert_eq!(family.len(), 4, "{family:?}");
    assert!(
        family
            .iter()
            .all(|l| !l.contains("stranger") && !l.contains(USER)),
        "{family:?}"
    );
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_certificate_and_refuses_plain_http() {
    let (_sim, daemon, cert) = start(&format!("{TLS_YAML}{}", users_yaml(PASSWORD))).await;
    let client = tls_client(&cert);
    let https = |path: &str| format!("https://{}{path}", daemon.addr);
    wait_ready(&client, &https("/-/ready")).await;
    let (status, _, body) = status_of(
        client
            .get(https("/metrics"))
            .basic_auth(USER, Some(PASSWORD)),
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("calldrift_build_info"), "{body}");
    assert_eq!(status_of(client.get(https("/metrics"))).await.0, 401);
    // By name too: the certificate covers localhost.
    let by_name = format!("https://localhost:{}/-/healthy", daemon.addr.port());
    assert_eq!(status_of(client.get(by_name)).await.0, 200);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = http().get(daemon.url("/-/healthy")).send().await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that does not trust the certificate fails the handshake.
    let other = write_cert(tempfile::tempdir().expect("tempdir").path());
    let untrusting = tls_client(&other).get(https("/-/healthy")).send().await;
    assert!(untrusting.is_err(), "an untrusted certificate was accepted");
    // The server is still fine after those.
    assert_eq!(status_of(client.get(https("/-/healthy"))).await.0, 200);
}

#[tokio::test]
async fn a_slow_tls_handshake_does_not_block_other_clients() {
    let (_sim, daemon, cert) = start(TLS_YAML).await;
    // Connects and says nothing: the handshake never starts.
    let _silent = tokio::net::TcpStream::connect(daemon.addr)
        .await
        .expect("connect");
    let client = tls_client(&cert);
    let healthy = format!("https://{}/-/healthy", daemon.addr);
    let answer = tokio::time::timeout(Duration::from_secs(5), client.get(healthy).send())
        .await
        .expect("answered while another handshake is pending")
        .expect("request");
    assert_eq!(answer.status().as_u16(), 200);
}

#[tokio::test]
async fn client_certificates_are_required_with_require_and_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_cert = write_cert(dir.path());
    // A CA, and a client certificate it signed.
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    std::fs::write(dir.path().join("clients-ca.crt"), ca_cert.pem()).expect("write CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate().expect("client key");
    let client_cert = rcgen::CertificateParams::new(vec!["scraper".to_owned()])
        .expect("client params")
        .signed_by(&client_key, &issuer)
        .expect("client certificate");
    std::fs::write(
        dir.path().join("web.yml"),
        format!(
            "{TLS_YAML}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: clients-ca.crt\n  min_version: TLS13\n"
        ),
    )
    .expect("write web.yml");
    let sim = Sim::start(vec![app(APP, clean())]).await;
    let yaml = daemon_yaml(&sim, dir.path());
    let daemon = Daemon::start_in(dir, &yaml).await;
    let healthy = format!("https://{}/-/healthy", daemon.addr);

    let without = tls_client(&server_cert).get(&healthy).send().await;
    assert!(without.is_err(), "served a client without a certificate");
    let identity = reqwest::Identity::from_pem(
        format!("{}{}", client_cert.pem(), client_key.serialize_pem()).as_bytes(),
    )
    .expect("identity");
    let with = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_certs_only([reqwest::Certificate::from_pem(server_cert.as_bytes()).expect("PEM")])
        .identity(identity)
        .build()
        .expect("client");
    let answer = with
        .get(&healthy)
        .send()
        .await
        .expect("request with a client certificate");
    assert_eq!(answer.status().as_u16(), 200);
}

#[tokio::test]
async fn a_reload_with_a_non_bcrypt_hash_is_refused_and_old_credentials_keep_working() {
    let (_sim, daemon, _) = start(&users_yaml(PASSWORD)).await;
    let client = http();
    // The daemon reads web.yml as it starts: replace it only after that.
    wait_ready(&client, &daemon.url("/-/ready")).await;
    let web_path = daemon.dir.path().join("web.yml");
    std::fs::write(
        &web_path,
        format!("basic_auth_users:\n  {USER}: \"{PASSWORD}\"\n"),
    )
    .expect("write web.yml");
    let (status, _, body) = status_of(
        client
            .post(daemon.url("/-/reload"))
            .basic_auth(USER, Some(PASSWORD)),
    )
    .await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains(&format!("{}:2:", web_path.display()))
            && body.contains("is not a bcrypt hash"),
        "{body}"
    );
    assert!(
        !body.contains(PASSWORD),
        "the rejected value is echoed: {body}"
    );
    let metrics = daemon.url("/metrics");
    let (status, _, body) = status_of(client.get(&metrics).basic_auth(USER, Some(PASSWORD))).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("calldrift_config_last_reload_successful 0"),
        "{body}"
    );
    assert_eq!(
        status_of(client.get(&metrics)).await.0,
        401,
        "auth still on"
    );

    // A good reload swaps the users.
    std::fs::write(&web_path, users_yaml("new password")).expect("write web.yml");
    let reload = client
        .post(daemon.url("/-/reload"))
        .basic_auth(USER, Some(PASSWORD));
    let (status, _, body) = status_of(reload).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        status_of(client.get(&metrics).basic_auth(USER, Some(PASSWORD)))
            .await
            .0,
        401
    );
    let (status, _, body) =
        status_of(client.get(&metrics).basic_auth(USER, Some("new password"))).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("calldrift_config_last_reload_successful 1"),
        "{body}"
    );
}

#[tokio::test]
async fn a_reload_can_turn_tls_on_for_new_connections() {
    let (_sim, daemon, cert) = start("").await;
    assert_eq!(get(&daemon.url("/-/healthy")).await.0, 200);
    std::fs::write(daemon.dir.path().join("web.yml"), TLS_YAML).expect("write web.yml");
    daemon.reload.reload().await.expect("reload succeeds");
    let answer = tls_client(&cert)
        .get(format!("https://{}/-/healthy", daemon.addr))
        .send()
        .await
        .expect("TLS after reload");
    assert_eq!(answer.status().as_u16(), 200);
}

/// Runs the daemon with `web.yml` in its config directory; returns its error.
async fn start_error(web_yaml: Option<&str>, with_cert: bool) -> String {
    let sim = Sim::start(vec![app(APP, clean())]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    if with_cert {
        write_cert(dir.path());
    }
    if let Some(web_yaml) = web_yaml {
        std::fs::write(dir.path().join("web.yml"), web_yaml).expect("write web.yml");
    }
    let (_, loaded) = load_config(dir.path(), &daemon_yaml(&sim, dir.path()));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let (_reload, inbox) = daemon::reload_channel();
    let options = daemon::Options {
        loaded,
        config_path: None,
        resolver: None,
        shard: None,
    };
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        daemon::run(
            options,
            listener,
            Arc::new(SystemClock),
            CancellationToken::new(),
            inbox,
        ),
    )
    .await
    .expect("run returns at once instead of starting");
    let error = result.expect_err("run refuses to start").to_string();
    let web = dir.path().join("web.yml");
    assert!(
        error.contains(&web.display().to_string()),
        "the error does not name {}: {error}",
        web.display()
    );
    error
}

#[tokio::test]
async fn a_missing_certificate_file_stops_the_start_with_a_clear_error() {
    let error = start_error(
        Some("tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n"),
        true,
    )
    .await;
    assert!(
        error.contains(":2:14: tls_server_config.cert_file: cannot read ")
            && error.contains("missing.crt"),
        "{error}"
    );
}

#[tokio::test]
async fn other_bad_web_configs_stop_the_start() {
    let error = start_error(None, false).await;
    assert!(error.contains("cannot read web config"), "{error}");
    let error = start_error(Some("basic_auth_users:\n  bob: plaintext\n"), false).await;
    assert!(
        error.contains(":2:8: ") && error.contains("not a bcrypt hash"),
        "{error}"
    );
    let error = start_error(Some("basic_auth_user:\n  bob: x\n"), false).await;
    assert!(
        error.contains(":1:1: unknown field \"basic_auth_user\""),
        "{error}"
    );
}

#[tokio::test]
async fn a_reload_a_browser_marks_as_cross_site_is_refused() {
    let sim = Sim::start(vec![app(APP, clean()), app(APP + 1, clean())]).await;
    let settings = "poll:\n  interval: 1h\n  timeout: 2s";
    let d = Daemon::start(&config_yaml(&sim, settings, &[app_yaml("a", APP, "")])).await;
    let client = http();
    let reload = || client.post(d.url("/-/reload"));
    let loaded = || async {
        let m = d.scrape().await;
        (
            m.value("calldrift_targets", &[]),
            m.value(
                "calldrift_config_last_reload_success_timestamp_seconds",
                &[],
            ),
        )
    };
    // Every reload from here on would add a target.
    let two_apps = [app_yaml("a", APP, ""), app_yaml("b", APP + 1, "")];
    std::fs::write(&d.config_path, config_yaml(&sim, settings, &two_apps)).expect("write");
    let before = loaded().await;
    assert_eq!(before.0, Some(1.0));

    for (header, value) in [
        ("Origin", "http://evil.example"),
        ("Origin", "null"),
        // Another port of the same host is another origin.
        ("Origin", &format!("http://{}:1", d.addr.ip())),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        let (status, _, body) = status_of(reload().header(header, value)).await;
        assert_eq!(status, 403, "{header}: {value}: {body}");
        assert!(body.contains("cross-site"), "{body}");
    }
    // A same-origin Sec-Fetch-Site does not excuse a foreign Origin.
    let both = reload()
        .header("Sec-Fetch-Site", "same-origin")
        .header("Origin", "http://evil.example");
    assert_eq!(status_of(both).await.0, 403);
    assert_eq!(loaded().await, before, "no refused request reloaded");

    // The page's own origin, a typed-in request, and curl-like tools get through.
    let same_origin = reload()
        .header("Origin", format!("http://{}", d.addr))
        .header("Sec-Fetch-Site", "same-origin");
    let (status, _, body) = status_of(same_origin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        loaded().await.0,
        Some(2.0),
        "the same-origin request reloaded"
    );
    let (status, _, body) = status_of(reload().header("Sec-Fetch-Site", "none")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(reqwest::Method::POST, &d.url("/-/reload")).await;
    assert_eq!(status, 200, "{body}");
    let after = loaded().await;
    assert!(after.1 > before.1, "reloaded: {before:?} -> {after:?}");
}
