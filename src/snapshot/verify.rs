//! The final verification every candidate text passes before it is accepted: it parses
//! again as a config, equals the input outside the apps' `expect:` blocks, gives every
//! product of every app exactly its baseline, and finds no drift in what was observed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, Pos, SecretSource};
use crate::drift::{self, Expected};

use super::AppBaseline;

/// Parses `candidate` as a config and compares it with `original`: equal but for the
/// apps' expectations, each of which must be its baseline and find nothing in what was seen.
pub(super) fn verify(
    candidate: &str,
    original: &Config,
    apps: &BTreeMap<String, AppBaseline>,
    base_dir: &Path,
) -> Result<(), String> {
    let (got, _) = config::parse(candidate, &original.origin, base_dir)
        .map_err(|e| format!("the result does not parse as a config: {e}"))?;
    for app in &got.apps {
        let Some(want) = apps.get(&app.name) else {
            return Err(format!("app {}: not observed", app.name));
        };
        for (product, want) in &want.products {
            let Some(expect) = app.expect(*product) else {
                return Err(format!("app {}: {product} is not watched", app.name));
            };
            if !want.baseline.is(expect) {
                return Err(format!(
                    "app {} ({product}): the written expect: does not read back as the observation",
                    app.name
                ));
            }
            let findings = drift::check(expect, &want.observed);
            if !findings.is_empty() {
                let all: Vec<String> = findings.iter().map(ToString::to_string).collect();
                return Err(format!(
                    "app {} ({product}): it would still drift: {}",
                    app.name,
                    all.join("; ")
                ));
            }
        }
    }
    let (want, got) = (outside_expect(original), outside_expect(&got));
    if want == got {
        return Ok(());
    }
    Err(difference(&want, &got))
}

/// `config` with what a snapshot may change (expectations, positions) set aside.
fn outside_expect(config: &Config) -> Config {
    let mut config = config.clone();
    for app in &mut config.apps {
        // Which products are watched is outside `expect:`; what each expects is not.
        for (product, expect) in app.products.iter_mut() {
            *expect = Expected::default_for(*product);
        }
        app.secret_pos = Pos::START;
    }
    config
}

/// Says where two configs differ; relative paths are the likely cause.
fn difference(want: &Config, got: &Config) -> String {
    let mut paths: Vec<String> = Vec::new();
    let mut path = |what: String, a: Option<&PathBuf>, b: Option<&PathBuf>| {
        if a != b {
            paths.push(format!(
                "{what} would be {} instead of {}",
                b.map_or("none".into(), |p| p.display().to_string()),
                a.map_or("none".into(), |p| p.display().to_string()),
            ));
        }
    };
    path(
        "state_file".into(),
        want.state_file.as_ref(),
        got.state_file.as_ref(),
    );
    path(
        "web_config_file".into(),
        want.web_config_file.as_ref(),
        got.web_config_file.as_ref(),
    );
    path(
        "ca_file".into(),
        want.ca_file.as_ref(),
        got.ca_file.as_ref(),
    );
    for (a, b) in want.apps.iter().zip(&got.apps) {
        if let (SecretSource::File(pa), SecretSource::File(pb)) = (&a.secret, &b.secret) {
            path(
                format!("app {}: secret_key_file", a.name),
                Some(pa),
                Some(pb),
            );
        }
    }
    if paths.is_empty() {
        "the result differs from the input outside the apps' expect: blocks".to_owned()
    } else {
        format!(
            "relative paths are taken from the config's directory, and the snapshot goes to another one: {}; write the snapshot beside the config or make those paths absolute",
            paths.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::drift::Observed;
    use crate::snapshot::fixtures::{baselines_for, parse};
    use crate::snapshot::render;

    #[test]
    fn relative_paths_resolve_from_the_output_directory() {
        let text = "state_file: state.json\napps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_file: keys/a\n";
        let config = parse(text);
        let apps = baselines_for(&config, &[Observed::Absent]);
        let err = render(text, &config, &apps, Path::new("/elsewhere"), "# h\n")
            .expect_err("paths would move")
            .to_string();
        assert!(err.starts_with("snapshot of c.yaml: "), "{err}");
        assert!(
            err.contains(
                "state_file would be /elsewhere/state.json instead of /etc/calldrift/state.json"
            ),
            "{err}"
        );
        assert!(err.contains("app a: secret_key_file"), "{err}");
        assert!(render(text, &config, &apps, Path::new("/etc/calldrift"), "# h\n").is_ok());
    }
}
