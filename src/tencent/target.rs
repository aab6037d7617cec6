//! What the client polls: one (app, region, product) target of a config, with the app's
//! UserSig cache and the region's base URLs.

use std::sync::Arc;

use super::answer::LastResponse;
use super::usersig::UserSigCache;
use crate::config::{Config, Secrets, TargetKey};
use crate::drift::Expected;

/// A region's base URLs: always a primary, and the backup domain if the region has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrls {
    primary: String,
    backup: Option<String>,
}

impl BaseUrls {
    /// A primary base URL, and the backup domain if the region has one.
    pub fn new(primary: String, backup: Option<String>) -> Self {
        Self { primary, backup }
    }

    /// The URL polled normally.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// The URL polled while the primary fails at the transport level, if there is one.
    pub fn backup(&self) -> Option<&str> {
        self.backup.as_deref()
    }
}

/// One (app, region, product) target, ready to poll.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: TargetKey,
    pub identifier: String,
    pub bases: BaseUrls,
    /// Shared by all regions and products of one app.
    pub usersig: Arc<UserSigCache>,
    /// What the product's configuration should look like.
    pub expect: Expected,
    /// The last answer's `Response`, so an unchanged one is not decoded again. Each
    /// target has its own, made with it: a reload starts afresh.
    pub last_response: Arc<LastResponse>,
}

/// Every (app, region, product) target of `config`: apps in config order, then regions
/// as written, then products in [`Product`](crate::product::Product) order. Apps without
/// a resolved secret are left out.
pub fn targets(config: &Config, secrets: &Secrets) -> Vec<Target> {
    let mut targets = Vec::new();
    for app in &config.apps {
        let Some(key) = secrets.get(&app.name) else {
            continue;
        };
        let usersig = Arc::new(UserSigCache::new(
            key.clone(),
            app.sdkappid,
            app.identifier.clone(),
            app.usersig_ttl.as_secs(),
        ));
        for region_name in &app.regions {
            let Some(region) = config.regions.get(region_name) else {
                continue;
            };
            for (product, expect) in &app.products {
                targets.push(Target {
                    key: TargetKey::new(&app.name, app.sdkappid, region_name, *product),
                    identifier: app.identifier.clone(),
                    bases: BaseUrls::new(region.base.clone(), region.backup.clone()),
                    usersig: usersig.clone(),
                    expect: expect.clone(),
                    last_response: Arc::default(),
                });
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{parse, resolve_secrets};

    #[test]
    fn every_region_of_an_app_with_a_secret_is_a_target_with_its_base_urls() {
        let text = "regions:\n  local: \"http://127.0.0.1:1\"\napps:\n  - name: a\n    sdkappid: 1\n    regions: [china, local]\n    secret_key_env: K\n  - name: b\n    sdkappid: 2\n    regions: [china]\n    secret_key_env: MISSING\n";
        let (config, _) = parse(text, "c.yaml", Path::new("/")).expect("valid");
        let env = |name: &str| (name == "K").then(|| "k".to_owned());
        let secrets = resolve_secrets(&config, &env)
            .map(|(s, _)| s)
            .unwrap_or_default();
        // b's key is missing, so resolution failed as a whole: no targets.
        assert!(targets(&config, &secrets).is_empty());

        let text = text.replace("MISSING", "K");
        let (config, _) = parse(&text, "c.yaml", Path::new("/")).expect("valid");
        let (secrets, _) = resolve_secrets(&config, &env).expect("resolves");
        let all = targets(&config, &secrets);
        let shown: Vec<(&str, &str, Option<&str>)> = all
            .iter()
            .map(|t| (t.key.app.as_str(), t.bases.primary(), t.bases.backup()))
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "a",
                    "https://console.tim.qq.com",
                    Some("https://adminapi.my-imcloud.com")
                ),
                ("a", "http://127.0.0.1:1", None),
                (
                    "b",
                    "https://console.tim.qq.com",
                    Some("https://adminapi.my-imcloud.com")
                ),
            ]
        );
        assert!(
            Arc::ptr_eq(&all[0].usersig, &all[1].usersig),
            "one cache per app"
        );
        assert!(
            !Arc::ptr_eq(&all[0].last_response, &all[1].last_response),
            "one last response per target"
        );
        // A reload builds its targets anew: nothing of the last answers carries over.
        let reloaded = targets(&config, &secrets);
        assert!(!Arc::ptr_eq(
            &all[0].last_response,
            &reloaded[0].last_response
        ));
    }

    #[test]
    fn the_longest_valid_durations_pass_through_the_client_arithmetic() {
        let text = "poll:\n  interval: 24h\n  timeout: 5m\napps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key: k\n    usersig_ttl: 180d\n";
        let (config, _) = parse(text, "c.yaml", Path::new("/")).expect("valid");
        let (secrets, _) = resolve_secrets(&config, &|_| None).expect("resolves");
        let all = targets(&config, &secrets);
        let cache = &all[0].usersig;
        for now in [0, 1_700_000_000, u64::MAX - 1, u64::MAX] {
            cache.invalidate();
            let sig = cache.get(now);
            assert_eq!(cache.get(now), sig);
        }
        let start = std::time::Instant::now();
        let due = crate::clock::later(start, config.poll.interval);
        assert_eq!(due - start, config.poll.interval);
    }
}
