//! `calldrift plan` and `apply`: one pass over the targets, then for each what would make
//! it match its expectation ([`remedy::decide`]), shown as text or JSON with redacted URLs;
//! `apply.rs` carries the writes out and reads each written target back.

mod apply;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use crate::check::{self, CheckError, Selection};
use crate::clock::Clock;
use crate::config::{Config, Secrets};
use crate::product::Product;
use crate::remedy::{self, Remedy, Unmanaged, Write};
use crate::report::{ObservedView, count};
use crate::tencent::{Client, PollOutcome, Target, WriteApi};

pub use apply::{ApplyReport, TargetApplied, apply};

/// What a plan does to one target: the `action` of its JSON. An update is a `set` there
/// (the configuration is set to what is desired; `api` says which call does it), so the
/// JSON's actions stay `none`, `set`, `delete` and `unmanaged` for every product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    None,
    Set,
    #[serde(rename = "set")]
    Update,
    Delete,
    Unmanaged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "none",
            Action::Set => "set",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Unmanaged => "unmanaged",
        }
    }

    fn of(write: &Write) -> Action {
        match write {
            Write::Set(_) => Action::Set,
            Write::Update(_) => Action::Update,
            Write::Delete => Action::Delete,
        }
    }
}

/// One target of a plan, as shown: URLs redacted. The write itself (with the exact URL)
/// is kept beside it, never serialized.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedTarget {
    pub app: String,
    pub sdkappid: u64,
    pub region: String,
    pub product: Product,
    /// `None` (JSON `null`) when the target could not be read.
    pub action: Option<Action>,
    /// The call a write makes first, such as `room_config/update_callback`; `null` without
    /// a write. (The gateway's answer may switch a room or live set to an update once, or
    /// back.)
    pub api: Option<String>,
    /// Why an unmanaged target is not written (`presence_any`, `url_prefix_only`, …).
    pub reason: Option<Unmanaged>,
    /// What was read.
    pub current: Option<ObservedView>,
    /// What the write makes it (a delete: `present: false`); `null` without a write.
    pub desired: Option<ObservedView>,
    /// Why the target could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip)]
    pub write: Option<Write>,
}

impl PlannedTarget {
    /// The plan for `target` after the read `outcome`.
    pub fn new(target: &Target, outcome: &PollOutcome) -> Self {
        let key = &target.key;
        let mut planned = PlannedTarget {
            app: key.app.clone(),
            sdkappid: key.sdkappid,
            region: key.region.clone(),
            product: key.product,
            action: None,
            api: None,
            reason: None,
            current: None,
            desired: None,
            error: None,
            write: None,
        };
        let observed = match outcome.result.as_deref() {
            Ok(observed) => observed,
            Err(e) => {
                planned.error = Some(e.to_string());
                return planned;
            }
        };
        planned.current = Some(ObservedView::from(observed));
        match remedy::decide(key.product, &target.expect, observed) {
            Remedy::None => planned.action = Some(Action::None),
            Remedy::Unmanaged(reason) => {
                planned.action = Some(Action::Unmanaged);
                planned.reason = Some(reason);
            }
            Remedy::Write(write) => {
                planned.action = Some(Action::of(&write));
                let api = WriteApi::for_write(key.product, &write);
                planned.api = Some(format!("{}/{}", key.product.api_family(), api.as_str()));
                planned.desired = Some(ObservedView::from(&write.outcome()));
                planned.write = Some(write);
            }
        }
        planned
    }

    /// `app (sdkappid, region, product)`, as `check` names a target.
    pub fn name(&self) -> String {
        format!(
            "{} ({}, {}, {})",
            self.app, self.sdkappid, self.region, self.product
        )
    }

    /// The one line `plan` prints for this target.
    pub fn line(&self) -> String {
        let name = self.name();
        let Some(action) = self.action else {
            let error = self.error.as_deref().unwrap_or("not read");
            return format!("{name}: error: {error}");
        };
        match action {
            Action::None => format!("{name}: none"),
            Action::Unmanaged => match self.reason {
                Some(reason) => format!(
                    "{name}: unmanaged ({}): {}",
                    reason.as_str(),
                    reason.sentence()
                ),
                None => format!("{name}: unmanaged"),
            },
            _ => format!("{name}: {} {}", action.as_str(), self.change()),
        }
    }

    /// What a write changes: the whole configuration when there is none before or after,
    /// otherwise only the URL and the command words that differ.
    fn change(&self) -> String {
        let shown = |v: &ObservedView| match &v.url {
            Some(url) => format!("{url} [{}]", v.commands.join(", ")),
            None => "absent".to_owned(),
        };
        let (Some(current), Some(desired)) = (&self.current, &self.desired) else {
            return String::new();
        };
        if !current.present || !desired.present {
            return format!("{} -> {}", shown(current), shown(desired));
        }
        let mut parts = Vec::new();
        if current.url != desired.url {
            let url = |v: &ObservedView| v.url.clone().unwrap_or_default();
            parts.push(format!("url {} -> {}", url(current), url(desired)));
        }
        let before: BTreeSet<&str> = current.commands.iter().map(String::as_str).collect();
        let after: BTreeSet<&str> = desired.commands.iter().map(String::as_str).collect();
        let mut words: Vec<String> = after.difference(&before).map(|w| format!("+{w}")).collect();
        words.extend(before.difference(&after).map(|w| format!("-{w}")));
        if !words.is_empty() {
            parts.push(format!("commands {}", words.join(" ")));
        }
        if parts.is_empty() {
            parts.push(shown(desired));
        }
        parts.join(", ")
    }
}

/// The counts of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub targets: usize,
    /// Writes planned.
    pub changes: usize,
    pub unmanaged: usize,
    /// Targets that could not be read.
    pub errors: usize,
}

/// What `plan` prints: `{"summary": …, "targets": […]}`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub summary: PlanSummary,
    pub targets: Vec<PlannedTarget>,
}

impl Plan {
    pub fn new(targets: Vec<PlannedTarget>) -> Self {
        let summary = PlanSummary {
            targets: targets.len(),
            changes: targets.iter().filter(|t| t.write.is_some()).count(),
            unmanaged: targets
                .iter()
                .filter(|t| t.action == Some(Action::Unmanaged))
                .count(),
            errors: targets.iter().filter(|t| t.action.is_none()).count(),
        };
        Plan { summary, targets }
    }

    /// `plan`'s exit status: 1 if a target could not be read, else 2 if any write is
    /// planned, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.summary.errors > 0 {
            1
        } else if self.summary.changes > 0 {
            2
        } else {
            0
        }
    }

    /// One line per target, then the counts.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for target in &self.targets {
            out.push_str(&target.line());
            out.push('\n');
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{}: {} planned, {} unmanaged, {}\n",
            count(s.targets, "target", "targets"),
            count(s.changes, "change", "changes"),
            s.unmanaged,
            count(s.errors, "error", "errors")
        ));
        out
    }
}

/// A pass and its plan: the client (its limiter is the one writes pass too) and each
/// target beside its planned line, in the same order.
pub struct Pass {
    pub client: Arc<Client>,
    pub targets: Vec<Target>,
    pub plan: Plan,
    pub max_concurrency: usize,
}

/// Reads every target of `selection` once (like `check`, telling `progress` (done, total))
/// and plans each.
pub async fn read(
    config: &Config,
    secrets: &Secrets,
    selection: &Selection,
    clock: Arc<dyn Clock>,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Pass, CheckError> {
    let (config, targets) = check::select(config, secrets, selection)?;
    let client = check::client(&config, clock)?;
    let max_concurrency = config.poll.max_concurrency;
    let outcomes = check::poll_outcomes_with(&client, targets, max_concurrency, progress).await;
    let planned = outcomes
        .iter()
        .map(|(target, outcome)| PlannedTarget::new(target, outcome))
        .collect();
    Ok(Pass {
        client,
        targets: outcomes.into_iter().map(|(target, _)| target).collect(),
        plan: Plan::new(planned),
        max_concurrency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetKey;
    use crate::drift::{Expected, Observed, Presence};
    use crate::secret::SecretKey;
    use crate::tencent::{BaseUrls, PollError, usersig::UserSigCache};

    fn target(product: Product, f: &dyn Fn(&mut Expected)) -> Target {
        let mut expect = Expected::default_for(product);
        expect.url = Some("https://hooks.example.com/cb?token=s3cr3t".to_owned());
        f(&mut expect);
        Target {
            key: TargetKey::new("a", 1400000001, "sim", product),
            identifier: "administrator".to_owned(),
            bases: BaseUrls::new("http://127.0.0.1:1".to_owned(), None),
            usersig: Arc::new(UserSigCache::new(
                SecretKey::new("k"),
                1400000001,
                "administrator".to_owned(),
                86_400,
            )),
            expect,
            last_response: Arc::default(),
        }
    }

    fn read(result: Result<Observed, PollError>) -> PollOutcome {
        PollOutcome {
            result: result.map(Arc::new),
            request_id: None,
            attempts: 1,
        }
    }

    fn present(url: &str, commands: &[&str]) -> Result<Observed, PollError> {
        Ok(Observed::Present {
            url: url.to_owned(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        })
    }

    const START: &str = "Call.CallbackAfterStartCall";
    const END: &str = "Call.CallbackAfterEndCall";

    #[test]
    fn lines_show_the_change_redacted() {
        let same = |_: &mut Expected| {};
        let cases = [
            (
                target(Product::Call, &same),
                read(present("http://old.example.com/?t=x", &[START])),
                "a (1400000001, sim, call): set url http://old.example.com/?t=REDACTED -> https://hooks.example.com/cb?token=REDACTED, commands +Call.CallbackAfterEndCall",
            ),
            (
                target(Product::Call, &same),
                read(Ok(Observed::Absent)),
                "a (1400000001, sim, call): set absent -> https://hooks.example.com/cb?token=REDACTED [Call.CallbackAfterStartCall, Call.CallbackAfterEndCall]",
            ),
            (
                target(Product::Room, &|e| e.present = Presence::Forbidden),
                read(present("https://x.example.com/", &[])),
                "a (1400000001, sim, room): delete https://x.example.com/ [] -> absent",
            ),
            (
                target(Product::Call, &same),
                read(present(
                    "https://hooks.example.com/cb?token=s3cr3t",
                    &[START, END],
                )),
                "a (1400000001, sim, call): none",
            ),
            (
                target(Product::Call, &|e| e.present = Presence::Any),
                read(Ok(Observed::Absent)),
                "a (1400000001, sim, call): none",
            ),
            (
                target(Product::Call, &|e| e.url = None),
                read(Ok(Observed::Absent)),
                "a (1400000001, sim, call): unmanaged (no_url): the expectation names no url to write",
            ),
            (
                target(Product::Live, &same),
                read(Err(PollError::Timeout(std::time::Duration::from_secs(5)))),
                "a (1400000001, sim, live): error: timed out after 5s",
            ),
        ];
        let mut planned = Vec::new();
        for (target, outcome, want) in cases {
            let p = PlannedTarget::new(&target, &outcome);
            assert_eq!(p.line(), want);
            assert!(!p.line().contains("s3cr3t"));
            planned.push(p);
        }
        let plan = Plan::new(planned);
        assert_eq!(
            plan.summary,
            PlanSummary {
                targets: 7,
                changes: 3,
                unmanaged: 1,
                errors: 1
            }
        );
        assert_eq!(plan.exit_code(), 1);
        assert!(
            plan.to_text()
                .ends_with("7 targets: 3 changes planned, 1 unmanaged, 1 error\n")
        );
        let json = serde_json::to_value(&plan).expect("json");
        assert_eq!(json["targets"][0]["action"], "set");
        assert_eq!(
            json["targets"][0]["desired"]["url"],
            "https://hooks.example.com/cb?token=REDACTED"
        );
        assert_eq!(json["targets"][2]["desired"]["present"], false);
        assert_eq!(json["targets"][5]["reason"], "no_url");
        assert_eq!(json["targets"][6]["action"], serde_json::Value::Null);
        assert!(json["targets"][6]["error"].is_string());
        assert!(json["targets"][0].get("write").is_none());
        assert!(!json.to_string().contains("s3cr3t"));
    }
}
