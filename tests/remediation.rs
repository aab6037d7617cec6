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
    assert_eq!(read.result, Ok(Observed::Absent));
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
