//! `calldrift snapshot`: reads every target once and writes the input config back with each
//! app's `expect:` set to exactly what was observed, a baseline on which `check` reports no
//! drift until the live configuration changes.
//!
//! # What one app's baseline says
//!
//! Each product the app watches gets its own baseline: TUICallKit's fields at the top of
//! the app's `expect:` (as before products existed), TUIRoomKit's and TUILiveKit's in its
//! `room:` and `live:` sub-blocks. Per product:
//!
//! - Observed present: `present: true`, `url:` the exact URL (query tokens included: it must
//!   match byte for byte), `url_scheme:` its lower-case scheme (so a deliberate `http://`
//!   app does not drift), `url_prefix: null` (clears a global prefix), `commands:` the
//!   sorted distinct command words, `extra_commands: drift`, `ignore_commands: []`. Every
//!   field is written, so nothing is inherited from the global `expect:`.
//! - Observed absent (100301): `present: false` alone; the inherited fields cannot matter.
//! - An unparsable URL fails the snapshot: `url_scheme` would drift whatever it says, and a
//!   baseline that does not check clean is worse than none.
//! - An app whose regions disagree about a product fails the snapshot, naming both
//!   regions: one `expect:` cannot describe two configurations.
//! - Any target that cannot be read fails the snapshot, listing every failure (app, region,
//!   product, class, RequestId), and nothing is written: a partial baseline would silently bless
//!   whatever the missing targets hold.
//!
//! # How the file is preserved
//!
//! First choice, a **text splice**: an event parser locates each app's `expect:` value (or
//! where the app mapping ends) and only those ranges are replaced, so every other byte of
//! the file stays: comments, key order, quoting, anchors elsewhere. Comments *inside* a
//! replaced `expect:` block go with it. Block-style apps get a block mapping, flow-style
//! apps (`- {name: a, ...}`) an inline one. Fallback, when the splice cannot be made (for
//! example an `expect:` shared through an anchor): the YAML is parsed into a
//! `yaml_serde::Value`, whose mappings keep key order, each app's `expect` is replaced, and
//! the document is serialized again; then **all comments, anchors and original quoting are
//! lost**, which the header of the written file says.
//!
//! Either result is only accepted after it is parsed again as a config and found equal to
//! the input in everything but the `expect:` of apps, with every app's expectation exactly
//! the baseline and no finding for any observation. Secrets therefore stay as written: a
//! `secret_key_file`/`secret_key_env` reference stays a reference, an inline `secret_key`
//! stays inline, and no file or environment secret is ever copied into the output.
//!
//! Relative paths in a config are taken from its directory, so the check uses the
//! directory the snapshot is written to; writing elsewhere with relative paths fails with a
//! message saying so rather than producing a config that points at other files.
//!
//! A header of comments says when (RFC 3339, UTC), from which file and by which calldrift
//! the snapshot was taken, and that callback URLs are written verbatim. The header of an
//! earlier snapshot at the top of the input is replaced, not stacked.
//!
//! [`write()`] replaces the output atomically (temporary file in the same directory, fsync,
//! rename), with mode 0600 when the config holds an inline `secret_key`, and never writes
//! through a symlink: one at the output path is replaced, not followed.
//!
//! # Where each part lives
//!
//! - `baseline`: what each app showed becomes its expectation ([`baselines`]).
//! - `splice`: editing the `expect:` blocks of the text in place, comments kept.
//! - `rewrite`: the re-serializing fallback.
//! - `verify`: the final verification (parses again, equals the input outside the
//!   `expect:` blocks, checks clean) that [`render`] applies to either candidate.
//! - This module: [`take`], [`observe`], the error type, the header, [`render`], which
//!   chooses between the two candidates, and [`write()`].

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::atomic_file;
use crate::check;
use crate::clock::Clock;
use crate::config::{Config, SecretSource, Secrets, TargetKey};
use crate::product::Product;
use crate::tencent::{ClientError, PollOutcome};

mod baseline;
mod rewrite;
mod splice;
mod verify;

pub use baseline::{AppBaseline, Baseline, ProductBaseline, baselines, questionable};

/// The first words of the header, also how an earlier snapshot's header is recognised.
const HEADER_MARK: &str = "# calldrift snapshot";

/// Why no snapshot was taken or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot: {0}")]
    Client(#[from] ClientError),
    #[error(
        "snapshot of {origin}: {} of {total} targets could not be read, so nothing was written:\n{}",
        .failures.len(),
        .failures.iter().map(|f| format!("  {f}")).collect::<Vec<_>>().join("\n")
    )]
    Unreadable {
        origin: String,
        total: usize,
        failures: Vec<Failure>,
    },
    #[error(transparent)]
    RegionsDisagree(Box<Disagreement>),
    #[error(
        "snapshot of {origin}: app {app} ({sdkappid}, {region}, {product}): the callback URL {url} is not a parsable URL, so url_scheme would drift whatever the baseline says; fix the callback URL and snapshot again"
    )]
    UnparsableUrl {
        origin: String,
        app: String,
        sdkappid: u64,
        region: String,
        product: Product,
        /// Redacted.
        url: String,
    },
    #[error("snapshot of {origin}: cannot write a baseline that checks clean: {message}")]
    Rewrite { origin: String, message: String },
    #[error("snapshot: cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// An app whose regions answered differently for one product.
#[derive(Debug, thiserror::Error)]
#[error(
    "snapshot of {origin}: app {app} ({sdkappid}, {product}) differs between regions: {first_region} has {first}, {second_region} has {second}{hidden}; one expect: cannot describe both, so align the regions or split the app"
)]
pub struct Disagreement {
    pub origin: String,
    pub app: String,
    pub sdkappid: u64,
    pub product: Product,
    pub first_region: String,
    /// Redacted, as [`Observed::describe`](crate::drift::Observed::describe) shows it.
    pub first: String,
    pub second_region: String,
    pub second: String,
    /// Set when the two differ only in parts of the URL that redaction hides.
    pub hidden: &'static str,
}

/// One target that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub key: TargetKey,
    /// The failure class, as `check` names it (`auth`, `transport`, …).
    pub class: String,
    pub error: String,
    pub request_id: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: [{}] {}", self.key, self.class, self.error)?;
        match &self.request_id {
            // API errors already name it in their text.
            Some(id) if !self.error.contains(id.as_str()) => write!(f, " (RequestId {id})"),
            _ => Ok(()),
        }
    }
}

/// A rendered snapshot, ready to print or [`write()`].
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub text: String,
    /// False when the fallback re-serialized the file and its comments are gone.
    pub comments_kept: bool,
    /// The config has an inline `secret_key` (so the file gets mode 0600).
    pub inline_secret: bool,
    /// By app name.
    pub apps: BTreeMap<String, AppBaseline>,
}

/// Polls every target of `config` once and renders the snapshot of `text` (the config's
/// own text). `base_dir` is the directory the snapshot will live in: relative paths in it
/// are resolved from there.
pub async fn take(
    text: &str,
    config: &Config,
    secrets: &Secrets,
    base_dir: &Path,
    clock: Arc<dyn Clock>,
) -> Result<Snapshot, SnapshotError> {
    take_with_progress(text, config, secrets, base_dir, clock, &mut |_, _| {}).await
}

/// [`take`], telling `progress` (done, total) as each target's read completes.
pub async fn take_with_progress(
    text: &str,
    config: &Config,
    secrets: &Secrets,
    base_dir: &Path,
    clock: Arc<dyn Clock>,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<Snapshot, SnapshotError> {
    let taken_at = clock.now();
    let apps = observe(config, secrets, clock, progress).await?;
    let header = header_text(
        &humantime::format_rfc3339_seconds(taken_at).to_string(),
        &config.origin,
        crate::VERSION,
    );
    render(text, config, &apps, base_dir, &header)
}

/// Reads every target once, under the config's rate limits and concurrency, and turns what
/// each app showed into its baseline.
pub async fn observe(
    config: &Config,
    secrets: &Secrets,
    clock: Arc<dyn Clock>,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> Result<BTreeMap<String, AppBaseline>, SnapshotError> {
    let client = check::client(config, clock)?;
    let targets = crate::tencent::targets(config, secrets);
    let mut outcomes: BTreeMap<TargetKey, PollOutcome> =
        check::poll_outcomes_with(&client, targets, config.poll.max_concurrency, progress)
            .await
            .into_iter()
            .map(|(target, outcome)| (target.key, outcome))
            .collect();
    baselines(config, &mut outcomes)
}

/// The comment block at the top of a snapshot.
pub fn header_text(taken_at: &str, from: &str, version: &str) -> String {
    format!(
        "{HEADER_MARK}: every app's expect: below is what calldrift observed, so\n\
         # `calldrift check` on this file reports no drift until the live configuration changes.\n\
         # Taken: {taken_at}\n\
         # From:  {from}\n\
         # By:    calldrift {version}\n\
         # Callback URLs are written verbatim, query tokens included: review before committing.\n"
    )
}

const SPLICED_NOTE: &str = "# Only the apps' expect: blocks were replaced (comments inside them are gone); the rest is as written.\n";
const REWRITTEN_NOTE: &str = "# The file could not be edited in place, so it was written anew from its data: the\n# original's comments, anchors and quoting are gone. Compare before replacing it.\n";

/// Renders the snapshot of `text` with the apps' baselines; see the module doc.
pub fn render(
    text: &str,
    config: &Config,
    apps: &BTreeMap<String, AppBaseline>,
    base_dir: &Path,
    header: &str,
) -> Result<Snapshot, SnapshotError> {
    let body = strip_old_header(text);
    let verified = |candidate: Result<String, String>| {
        candidate.and_then(|body| {
            verify::verify(&body, config, apps, base_dir)?;
            Ok(body)
        })
    };
    let (body, comments_kept) = match verified(splice::splice(body, apps)) {
        Ok(spliced) => (spliced, true),
        Err(splice_problem) => match verified(rewrite::rewrite(body, apps)) {
            Ok(rewritten) => (rewritten, false),
            Err(problem) => {
                return Err(SnapshotError::Rewrite {
                    origin: config.origin.clone(),
                    message: if problem == splice_problem {
                        problem
                    } else {
                        format!("{problem} (editing in place: {splice_problem})")
                    },
                });
            }
        },
    };
    let note = if comments_kept {
        SPLICED_NOTE
    } else {
        REWRITTEN_NOTE
    };
    Ok(Snapshot {
        text: format!("{header}{note}\n{body}"),
        comments_kept,
        inline_secret: config
            .apps
            .iter()
            .any(|a| matches!(a.secret, SecretSource::Inline(_))),
        apps: apps.clone(),
    })
}

/// Drops the header of an earlier snapshot (up to its first blank line), so headers do not
/// pile up when a snapshot is taken from a snapshot.
fn strip_old_header(text: &str) -> &str {
    if !text.starts_with(HEADER_MARK) {
        return text;
    }
    let mut rest = text;
    while rest.starts_with('#') {
        rest = rest.split_once('\n').map_or("", |(_, after)| after);
    }
    rest.strip_prefix("\r\n")
        .or_else(|| rest.strip_prefix('\n'))
        .unwrap_or(rest)
}

/// Replaces `path` with the snapshot atomically and never through a symlink (see
/// [`atomic_file`]); mode 0600 when the config holds an inline secret, else 0644.
pub fn write(path: &Path, snapshot: &Snapshot) -> Result<(), SnapshotError> {
    let mode = if snapshot.inline_secret { 0o600 } else { 0o644 };
    atomic_file::write(path, snapshot.text.as_bytes(), mode).map_err(|source| {
        SnapshotError::Write {
            path: path.display().to_string(),
            source,
        }
    })
}

/// Configs, observations and renders shared by the tests of this module and its parts.
#[cfg(test)]
mod fixtures {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::{AppBaseline, ProductBaseline, Snapshot, baseline::baseline_of, render};
    use crate::config::{self, Config, TargetKey};
    use crate::drift::Observed;
    use crate::product::Product;

    pub(super) const START: &str = "Call.CallbackAfterStartCall";
    pub(super) const END: &str = "Call.CallbackAfterEndCall";

    pub(super) fn present(url: &str, commands: &[&str]) -> Observed {
        Observed::Present {
            url: url.to_owned(),
            commands: commands.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    pub(super) fn parse(text: &str) -> Config {
        config::parse(text, "c.yaml", Path::new("/etc/calldrift"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .0
    }

    /// Baselines from `seen` per app name, in the order of the config's apps; every product
    /// of an app saw the same.
    pub(super) fn baselines_for(
        config: &Config,
        seen: &[Observed],
    ) -> BTreeMap<String, AppBaseline> {
        let by_product: Vec<Vec<Observed>> = config
            .apps
            .iter()
            .zip(seen)
            .map(|(app, seen)| vec![seen.clone(); app.products.len()])
            .collect();
        baselines_by_product(config, &by_product)
    }

    /// Baselines from `seen[app][product]`, the products of each app in order.
    pub(super) fn baselines_by_product(
        config: &Config,
        seen: &[Vec<Observed>],
    ) -> BTreeMap<String, AppBaseline> {
        config
            .apps
            .iter()
            .zip(seen)
            .map(|(app, seen)| {
                let products = app
                    .products
                    .keys()
                    .zip(seen)
                    .map(|(product, seen)| {
                        let key =
                            TargetKey::new(&app.name, app.sdkappid, &app.regions[0], *product);
                        let baseline = baseline_of("c.yaml", &key, seen).expect("baseline");
                        let observed = seen.clone();
                        (*product, ProductBaseline { baseline, observed })
                    })
                    .collect::<BTreeMap<Product, ProductBaseline>>();
                (app.name.clone(), AppBaseline { products })
            })
            .collect()
    }

    /// Whether `app` (parsed from a snapshot) expects of TUICallKit its baseline in `want`.
    pub(super) fn is_call_baseline(want: &AppBaseline, app: &config::App) -> bool {
        match (want.products.get(&Product::Call), app.expect(Product::Call)) {
            (Some(want), Some(got)) => want.baseline.is(got),
            _ => false,
        }
    }

    pub(super) fn snap(text: &str, seen: &[Observed]) -> Snapshot {
        let config = parse(text);
        let apps = baselines_for(&config, seen);
        render(
            text,
            &config,
            &apps,
            Path::new("/etc/calldrift"),
            "# calldrift snapshot: test\n",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) const BLOCK: &str = "# my config\nexpect:\n  url_prefix: https://hooks.example.com/  # everyone\napps:\n  # first\n  - name: a\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: KEY_A  # from vault\n    expect:\n      url: https://hooks.example.com/old   # old one\n      commands: [Call.CallbackAfterStartCall]  # was short\n\n  # second, absent\n  - name: b\n    sdkappid: 2\n    regions: [china]\n    secret_key_file: /run/b\n  - {name: c, sdkappid: 3, regions: [china], secret_key: abc}\n  - {name: d, sdkappid: 4, regions: [china], secret_key_env: D, expect: {present: any}}\n# tail\n";
}

#[cfg(test)]
mod tests {
    use super::fixtures::{BLOCK, END, START, present, snap};
    use super::*;
    use crate::drift::Observed;

    #[test]
    fn a_snapshot_of_a_snapshot_does_not_stack_headers_and_changes_nothing_else() {
        let seen = [
            present("https://hooks.example.com/a", &[START, END]),
            Observed::Absent,
            Observed::Absent,
            Observed::Absent,
        ];
        let first = snap(BLOCK, &seen);
        let second = snap(&first.text, &seen);
        assert_eq!(first.text, second.text);
        assert_eq!(second.text.matches(HEADER_MARK).count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn write_replaces_atomically_with_mode_0600_for_inline_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("snap.yaml");
        std::fs::write(&path, "old").expect("write");
        let mut snapshot = Snapshot {
            text: "new\n".into(),
            comments_kept: true,
            inline_secret: true,
            apps: BTreeMap::new(),
        };
        write(&path, &snapshot).expect("written");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new\n");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        snapshot.inline_secret = false;
        let other = dir.path().join("other.yaml");
        write(&other, &snapshot).expect("written");
        let mode = std::fs::metadata(&other)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert!(
            mode & !0o644 == 0 && mode & 0o600 == 0o600,
            "0644 minus umask: {mode:o}"
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty());
        let err = write(&dir.path().join("no/such/dir/x.yaml"), &snapshot)
            .expect_err("no directory")
            .to_string();
        assert!(err.contains("no/such/dir/x.yaml"), "{err}");
    }
}
