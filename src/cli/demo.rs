//! `calldrift demo`: the simulator's example story and the daemon against it.

use super::stdout::emit;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::SystemClock;
use crate::config::{self};
use crate::daemon::{self};
use crate::sim::{Scenario, Simulator};

use super::serve::{bind, cancel_on_signal};

/// Names the demo gives the apps of the example scenario, in order.
const DEMO_NAMES: [&str; 4] = ["clean", "plain-http", "missing", "rotating"];
pub(super) async fn demo(listen: SocketAddr) -> anyhow::Result<()> {
    let scenario = Scenario::example()?;
    let sim_listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let sim_addr = sim_listener.local_addr()?;
    let listener = bind(listen).await?;
    let listen = listener.local_addr()?;

    // The demo's callback URLs are made up (example.com): probing them would only send
    // DNS queries off the machine.
    let mut yaml = format!(
        "listen: \"{listen}\"\npoll:\n  interval: 5s\nendpoint_probe:\n  enabled: false\nregions:\n  sim: \"http://{sim_addr}\"\napps:\n"
    );
    for (index, app) in scenario.apps.iter().enumerate() {
        let name = DEMO_NAMES
            .get(index)
            .map_or_else(|| format!("app-{index}"), |n| (*n).to_owned());
        let admin = app.admins.first().map_or("administrator", String::as_str);
        // An app the scenario gives a TUIRoomKit configuration is watched for it too.
        let products = if app.room_callback.is_some() {
            "    products: [call, room]\n"
        } else {
            ""
        };
        yaml.push_str(&format!(
            "  - name: {name}\n    sdkappid: {}\n    regions: [sim]\n    identifier: {admin}\n    secret_key: \"{}\"\n{products}",
            app.sdkappid, app.key
        ));
    }
    let (config, _) = config::parse(&yaml, "demo", Path::new("."))
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;
    let (secrets, _) = config::resolve_secrets(&config, &|_| None)
        .map_err(|e| anyhow::anyhow!("demo config: {e}"))?;

    let shutdown = CancellationToken::new();
    let simulator = Simulator::new(scenario, Arc::new(SystemClock))?;
    let sim_shutdown = shutdown.clone();
    let sim_task = tokio::spawn(async move { simulator.run(sim_listener, sim_shutdown).await });
    emit(intro(sim_addr, listen))?;
    let (handle, inbox) = daemon::reload_channel();
    tokio::spawn(cancel_on_signal(shutdown.clone(), Some(handle)));
    let options = daemon::Options {
        loaded: config::LoadedConfig {
            config,
            secrets,
            warnings: Vec::new(),
        },
        config_path: None,
        resolver: None,
        shard: None,
    };
    let result = daemon::run(
        options,
        listener,
        Arc::new(SystemClock),
        shutdown.clone(),
        inbox,
    )
    .await;
    shutdown.cancel();
    let _ = sim_task.await;
    result?;
    Ok(())
}

/// What the demo prints at start: the story, where to look, a grep that shows the drift.
fn intro(sim_addr: SocketAddr, listen: SocketAddr) -> String {
    let grep = "grep -E '^calldrift_(drift\\{.*\\} 1|callback_config_changes_total)'";
    let intro = [
        format!(
            "calldrift demo: a simulated Chat API on http://{sim_addr} tells a story of four apps:"
        ),
        "  clean (https, both commands, and a TUIRoomKit config watched as a second target),"
            .into(),
        "  plain-http (http:// URL), missing (no config), rotating (its commands change".into(),
        "  every 30 s). calldrift polls each every 5 s.".into(),
        String::new(),
        format!("  landing page   http://{listen}/"),
        format!("  metrics        http://{listen}/metrics"),
        format!("  JSON           http://{listen}/api/v1/targets"),
        String::new(),
        format!("  curl -s http://{listen}/metrics | {grep}"),
        String::new(),
        "Ctrl-C stops it.\n".into(),
    ];
    intro.join("\n")
}
