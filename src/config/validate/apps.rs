//! `apps:`: each app's identity, regions, secret source, UserSig lifetime and
//! expectations, and what must be unique across apps (names, targets).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use super::durations::{USERSIG_TTL, duration};
use super::expect;
use super::resolve_path;
use crate::config::raw::{RawApp, RawExpect};
use crate::config::{App, Diagnostics, Pos, Region, SecretSource, Severity};
use crate::drift::Expected;
use crate::secret::SecretKey;

/// What every app is checked against.
pub(super) struct Context<'a> {
    /// The global `expect:` merged over the defaults, for an app's own block to override.
    pub(super) global: &'a RawExpect,
    /// `global`, checked: what an app without its own block expects.
    pub(super) global_expect: &'a Expected,
    pub(super) regions: &'a BTreeMap<String, Region>,
    /// Where relative secret files are taken from.
    pub(super) base_dir: &'a Path,
}

/// Every valid app, in config order; names and (SDKAppID, region) targets are unique.
/// A config that lists no app is an error: it is almost always a truncated file, and a
/// daemon started or reloaded from it would silently stop watching everything.
pub(super) fn apps(raw: Vec<RawApp>, context: &Context, diagnostics: &mut Diagnostics) -> Vec<App> {
    if raw.is_empty() {
        let pos = diagnostics
            .positions()
            .key_if_written("apps")
            .unwrap_or(Pos::START);
        diagnostics.push(
            Severity::Error,
            pos,
            "the config lists no apps; calldrift would watch nothing (a truncated file?)"
                .to_owned(),
        );
    }
    let mut apps = Vec::new();
    let mut names = HashMap::new();
    let mut targets = HashMap::new();
    for (index, raw_app) in raw.into_iter().enumerate() {
        let path = format!("apps.{index}");
        if let Some(name) = &raw_app.name {
            if let Some(first) = names.insert(name.clone(), index) {
                diagnostics.error(
                    &format!("{path}.name"),
                    format!("duplicate app name {name:?} (first at apps[{first}])"),
                );
            }
        }
        let Some(app) = app(raw_app, &path, context, diagnostics) else {
            continue;
        };
        for (region_index, region) in app.regions.iter().enumerate() {
            if let Some(other) = targets.insert((app.sdkappid, region.clone()), app.name.clone()) {
                diagnostics.error(
                    &format!("{path}.regions.{region_index}"),
                    format!(
                        "target ({}, {region}) is configured twice (also in app {other:?})",
                        app.sdkappid
                    ),
                );
            }
        }
        apps.push(app);
    }
    apps
}

/// One app at `path`; `None` when it has no usable secret source.
fn app(raw: RawApp, path: &str, context: &Context, diagnostics: &mut Diagnostics) -> Option<App> {
    let field = |name: &str| format!("{path}.{name}");
    let name = name(raw.name, path, diagnostics);
    let sdkappid = match raw.sdkappid {
        Some(0) => {
            diagnostics.error(
                &field("sdkappid"),
                format!("app {name}: sdkappid must be a positive number"),
            );
            0
        }
        Some(id) => id,
        None => {
            diagnostics.error(path, format!("app {name}: missing field \"sdkappid\""));
            0
        }
    };
    let regions = regions(
        raw.regions.unwrap_or_default(),
        path,
        &name,
        context,
        diagnostics,
    );
    let identifier = raw.identifier.unwrap_or_else(|| "administrator".to_owned());
    if identifier.is_empty() {
        diagnostics.error(
            &field("identifier"),
            format!("app {name}: identifier must not be empty"),
        );
    }
    let secret = secret(
        [
            raw.secret_key_file.map(|p| {
                let p = resolve_path(context.base_dir, Some(p)).unwrap_or_default();
                (SecretSource::File(p), "secret_key_file")
            }),
            raw.secret_key_env
                .map(|v| (SecretSource::Env(v), "secret_key_env")),
            raw.secret_key
                .map(|k| (SecretSource::Inline(SecretKey::new(k)), "secret_key")),
        ],
        path,
        &name,
        diagnostics,
    );
    let usersig_ttl = usersig_ttl(raw.usersig_ttl.as_deref(), path, &name, diagnostics);
    let expect = match &raw.expect {
        Some(own) => expect::check(
            &expect::merge(context.global, Some(own)),
            &field("expect"),
            diagnostics,
        ),
        None => context.global_expect.clone(),
    };
    let (secret, secret_pos) = secret?;
    Some(App {
        name,
        sdkappid,
        regions,
        identifier,
        secret,
        usersig_ttl,
        expect,
        secret_pos,
    })
}

/// The app's name; in error, the name as written or `apps[INDEX]`, for later messages.
fn name(raw: Option<String>, path: &str, diagnostics: &mut Diagnostics) -> String {
    match raw {
        Some(name)
            if !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) =>
        {
            name
        }
        Some(name) => {
            let field = format!("{path}.name");
            diagnostics.error(
                &field,
                format!("{field}: {name:?} must match [a-zA-Z0-9_.-]+"),
            );
            name
        }
        None => {
            diagnostics.error(path, format!("{path}: missing field \"name\""));
            format!("apps[{}]", path.rsplit('.').next().unwrap_or_default())
        }
    }
}

/// The app's regions: at least one, each known, none twice.
fn regions(
    regions: Vec<String>,
    path: &str,
    name: &str,
    context: &Context,
    diagnostics: &mut Diagnostics,
) -> Vec<String> {
    if regions.is_empty() {
        diagnostics.error(
            path,
            format!("app {name}: needs at least one region in \"regions\""),
        );
    }
    for (i, region) in regions.iter().enumerate() {
        if !context.regions.contains_key(region) {
            let known: Vec<&str> = context.regions.keys().map(String::as_str).collect();
            diagnostics.error(
                &format!("{path}.regions.{i}"),
                format!(
                    "app {name}: unknown region {region:?} (known: {})",
                    known.join(", ")
                ),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, region) in regions.iter().enumerate() {
        if !seen.insert(region) {
            diagnostics.error(
                &format!("{path}.regions.{i}"),
                format!("app {name}: region {region:?} is listed twice"),
            );
        }
    }
    regions
}

/// The one secret source given among `sources` (each with its key), and where it is
/// written; an inline key is worth a warning.
fn secret(
    sources: [Option<(SecretSource, &str)>; 3],
    path: &str,
    name: &str,
    diagnostics: &mut Diagnostics,
) -> Option<(SecretSource, Pos)> {
    let field = |key: &str| format!("{path}.{key}");
    let mut given: Vec<(SecretSource, &str)> = sources.into_iter().flatten().collect();
    let (source, key) = match given.len() {
        0 => {
            diagnostics.error(
                path,
                format!("app {name}: missing secret: set secret_key_file or secret_key_env"),
            );
            return None;
        }
        1 => given.pop()?,
        _ => {
            let keys: Vec<&str> = given.iter().map(|(_, k)| *k).collect();
            diagnostics.error(
                &field(keys[1]),
                format!("app {name}: give exactly one of {}", keys.join(", ")),
            );
            return None;
        }
    };
    if let SecretSource::Inline(_) = source {
        diagnostics.warning(&field("secret_key"), format!("app {name}: inline secret_key; prefer secret_key_file or secret_key_env so the key stays out of the config"));
    }
    let pos = diagnostics.positions().value(&field(key));
    Some((source, pos))
}

/// `usersig_ttl`, 24h when not written.
fn usersig_ttl(
    raw: Option<&str>,
    path: &str,
    name: &str,
    diagnostics: &mut Diagnostics,
) -> Duration {
    let field = format!("{path}.usersig_ttl");
    let ttl = duration(
        diagnostics,
        &field,
        raw,
        Duration::from_secs(86_400),
        &USERSIG_TTL,
    );
    if ttl < Duration::from_secs(300) {
        diagnostics.error(
            &field,
            format!("app {name}: usersig_ttl must be at least 5m (Tencent advises 24h)"),
        );
    }
    ttl
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{APP, errors};

    #[test]
    fn a_config_without_apps_is_refused_at_the_apps_key_or_the_start() {
        const NO_APPS: &str =
            "the config lists no apps; calldrift would watch nothing (a truncated file?)";
        for (text, at) in [
            ("", "1:1"),
            ("# a comment\n\nlisten: \"0.0.0.0:9797\"\n", "1:1"),
            ("poll:\n  interval: 30s\napps: []\n", "3:1"),
            ("listen: \"0.0.0.0:9797\"\napps:\n", "2:1"),
            ("poll:\n  interval: soon\n  apps: x\n", "1:1"),
        ] {
            let all = errors(text);
            assert!(
                all.contains(&format!("c.yaml:{at}: {NO_APPS}")),
                "{text:?}: {all:?}"
            );
        }
    }

    #[test]
    fn duplicate_targets_are_rejected() {
        let text = format!(
            "{APP}  - name: b\n    sdkappid: 1400000001\n    regions: [singapore]\n    secret_key_env: K\n"
        );
        let all = errors(&text);
        assert!(
            all[0].contains("target (1400000001, singapore) is configured twice"),
            "{all:?}"
        );
    }
}
