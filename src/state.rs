//! The state file: per target (app, SDKAppID, region, product), the last observed config
//! (URL redacted), its fingerprint, the last change time and the change count, so changes
//! are news across restarts. A target written without a product (before products
//! existed) is a `call` target. With `remediate:` on, it also keeps the times of recent
//! writes, so the write limits hold across restarts.
//!
//! **Invariant:** the file on disk is always a complete, parsable document: it is written
//! to a temporary file in the same directory, fsynced, renamed over the old one, and the
//! directory is fsynced ([`atomic_file::write`], which never writes through a symlink).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::config::TargetKey;
use crate::product::Product;
use crate::report::ObservedView;

const FORMAT_VERSION: u32 = 1;

/// What is remembered of one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTarget {
    pub app: String,
    pub sdkappid: u64,
    pub region: String,
    /// `call` in files written before products existed.
    #[serde(default)]
    pub product: Product,
    /// The last authoritative observation, redacted: only the fingerprint sees the raw URL.
    pub observed: ObservedView,
    pub fingerprint: u64,
    /// Unix time of the last change, if one was seen.
    pub last_change: Option<f64>,
    pub changes: u64,
}

impl SavedTarget {
    pub fn key(&self) -> TargetKey {
        TargetKey::new(&self.app, self.sdkappid, &self.region, self.product)
    }
}

/// The recent writes of `remediate:`, so its limits hold across restarts: Unix times, in
/// total and per target. Files written before remediation existed (or with it off) have
/// none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SavedWrites {
    /// Every write, to any target.
    #[serde(default)]
    pub total: Vec<f64>,
    #[serde(default)]
    pub targets: Vec<SavedTargetWrites>,
}

impl SavedWrites {
    pub fn is_empty(&self) -> bool {
        self.total.is_empty() && self.targets.is_empty()
    }
}

/// One target's recent writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedTargetWrites {
    pub app: String,
    pub sdkappid: u64,
    pub region: String,
    pub product: Product,
    pub writes: Vec<f64>,
}

impl SavedTargetWrites {
    pub fn key(&self) -> TargetKey {
        TargetKey::new(&self.app, self.sdkappid, &self.region, self.product)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub targets: Vec<SavedTarget>,
    /// Not written while empty, so a read-only deployment's file keeps its shape.
    #[serde(default, skip_serializing_if = "SavedWrites::is_empty")]
    pub remediation: SavedWrites,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt ({message}); moved it to {moved_to} and starting fresh")]
    Corrupt {
        path: String,
        message: String,
        moved_to: String,
    },
}

/// What loading found.
#[derive(Debug)]
pub struct Loaded {
    pub targets: BTreeMap<TargetKey, SavedTarget>,
    /// `remediate:`'s recent writes; none in older files.
    pub remediation: SavedWrites,
    /// Set when a corrupt file was moved aside; the caller logs it as an error.
    pub recovered: Option<StateError>,
}

/// Reads the state file; a missing file is an empty state, a corrupt one is moved aside
/// to `NAME.corrupt-UNIXTIME` and reported in [`Loaded::recovered`].
pub fn load(path: &Path, now_unix: u64) -> Result<Loaded, StateError> {
    // Nothing else writes the file while it is loaded, at start.
    atomic_file::remove_temporaries(path);
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Loaded {
                targets: BTreeMap::new(),
                remediation: SavedWrites::default(),
                recovered: None,
            });
        }
        Err(source) => {
            return Err(StateError::Io {
                path: shown,
                source,
            });
        }
    };
    match serde_json::from_slice::<State>(&bytes) {
        Ok(state) if state.version == FORMAT_VERSION => {
            let targets = state.targets.into_iter().map(|t| (t.key(), t)).collect();
            Ok(Loaded {
                targets,
                remediation: state.remediation,
                recovered: None,
            })
        }
        parsed => {
            let message = match parsed {
                Ok(state) => format!("unknown version {}", state.version),
                Err(e) => e.to_string(),
            };
            let aside = PathBuf::from(format!("{shown}.corrupt-{now_unix}"));
            std::fs::rename(path, &aside).map_err(|source| StateError::Io {
                path: shown.clone(),
                source,
            })?;
            let recovered = StateError::Corrupt {
                path: shown,
                message,
                moved_to: aside.display().to_string(),
            };
            Ok(Loaded {
                targets: BTreeMap::new(),
                remediation: SavedWrites::default(),
                recovered: Some(recovered),
            })
        }
    }
}

/// Writes the state atomically (temporary file, fsync, rename, fsync of the directory),
/// never through a symlink; see [`atomic_file`].
pub fn save(
    path: &Path,
    targets: Vec<SavedTarget>,
    remediation: SavedWrites,
) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.display().to_string(),
        source,
    };
    let state = State {
        version: FORMAT_VERSION,
        targets,
        remediation,
    };
    let bytes = serde_json::to_vec_pretty(&state).map_err(|e| io(std::io::Error::other(e)))?;
    // 0666 minus the umask, as the file has always been created: it holds no secret.
    atomic_file::write(path, &bytes, 0o666).map_err(io)
}

/// Checks that the state file's directory is writable, so `run` can refuse to start
/// with a clear message instead of failing at the first change.
pub fn check_writable(path: &Path) -> Result<(), StateError> {
    atomic_file::check_writable(path).map_err(|source| StateError::Io {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved(app: &str) -> SavedTarget {
        SavedTarget {
            app: app.into(),
            sdkappid: 1,
            region: "china".into(),
            product: Product::Call,
            observed: ObservedView {
                present: true,
                url: Some("https://h/cb?t=REDACTED".into()),
                commands: vec!["Call.CallbackAfterEndCall".into()],
            },
            fingerprint: 42,
            last_change: Some(1_700_000_000.5),
            changes: 3,
        }
    }

    #[test]
    fn round_trips_and_a_missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        assert!(load(&path, 0).expect("missing is fine").targets.is_empty());
        save(&path, vec![saved("a"), saved("b")], SavedWrites::default()).expect("save");
        let loaded = load(&path, 0).expect("load");
        assert_eq!(loaded.targets.len(), 2);
        assert_eq!(loaded.targets[&saved("a").key()], saved("a"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "state.json")
            .collect();
        assert!(
            leftovers.is_empty(),
            "no temporary files left: {leftovers:?}"
        );
    }

    #[test]
    fn remediation_writes_round_trip_and_older_files_have_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        save(&path, vec![saved("a")], SavedWrites::default()).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains("remediation"), "nothing new stored: {text}");
        assert!(load(&path, 0).expect("load").remediation.is_empty());
        let writes = SavedWrites {
            total: vec![1.5, 2.5],
            targets: vec![SavedTargetWrites {
                app: "a".into(),
                sdkappid: 1,
                region: "china".into(),
                product: Product::Room,
                writes: vec![2.5],
            }],
        };
        save(&path, vec![saved("a")], writes.clone()).expect("save");
        assert_eq!(load(&path, 0).expect("load").remediation, writes);
    }

    #[test]
    fn products_round_trip_and_a_file_from_before_products_loads_as_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let room = SavedTarget {
            product: Product::Room,
            ..saved("a")
        };
        save(
            &path,
            vec![saved("a"), room.clone()],
            SavedWrites::default(),
        )
        .expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"product\": \"room\""), "{text}");
        let loaded = load(&path, 0).expect("load");
        assert_eq!(loaded.targets.len(), 2, "same app and region, two products");
        assert_eq!(loaded.targets[&room.key()], room);

        // Exactly what the previous version wrote: no product field.
        let old = r#"{
  "version": 1,
  "targets": [
    {
      "app": "a",
      "sdkappid": 1,
      "region": "china",
      "observed": {
        "present": true,
        "url": "https://h/cb?t=REDACTED",
        "commands": [
          "Call.CallbackAfterEndCall"
        ]
      },
      "fingerprint": 42,
      "last_change": 1700000000.5,
      "changes": 3
    }
  ]
}"#;
        std::fs::write(&path, old).expect("write");
        let loaded = load(&path, 0).expect("an old file loads");
        assert!(loaded.recovered.is_none());
        let key = TargetKey::new("a", 1, "china", Product::Call);
        assert_eq!(loaded.targets[&key], saved("a"));
    }

    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{\"version\":1,\"targets\":[{\"app\":").expect("write");
        let loaded = load(&path, 1234).expect("recovers");
        assert!(loaded.targets.is_empty());
        assert!(matches!(loaded.recovered, Some(StateError::Corrupt { .. })));
        assert!(dir.path().join("state.json.corrupt-1234").exists());
        assert!(!path.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_planted_at_the_old_temporary_name_is_not_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").expect("write");
        // The name the writer used to take, predictable from the process id.
        let planted = dir
            .path()
            .join(format!(".state.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &planted).expect("symlink");
        save(&path, vec![saved("a")], SavedWrites::default()).expect("save");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "precious");
        assert!(
            std::fs::symlink_metadata(&path)
                .expect("meta")
                .file_type()
                .is_file(),
            "the state file is a file of its own, not the planted link"
        );
        assert_eq!(load(&path, 0).expect("load").targets.len(), 1);
    }

    #[test]
    fn an_unwritable_directory_is_reported() {
        let err = save(
            Path::new("/nonexistent-dir/state.json"),
            vec![],
            SavedWrites::default(),
        )
        .expect_err("cannot write");
        assert!(
            err.to_string()
                .starts_with("state file /nonexistent-dir/state.json:"),
            "{err}"
        );
        assert!(check_writable(Path::new("/nonexistent-dir/state.json")).is_err());
    }
}
