//! The per-target remediation families, for the targets whose app has `remediate:` on.

use std::io::Write as _;

use super::{TargetSample, family, flag};

/// How one remediation decision ended, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemediationResult {
    /// The gateway accepted the write.
    Applied,
    /// The gateway refused the write, or its answer was lost.
    Failed,
    /// `dry-run`: the write was decided and not made.
    DryRun,
}

impl RemediationResult {
    pub const ALL: [RemediationResult; 3] = [
        RemediationResult::Applied,
        RemediationResult::Failed,
        RemediationResult::DryRun,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RemediationResult::Applied => "applied",
            RemediationResult::Failed => "failed",
            RemediationResult::DryRun => "dry_run",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a target exports about remediation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemediationSample {
    /// In the order of [`RemediationResult::ALL`].
    pub results: [u64; 3],
    /// `max_per_target` writes within the window.
    pub blocked: bool,
}

impl RemediationSample {
    pub fn count(&mut self, result: RemediationResult) {
        self.results[result.index()] += 1;
    }
}

/// `calldrift_remediations_total` and `calldrift_remediation_blocked`, for the targets
/// with remediation on; nothing at all when there is none.
pub(super) fn write_remediation_families<'a, I>(out: &mut Vec<u8>, samples: I)
where
    I: Iterator<Item = &'a TargetSample> + Clone,
{
    let on = samples.filter(|s| s.remediation.is_some());
    // With remediation off everywhere (the default) the scrape stays as it was.
    if on.clone().next().is_none() {
        return;
    }
    family(
        out,
        "calldrift_remediations_total",
        "counter",
        "Remediation decisions by result: applied and failed writes, dry_run decisions.",
        on.clone(),
        |out, s| {
            let Some(r) = &s.remediation else { return };
            for (result, n) in RemediationResult::ALL.iter().zip(r.results) {
                let _ = writeln!(
                    out,
                    "calldrift_remediations_total{{{},result=\"{}\"}} {n}",
                    s.labels,
                    result.as_str()
                );
            }
        },
    );
    family(
        out,
        "calldrift_remediation_blocked",
        "gauge",
        "1 while the target had max_per_target writes within the remediation window.",
        on,
        |out, s| {
            let Some(r) = &s.remediation else { return };
            let _ = writeln!(
                out,
                "calldrift_remediation_blocked{{{}}} {}",
                s.labels,
                flag(r.blocked)
            );
        },
    );
}
