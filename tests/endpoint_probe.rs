//! The callback endpoint probe against TLS servers made at test time: verified, expiring,
//! expired, misnamed and unknown-CA certificates, names that do not resolve, refused and
//! silent ports, deduplication over many apps, refused private addresses, URL changes, and
//! `check --endpoint`. Every name resolves through the test's resolver: no DNS query
//! leaves the machine.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use calldrift::sim::CallbackConfig;
use calldrift::tencent::Resolver;
use calldrift::tencent::transport::{BoxError, Resolve, Resolving};
use common::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

/// `localhost` is 127.0.0.1; every other name fails to resolve.
struct LocalResolver;

impl Resolve for LocalResolver {
    fn resolve(&self, host: &str) -> Resolving {
        let answer: Result<Vec<SocketAddr>, BoxError> = if host == "localhost" {
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], 0))])
        } else {
            Err(format!("{host}: name does not resolve").into())
        };
        Box::pin(async move { answer })
    }
}

fn resolver() -> Resolver {
    Resolver(Arc::new(LocalResolver))
}

/// A CA: its issuer and its certificate's PEM.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let pem = params.self_signed(&key).expect("CA").pem();
    Ca {
        issuer: rcgen::Issuer::new(params, key),
        pem,
    }
}

/// Valid from `from` until `until`, both Unix seconds.
fn set_validity(params: &mut rcgen::CertificateParams, from: u64, until: u64) {
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(from);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(until);
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A server configuration with a certificate for `names`, valid until `not_after` (Unix).
fn server_tls(ca: &Ca, names: &[&str], not_after: u64) -> Arc<rustls::ServerConfig> {
    let key = rcgen::KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).expect("params");
    set_validity(&mut params, not_after.min(now()) - 86_400 * 30, not_after);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &ca.issuer).expect("sign");
    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key: PrivateKeyDer<'static> = PrivatePkcs8KeyDer::from(key.serialize_der()).into();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server config");
    Arc::new(config)
}

/// A loopback server that counts the connections it accepts; with TLS it completes
/// handshakes, without it never says a word.
struct Server {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

async fn server(tls: Option<Arc<rustls::ServerConfig>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            match &tls {
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                    tokio::spawn(async move {
                        if let Ok(mut tls) = acceptor.accept(stream).await {
                            let mut sink = Vec::new();
                            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut sink).await;
                        }
                    });
                }
                None => held.push(stream),
            }
        }
    });
    Server { port, accepted }
}

/// A port nothing listens on.
async fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

fn callback(url: &str) -> Option<CallbackConfig> {
    Some(CallbackConfig::new(url, &[START, END]))
}

fn probe_settings(ca_file: &std::path::Path, allow_private: bool, interval: &str) -> String {
    format!(
        "poll:\n  interval: 1s\nendpoint_probe:\n  interval: {interval}\n  timeout: 1s\n  allow_private: {allow_private}\n  ca_file: {}\n",
        ca_file.display()
    )
}

fn write_ca(dir: &tempfile::TempDir, ca: &Ca) -> std::path::PathBuf {
    let path = dir.path().join("callback-ca.pem");
    std::fs::write(&path, &ca.pem).expect("write CA");
    path
}

const VALID_UNTIL: u64 = 2_208_988_800; // 2040-01-01
const EXPIRED_AT: u64 = 1_609_459_200; // 2021-01-01

#[tokio::test]
async fn each_kind_of_endpoint_is_probed_and_reported() {
    let trusted = ca("trusted test CA");
    let stranger = ca("unknown test CA");
    let soon = now() + 5 * 86_400;
    let valid = server(Some(server_tls(&trusted, &["localhost"], VALID_UNTIL))).await;
    let expiring = server(Some(server_tls(&trusted, &["localhost"], soon))).await;
    let expired = server(Some(server_tls(&trusted, &["localhost"], EXPIRED_AT))).await;
    let misnamed = server(Some(server_tls(&trusted, &["other.example"], VALID_UNTIL))).await;
    let unknown = server(Some(server_tls(&stranger, &["localhost"], VALID_UNTIL))).await;
    let silent = server(None).await;
    let refused = refused_port().await;
    let cases: [(&str, String); 9] = [
        (
            "valid",
            format!("https://localhost:{}/cb?sig=1", valid.port),
        ),
        (
            "expiring",
            format!("https://localhost:{}/cb", expiring.port),
        ),
        ("expired", format!("https://localhost:{}/cb", expired.port)),
        (
            "misnamed",
            format!("https://localhost:{}/cb", misnamed.port),
        ),
        ("unknown", format!("https://localhost:{}/cb", unknown.port)),
        ("nodns", "https://nowhere.invalid/cb".to_owned()),
        ("refused", format!("https://localhost:{refused}/cb")),
        ("silent", format!("https://localhost:{}/cb", silent.port)),
        ("plain", format!("http://localhost:{}/cb", valid.port)),
    ];
    let apps: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, url))| app(1_400_000_100 + i as u64, callback(url)))
        .collect();
    let sim = Sim::start(apps).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_ca(&dir, &trusted);
    let names: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (name, _))| app_yaml(name, 1_400_000_100 + i as u64, ""))
        .collect();
    let yaml = config_yaml(&sim, &probe_settings(&ca_file, true, "1m"), &names);
    let d = Daemon::start_with(dir, &yaml, Some(resolver())).await;

    let last_probe = "calldrift_callback_endpoint_last_probe_timestamp_seconds";
    wait_until(
        Duration::from_secs(10),
        "every https endpoint probed",
        || async {
            let m = d.scrape().await;
            cases[..8]
                .iter()
                .all(|(name, _)| m.target(last_probe, name, &[]).is_some())
        },
    )
    .await;
    let m = d.scrape().await;
    let up = |name| m.target("calldrift_callback_endpoint_up", name, &[]);
    let expiry = |name| {
        m.target(
            "calldrift_callback_endpoint_cert_expiry_timestamp_seconds",
            name,
            &[],
        )
    };
    let failures = |name, reason| {
        m.target(
            "calldrift_callback_endpoint_probe_failures_total",
            name,
            &[("reason", reason)],
        )
    };
    assert_eq!(up("valid"), Some(1.0));
    assert_eq!(expiry("valid"), Some(VALID_UNTIL as f64));
    assert_eq!(failures("valid", "tls_verify"), Some(0.0));
    assert_eq!(up("expiring"), Some(1.0));
    assert_eq!(expiry("expiring"), Some(soon as f64));
    assert_eq!(up("expired"), Some(0.0));
    assert_eq!(failures("expired", "tls_verify"), Some(1.0));
    assert_eq!(
        expiry("expired"),
        Some(EXPIRED_AT as f64),
        "an expired certificate still shows its date"
    );
    for (name, reason) in [
        ("misnamed", "tls_verify"),
        ("unknown", "tls_verify"),
        ("nodns", "dns"),
        ("refused", "connect"),
        ("silent", "timeout"),
    ] {
        assert_eq!(up(name), Some(0.0), "{name}");
        assert_eq!(
            failures(name, reason),
            Some(1.0),
            "{name}: {reason}\n{}",
            m.0
        );
    }
    assert_eq!(expiry("nodns"), None, "no certificate, no expiry");
    assert_eq!(up("plain"), None, "an http URL has no endpoint series");
    assert_eq!(failures("plain", "dns"), None);
    assert_eq!(silent.accepted.load(Ordering::SeqCst), 1);

    let targets = d.targets().await;
    let valid_report = targets["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["app"] == "valid")
        .expect("valid target");
    assert_eq!(valid_report["endpoint"]["up"], true);
    assert_eq!(
        valid_report["endpoint"]["endpoint"],
        format!("localhost:{}", valid.port)
    );
    let page = get(&d.url("/")).await.1;
    assert!(page.contains("<th>endpoint</th>"), "{page}");
    assert!(page.contains("down (tls_verify)"), "{page}");
    d.stop().await;
}

#[tokio::test]
async fn two_hundred_apps_on_one_host_cost_one_probe() {
    let trusted = ca("trusted test CA");
    let host = server(Some(server_tls(&trusted, &["localhost"], VALID_UNTIL))).await;
    let url = format!("https://localhost:{}/cb", host.port);
    let ids: Vec<u64> = (0..200).map(|i| 1_400_001_000 + i).collect();
    let sim = Sim::start(ids.iter().map(|id| app(*id, callback(&url))).collect()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_ca(&dir, &trusted);
    let apps: Vec<String> = ids
        .iter()
        .map(|id| app_yaml(&format!("a{id}"), *id, ""))
        .collect();
    let yaml = config_yaml(&sim, &probe_settings(&ca_file, true, "1m"), &apps);
    let d = Daemon::start_with(dir, &yaml, Some(resolver())).await;
    wait_until(
        Duration::from_secs(10),
        "all 200 targets show the endpoint up",
        || async {
            let m = d.scrape().await;
            ids.iter().all(|id| {
                m.target("calldrift_callback_endpoint_up", &format!("a{id}"), &[]) == Some(1.0)
            })
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        host.accepted.load(Ordering::SeqCst),
        1,
        "one probe per interval for one host"
    );
    d.stop().await;
}

#[tokio::test]
async fn private_addresses_are_refused_unless_allowed() {
    let trusted = ca("trusted test CA");
    let host = server(Some(server_tls(
        &trusted,
        &["localhost", "127.0.0.1"],
        VALID_UNTIL,
    )))
    .await;
    let sim = Sim::start(vec![
        app(
            1_400_002_001,
            callback(&format!("https://localhost:{}/cb", host.port)),
        ),
        app(
            1_400_002_002,
            callback(&format!("https://127.0.0.1:{}/cb", host.port)),
        ),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_ca(&dir, &trusted);
    let apps = [
        app_yaml("named", 1_400_002_001, ""),
        app_yaml("literal", 1_400_002_002, ""),
    ];
    let yaml = config_yaml(&sim, &probe_settings(&ca_file, false, "1m"), &apps);
    let d = Daemon::start_with(dir, &yaml, Some(resolver())).await;
    let reason = [("reason", "blocked_address")];
    let name = "calldrift_callback_endpoint_probe_failures_total";
    wait_until(Duration::from_secs(10), "both refused", || async {
        let m = d.scrape().await;
        m.target(name, "named", &reason) == Some(1.0)
            && m.target(name, "literal", &reason) == Some(1.0)
    })
    .await;
    let m = d.scrape().await;
    assert_eq!(
        m.target("calldrift_callback_endpoint_up", "named", &[]),
        Some(0.0)
    );
    assert_eq!(host.accepted.load(Ordering::SeqCst), 0, "nothing connected");
    d.stop().await;
}

#[tokio::test]
async fn a_changed_url_is_probed_at_once_and_a_dropped_one_loses_its_series() {
    let trusted = ca("trusted test CA");
    let first = server(Some(server_tls(&trusted, &["localhost"], VALID_UNTIL))).await;
    let second = server(Some(server_tls(
        &trusted,
        &["localhost"],
        EXPIRED_AT + 86_400 * 9000,
    )))
    .await;
    let first_url = format!("https://localhost:{}/cb", first.port);
    let sim = Sim::start(vec![
        app(1_400_003_001, callback(&first_url)),
        app(1_400_003_002, callback(&first_url)),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_ca(&dir, &trusted);
    let apps = [
        app_yaml("moves", 1_400_003_001, ""),
        app_yaml("drops", 1_400_003_002, ""),
    ];
    let yaml = config_yaml(&sim, &probe_settings(&ca_file, true, "10m"), &apps);
    let d = Daemon::start_with(dir, &yaml, Some(resolver())).await;
    let up = "calldrift_callback_endpoint_up";
    wait_until(Duration::from_secs(10), "first host probed", || async {
        let m = d.scrape().await;
        m.target(up, "moves", &[]) == Some(1.0) && m.target(up, "drops", &[]) == Some(1.0)
    })
    .await;
    sim.set_app(
        1_400_003_001,
        callback(&format!("https://localhost:{}/cb", second.port)),
    );
    sim.set_app(
        1_400_003_002,
        callback(&format!("http://localhost:{}/cb", first.port)),
    );
    let expiry = "calldrift_callback_endpoint_cert_expiry_timestamp_seconds";
    let want = (EXPIRED_AT + 86_400 * 9000) as f64;
    wait_until(
        Duration::from_secs(6),
        "the new host probed within seconds, the dropped one's series gone",
        || async {
            let m = d.scrape().await;
            m.target(expiry, "moves", &[]) == Some(want) && m.target(up, "drops", &[]).is_none()
        },
    )
    .await;
    assert_eq!(second.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(
        first.accepted.load(Ordering::SeqCst),
        1,
        "one probe for both apps"
    );
    d.stop().await;
}

#[tokio::test]
async fn check_with_endpoint_reports_each_endpoint() {
    let trusted = ca("trusted test CA");
    let host = server(Some(server_tls(&trusted, &["localhost"], VALID_UNTIL))).await;
    let url = format!("https://localhost:{}/cb", host.port);
    let sim = Sim::start(vec![
        app(1_400_004_001, callback(&url)),
        app(1_400_004_002, callback("https://nowhere.invalid/cb")),
    ])
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = write_ca(&dir, &trusted);
    let apps = [
        app_yaml("good", 1_400_004_001, ""),
        app_yaml("lost", 1_400_004_002, ""),
    ];
    let yaml = config_yaml(&sim, &probe_settings(&ca_file, true, "1m"), &apps);
    let (_, loaded) = load_config(dir.path(), &yaml);
    let clock: Arc<dyn calldrift::clock::Clock> = Arc::new(calldrift::clock::SystemClock);
    let mut report = calldrift::check::run(&loaded.config, &loaded.secrets, &[], clock.clone())
        .await
        .expect("check");
    let exit = report.exit_code();
    calldrift::check::probe_endpoints(&loaded.config, &mut report, Some(resolver()), clock)
        .await
        .expect("probe");
    assert_eq!(
        report.exit_code(),
        exit,
        "endpoints do not change the exit status"
    );
    let by_app = |name: &str| {
        report
            .targets
            .iter()
            .find(|t| t.app == name)
            .and_then(|t| t.endpoint.clone())
            .expect("endpoint")
    };
    assert!(by_app("good").up);
    assert_eq!(by_app("good").cert_not_after, Some(VALID_UNTIL as f64));
    assert_eq!(by_app("lost").failure.as_deref(), Some("dns"));
    assert!(
        report
            .to_text()
            .contains("endpoint nowhere.invalid:443: down (dns"),
        "{}",
        report.to_text()
    );
}
