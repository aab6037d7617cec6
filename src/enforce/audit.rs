//! The audit trail: one structured event per write or dry-run decision, with the target,
//! the action, the old and new configuration (URLs redacted), the RequestId and the
//! result. Never a key, a UserSig or a URL's query values.

use crate::config::TargetKey;
use crate::drift::Observed;
use crate::metrics::RemediationResult;
use crate::remedy::Write;
use crate::report;
use crate::tencent::WriteOutcome;

fn old(observed: Option<&Observed>) -> String {
    observed.map_or_else(|| "unknown".to_owned(), report::summary)
}

/// `dry-run` decided `write`; nothing was sent.
pub(super) fn dry_run(
    key: &TargetKey,
    write: &Write,
    observed: Option<&Observed>,
    read_request_id: Option<&str>,
) {
    tracing::info!(
        app = %key.app,
        sdkappid = key.sdkappid,
        region = %key.region,
        product = key.product.as_str(),
        action = write.action(),
        old = %old(observed),
        new = %report::summary(&write.outcome()),
        request_id = read_request_id.unwrap_or(""),
        result = RemediationResult::DryRun.as_str(),
        "remediation decided (dry-run: not written)"
    );
}

/// `write` was sent; `outcome` is what the gateway said.
pub(super) fn wrote(
    key: &TargetKey,
    write: &Write,
    observed: Option<&Observed>,
    outcome: &WriteOutcome,
    result: RemediationResult,
) {
    let (old, new) = (old(observed), report::summary(&write.outcome()));
    let request_id = outcome.request_id.as_deref().unwrap_or("");
    match &outcome.result {
        Ok(_) => tracing::info!(
            app = %key.app,
            sdkappid = key.sdkappid,
            region = %key.region,
            product = key.product.as_str(),
            action = write.action(),
            api = outcome.api.as_str(),
            old = %old,
            new = %new,
            request_id,
            result = result.as_str(),
            "remediation applied"
        ),
        Err(error) => tracing::warn!(
            app = %key.app,
            sdkappid = key.sdkappid,
            region = %key.region,
            product = key.product.as_str(),
            action = write.action(),
            api = outcome.api.as_str(),
            old = %old,
            new = %new,
            request_id,
            result = result.as_str(),
            error = %error,
            "remediation failed"
        ),
    }
}
