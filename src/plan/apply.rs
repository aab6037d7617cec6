//! `calldrift apply`'s writes: each planned write once, through the pass's client (so the
//! one rate limiter), then at once a read of that target to tell whether it now checks
//! clean.

use std::sync::Arc;

use crate::drift;
use crate::report::{ObservedView, count, summary};
use crate::tencent::{PollOutcome, WriteError, WriteOutcome, Written};

use super::Pass;

/// One written target: the write's outcome and what the read after it found.
#[derive(Debug, Clone)]
pub struct TargetApplied {
    /// `app (sdkappid, region, product)`.
    pub name: String,
    /// `set`, `update` or `delete`, as planned.
    pub action: &'static str,
    pub write: WriteOutcome,
    pub read: PollOutcome,
    /// The read after the write checks clean.
    pub verified: bool,
}

impl TargetApplied {
    /// The write went through (or, its answer lost, the read shows it did) and the target
    /// checks clean.
    pub fn succeeded(&self) -> bool {
        self.verified && !matches!(self.write.result, Err(WriteError::Refused(_)))
    }

    /// One line: the write's outcome with its RequestId, then the read's verdict.
    pub fn line(&self) -> String {
        let written = match &self.write.result {
            Ok(Written::Applied) => "applied".to_owned(),
            Ok(Written::AlreadyAbsent) => "applied (already absent)".to_owned(),
            Err(e) => e.to_string(),
        };
        let mut line = format!("{}: {} {written}", self.name, self.action);
        if let (Ok(_), Some(id)) = (&self.write.result, &self.write.request_id) {
            line.push_str(&format!(" (RequestId {id})"));
        }
        let read = match self.read.result.as_deref() {
            Ok(_) if self.verified => "verified clean".to_owned(),
            Ok(observed) => format!("NOT verified: read back {}", ObservedView::from(observed)),
            Err(e) => format!("NOT verified: the read back failed: {e}"),
        };
        line.push_str(&format!("; {read}"));
        line
    }
}

/// What `apply` did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Writes planned; a write whose task failed is missing from `targets`.
    pub planned: usize,
    pub targets: Vec<TargetApplied>,
}

impl ApplyReport {
    /// Every planned write succeeded and was verified.
    pub fn all_verified(&self) -> bool {
        self.targets.len() == self.planned && self.targets.iter().all(TargetApplied::succeeded)
    }

    /// One line per written target, then the counts.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for target in &self.targets {
            out.push_str(&target.line());
            out.push('\n');
        }
        let verified = self.targets.iter().filter(|t| t.succeeded()).count();
        out.push_str(&format!(
            "{}: {verified} applied and verified, {} failed\n",
            count(self.planned, "write", "writes"),
            self.planned.saturating_sub(verified)
        ));
        out
    }
}

/// Carries out every write of `pass`'s plan, at most `max_concurrency` at a time, each
/// followed at once by a read of its target; reports in plan order.
pub async fn apply(pass: &Pass) -> ApplyReport {
    let slots = Arc::new(tokio::sync::Semaphore::new(pass.max_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (target, planned)) in pass.targets.iter().zip(&pass.plan.targets).enumerate() {
        let Some(write) = planned.write.clone() else {
            continue;
        };
        let (client, slots, target) = (pass.client.clone(), slots.clone(), target.clone());
        let name = planned.name();
        let before = planned.current.clone();
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _slot = slots.acquire_owned().await.ok();
            let outcome = client.write(&target, &write).await;
            let read = client.get_callback(&target).await;
            let verified = read
                .result
                .as_ref()
                .is_ok_and(|observed| drift::check(&target.expect, observed).is_empty());
            tracing::info!(
                app = %target.key.app,
                sdkappid = target.key.sdkappid,
                region = %target.key.region,
                product = %target.key.product,
                action = write.action(),
                old = %before.map_or_else(|| "unknown".to_owned(), |v| v.to_string()),
                new = %summary(&write.outcome()),
                request_id = outcome.request_id.as_deref().unwrap_or(""),
                result = match &outcome.result { Ok(_) => "applied", Err(WriteError::Refused(_)) => "refused", Err(WriteError::Lost(_)) => "lost" },
                verified,
                "remediation write"
            );
            let applied = TargetApplied {
                name,
                action: write.action(),
                write: outcome,
                read,
                verified,
            };
            (index, applied)
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(one) = joined {
            done.push(one);
        }
    }
    done.sort_by_key(|(index, _)| *index);
    ApplyReport {
        planned: pass.plan.summary.changes,
        targets: done.into_iter().map(|(_, applied)| applied).collect(),
    }
}
