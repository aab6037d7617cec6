//! `apps:`: each app's identity, regions, secret source, UserSig lifetime and
//! expectations, and what must be unique across apps (names, targets).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use super::durations::{USERSIG_TTL, duration};
use super::expect;
use super::remediate::remediate;
use super::resolve_path;
use crate::config::raw::{RawApp, RawExpect};
use crate::config::{App, Diagnostics, Pos, Region, Remediate, SecretSource, Severity};
use crate::drift::Expected;
use crate::product::{Product, ProductMap};
use crate::secret::SecretKey;

/// What every app is checked against.
pub(super) struct Context<'a> {
    /// The global `expect:` as written, for an app's own block to override.
    pub(super) global: Option<&'a RawExpect>,
    /// Each product's expectation from `global`, checked: what an app without its own
    /// block expects.
    pub(super) global_expects: &'a ProductMap<Expected>,
    pub(super) regions: &'a BTreeMap<String, Region>,
    /// The global `remediate:`, checked, for an app's own block to override.
    pub(super) remediate: Remediate,
    /// Where relative secret files are taken from.
    pub(super) base_dir: &'a Path,
}

/// Every valid app, in config order; names and (SDKAppID, region, product) targets are
/// unique.
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
        let path = format!("apps[{index}]");
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
            for product in app.products.keys() {
                let key = (app.sdkappid, region.clone(), *product);
                if let Some(other) = targets.insert(key, app.name.clone()) {
                    diagnostics.error(
                        &format!("{path}.regions[{region_index}]"),
                        format!(
                            "target ({}, {region}, {product}) is configured twice (also in app {other:?})",
                            app.sdkappid
                        ),
                    );
                }
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
    let remediate = remediate(
        raw.remediate.as_ref(),
        context.remediate,
        &field("remediate"),
        diagnostics,
    );
    let watched = products(raw.products, path, &name, diagnostics);
    let products = expectations(
        &watched,
        raw.expect.as_ref(),
        path,
        &name,
        context,
        diagnostics,
    );
    let (secret, secret_pos) = secret?;
    Some(App {
        name,
        sdkappid,
        regions,
        identifier,
        secret,
        usersig_ttl,
        remediate,
        products,
        secret_pos,
    })
}

/// The products the app watches: `[call]` when not written; each known, none twice.
fn products(
    raw: Option<Vec<String>>,
    path: &str,
    name: &str,
    diagnostics: &mut Diagnostics,
) -> Vec<Product> {
    let Some(raw) = raw else {
        return vec![Product::Call];
    };
    if raw.is_empty() {
        diagnostics.error(
            &format!("{path}.products"),
            format!("app {name}: products must name at least one of call, room, live"),
        );
    }
    let mut products = Vec::new();
    for (i, word) in raw.iter().enumerate() {
        let at = format!("{path}.products[{i}]");
        match Product::from_name(word) {
            None => diagnostics.error(
                &at,
                format!("app {name}: unknown product {word:?} (known: call, room, live)"),
            ),
            Some(p) if products.contains(&p) => {
                diagnostics.error(&at, format!("app {name}: product {p} is listed twice"));
            }
            Some(p) => products.push(p),
        }
    }
    products
}

/// Each watched product's expectation: the global one when the app writes no `expect:`,
/// else the app's block layered over it. A sub-block of a product the app does not watch
/// is checked as well, and worth a warning.
fn expectations(
    watched: &[Product],
    own: Option<&RawExpect>,
    path: &str,
    name: &str,
    context: &Context,
    diagnostics: &mut Diagnostics,
) -> ProductMap<Expected> {
    let at = format!("{path}.expect");
    expect::check_nesting(own, &at, diagnostics);
    let scopes = [
        expect::Scope {
            block: context.global,
            path: "expect",
        },
        expect::Scope {
            block: own,
            path: &at,
        },
    ];
    let mut expects = ProductMap::default();
    for product in Product::ALL {
        let is_watched = watched.contains(&product);
        if own.and_then(|b| b.sub_block(product)).is_some() && !is_watched {
            diagnostics.warning(
                &format!("{at}.{product}"),
                format!("app {name} does not watch {product} (see its products), so {at}.{product} has no effect"),
            );
        } else if !is_watched {
            continue;
        }
        let expected = match (own, context.global_expects.get(&product)) {
            (None, Some(global)) => global.clone(),
            _ => expect::product_expect(product, &scopes, diagnostics),
        };
        if is_watched {
            expects.insert(product, expected);
        }
    }
    expects
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
            path.to_owned()
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
                &format!("{path}.regions[{i}]"),
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
                &format!("{path}.regions[{i}]"),
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
    use crate::config::tests::{APP, errors, parse_text};
    use crate::product::Product;

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
    fn products_default_to_call_and_are_checked() {
        let (config, _) = parse_text(APP).expect("valid");
        assert_eq!(
            config.apps[0].products.keys().collect::<Vec<_>>(),
            [&Product::Call]
        );
        let text = format!("{APP}    products: [live, call, room]\n");
        let (config, _) = parse_text(&text).expect("valid");
        assert_eq!(
            config.apps[0].products.keys().copied().collect::<Vec<_>>(),
            Product::ALL,
            "kept in product order"
        );
        assert_eq!(config.target_count(), 3);
        for (products, want) in [
            (
                "[]",
                "c.yaml:6:15: app a: products must name at least one of call, room, live",
            ),
            (
                "[call, video]",
                "c.yaml:6:22: app a: unknown product \"video\" (known: call, room, live)",
            ),
            (
                "[room, room]",
                "c.yaml:6:22: app a: product room is listed twice",
            ),
        ] {
            let text = format!("{APP}    products: {products}\n");
            assert_eq!(errors(&text), vec![want.to_owned()], "{products}");
        }
    }

    #[test]
    fn an_expectation_for_a_product_not_watched_is_a_warning() {
        let text = format!("{APP}    expect:\n      room:\n        present: false\n");
        let (config, warnings) = parse_text(&text).expect("valid");
        assert!(!config.apps[0].products.contains_key(&Product::Room));
        assert_eq!(
            warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "c.yaml:8:9: warning: app a does not watch room (see its products), so apps[0].expect.room has no effect"
            ]
        );
    }

    #[test]
    fn one_sdkappid_and_region_may_be_split_by_product() {
        let text = format!(
            "{APP}  - name: b\n    sdkappid: 1400000001\n    regions: [singapore]\n    secret_key_env: K\n    products: [room, live]\n"
        );
        let (config, _) = parse_text(&text).expect("different products are different targets");
        assert_eq!(config.target_count(), 3);
        let text = format!(
            "{APP}    products: [call, room]\n  - name: b\n    sdkappid: 1400000001\n    regions: [singapore]\n    secret_key_env: K\n    products: [live, room]\n"
        );
        let all = errors(&text);
        assert_eq!(
            all,
            [
                "c.yaml:9:15: target (1400000001, singapore, room) is configured twice (also in app \"a\")"
            ]
        );
    }

    #[test]
    fn duplicate_targets_are_rejected() {
        let text = format!(
            "{APP}  - name: b\n    sdkappid: 1400000001\n    regions: [singapore]\n    secret_key_env: K\n"
        );
        let all = errors(&text);
        assert!(
            all[0].contains("target (1400000001, singapore, call) is configured twice"),
            "{all:?}"
        );
    }
}
