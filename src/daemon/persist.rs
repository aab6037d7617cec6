//! The state file from the daemon's side: read once at start, written after changes
//! (coalesced), retried after failures, and written at shutdown. The writes run on the
//! blocking pool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::TargetKey;
use crate::enforce::Enforcer;
use crate::metrics::Metrics;
use crate::state::{self, SavedTarget, SavedWrites};
use crate::status::Status;

/// After a change, the state file is written once things settle for this long.
const STATE_WRITE_DELAY: Duration = Duration::from_millis(200);
/// After a failed write, the state file is tried again this often until a write succeeds,
/// so `calldrift_state_write_failures_total` keeps counting while the problem lasts.
const STATE_WRITE_RETRY: Duration = Duration::from_secs(30);

/// Where the state file is now; a reload may move it.
pub(super) type StatePath = Arc<std::sync::Mutex<Option<PathBuf>>>;

/// The saved targets and `remediate:`'s recent writes; none without a readable file.
pub(super) fn load_state(
    path: Option<&PathBuf>,
    clock: &dyn Clock,
) -> (BTreeMap<TargetKey, SavedTarget>, SavedWrites) {
    let Some(path) = path else {
        return Default::default();
    };
    match state::load(path, clock.unix_secs()) {
        Ok(loaded) => {
            if let Some(recovered) = loaded.recovered {
                tracing::error!("{recovered}");
            }
            (loaded.targets, loaded.remediation)
        }
        Err(e) => {
            tracing::error!("{e}; starting without saved state");
            Default::default()
        }
    }
}

/// What writing the state file needs: what to write, where to count, the time.
#[derive(Clone)]
pub(super) struct StateWriter {
    pub(super) status: Arc<Status>,
    pub(super) enforcer: Arc<Enforcer>,
    pub(super) metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
}

impl StateWriter {
    pub(super) fn new(
        status: &Arc<Status>,
        enforcer: &Arc<Enforcer>,
        metrics: &Arc<Metrics>,
        clock: &Arc<dyn Clock>,
    ) -> Self {
        Self {
            status: status.clone(),
            enforcer: enforcer.clone(),
            metrics: metrics.clone(),
            clock: clock.clone(),
        }
    }

    /// Writes the state file if there is one; returns whether that failed.
    pub(super) fn write(&self, path: Option<&PathBuf>) -> bool {
        let Some(path) = path else { return false };
        match state::save(path, self.status.saved(), self.enforcer.saved()) {
            Ok(()) => {
                self.metrics
                    .state_write_success_time
                    .set(self.clock.unix_f64());
                false
            }
            Err(e) => {
                self.metrics.state_write_failures.inc();
                tracing::error!("{e}; retrying in {}s", STATE_WRITE_RETRY.as_secs());
                true
            }
        }
    }
}

/// Writes the state file after changes, coalescing bursts, and again every
/// [`STATE_WRITE_RETRY`] after a failure until a write succeeds.
pub(super) async fn state_writer(writer: StateWriter, path: StatePath, stop: CancellationToken) {
    let mut failing = false;
    loop {
        let retry = async {
            if failing {
                tokio::time::sleep(STATE_WRITE_RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = writer.status.state_changed.notified() => {}
            _ = retry => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STATE_WRITE_DELAY) => {}
        }
        let current = path.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let writer = writer.clone();
        // File IO off the async threads.
        failing = tokio::task::spawn_blocking(move || writer.write(current.as_ref()))
            .await
            .unwrap_or(true);
    }
}
