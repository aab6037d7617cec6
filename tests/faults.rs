//! Fault injection: each fault hits one target beside healthy ones. For every fault the
//! daemon keeps serving, healthy targets stay up, the faulty target goes down with the
//! right reason, keeps its last findings, and recovers once the fault is gone; retries
//! stay bounded and the rate limit holds throughout.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use calldrift::sim::{CallbackConfig, FaultKind, FaultRule};
use calldrift::tencent::Resolver;
use calldrift::tencent::transport::{BoxError, Resolve, Resolving};
use common::*;

const RATE_LIMIT: u64 = 50;
const RETRIES: u64 = 1;
const INTERVAL: Duration = Duration::from_millis(400);

/// One faulty target: its region name (so failures are counted per case), the fault and
/// the `reason` label it must produce.
struct Case {
    region: &'static str,
    sdkappid: u64,
    fault: Option<FaultKind>,
    reason: &'static str,
}

fn cases() -> Vec<Case> {
    let case = |region, sdkappid, fault, reason| Case {
        region,
        sdkappid,
        fault: Some(fault),
        reason,
    };
    vec![
        case(
            "f502",
            101,
            FaultKind::HttpStatus { status: 502 },
            "http_status",
        ),
        case(
            "fslow",
            102,
            FaultKind::Delay {
                delay: Duration::from_secs(3),
            },
            "timeout",
        ),
        case("fhang", 103, FaultKind::Hang, "timeout"),
        case("freset", 104, FaultKind::Reset, "transport"),
        case("fjson", 105, FaultKind::MalformedJson, "decode"),
        case("ftypes", 106, FaultKind::WrongTypes, "decode"),
        case("fbig", 107, FaultKind::Oversized, "decode"),
        case("fhtml", 108, FaultKind::HtmlPage, "decode"),
        case(
            "f60011",
            109,
            FaultKind::ErrorCode { code: 60011 },
            "rate_limited",
        ),
        case(
            "f70050",
            110,
            FaultKind::ErrorCode { code: 70050 },
            "rate_limited",
        ),
        case("f70001", 111, FaultKind::ErrorCode { code: 70001 }, "auth"),
        case(
            "f100001",
            112,
            FaultKind::ErrorCode { code: 100001 },
            "api_error",
        ),
        // The wrong key is in the config, not a simulator fault; a reload fixes it.
        Case {
            region: "fkey",
            sdkappid: 113,
            fault: None,
            reason: "auth",
        },
        // The region's primary host does not resolve; its backup domain does.
        Case {
            region: "fdns",
            sdkappid: 114,
            fault: None,
            reason: "transport",
        },
    ]
}

/// Resolves `backup.localhost` to the simulator and fails every other name, so the test
/// sends no DNS query anywhere.
struct TestResolver(SocketAddr);

impl Resolve for TestResolver {
    fn resolve(&self, host: &str) -> Resolving {
        let answer: Result<Vec<SocketAddr>, BoxError> = if host == "backup.localhost" {
            Ok(vec![self.0])
        } else {
            Err(format!("{host}: name does not resolve").into())
        };
        Box::pin(async move { answer })
    }
}

fn config(sim: &Sim, wrong_key: bool) -> String {
    let port = sim.addr.port();
    let mut regions = format!("regions:\n  sim: \"{}\"\n", sim.base());
    for case in cases() {
        let region = match case.region {
            "fdns" => format!(
                "  fdns:\n    url: \"http://dns-fails.localhost:{port}\"\n    backup: \"http://backup.localhost:{port}\"\n"
            ),
            name => format!("  {name}: \"{}\"\n", sim.base()),
        };
        regions.push_str(&region);
    }
    let mut apps = String::from("apps:\n");
    apps.push_str(&app_yaml("healthy1", 1, ""));
    apps.push_str(&app_yaml("healthy2", 2, ""));
    for case in cases() {
        let key = if case.region == "fkey" && wrong_key {
            format!("    secret_key: \"{}\"\n", "0".repeat(64))
        } else {
            format!(
                "    secret_key_file: {}\n",
                key_file(case.sdkappid).display()
            )
        };
        apps.push_str(&format!(
            "  - name: {}\n    sdkappid: {}\n    regions: [{}]\n{key}",
            case.region, case.sdkappid, case.region
        ));
    }
    format!(
        "poll:\n  interval: {}ms\n  timeout: 1s\n  retries: {RETRIES}\nrate_limit:\n  per_second: {RATE_LIMIT}\n{regions}{apps}",
        INTERVAL.as_millis()
    )
}

#[tokio::test]
async fn every_fault_is_contained_counted_and_recovered_from() {
    let drifted = || {
        Some(CallbackConfig::new(
            "http://hooks.example.com/cb",
            &[START, END],
        ))
    };
    let mut apps = vec![app(1, clean()), app(2, clean())];
    apps.extend(cases().iter().map(|c| app(c.sdkappid, drifted())));
    let sim = Sim::start(apps).await;
    let resolver = Resolver(Arc::new(TestResolver(sim.addr)));
    let d = Daemon::start_with(
        tempfile::tempdir().expect("tempdir"),
        &config(&sim, true),
        Some(resolver),
    )
    .await;

    // Before the faults: every reachable target answered and shows its drift.
    wait_until(
        Duration::from_secs(10),
        "healthy and faulty targets polled",
        || async {
            let m = d.scrape().await;
            cases()
                .iter()
                .filter(|c| !matches!(c.region, "fkey" | "fdns"))
                .all(|c| {
                    m.target("calldrift_drift", c.region, &[("check", "url_scheme")]) == Some(1.0)
                })
        },
    )
    .await;

    sim.set_faults(
        cases()
            .iter()
            .filter_map(|c| {
                c.fault.clone().map(|kind| FaultRule {
                    sdkappid: c.sdkappid,
                    kind,
                    count: None,
                })
            })
            .collect(),
    );
    let faults_on = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "every faulty target down with its reason counted",
        || async {
            let m = d.scrape().await;
            cases().iter().filter(|c| c.region != "fdns").all(|c| {
                m.target("calldrift_up", c.region, &[]) == Some(0.0)
                    && m.value(
                        "calldrift_api_request_failures_total",
                        &[("region", c.region), ("reason", c.reason)],
                    )
                    .is_some_and(|n| n >= 1.0)
            }) && m
                .value(
                    "calldrift_api_request_failures_total",
                    &[("region", "fdns"), ("reason", "transport")],
                )
                .is_some_and(|n| n >= 1.0)
        },
    )
    .await;

    let m = d.scrape().await;
    for healthy in ["healthy1", "healthy2"] {
        assert_eq!(
            m.target("calldrift_up", healthy, &[]),
            Some(1.0),
            "{healthy} unaffected"
        );
    }
    for case in cases()
        .iter()
        .filter(|c| !matches!(c.region, "fkey" | "fdns"))
    {
        assert_eq!(
            m.target("calldrift_drift", case.region, &[("check", "url_scheme")]),
            Some(1.0),
            "{}: findings kept",
            case.region
        );
        assert_eq!(
            m.target("calldrift_callback_config_present", case.region, &[]),
            Some(1.0),
            "{}",
            case.region
        );
    }
    for case in cases() {
        assert_eq!(
            m.target(
                "calldrift_drift",
                case.region,
                &[("check", "config_missing")]
            ),
            Some(0.0),
            "{}: an outage is not a missing config",
            case.region
        );
    }

    // Retries are bounded: a poll is one request plus at most `retries` (plus one re-mint
    // after 70001), and ticks of a poll still running are skipped.
    let elapsed = faults_on.elapsed().as_secs_f64() + 12.0;
    let max_polls = elapsed / INTERVAL.as_secs_f64() + 2.0;
    let stats = sim.stats();
    for case in cases().iter().filter(|c| c.fault.is_some()) {
        let requests = stats.apps[&case.sdkappid.to_string()].requests as f64;
        assert!(
            requests <= max_polls * (RETRIES as f64 + 2.0),
            "{}: {requests} requests for at most {max_polls:.0} polls",
            case.region
        );
    }

    // The fault is removed (and the key corrected): every target answers again.
    sim.set_faults(Vec::new());
    std::fs::write(&d.config_path, config(&sim, false)).expect("rewrite config");
    d.reload.reload().await.expect("reload with the right key");
    let recovered = Instant::now();
    wait_until(Duration::from_secs(6), "every target up again", || async {
        let m = d.scrape().await;
        cases()
            .iter()
            .all(|c| m.target("calldrift_up", c.region, &[]) == Some(1.0))
    })
    .await;
    // One interval after the fault is gone; a hung or slow poll still in flight must first
    // run out its timeout twice (one retry) and a backoff of at most 400 ms, plus slack
    // for a loaded machine.
    assert!(
        recovered.elapsed() < INTERVAL + Duration::from_millis(2 * 1000 + 400 + 1000),
        "recovered in {:?}",
        recovered.elapsed()
    );

    let stats = sim.stats();
    assert!(
        stats.max_requests_in_any_second <= RATE_LIMIT,
        "largest 1-second window {} > {RATE_LIMIT}",
        stats.max_requests_in_any_second
    );
    sim.assert_no_malformed();
    let m = d.scrape().await;
    assert_eq!(
        m.target("calldrift_drift", "fkey", &[("check", "url_scheme")]),
        Some(1.0)
    );
    assert_eq!(
        m.target("calldrift_up", "fdns", &[]),
        Some(1.0),
        "the backup domain serves the region whose primary does not resolve"
    );
}

#[tokio::test]
async fn an_expired_usersig_is_reminted_and_retried_without_going_down() {
    let sim = Sim::start(vec![app(1, clean())]).await;
    let d = Daemon::start(&config_yaml(
        &sim,
        "poll:\n  interval: 300ms\n  retries: 0",
        &[app_yaml("a", 1, "")],
    ))
    .await;
    wait_until(Duration::from_secs(5), "up", || async {
        d.scrape().await.target("calldrift_up", "a", &[]) == Some(1.0)
    })
    .await;
    sim.set_faults(vec![FaultRule {
        sdkappid: 1,
        kind: FaultKind::ErrorCode { code: 70001 },
        count: Some(1),
    }]);
    wait_until(Duration::from_secs(5), "the 70001 answered", || async {
        sim.sim.faults().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, body) = get(&d.url("/api/v1/transitions")).await;
    assert!(
        !body.contains("\"down\""),
        "one expired UserSig must not take the target down: {body}"
    );
    assert_eq!(d.scrape().await.target("calldrift_up", "a", &[]), Some(1.0));
}
