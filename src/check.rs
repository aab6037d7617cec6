//! `calldrift check`: one pass over every target (or the named apps) under the same rate
//! limits and concurrency as the daemon, then a [`Report`].

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, Secrets, Target};
use crate::drift;
use crate::ratelimit::RateLimits;
use crate::report::{ObservedView, Report, Status, TargetReport};
use crate::tencent::{Client, ClientError, ClientSettings, NoObserver, PollOutcome};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no app named {0:?} in the config")]
    UnknownApp(String),
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// The report line for one target after one poll.
pub fn target_report(target: &Target, outcome: &PollOutcome) -> TargetReport {
    let (status, observed, findings, error, error_class) = match &outcome.result {
        Ok(observed) => {
            let findings = drift::check(&target.expect, observed);
            let status = if findings.is_empty() {
                Status::Ok
            } else {
                Status::Drift
            };
            (
                status,
                Some(ObservedView::from(observed)),
                findings,
                None,
                None,
            )
        }
        Err(e) => (
            Status::Error,
            None,
            Vec::new(),
            Some(e.to_string()),
            Some(e.class().to_owned()),
        ),
    };
    TargetReport {
        app: target.key.app.clone(),
        sdkappid: target.key.sdkappid,
        region: target.key.region.clone(),
        status,
        observed,
        findings,
        error,
        error_class,
        request_id: outcome.request_id.clone(),
        last_poll: None,
    }
}

/// Polls every target of `config` once (only `apps` if not empty) and reports.
pub async fn run(
    config: &Config,
    secrets: &Secrets,
    apps: &[String],
    clock: Arc<dyn Clock>,
) -> Result<Report, CheckError> {
    if let Some(unknown) = apps
        .iter()
        .find(|name| !config.apps.iter().any(|a| &a.name == *name))
    {
        return Err(CheckError::UnknownApp(unknown.clone()));
    }
    let targets: Vec<Target> = config
        .targets(secrets)
        .into_iter()
        .filter(|t| apps.is_empty() || apps.contains(&t.key.app))
        .collect();
    let limits = Arc::new(RateLimits::new(
        config.rate_limit.per_second,
        config.rate_limit.per_app_per_second,
    ));
    let client = Arc::new(Client::new(
        ClientSettings::from_config(config),
        limits,
        clock,
        Arc::new(NoObserver),
    )?);
    Ok(Report::new(
        poll_all(&client, targets, config.poll.max_concurrency).await,
    ))
}

/// Polls each target once, at most `max_concurrency` at a time, reports in target order.
pub async fn poll_all(
    client: &Arc<Client>,
    targets: Vec<Target>,
    max_concurrency: usize,
) -> Vec<TargetReport> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, target) in targets.into_iter().enumerate() {
        let client = client.clone();
        let slots = slots.clone();
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _slot = slots.acquire_owned().await.ok();
            let outcome = client.get_callback(&target).await;
            (index, target_report(&target, &outcome))
        });
    }
    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(done) = joined {
            reports.push(done);
        }
    }
    reports.sort_by_key(|(index, _)| *index);
    reports.into_iter().map(|(_, report)| report).collect()
}
