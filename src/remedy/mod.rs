//! The pure decision of remediation: which write would make a target's observed callback
//! configuration match its expectation, or why no write is made.
//!
//! A target is **managed** when its expectation names one exact configuration:
//! `present: false`, or `present: true` with an exact `url` and a command list. The
//! desired list is the expected `commands`, then the observed words that
//! `extra_commands: allow` or `ignore_commands` let stay. Anything else is
//! **unmanaged**: reported with its reason, never written.
//!
//! Nothing here does IO; `tencent::Client::write` carries a [`Write`] out.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::drift::{self, Expected, ExtraCommands, Observed, Presence};
use crate::product::Product;

/// What to do about one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remedy {
    /// The target checks clean: nothing to write.
    None,
    /// This write makes it match.
    Write(Write),
    /// It drifted, but its expectation names no one configuration to write.
    Unmanaged(Unmanaged),
}

/// One write to the target's product family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// `set_callback`: TUICallKit's overwrites; TUIRoomKit's and TUILiveKit's create.
    Set(Desired),
    /// `update_callback` (TUIRoomKit, TUILiveKit): changes an existing configuration.
    Update(Desired),
    /// `delete_callback`.
    Delete,
}

impl Write {
    /// The action's name in reports and logs: `set`, `update` or `delete`.
    pub fn action(&self) -> &'static str {
        match self {
            Write::Set(_) => "set",
            Write::Update(_) => "update",
            Write::Delete => "delete",
        }
    }

    /// The configuration written, `None` for a delete.
    pub fn desired(&self) -> Option<&Desired> {
        match self {
            Write::Set(d) | Write::Update(d) => Some(d),
            Write::Delete => None,
        }
    }

    /// What the target is expected to read after the write.
    pub fn outcome(&self) -> Observed {
        match self.desired() {
            Some(d) => d.to_observed(),
            None => Observed::Absent,
        }
    }
}

/// The configuration a set or update writes: the exact URL (not redacted: it is sent to
/// the gateway, so show it only through `redact`) and the command words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub url: String,
    pub commands: Vec<String>,
}

impl Desired {
    /// The observation this configuration would be read back as.
    pub fn to_observed(&self) -> Observed {
        Observed::Present {
            url: self.url.clone(),
            commands: self.commands.clone(),
        }
    }
}

/// Why a drifted target is not written: a closed set. Serialized as [`Unmanaged::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmanaged {
    /// `present: any`.
    PresenceAny,
    /// `url_prefix` without an exact `url`.
    UrlPrefixOnly,
    /// Neither `url` nor `url_prefix`.
    NoUrl,
    /// No configuration exists and none of its command words is named: a set would
    /// create one that sends nothing.
    NoCommands,
    /// Its `url` contradicts its own `url_scheme` or `url_prefix`: whatever is written
    /// still drifts.
    Unsatisfiable,
}

impl Unmanaged {
    /// Every reason, in order.
    pub const ALL: [Unmanaged; 5] = [
        Unmanaged::PresenceAny,
        Unmanaged::UrlPrefixOnly,
        Unmanaged::NoUrl,
        Unmanaged::NoCommands,
        Unmanaged::Unsatisfiable,
    ];

    /// The `reason` in reports, JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Unmanaged::PresenceAny => "presence_any",
            Unmanaged::UrlPrefixOnly => "url_prefix_only",
            Unmanaged::NoUrl => "no_url",
            Unmanaged::NoCommands => "no_commands",
            Unmanaged::Unsatisfiable => "unsatisfiable",
        }
    }

    /// The reason as a sentence, for people.
    pub fn sentence(self) -> &'static str {
        match self {
            Unmanaged::PresenceAny => {
                "the expectation says present: any, so no one configuration is expected"
            }
            Unmanaged::UrlPrefixOnly => {
                "the expectation names only a url_prefix, not the exact url to write"
            }
            Unmanaged::NoUrl => "the expectation names no url to write",
            Unmanaged::NoCommands => {
                "no configuration exists and the expectation names no command words to create it with"
            }
            Unmanaged::Unsatisfiable => {
                "the expected url contradicts its own url_scheme or url_prefix, so any write would still drift"
            }
        }
    }
}

impl std::fmt::Display for Unmanaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Pure: what would make `observed` match `expected` for `product`. `None` exactly when
/// [`drift::check`] finds nothing; a write is only ever one whose result checks clean.
pub fn decide(product: Product, expected: &Expected, observed: &Observed) -> Remedy {
    if drift::check(expected, observed).is_empty() {
        return Remedy::None;
    }
    let desired = match desired(expected, observed) {
        Ok(None) => return Remedy::Write(Write::Delete),
        Ok(Some(desired)) => desired,
        Err(reason) => return Remedy::Unmanaged(reason),
    };
    if !drift::check(expected, &desired.to_observed()).is_empty() {
        return Remedy::Unmanaged(Unmanaged::Unsatisfiable);
    }
    // TUICallKit's set overwrites and its family has no update; the others' set only
    // creates, so what was observed chooses (the client switches once if that changed).
    if product.set_creates_only() && observed.is_present() {
        Remedy::Write(Write::Update(desired))
    } else {
        Remedy::Write(Write::Set(desired))
    }
}

/// The one configuration `expected` names given `observed` (`None`: none should exist),
/// or why there is not one.
fn desired(expected: &Expected, observed: &Observed) -> Result<Option<Desired>, Unmanaged> {
    match expected.present {
        Presence::Forbidden => return Ok(None),
        Presence::Any => return Err(Unmanaged::PresenceAny),
        Presence::Required => {}
    }
    let url = match (&expected.url, &expected.url_prefix) {
        (Some(url), _) => url.clone(),
        (None, Some(_)) => return Err(Unmanaged::UrlPrefixOnly),
        (None, None) => return Err(Unmanaged::NoUrl),
    };
    let commands = desired_commands(expected, observed);
    if commands.is_empty()
        && !observed.is_present()
        && expected.extra_commands == ExtraCommands::Allow
    {
        return Err(Unmanaged::NoCommands);
    }
    Ok(Some(Desired { url, commands }))
}

/// The expected words in their order, then the observed words allowed to stay (any, with
/// `extra_commands: allow`; the ignored ones otherwise) in observed order, each once.
fn desired_commands(expected: &Expected, observed: &Observed) -> Vec<String> {
    let ignored: BTreeSet<&str> = expected
        .ignore_commands
        .iter()
        .map(String::as_str)
        .collect();
    let stays =
        |word: &str| expected.extra_commands == ExtraCommands::Allow || ignored.contains(word);
    let observed_words: &[String] = match observed {
        Observed::Present { commands, .. } => commands,
        Observed::Absent => &[],
    };
    let mut seen = BTreeSet::new();
    expected
        .commands
        .iter()
        .chain(observed_words.iter().filter(|w| stays(w)))
        .filter(|w| seen.insert(w.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: &str = "Call.CallbackAfterStartCall";
    const END: &str = "Call.CallbackAfterEndCall";
    const MEMBER: &str = "Call.CallbackAfterMemberChanged";
    const CREATE: &str = "Room.CallbackAfterCreateRoom";
    const DESTROY: &str = "Room.CallbackAfterDestroyRoom";
    const LIVE: &str = "Live.CallbackAfterCreateRoom";
    const GOOD: &str = "https://hooks.example.com/cb?token=t";
    const OLD: &str = "http://old.example.com/cb";

    fn present(url: &str, commands: &[&str]) -> Observed {
        Observed::Present {
            url: url.to_owned(),
            commands: words(commands),
        }
    }

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| (*w).to_owned()).collect()
    }

    fn desired(commands: &[&str]) -> Desired {
        Desired {
            url: GOOD.to_owned(),
            commands: words(commands),
        }
    }

    /// `product`'s defaults with an exact URL, changed by `f`.
    fn expect(product: Product, f: &dyn Fn(&mut Expected)) -> Expected {
        let mut e = Expected::default_for(product);
        e.url = Some(GOOD.to_owned());
        f(&mut e);
        e
    }

    fn same(_: &mut Expected) {}

    #[test]
    fn decision_table() {
        use Product::{Call, Live, Room};
        let room_commands = |e: &mut Expected| e.commands = words(&[CREATE, DESTROY]);
        let cases: Vec<(&str, Product, Expected, Observed, Remedy)> = vec![
            (
                "clean call",
                Call,
                expect(Call, &same),
                present(GOOD, &[END, START]),
                Remedy::None,
            ),
            (
                "call with the wrong url is set, order of expected words",
                Call,
                expect(Call, &same),
                present(OLD, &[END, START]),
                Remedy::Write(Write::Set(desired(&[START, END]))),
            ),
            (
                "absent call is set",
                Call,
                expect(Call, &same),
                Observed::Absent,
                Remedy::Write(Write::Set(desired(&[START, END]))),
            ),
            (
                "extra forbidden: the extra word goes",
                Call,
                expect(Call, &same),
                present(GOOD, &[START, END, MEMBER]),
                Remedy::Write(Write::Set(desired(&[START, END]))),
            ),
            (
                "extra allowed: an observed word stays",
                Call,
                expect(Call, &|e| e.extra_commands = ExtraCommands::Allow),
                present(OLD, &[MEMBER, START]),
                Remedy::Write(Write::Set(desired(&[START, END, MEMBER]))),
            ),
            (
                "ignored words stay, others go",
                Call,
                expect(Call, &|e| e.ignore_commands = words(&[MEMBER])),
                present(GOOD, &[MEMBER, "Call.Other", START]),
                Remedy::Write(Write::Set(desired(&[START, END, MEMBER]))),
            ),
            (
                "an ignored expected word is written anyway",
                Call,
                expect(Call, &|e| e.ignore_commands = words(&[END])),
                present(OLD, &[START]),
                Remedy::Write(Write::Set(desired(&[START, END]))),
            ),
            (
                "room with a config is updated, its words kept",
                Room,
                expect(Room, &same),
                present(OLD, &[DESTROY]),
                Remedy::Write(Write::Update(desired(&[DESTROY]))),
            ),
            (
                "room without a config is set",
                Room,
                expect(Room, &room_commands),
                Observed::Absent,
                Remedy::Write(Write::Set(desired(&[CREATE, DESTROY]))),
            ),
            (
                "room missing a word is updated",
                Room,
                expect(Room, &room_commands),
                present(GOOD, &[CREATE]),
                Remedy::Write(Write::Update(desired(&[CREATE, DESTROY]))),
            ),
            (
                "live drifted is updated",
                Live,
                expect(Live, &|e| e.commands = words(&[LIVE])),
                present(OLD, &[LIVE]),
                Remedy::Write(Write::Update(desired(&[LIVE]))),
            ),
            (
                "live absent is set",
                Live,
                expect(Live, &|e| e.commands = words(&[LIVE])),
                Observed::Absent,
                Remedy::Write(Write::Set(desired(&[LIVE]))),
            ),
            (
                "clean live",
                Live,
                expect(Live, &same),
                present(GOOD, &[LIVE]),
                Remedy::None,
            ),
            (
                "forbidden and present is deleted",
                Room,
                expect(Room, &|e| e.present = Presence::Forbidden),
                present(GOOD, &[CREATE]),
                Remedy::Write(Write::Delete),
            ),
            (
                "forbidden and absent is clean",
                Call,
                expect(Call, &|e| e.present = Presence::Forbidden),
                Observed::Absent,
                Remedy::None,
            ),
            (
                "present any is unmanaged",
                Call,
                expect(Call, &|e| e.present = Presence::Any),
                present(OLD, &[START, END]),
                Remedy::Unmanaged(Unmanaged::PresenceAny),
            ),
            (
                "url_prefix only is unmanaged",
                Call,
                expect(Call, &|e| {
                    e.url = None;
                    e.url_prefix = Some("https://hooks.example.com/".to_owned());
                }),
                present("https://elsewhere.example.com/", &[START, END]),
                Remedy::Unmanaged(Unmanaged::UrlPrefixOnly),
            ),
            (
                "no url is unmanaged",
                Call,
                expect(Call, &|e| e.url = None),
                Observed::Absent,
                Remedy::Unmanaged(Unmanaged::NoUrl),
            ),
            (
                "url and prefix: the exact url is written",
                Call,
                expect(Call, &|e| {
                    e.url_prefix = Some("https://hooks.example.com/".to_owned())
                }),
                Observed::Absent,
                Remedy::Write(Write::Set(desired(&[START, END]))),
            ),
            (
                "nothing to create a room config with",
                Room,
                expect(Room, &same),
                Observed::Absent,
                Remedy::Unmanaged(Unmanaged::NoCommands),
            ),
            (
                "a url that contradicts url_scheme",
                Call,
                expect(Call, &|e| e.url = Some(OLD.to_owned())),
                Observed::Absent,
                Remedy::Unmanaged(Unmanaged::Unsatisfiable),
            ),
        ];
        for (name, product, expected, observed, want) in cases {
            let got = decide(product, &expected, &observed);
            assert_eq!(got, want, "{name}");
            // Every write checks clean once made.
            if let Remedy::Write(write) = &got {
                assert!(
                    drift::check(&expected, &write.outcome()).is_empty(),
                    "{name}"
                );
            }
            // None exactly when there is no drift.
            assert_eq!(
                got == Remedy::None,
                drift::check(&expected, &observed).is_empty(),
                "{name}"
            );
        }
    }

    #[test]
    fn call_is_never_updated() {
        for observed in [present(OLD, &[START]), Observed::Absent] {
            let got = decide(Product::Call, &expect(Product::Call, &same), &observed);
            assert!(matches!(got, Remedy::Write(Write::Set(_))), "{got:?}");
        }
    }

    #[test]
    fn reasons_have_distinct_names_and_sentences() {
        let names: BTreeSet<&str> = Unmanaged::ALL.iter().map(|u| u.as_str()).collect();
        assert_eq!(names.len(), Unmanaged::ALL.len());
        for reason in Unmanaged::ALL {
            assert!(!reason.sentence().is_empty());
            assert_eq!(reason.to_string(), reason.as_str());
            let json = serde_json::to_value(reason).expect("serializes");
            assert_eq!(json, reason.as_str());
        }
        assert_eq!(Write::Delete.action(), "delete");
        assert_eq!(Write::Delete.outcome(), Observed::Absent);
    }
}
