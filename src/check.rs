//! `calldrift check`: one pass over every target (or the named apps) under the same rate
//! limits and concurrency as the daemon, then a [`Report`].

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{Config, Secrets};
use crate::drift;
use crate::probe::{self, Endpoint, ProbeError, Prober};
use crate::ratelimit::RateLimits;
use crate::report::{EndpointReport, ObservedView, Report, TargetReport};
use crate::shard::Shard;
use crate::tencent::{
    self, Client, ClientError, ClientSettings, NoObserver, PollOutcome, Resolver, Target,
};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no app named {0:?} in the config")]
    UnknownApp(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

/// The report line for one target after one poll.
pub fn target_report(target: &Target, outcome: &PollOutcome) -> TargetReport {
    let (observed, findings, error) = match outcome.result.as_deref() {
        Ok(observed) => (
            Some(ObservedView::from(observed)),
            drift::check(&target.expect, observed),
            None,
        ),
        Err(e) => (None, Vec::new(), Some(e)),
    };
    TargetReport::new(
        &target.key,
        observed,
        findings,
        error,
        outcome.request_id.clone(),
    )
}

/// Which targets one pass covers: the named apps (all if none) of this shard (all if none).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub apps: Vec<String>,
    pub shard: Option<Shard>,
}

/// Polls every target of `config` once (only `apps` if not empty) and reports.
pub async fn run(
    config: &Config,
    secrets: &Secrets,
    apps: &[String],
    clock: Arc<dyn Clock>,
) -> Result<Report, CheckError> {
    let selection = Selection {
        apps: apps.to_vec(),
        shard: None,
    };
    run_selected(config, secrets, &selection, clock).await
}

/// [`run`] over a [`Selection`]: with a shard, only its apps, under its part of the global
/// rate limit.
pub async fn run_selected(
    config: &Config,
    secrets: &Secrets,
    selection: &Selection,
    clock: Arc<dyn Clock>,
) -> Result<Report, CheckError> {
    run_with_progress(config, secrets, selection, clock, &mut |_, _| {}).await
}

/// [`run_selected`], telling `progress` (done, total) after each target.
pub async fn run_with_progress(
    config: &Config,
    secrets: &Secrets,
    selection: &Selection,
    clock: Arc<dyn Clock>,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Report, CheckError> {
    let (config, targets) = select(config, secrets, selection)?;
    let client = client(&config, clock)?;
    let outcomes =
        poll_outcomes_with(&client, targets, config.poll.max_concurrency, progress).await;
    Ok(Report::new(
        outcomes
            .iter()
            .map(|(target, outcome)| target_report(target, outcome))
            .collect(),
    ))
}

/// The targets `selection` covers, and the config cut to its shard (whose rate limits are
/// that shard's share); an app name the config does not have is an error.
pub fn select(
    config: &Config,
    secrets: &Secrets,
    selection: &Selection,
) -> Result<(Config, Vec<Target>), CheckError> {
    // Names are checked against the whole config, so `--app` of an app that another shard
    // polls is not mistaken for a typo.
    if let Some(unknown) = selection
        .apps
        .iter()
        .find(|name| !config.apps.iter().any(|a| &a.name == *name))
    {
        return Err(CheckError::UnknownApp(unknown.clone()));
    }
    let mut config = config.clone();
    if let Some(shard) = selection.shard {
        shard.apply(&mut config);
        for name in &selection.apps {
            if !config.apps.iter().any(|a| &a.name == name) {
                tracing::warn!(app = %name, %shard, "app is polled by another shard; skipped");
            }
        }
        tracing::info!(%shard, targets = config.target_count(), "checking this shard's targets only");
    }
    let targets: Vec<Target> = tencent::targets(&config, secrets)
        .into_iter()
        .filter(|t| selection.apps.is_empty() || selection.apps.contains(&t.key.app))
        .collect();
    Ok((config, targets))
}

/// The client of a one-off pass: the config's rate limits, timeouts and CA, no metrics.
pub fn client(config: &Config, clock: Arc<dyn Clock>) -> Result<Arc<Client>, ClientError> {
    let limits = Arc::new(RateLimits::new(
        config.rate_limit.per_second,
        config.rate_limit.per_app_per_second,
    ));
    Ok(Arc::new(Client::new(
        ClientSettings::from_config(config),
        limits,
        clock,
        Arc::new(NoObserver),
    )?))
}

/// Polls each target once, at most `max_concurrency` at a time, reports in target order.
pub async fn poll_all(
    client: &Arc<Client>,
    targets: Vec<Target>,
    max_concurrency: usize,
) -> Vec<TargetReport> {
    poll_outcomes(client, targets, max_concurrency)
        .await
        .iter()
        .map(|(target, outcome)| target_report(target, outcome))
        .collect()
}

/// Polls each target once, at most `max_concurrency` at a time, and returns every target
/// with its raw outcome (the exact URL included, which reports redact), in target order.
/// A poll task that panicked is left out; callers that need every target compare keys.
pub async fn poll_outcomes(
    client: &Arc<Client>,
    targets: Vec<Target>,
    max_concurrency: usize,
) -> Vec<(Target, PollOutcome)> {
    poll_outcomes_with(client, targets, max_concurrency, &mut |_, _| {}).await
}

/// [`poll_outcomes`], telling `progress` (done, total) as each poll completes.
pub async fn poll_outcomes_with(
    client: &Arc<Client>,
    targets: Vec<Target>,
    max_concurrency: usize,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Vec<(Target, PollOutcome)> {
    let total = targets.len();
    let slots = Arc::new(tokio::sync::Semaphore::new(max_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, target) in targets.into_iter().enumerate() {
        let client = client.clone();
        let slots = slots.clone();
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _slot = slots.acquire_owned().await.ok();
            let outcome = client.get_callback(&target).await;
            (index, target, outcome)
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(one) = joined {
            done.push(one);
        }
        progress(done.len(), total);
    }
    done.sort_by_key(|(index, _, _)| *index);
    done.into_iter()
        .map(|(_, target, outcome)| (target, outcome))
        .collect()
}

/// `check --endpoint`: probes each distinct callback endpoint of `report` once (at most
/// [`probe::MAX_IN_FLIGHT`] at a time, with `endpoint_probe`'s timeout, roots and
/// `allow_private`, whether or not the daemon's probing is enabled) and adds each target's
/// `endpoint`. Redacted URLs keep their host and port, so the report is enough.
pub async fn probe_endpoints(
    config: &Config,
    report: &mut Report,
    resolver: Option<Resolver>,
    clock: Arc<dyn Clock>,
) -> Result<(), CheckError> {
    let prober = Arc::new(Prober::new(&config.endpoint_probe, resolver, clock)?);
    let endpoint_of = |t: &TargetReport| {
        let url = t.observed.as_ref()?.url.as_deref()?;
        Endpoint::of_url(url)
    };
    let endpoints: std::collections::BTreeSet<Endpoint> =
        report.targets.iter().filter_map(endpoint_of).collect();
    let slots = Arc::new(tokio::sync::Semaphore::new(probe::MAX_IN_FLIGHT));
    let mut tasks = tokio::task::JoinSet::new();
    for endpoint in endpoints {
        let (prober, slots) = (prober.clone(), slots.clone());
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring only waits.
            let _slot = slots.acquire_owned().await.ok();
            let result = prober.probe(&endpoint).await;
            (endpoint, result)
        });
    }
    let mut results = std::collections::BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((endpoint, result)) = joined {
            results.insert(endpoint, result);
        }
    }
    for target in &mut report.targets {
        if let Some(endpoint) = endpoint_of(target) {
            target.endpoint = results
                .get(&endpoint)
                .map(|result| EndpointReport::new(&endpoint, result, None));
        }
    }
    Ok(())
}
