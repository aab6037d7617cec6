//! `expect:`, global and per app, for each product. A product's expectation is layered,
//! most general first: the product's defaults, the global block, the global `<product>:`
//! sub-block, the app's block, the app's `<product>:` sub-block; each overrides the ones
//! before field by field. The URL fields and `present` of a top-level block apply to every
//! product; its command fields (`commands`, `extra_commands`, `ignore_commands`) are
//! TUICallKit's, so TUIRoomKit's and TUILiveKit's come from their sub-blocks only.
//!
//! Each field of the merged expectation is checked where the block that set it is written,
//! so a problem points into the block that causes it, and a global value that apps inherit
//! is reported once, at its own line.

use crate::config::Diagnostics;
use crate::config::positions::join;
use crate::config::raw::{RawExpect, RawPresence};
use crate::drift::{Expected, ExtraCommands, Presence};
use crate::product::Product;

/// One scope's `expect:` block (the global one or an app's), if written, and where it sits.
pub(super) struct Scope<'a> {
    pub(super) block: Option<&'a RawExpect>,
    pub(super) path: &'a str,
}

/// A product's expectations when nothing is written, in the raw form blocks merge into.
fn defaults(product: Product) -> RawExpect {
    let d = Expected::default_for(product);
    RawExpect {
        present: Some(RawPresence::Bool(true)),
        url_scheme: Some(d.url_scheme),
        commands: Some(d.commands),
        extra_commands: Some(
            match d.extra_commands {
                ExtraCommands::Drift => "drift",
                ExtraCommands::Allow => "allow",
            }
            .to_owned(),
        ),
        ignore_commands: Some(Vec::new()),
        ..RawExpect::default()
    }
}

/// What of `block` applies to `product`: all of a sub-block; of a top-level block, the
/// command fields only for TUICallKit. Sub-blocks are left out.
fn applicable(block: &RawExpect, product: Product, sub_block: bool) -> RawExpect {
    let commands_apply = sub_block || product == Product::Call;
    let commands = |field: &Option<Vec<String>>| field.clone().filter(|_| commands_apply);
    RawExpect {
        present: block.present.clone(),
        url_scheme: block.url_scheme.clone(),
        url: block.url.clone(),
        url_prefix: block.url_prefix.clone(),
        commands: commands(&block.commands),
        extra_commands: block.extra_commands.clone().filter(|_| commands_apply),
        ignore_commands: commands(&block.ignore_commands),
        ..RawExpect::default()
    }
}

/// `over`'s fields replace `base`'s field by field.
fn merge(base: RawExpect, over: RawExpect) -> RawExpect {
    RawExpect {
        present: over.present.or(base.present),
        url_scheme: over.url_scheme.or(base.url_scheme),
        url: over.url.or(base.url),
        url_prefix: over.url_prefix.or(base.url_prefix),
        commands: over.commands.or(base.commands),
        extra_commands: over.extra_commands.or(base.extra_commands),
        ignore_commands: over.ignore_commands.or(base.ignore_commands),
        ..RawExpect::default()
    }
}

/// `product`'s expectation over `scopes` (the global block first, then the app's),
/// checked; see the module doc.
pub(super) fn product_expect(
    product: Product,
    scopes: &[Scope],
    diagnostics: &mut Diagnostics,
) -> Expected {
    let mut merged = defaults(product);
    let mut origins = Origins::default();
    for scope in scopes {
        let Some(block) = scope.block else { continue };
        let layer = applicable(block, product, false);
        origins.note(&layer, scope.path);
        merged = merge(merged, layer);
        if let Some(sub) = block.sub_block(product) {
            let layer = applicable(sub, product, true);
            origins.note(&layer, &join(scope.path, product.as_str()));
            merged = merge(merged, layer);
        }
    }
    check(&merged, product, &origins, diagnostics)
}

/// Product sub-blocks sit in top-level blocks only: one inside another is an error.
pub(super) fn check_nesting(block: Option<&RawExpect>, path: &str, diagnostics: &mut Diagnostics) {
    let Some(block) = block else { return };
    for outer in Product::ALL {
        let Some(sub) = block.sub_block(outer) else {
            continue;
        };
        for inner in Product::ALL {
            if sub.sub_block(inner).is_some() {
                let at = format!("{path}.{outer}.{inner}");
                diagnostics.error_at_key(
                    &at,
                    format!("{at}: a product block holds one product's fields, not another product block"),
                );
            }
        }
    }
}

/// The block (its path) that set each field of a merged expectation; `expect` for a
/// product default, which is never in error.
struct Origins {
    present: String,
    url_scheme: String,
    url: String,
    url_prefix: String,
    commands: String,
    extra_commands: String,
    ignore_commands: String,
}

impl Default for Origins {
    fn default() -> Self {
        let top = || "expect".to_owned();
        Origins {
            present: top(),
            url_scheme: top(),
            url: top(),
            url_prefix: top(),
            commands: top(),
            extra_commands: top(),
            ignore_commands: top(),
        }
    }
}

impl Origins {
    /// The fields `layer` writes come from the block at `path`.
    fn note(&mut self, layer: &RawExpect, path: &str) {
        let set = |written: bool, origin: &mut String| {
            if written {
                *origin = path.to_owned();
            }
        };
        set(layer.present.is_some(), &mut self.present);
        set(layer.url_scheme.is_some(), &mut self.url_scheme);
        set(layer.url.is_some(), &mut self.url);
        set(layer.url_prefix.is_some(), &mut self.url_prefix);
        set(layer.commands.is_some(), &mut self.commands);
        set(layer.extra_commands.is_some(), &mut self.extra_commands);
        set(layer.ignore_commands.is_some(), &mut self.ignore_commands);
    }
}

/// Validates a merged expectation of `product`, each field where it was written.
fn check(
    raw: &RawExpect,
    product: Product,
    origins: &Origins,
    diagnostics: &mut Diagnostics,
) -> Expected {
    let present = presence(raw.present.as_ref(), &origins.present, diagnostics);
    let url_scheme = url_scheme(raw.url_scheme.as_deref(), &origins.url_scheme, diagnostics);
    let url = raw.url.clone().flatten();
    let url_prefix = raw.url_prefix.clone().flatten();
    if let Some(scheme) = &url_scheme {
        check_urls(
            (url.as_deref(), &origins.url),
            (url_prefix.as_deref(), &origins.url_prefix),
            scheme,
            diagnostics,
        );
    }
    let url_scheme = url_scheme.unwrap_or_default();
    let extra_commands = extra_commands(
        raw.extra_commands.as_deref(),
        &origins.extra_commands,
        diagnostics,
    );
    let commands = raw.commands.clone().unwrap_or_default();
    let ignore_commands = raw.ignore_commands.clone().unwrap_or_default();
    check_command_words(
        product,
        (&commands, &origins.commands),
        (&ignore_commands, &origins.ignore_commands),
        diagnostics,
    );
    Expected {
        present,
        url_scheme,
        url,
        url_prefix,
        commands,
        extra_commands,
        ignore_commands,
    }
}

fn presence(raw: Option<&RawPresence>, path: &str, diagnostics: &mut Diagnostics) -> Presence {
    match raw {
        Some(RawPresence::Bool(true)) | None => Presence::Required,
        Some(RawPresence::Bool(false)) => Presence::Forbidden,
        Some(RawPresence::Word(w)) if w == "any" => Presence::Any,
        Some(RawPresence::Word(w)) => {
            let field = format!("{path}.present");
            diagnostics.error(&field, format!("{field}: {w:?} is not true, false or any"));
            Presence::Required
        }
    }
}

/// The scheme, lower-cased; https when not written. Anything but https or http is an
/// error at `url_scheme` itself, and `None` so the URLs are not blamed for it.
fn url_scheme(raw: Option<&str>, path: &str, diagnostics: &mut Diagnostics) -> Option<String> {
    let scheme = raw.unwrap_or("https").to_ascii_lowercase();
    if scheme == "https" || scheme == "http" {
        return Some(scheme);
    }
    let field = format!("{path}.url_scheme");
    diagnostics.error(
        &field,
        format!("{field}: url_scheme must be https or http, not {scheme:?}"),
    );
    None
}

/// `url` and `url_prefix` (each with the path of its block) must agree with `url_scheme`
/// and with each other.
fn check_urls(
    (url, url_at): (Option<&str>, &str),
    (url_prefix, prefix_at): (Option<&str>, &str),
    url_scheme: &str,
    diagnostics: &mut Diagnostics,
) {
    let url_field = format!("{url_at}.url");
    if let Some(url) = url {
        match url::Url::parse(url) {
            Ok(parsed) if parsed.scheme() != url_scheme => diagnostics.error(
                &url_field,
                format!(
                    "{url_field}: the URL's scheme {:?} contradicts url_scheme {url_scheme:?}",
                    parsed.scheme()
                ),
            ),
            Ok(_) => {}
            Err(e) => diagnostics.error(&url_field, format!("{url_field}: not a URL ({e})")),
        }
    }
    let Some(prefix) = url_prefix else { return };
    if !prefix
        .to_ascii_lowercase()
        .starts_with(&format!("{url_scheme}://"))
    {
        let field = format!("{prefix_at}.url_prefix");
        diagnostics.error(
            &field,
            format!("{field}: must start with {url_scheme}:// (url_scheme)"),
        );
    }
    if let Some(url) = url {
        if !url.starts_with(prefix) {
            diagnostics.error(
                &url_field,
                format!("{url_field}: does not start with url_prefix, so it can never match"),
            );
        }
    }
}

fn extra_commands(raw: Option<&str>, path: &str, diagnostics: &mut Diagnostics) -> ExtraCommands {
    match raw {
        None | Some("drift") => ExtraCommands::Drift,
        Some("allow") => ExtraCommands::Allow,
        Some(other) => {
            let field = format!("{path}.extra_commands");
            diagnostics.error(
                &field,
                format!("{field}: {other:?} is neither drift nor allow"),
            );
            ExtraCommands::Drift
        }
    }
}

/// Every word must be one (an error otherwise), must not carry another product's own
/// prefix (an error: it can never be this product's), and should be documented for the
/// product (a warning: Tencent adds words); a word both expected and ignored is worth a
/// warning.
fn check_command_words(
    product: Product,
    (commands, commands_at): (&[String], &str),
    (ignore_commands, ignore_at): (&[String], &str),
    diagnostics: &mut Diagnostics,
) {
    let documented = product.documented_commands();
    for (list, words, path) in [
        ("commands", commands, commands_at),
        ("ignore_commands", ignore_commands, ignore_at),
    ] {
        for (i, word) in words.iter().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            if word.trim().is_empty() || word.trim() != word {
                diagnostics.error(
                    &at,
                    format!("{path}.{list}: {word:?} is not a command word"),
                );
            } else if let Some(owner) = product.foreign_owner(word) {
                diagnostics.error(
                    &at,
                    format!(
                        "{path}.{list}: {word:?} is a {} word ({owner}), never one of {}'s ({product}); put it under expect.{owner}",
                        owner.kit(),
                        product.kit()
                    ),
                );
            } else if !documented.contains(&word.as_str()) {
                diagnostics.warning(
                    &at,
                    format!(
                        "{word:?} is not one of the documented {} command words ({})",
                        product.kit(),
                        documented.join(", ")
                    ),
                );
            }
        }
    }
    for word in commands.iter().filter(|w| ignore_commands.contains(w)) {
        diagnostics.warning(
            &format!("{ignore_at}.ignore_commands"),
            format!("{word:?} is both expected and ignored; ignoring wins"),
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::{APP, errors, parse_text};
    use crate::drift::{Expected, ExtraCommands, Presence};
    use crate::product::Product;

    const START: &str = "Call.CallbackAfterStartCall";
    const END: &str = "Call.CallbackAfterEndCall";

    #[test]
    fn app_expect_overrides_global_field_by_field() {
        let text = format!(
            "expect:\n  url_prefix: https://hooks.example.com/\n  extra_commands: allow\n{APP}    expect:\n      commands: [Call.CallbackAfterEndCall]\n"
        );
        let (config, _) = parse_text(&text).expect("valid");
        let e = &config.apps[0].products[&Product::Call];
        assert_eq!(e.url_prefix.as_deref(), Some("https://hooks.example.com/"));
        assert_eq!(e.extra_commands, ExtraCommands::Allow);
        assert_eq!(e.commands, vec!["Call.CallbackAfterEndCall".to_owned()]);
        assert_eq!(e.present, Presence::Required);
    }

    #[test]
    fn an_app_clears_an_inherited_url_or_prefix_with_null() {
        let text = format!(
            "expect:\n  url_prefix: https://hooks.example.com/\n  url: https://hooks.example.com/cb\n{APP}    expect:\n      url_scheme: http\n      url: null\n      url_prefix: null\n  - name: b\n    sdkappid: 2\n    regions: [china]\n    secret_key_env: K\n    expect:\n      commands: []\n"
        );
        let (config, _) = parse_text(&text).expect("valid");
        let (a, b) = (
            &config.apps[0].products[&Product::Call],
            &config.apps[1].products[&Product::Call],
        );
        assert_eq!((a.url.as_deref(), a.url_prefix.as_deref()), (None, None));
        // Not written at all: inherited.
        assert_eq!(b.url.as_deref(), Some("https://hooks.example.com/cb"));
        assert_eq!(b.url_prefix.as_deref(), Some("https://hooks.example.com/"));
    }

    /// The expectation of each product of the one app of `global` + `app` (the app's
    /// `expect:` lines, indented by four), which watches every product.
    fn layered(global: &str, app: &str) -> [Expected; 3] {
        let text = format!(
            "expect:\n{global}apps:\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: K\n    products: [call, room, live]\n    expect:\n{app}"
        );
        let (config, _) = parse_text(&text).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
        Product::ALL.map(|p| config.apps[0].products[&p].clone())
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn layering_table() {
        const HOOK: &str = "https://hooks.example.com/";
        let call = Expected::default_for(Product::Call);
        let room = Expected::default_for(Product::Room);
        let live = Expected::default_for(Product::Live);
        let url = |e: &Expected, u: &str| Expected {
            url: Some(u.to_owned()),
            ..e.clone()
        };
        let created = "Room.CallbackAfterCreateRoom";
        let gift = "Live.CallbackBeforeSendGift";
        // (what, global block, app block, expected call, room, live)
        let table: Vec<(&str, &str, &str, [Expected; 3])> = vec![
            (
                "nothing written: each product's defaults",
                "  {}\n",
                "      {}\n",
                [call.clone(), room.clone(), live.clone()],
            ),
            (
                "a global URL applies to every product",
                "  url: https://hooks.example.com/\n",
                "      {}\n",
                [url(&call, HOOK), url(&room, HOOK), url(&live, HOOK)],
            ),
            (
                "top-level command fields are TUICallKit's only",
                "  commands: [Call.CallbackAfterEndCall]\n  extra_commands: allow\n  ignore_commands: [Call.CallbackAfterMemberChanged]\n",
                "      commands: [Call.CallbackAfterStartCall]\n",
                [
                    Expected {
                        commands: words(&[START]),
                        extra_commands: ExtraCommands::Allow,
                        ignore_commands: words(&["Call.CallbackAfterMemberChanged"]),
                        ..call.clone()
                    },
                    room.clone(),
                    live.clone(),
                ],
            ),
            (
                "global sub-blocks set their product's commands",
                "  room:\n    commands: [Room.CallbackAfterCreateRoom]\n    extra_commands: drift\n  live:\n    commands: [Live.CallbackBeforeSendGift]\n",
                "      {}\n",
                [
                    call.clone(),
                    Expected {
                        commands: words(&[created]),
                        extra_commands: ExtraCommands::Drift,
                        ..room.clone()
                    },
                    Expected {
                        commands: words(&[gift]),
                        ..live.clone()
                    },
                ],
            ),
            (
                "the app's top block overrides a global sub-block's URL",
                "  room:\n    url: https://global-room.example.com/\n",
                "      url: https://app.example.com/\n",
                [
                    url(&call, "https://app.example.com/"),
                    url(&room, "https://app.example.com/"),
                    url(&live, "https://app.example.com/"),
                ],
            ),
            (
                "the app's sub-block overrides everything before it",
                "  url: https://hooks.example.com/\n  room:\n    present: false\n",
                "      present: any\n      live:\n        url: null\n        url_prefix: https://live.example.com/\n      room:\n        present: true\n        commands: [Room.CallbackAfterCreateRoom]\n",
                [
                    Expected {
                        present: Presence::Any,
                        ..url(&call, HOOK)
                    },
                    Expected {
                        commands: words(&[created]),
                        ..url(&room, HOOK)
                    },
                    Expected {
                        present: Presence::Any,
                        url_prefix: Some("https://live.example.com/".to_owned()),
                        ..live.clone()
                    },
                ],
            ),
            (
                "a call sub-block layers like the others, over the top block",
                "  commands: [Call.CallbackAfterEndCall]\n  call:\n    extra_commands: allow\n",
                "      call:\n        commands: [Call.CallbackAfterStartCall, Call.CallbackAfterEndCall]\n",
                [
                    Expected {
                        commands: words(&[START, END]),
                        extra_commands: ExtraCommands::Allow,
                        ..call.clone()
                    },
                    room.clone(),
                    live.clone(),
                ],
            ),
        ];
        for (what, global, app, want) in table {
            assert_eq!(layered(global, app), want, "{what}");
        }
    }

    #[test]
    fn a_bad_url_scheme_is_an_error_at_its_own_line_and_not_blamed_on_the_urls() {
        let text = format!(
            "expect:\n  url_scheme: htps\n  url: https://x.example/cb\n{APP}    expect:\n      url: https://y.example/cb\n"
        );
        assert_eq!(
            errors(&text),
            vec!["c.yaml:2:15: expect.url_scheme: url_scheme must be https or http, not \"htps\""]
        );
    }

    #[test]
    fn a_global_command_word_is_reported_once_at_its_line_whatever_apps_inherit_it() {
        let second = "  - name: b\n    sdkappid: 1400000002\n    regions: [singapore]\n    secret_key_env: K\n    expect:\n      extra_commands: allow\n";
        let text = format!(
            "expect:\n  commands: [Bogus.Word]\n{APP}    expect:\n      present: true\n{second}"
        );
        let (_, warnings) = parse_text(&text).expect("valid");
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            vec![
                "c.yaml:2:14: warning: \"Bogus.Word\" is not one of the documented TUICallKit command words (Call.CallbackAfterStartCall, Call.CallbackAfterEndCall, Call.CallbackAfterMemberChanged)"
            ]
        );
    }

    #[test]
    fn problems_in_sub_blocks_name_their_own_place() {
        let text = format!(
            "expect:\n  room:\n    commands: [\" x\"]\n{APP}    products: [call, room, live]\n    expect:\n      live:\n        url_scheme: \"h t\"\n        commands:\n          - Call.CallbackAfterEndCall\n"
        );
        let all = errors(&text);
        let want = [
            "c.yaml:3:16: expect.room.commands: \" x\" is not a command word",
            "c.yaml:12:21: apps[0].expect.live.url_scheme: url_scheme must be https or http, not \"h t\"",
            "c.yaml:14:13: apps[0].expect.live.commands: \"Call.CallbackAfterEndCall\" is a TUICallKit word (call), never one of TUILiveKit's (live); put it under expect.call",
        ];
        for w in want {
            assert!(all.iter().any(|e| e == w), "missing {w:?} in {all:#?}");
        }
        // Reached by the global room expectation and by the app's: reported once.
        assert_eq!(
            all.iter().filter(|e| e.contains("\" x\"")).count(),
            1,
            "{all:#?}"
        );
    }

    #[test]
    fn a_product_block_inside_another_is_an_error() {
        let text = format!("expect:\n  room:\n    live:\n      present: any\n{APP}");
        let all = errors(&text);
        assert!(
            all.contains(&"c.yaml:3:5: expect.room.live: a product block holds one product's fields, not another product block".to_owned()),
            "{all:#?}"
        );
    }

    #[test]
    fn command_words_are_checked_against_their_product() {
        // (product block, word, outcome): "ok", "warning" or "error".
        let table = [
            ("call", "Call.CallbackAfterMemberChanged", "ok"),
            ("call", "Call.CallbackAfterNewThing", "warning"),
            ("call", "Mic.CallbackAfterSeatInfoChanged", "warning"),
            ("call", "Room.CallbackAfterCreateRoom", "error"),
            ("call", "Live.CallbackAfterCreateRoom", "error"),
            ("room", "Room.CallbackAfterUpdateRoomInfo", "ok"),
            ("room", "Room.CallbackUpdateRoomInfo", "ok"),
            ("room", "Mic.CallbackAfterSeatInfoChanged", "ok"),
            ("room", "Room.CallbackAfterNewThing", "warning"),
            ("room", "Call.CallbackAfterEndCall", "error"),
            ("room", "Live.CallbackAfterCreateRoom", "error"),
            ("live", "Live.CallbackAfterStartBattle", "ok"),
            ("live", "Mic.CallbackAfterSeatInfoChanged", "ok"),
            ("live", "Group.CallbackAfterSendMsg", "ok"),
            ("live", "Follow.CallbackAfterFollowDelete", "ok"),
            ("live", "Live.CallbackMemberStateChanged", "warning"),
            ("live", "Call.CallbackAfterStartCall", "error"),
            ("live", "Room.CallbackAfterCreateRoom", "error"),
        ];
        for (product, word, outcome) in table {
            for list in ["commands", "ignore_commands"] {
                let text = format!(
                    "{APP}    products: [call, room, live]\n    expect:\n      {product}:\n        {list}: [{word}]\n"
                );
                let got = match parse_text(&text) {
                    Ok((_, warnings)) if warnings.is_empty() => "ok",
                    Ok((_, warnings)) => {
                        assert!(
                            warnings[0].message.contains("is not one of the documented"),
                            "{warnings:?}"
                        );
                        "warning"
                    }
                    Err(all) => {
                        assert!(all[0].contains("never one of"), "{all:?}");
                        "error"
                    }
                };
                assert_eq!(got, outcome, "{product}.{list}: {word}");
            }
        }
        // A top-level `commands:` is TUICallKit's: a room word there is an error.
        let text = format!("expect:\n  commands: [Room.CallbackAfterCreateRoom]\n{APP}");
        assert!(errors(&text)[0].contains("is a TUIRoomKit word (room)"));
    }
}
