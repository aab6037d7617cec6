//! What each app showed becomes its expectation: every target must have an authoritative
//! answer, the regions of an app must agree for each product, and the URL must parse (see
//! the rules in the [module doc](super)).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Config, TargetKey};
use crate::drift::{Expected, ExtraCommands, Observed, Presence};
use crate::product::Product;
use crate::tencent::PollOutcome;

use super::{Disagreement, Failure, SnapshotError};

/// What one product's expectation becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Baseline {
    Absent,
    Present {
        url: String,
        url_scheme: String,
        /// Sorted, distinct.
        commands: Vec<String>,
    },
}

/// A product's baseline with one of the observations it came from, for the final check.
#[derive(Debug, Clone)]
pub struct ProductBaseline {
    pub baseline: Baseline,
    pub observed: Observed,
}

/// What one app's `expect:` becomes: a baseline for each product it watches (TUICallKit's
/// at the top of the block, the others in their sub-blocks).
#[derive(Debug, Clone, Default)]
pub struct AppBaseline {
    pub products: BTreeMap<Product, ProductBaseline>,
}

/// What a baseline would bake in that an operator should look at twice: a plain
/// `http://` callback, or no configuration at all; one line per app and product, naming
/// its SDKAppID and regions. The snapshot is written all the same.
pub fn questionable(config: &Config, apps: &BTreeMap<String, AppBaseline>) -> Vec<String> {
    let mut warnings = Vec::new();
    for app in &config.apps {
        let Some(baseline) = apps.get(&app.name) else {
            continue;
        };
        let regions = app.regions.join(", ");
        for (product, seen) in &baseline.products {
            let what = match &seen.baseline {
                Baseline::Absent => {
                    "has no callback configuration; the baseline expects none (present: false)"
                }
                Baseline::Present { url_scheme, .. } if url_scheme == "http" => {
                    "calls back over plain http://; the baseline expects url_scheme: http"
                }
                Baseline::Present { .. } => continue,
            };
            warnings.push(format!(
                "app {} ({}, {product}) in {regions} {what}",
                app.name, app.sdkappid
            ));
        }
    }
    warnings
}

/// The pure part of [`observe`](super::observe): every target must have an authoritative
/// answer, and the regions of an app must agree for each product.
pub fn baselines(
    config: &Config,
    outcomes: &mut BTreeMap<TargetKey, PollOutcome>,
) -> Result<BTreeMap<String, AppBaseline>, SnapshotError> {
    let observed = authoritative(config, outcomes)?;
    let origin = &config.origin;
    let mut apps: BTreeMap<String, AppBaseline> = BTreeMap::new();
    // Where each (app, product) baseline was first seen.
    let mut first_regions: BTreeMap<(String, Product), String> = BTreeMap::new();
    for (key, seen) in observed {
        let baseline = baseline_of(origin, &key, &seen)?;
        let products = &mut apps.entry(key.app.clone()).or_default().products;
        match products.get(&key.product) {
            None => {
                first_regions.insert((key.app.clone(), key.product), key.region.clone());
                products.insert(
                    key.product,
                    ProductBaseline {
                        baseline,
                        observed: seen,
                    },
                );
            }
            Some(first) if first.baseline == baseline => {}
            Some(first) => {
                let first_region = first_regions
                    .get(&(key.app.clone(), key.product))
                    .cloned()
                    .unwrap_or_default();
                let (a, b) = (
                    crate::report::summary(&first.observed),
                    crate::report::summary(&seen),
                );
                return Err(SnapshotError::RegionsDisagree(Box::new(Disagreement {
                    origin: origin.clone(),
                    app: key.app.clone(),
                    sdkappid: key.sdkappid,
                    product: key.product,
                    first_region,
                    hidden: if a == b {
                        " (they differ in the URL's query or userinfo, which is shown redacted)"
                    } else {
                        ""
                    },
                    first: a,
                    second_region: key.region.clone(),
                    second: b,
                })));
            }
        }
    }
    Ok(apps)
}

/// What every target of `config` showed, in the config's order; any target without an
/// authoritative answer fails the whole snapshot, listing every such target.
fn authoritative(
    config: &Config,
    outcomes: &mut BTreeMap<TargetKey, PollOutcome>,
) -> Result<Vec<(TargetKey, Observed)>, SnapshotError> {
    let mut failures = Vec::new();
    let mut observed = Vec::new();
    let keys = config.apps.iter().flat_map(|app| {
        app.regions.iter().flat_map(move |region| {
            app.products
                .keys()
                .map(move |product| TargetKey::new(&app.name, app.sdkappid, region, *product))
        })
    });
    for key in keys {
        match outcomes.remove(&key) {
            Some(PollOutcome {
                result: Ok(seen), ..
            }) => observed.push((key, Arc::unwrap_or_clone(seen))),
            Some(PollOutcome {
                result: Err(e),
                request_id,
                ..
            }) => failures.push(Failure {
                key,
                class: e.kind().to_owned(),
                error: e.to_string(),
                request_id,
            }),
            None => failures.push(Failure {
                key,
                class: "internal".to_owned(),
                error: "no poll result (no secret resolved, or the poll task failed)".to_owned(),
                request_id: None,
            }),
        }
    }
    if !failures.is_empty() {
        return Err(SnapshotError::Unreadable {
            origin: config.origin.clone(),
            total: config.target_count(),
            failures,
        });
    }
    Ok(observed)
}

/// One observation's baseline; an unparsable URL fails it, naming the target.
pub(super) fn baseline_of(
    origin: &str,
    key: &TargetKey,
    seen: &Observed,
) -> Result<Baseline, SnapshotError> {
    match seen {
        Observed::Absent => Ok(Baseline::Absent),
        Observed::Present { url, .. } => match url::Url::parse(url) {
            Ok(parsed) => Ok(Baseline::Present {
                url: url.clone(),
                url_scheme: parsed.scheme().to_ascii_lowercase(),
                commands: seen.command_set().into_iter().map(str::to_owned).collect(),
            }),
            Err(_) => Err(SnapshotError::UnparsableUrl {
                origin: origin.to_owned(),
                app: key.app.clone(),
                sdkappid: key.sdkappid,
                region: key.region.clone(),
                product: key.product,
                url: crate::redact::url(url),
            }),
        },
    }
}

impl Baseline {
    /// Whether the expectation `config` parsed for the app's product is this baseline.
    pub(super) fn is(&self, expect: &Expected) -> bool {
        match self {
            // `present: false` is all that is written; the rest is inherited and irrelevant.
            Baseline::Absent => expect.present == Presence::Forbidden,
            Baseline::Present {
                url,
                url_scheme,
                commands,
            } => {
                *expect
                    == Expected {
                        present: Presence::Required,
                        url_scheme: url_scheme.clone(),
                        url: Some(url.clone()),
                        url_prefix: None,
                        commands: commands.clone(),
                        extra_commands: ExtraCommands::Drift,
                        ignore_commands: Vec::new(),
                    }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::fixtures::{START, parse, present};

    #[test]
    fn failures_disagreements_and_bad_urls_are_errors_naming_the_place() {
        let text = "regions:\n  r1: \"http://127.0.0.1:1\"\n  r2: \"http://127.0.0.1:2\"\napps:\n  - name: a\n    sdkappid: 1\n    regions: [r1, r2]\n    secret_key_env: K\n";
        let config = parse(text);
        let key = |region: &str| TargetKey::new("a", 1, region, Product::Call);
        let ok = |seen: Observed| PollOutcome {
            result: Ok(Arc::new(seen)),
            request_id: Some("req-1".into()),
            attempts: 1,
        };
        let mut outcomes = BTreeMap::from([
            (
                key("r1"),
                ok(present("https://h.example.com/?t=1", &[START])),
            ),
            (
                key("r2"),
                ok(present("https://h.example.com/?t=2", &[START])),
            ),
        ]);
        let err = baselines(&config, &mut outcomes)
            .expect_err("disagree")
            .to_string();
        assert!(
            err.contains("app a (1, call) differs between regions: r1 has https://h.example.com/?t=REDACTED [Call.CallbackAfterStartCall], r2 has")
                && err.contains("shown redacted"),
            "{err}"
        );

        let mut outcomes = BTreeMap::from([
            (key("r1"), ok(Observed::Absent)),
            (
                key("r2"),
                PollOutcome {
                    result: Err(crate::tencent::PollError::Transport("refused".into())),
                    request_id: Some("req-9".into()),
                    attempts: 3,
                },
            ),
        ]);
        let err = baselines(&config, &mut outcomes)
            .expect_err("unreadable")
            .to_string();
        assert!(err.contains("1 of 2 targets could not be read"), "{err}");
        assert!(
            err.contains(
                "  app a (1, r2, call): [transport] transport error: refused (RequestId req-9)"
            ),
            "{err}"
        );

        let mut outcomes = BTreeMap::from([
            (key("r1"), ok(present("hooks.example.com/cb?t=1", &[START]))),
            (key("r2"), ok(present("hooks.example.com/cb?t=1", &[START]))),
        ]);
        let err = baselines(&config, &mut outcomes)
            .expect_err("unparsable")
            .to_string();
        assert!(
            err.contains("app a (1, r1, call): the callback URL"),
            "{err}"
        );
        assert!(!err.contains("t=1"), "redacted: {err}");

        let mut outcomes = BTreeMap::from([(key("r1"), ok(Observed::Absent))]);
        let err = baselines(&config, &mut outcomes)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("app a (1, r2, call): [internal]"), "{err}");
    }
}
