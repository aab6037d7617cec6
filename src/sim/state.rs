//! What requests read and change, behind the simulator's one lock: each app's key,
//! accounts, configuration per product and counters, the fault rules in force, the
//! gateway totals.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::faults::FaultRule;
use super::scenario::{CallbackConfig, Rotate, Scenario, SimApp};
use super::stats::{AppCounts, Totals};
use crate::product::Product;
use crate::secret::SecretKey;

/// The simulator's mutable state.
pub(super) struct State {
    pub(super) apps: BTreeMap<u64, AppState>,
    pub(super) faults: Vec<FaultRule>,
    pub(super) totals: Totals,
}

/// One app: who may call it, its configuration per product, how much it was called.
pub(super) struct AppState {
    pub(super) key: SecretKey,
    pub(super) admins: HashSet<String>,
    pub(super) users: HashSet<String>,
    /// What `v4/{call,room,live}_config/*_callback` read and write.
    pub(super) configs: Configs,
    pub(super) counts: AppCounts,
}

/// One configuration per product, as the gateway keeps them per SDKAppID.
pub(super) struct Configs {
    call: ConfigState,
    room: ConfigState,
    live: ConfigState,
}

impl Configs {
    pub(super) fn get(&self, product: Product) -> &ConfigState {
        match product {
            Product::Call => &self.call,
            Product::Room => &self.room,
            Product::Live => &self.live,
        }
    }

    pub(super) fn get_mut(&mut self, product: Product) -> &mut ConfigState {
        match product {
            Product::Call => &mut self.call,
            Product::Room => &mut self.room,
            Product::Live => &mut self.live,
        }
    }
}

/// A configuration as it stands: fixed (possibly absent), or a scripted rotation.
pub(super) enum ConfigState {
    Fixed(Option<CallbackConfig>),
    Rotating(Rotate),
}

impl State {
    /// The state a scenario starts with.
    pub(super) fn new(scenario: Scenario) -> State {
        State {
            apps: scenario.apps.into_iter().map(AppState::new).collect(),
            faults: scenario.faults,
            totals: Totals::default(),
        }
    }
}

impl AppState {
    fn new(app: SimApp) -> (u64, AppState) {
        let call = match app.rotate {
            Some(rotate) if !rotate.configs.is_empty() => ConfigState::Rotating(rotate),
            _ => ConfigState::Fixed(app.callback),
        };
        let state = AppState {
            key: SecretKey::new(app.key),
            admins: app.admins.into_iter().collect(),
            users: app.users.into_iter().collect(),
            configs: Configs {
                call,
                room: ConfigState::Fixed(app.room_callback),
                live: ConfigState::Fixed(app.live_callback),
            },
            counts: AppCounts::default(),
        };
        (app.sdkappid, state)
    }
}

impl ConfigState {
    /// The configuration shown now, `started` being when the simulator started.
    pub(super) fn effective(&self, started: Instant) -> Option<CallbackConfig> {
        match self {
            ConfigState::Fixed(cfg) => cfg.clone(),
            ConfigState::Rotating(rotate) => {
                let len = rotate.configs.len() as u128;
                if len == 0 {
                    return None;
                }
                let every = rotate.every.as_nanos().max(1);
                let index = (started.elapsed().as_nanos() / every) % len;
                usize::try_from(index)
                    .ok()
                    .and_then(|i| rotate.configs.get(i))
                    .cloned()
                    .flatten()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::sim::harness::*;
    use crate::sim::{CallbackConfig, Rotate};
    use hyper::Method;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn rotation_cycles_until_a_set_replaces_it() {
        let a = CallbackConfig::new("https://a.example.com/", &[START]);
        let b = CallbackConfig::new("https://b.example.com/", &[START, END]);
        let mut scenario = scenario();
        scenario.apps[1].rotate = Some(Rotate {
            every: Duration::from_millis(100),
            configs: vec![Some(a.clone()), None, Some(b.clone())],
        });
        let server = Server::start(scenario).await;
        let index = |resp: &Resp| -> usize {
            let json = resp.json();
            match json["Response"]["Url"].as_str() {
                Some("https://a.example.com/") => 0,
                None => 1,
                Some("https://b.example.com/") => 2,
                Some(other) => panic!("unexpected {other}"),
            }
        };
        let mut seen = vec![];
        let started = Instant::now();
        let mut conn = Conn::open(server.addr).await;
        let uri = good_uri("get_callback", BARE);
        while started.elapsed() < Duration::from_millis(450) {
            let i = index(&conn.send(Method::POST, &uri, "{}").await.unwrap());
            if seen.last() != Some(&i) {
                seen.push(i);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(seen.len() >= 4, "{seen:?}");
        for pair in seen.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % 3, "{seen:?}");
        }
        server.sim.set_callback(BARE, Some(a.clone()));
        for _ in 0..3 {
            assert_eq!(
                index(&conn.send(Method::POST, &uri, "{}").await.unwrap()),
                0
            );
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        server.stop().await;
    }
}
