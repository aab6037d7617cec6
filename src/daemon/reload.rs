//! Reloads (SIGHUP, `POST /-/reload`): the new config, its secrets, its web config, its
//! state file and its client's certificates are read and checked on the blocking pool
//! (file IO never runs on the daemon's one runtime thread); only a fully valid result
//! replaces the running one. The shard is applied again, so a reload never widens a
//! replica to every target, and only its apps' secrets are read again.

use std::path::PathBuf;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::{self, Config, LoadedConfig};
use crate::metrics::Metrics;
use crate::probe::{ProbeError, Prober};
use crate::ratelimit::RateLimits;
use crate::shard::{self, Shard};
use crate::state;
use crate::tencent::{self, Client, ClientError, ClientSettings, Resolver, Target};
use crate::web::{self, WebConfig};

/// What the running daemon was built from; a reload replaces `config` and `client`.
pub(super) struct Current {
    /// Already narrowed to `shard`.
    pub(super) config: Config,
    pub(super) client: Arc<Client>,
    /// `None` when `endpoint_probe.enabled` is false.
    pub(super) prober: Option<Arc<Prober>>,
    pub(super) resolver: Option<Resolver>,
    pub(super) shard: Option<Shard>,
}

/// A new config, read and checked, ready to swap in.
pub(super) struct Prepared {
    pub(super) loaded: LoadedConfig,
    pub(super) web: WebConfig,
    pub(super) warnings: Vec<String>,
    pub(super) client: Arc<Client>,
    pub(super) prober: Option<Arc<Prober>>,
    pub(super) targets: Vec<Arc<Target>>,
}

/// What [`prepare`] needs from the running daemon, owned so it can move to the blocking pool.
pub(super) struct Inputs {
    pub(super) path: PathBuf,
    pub(super) shard: Option<Shard>,
    pub(super) old: Config,
    pub(super) client: Arc<Client>,
    pub(super) prober: Option<Arc<Prober>>,
    pub(super) resolver: Option<Resolver>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) metrics: Arc<Metrics>,
}

impl Inputs {
    pub(super) fn new(
        path: PathBuf,
        current: &Current,
        clock: &Arc<dyn Clock>,
        metrics: &Arc<Metrics>,
    ) -> Self {
        Inputs {
            path,
            shard: current.shard,
            old: current.config.clone(),
            client: current.client.clone(),
            prober: current.prober.clone(),
            resolver: current.resolver.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
        }
    }
}

/// Reads and checks everything a reload needs; blocking (file IO, certificate parsing).
pub(super) fn prepare(inputs: Inputs) -> Result<Prepared, Vec<String>> {
    let env = |name: &str| std::env::var(name).ok();
    let mut loaded =
        config::load_selected(&inputs.path, &env, &|app| shard::polls(inputs.shard, app))
            .map_err(|e| e.diagnostics())?;
    if let Some(shard) = inputs.shard {
        shard.apply(&mut loaded.config);
    }
    let (web, web_warnings) = web::load_optional(loaded.config.web_config_file.as_deref())
        .map_err(|e| e.diagnostics())?;
    if let Some(path) = &loaded.config.state_file {
        state::check_writable(path).map_err(|e| vec![format!("state_file: {e}")])?;
    }
    let client = client_for(&loaded.config, &inputs).map_err(|e| vec![e.to_string()])?;
    let prober = if loaded.config.endpoint_probe == inputs.old.endpoint_probe {
        inputs.prober.clone()
    } else {
        new_prober(&loaded.config, inputs.resolver.clone(), &inputs.clock)
            .map_err(|e| vec![e.to_string()])?
    };
    let targets = super::shared(tencent::targets(&loaded.config, &loaded.secrets));
    let warnings = loaded
        .warnings
        .iter()
        .map(ToString::to_string)
        .chain(web_warnings.iter().map(ToString::to_string))
        .collect();
    Ok(Prepared {
        loaded,
        web,
        warnings,
        client,
        prober,
        targets,
    })
}

/// The endpoint prober of `config` (its `ca_file` read here), `None` when probing is off.
pub(super) fn new_prober(
    config: &Config,
    resolver: Option<Resolver>,
    clock: &Arc<dyn Clock>,
) -> Result<Option<Arc<Prober>>, ProbeError> {
    let settings = &config.endpoint_probe;
    if !settings.enabled {
        return Ok(None);
    }
    Ok(Some(Arc::new(Prober::new(
        settings,
        resolver,
        clock.clone(),
    )?)))
}

/// Keeps the client (and its connection pool and rate limiter) when nothing it depends on
/// changed, so a reload never resets the limiter's memory of recent calls.
fn client_for(new: &Config, inputs: &Inputs) -> Result<Arc<Client>, ClientError> {
    let old = &inputs.old;
    if new.poll.timeout == old.poll.timeout
        && new.poll.retries == old.poll.retries
        && new.ca_file == old.ca_file
        && new.rate_limit == old.rate_limit
    {
        return Ok(inputs.client.clone());
    }
    let limits = if new.rate_limit == old.rate_limit {
        inputs.client.limits().clone()
    } else {
        Arc::new(RateLimits::new(
            new.rate_limit.per_second,
            new.rate_limit.per_app_per_second,
        ))
    };
    let settings = ClientSettings {
        resolver: inputs.resolver.clone(),
        ..ClientSettings::from_config(new)
    };
    Ok(Arc::new(Client::new(
        settings,
        limits,
        inputs.clock.clone(),
        inputs.metrics.clone(),
    )?))
}
