//! The daemon's probe loop: the wanted endpoints from the targets, the schedule, at most
//! [`MAX_IN_FLIGHT`] probes at once, and each result handed back to the targets. It runs
//! beside the poll scheduler and shares nothing with it but the targets' knowledge.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Endpoint, ProbeResult, Prober, Reason, Schedule};

/// Probes in flight at most: endpoints are few (deduplicated) and each probe is short.
pub const MAX_IN_FLIGHT: usize = 8;

/// What the loop probes for: the targets' endpoints and where results go.
pub trait ProbeTargets: Send + Sync + 'static {
    /// Every distinct endpoint among the targets' observed `https` callback URLs.
    fn endpoints(&self) -> BTreeSet<Endpoint>;
    /// Woken when [`ProbeTargets::endpoints`] may have changed.
    fn endpoints_changed(&self) -> &Notify;
    /// Takes in one probe's result for every target pointing at `endpoint`.
    fn record(&self, endpoint: &Endpoint, result: &ProbeResult);
    /// Drops every probe result: probing was turned off.
    fn forget_probes(&self);
}

/// Runs until `stop`: probes the targets' endpoints with the current prober (`None`:
/// probing is off) on the schedule.
pub async fn run<T: ProbeTargets>(
    mut probers: watch::Receiver<Option<Arc<Prober>>>,
    targets: Arc<T>,
    stop: CancellationToken,
) {
    let origin = tokio::time::Instant::now();
    let mut schedule = Schedule::new(Duration::from_secs(300));
    let mut running: JoinSet<(Endpoint, ProbeResult)> = JoinSet::new();
    let mut last: BTreeMap<Endpoint, Option<Reason>> = BTreeMap::new();
    let mut endpoints_stale = true;
    loop {
        let prober = probers.borrow_and_update().clone();
        match &prober {
            None if !schedule.is_empty() || !last.is_empty() => {
                running.abort_all();
                schedule = Schedule::new(Duration::from_secs(300));
                last.clear();
                targets.forget_probes();
                endpoints_stale = true;
            }
            None => {}
            Some(prober) => {
                schedule.set_interval(prober.interval);
                if endpoints_stale {
                    for gone in schedule.set_wanted(&targets.endpoints()) {
                        last.remove(&gone);
                    }
                    endpoints_stale = false;
                }
                let free = MAX_IN_FLIGHT.saturating_sub(running.len());
                for endpoint in schedule.start_due(origin.elapsed(), free) {
                    let prober = prober.clone();
                    running.spawn(async move {
                        let result = prober.probe(&endpoint).await;
                        (endpoint, result)
                    });
                }
            }
        }
        let wake = prober
            .as_ref()
            .and(schedule.next_due())
            .map(|due| origin + due);
        tokio::select! {
            _ = stop.cancelled() => break,
            changed = probers.changed() => if changed.is_err() { break },
            _ = targets.endpoints_changed().notified() => endpoints_stale = true,
            Some(joined) = running.join_next(), if !running.is_empty() => {
                if let Ok((endpoint, result)) = joined {
                    if schedule.finished(&endpoint) {
                        log_change(&endpoint, &result, last.insert(endpoint.clone(), result.failure));
                        targets.record(&endpoint, &result);
                    }
                }
            }
            _ = sleep_until(wake), if wake.is_some() => {}
        }
    }
    running.abort_all();
}

async fn sleep_until(wake: Option<tokio::time::Instant>) {
    if let Some(at) = wake {
        tokio::time::sleep_until(at).await;
    }
}

/// A log line when an endpoint's outcome changes (not at every probe).
fn log_change(endpoint: &Endpoint, result: &ProbeResult, before: Option<Option<Reason>>) {
    if before == Some(result.failure) {
        return;
    }
    match (result.failure, before) {
        (None, None) => tracing::debug!(%endpoint, "callback endpoint verified"),
        (None, Some(_)) => tracing::info!(%endpoint, "callback endpoint verified again"),
        (Some(reason), _) => tracing::warn!(
            %endpoint,
            %reason,
            detail = result.detail.as_deref().unwrap_or("none"),
            "callback endpoint probe failed"
        ),
    }
}
