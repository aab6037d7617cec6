//! From the config as written to [`Config`]: every check, section by section, each problem
//! a diagnostic at its place. Values in error are replaced by their defaults so that one
//! pass reports everything; the caller discards the config when any error was found.

mod apps;
mod durations;
mod endpoint_probe;
mod expect;
mod poll;
mod regions;
mod remediate;
mod server;

use std::path::{Path, PathBuf};

use super::raw::RawConfig;
use super::{Config, Diagnostics};
use crate::product::Product;

/// Validates `raw`; relative paths are taken from `base_dir`.
pub(super) fn validate(raw: RawConfig, diagnostics: &mut Diagnostics, base_dir: &Path) -> Config {
    let RawConfig {
        listen,
        web_config_file,
        state_file,
        log_format,
        log_level,
        ca_file,
        poll,
        rate_limit,
        endpoint_probe,
        remediate,
        regions,
        expect,
        apps,
    } = raw;
    let listen = server::listen(listen, diagnostics);
    let log_format = server::log_format(log_format.as_deref(), diagnostics);
    let log_level = server::log_level(log_level, diagnostics);
    let rate_limit = poll::rate_limit(rate_limit.unwrap_or_default(), diagnostics);
    let poll = poll::poll(poll.unwrap_or_default(), &rate_limit, diagnostics);
    let endpoint_probe =
        endpoint_probe::endpoint_probe(endpoint_probe.unwrap_or_default(), diagnostics);
    let endpoint_probe = super::EndpointProbe {
        ca_file: resolve_path(base_dir, endpoint_probe.ca_file),
        ..endpoint_probe
    };
    let regions = regions::regions(regions.unwrap_or_default(), diagnostics);
    let remediate = remediate::remediate(
        remediate.as_ref(),
        super::Remediate::default(),
        "remediate",
        diagnostics,
    );

    expect::check_nesting(expect.as_ref(), "expect", diagnostics);
    let global = [expect::Scope {
        block: expect.as_ref(),
        path: "expect",
    }];
    let global_expects = Product::ALL
        .into_iter()
        .map(|p| (p, expect::product_expect(p, &global, diagnostics)))
        .collect();
    let context = apps::Context {
        global: expect.as_ref(),
        global_expects: &global_expects,
        regions: &regions,
        remediate,
        base_dir,
    };
    let apps = apps::apps(apps.unwrap_or_default(), &context, diagnostics);

    let config = Config {
        origin: diagnostics.file().to_owned(),
        listen,
        web_config_file: resolve_path(base_dir, web_config_file),
        state_file: resolve_path(base_dir, state_file),
        log_format,
        log_level,
        ca_file: resolve_path(base_dir, ca_file),
        poll,
        rate_limit,
        endpoint_probe,
        remediate,
        regions,
        apps,
    };
    poll::warn_if_interval_unmet(&config, diagnostics);
    config
}

/// A path as written, taken from `base_dir` when relative.
fn resolve_path(base_dir: &Path, path: Option<PathBuf>) -> Option<PathBuf> {
    path.map(|p| if p.is_relative() { base_dir.join(p) } else { p })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::errors;

    #[test]
    fn semantic_errors_are_all_reported() {
        let text = "poll:\n  interval: soon\nregions:\n  corp: \"http://10.0.0.1:80\"\napps:\n  - name: a\n    sdkappid: 1\n    regions: [mars]\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    expect:\n      url_scheme: https\n      url: http://x/cb\n";
        let all = errors(text);
        let want = [
            "c.yaml:2:13: poll.interval: invalid duration",
            "c.yaml:4:9: region corp: \"http://10.0.0.1:80\": http:// is only allowed for loopback",
            "c.yaml:8:15: app a: unknown region \"mars\"",
            "c.yaml:6:5: app a: missing secret",
            "c.yaml:15:12: apps[1].expect.url: the URL's scheme \"http\" contradicts url_scheme \"https\"",
            "c.yaml:9:11: duplicate app name \"a\"",
        ];
        for w in want {
            assert!(
                all.iter().any(|e| e.starts_with(w)),
                "missing {w:?} in {all:#?}"
            );
        }
    }
}
