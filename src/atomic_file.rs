//! Replacing a file atomically without ever writing through a symlink.
//!
//! [`write()`] puts the bytes in a temporary file beside the destination, named
//! `.NAME.tmp-` and 16 random hex digits, created with `O_CREAT|O_EXCL` (and `O_NOFOLLOW`
//! where its value is known): a file or symlink someone planted at that name makes the open
//! fail instead of being written through, and the random part means nobody can plant one at
//! the name in advance. The file gets its mode at creation (minus the umask), is written,
//! fsynced, renamed over the destination, and the directory is fsynced, so a reader sees
//! the old file or the new one, never a part, even if the writer is killed.
//!
//! A symlink *at the destination* is replaced by the rename, not followed: afterwards the
//! destination is a regular file and the link's target is untouched.
//!
//! This module is a leaf: it uses nothing from the rest of the crate.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// Follows `.NAME` in the name of every temporary of `NAME`.
const TEMPORARY_MARK: &str = ".tmp-";

/// Gives up creating a temporary after this many names were taken (by a planted file, or
/// a one-in-2^64 collision): something is wrong with the directory.
const NAME_ATTEMPTS: usize = 8;

/// `O_NOFOLLOW`, whose value differs between platforms (libc is not a dependency). Where it
/// is not listed, `O_EXCL` alone already refuses a symlink at the name.
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "riscv64",
        target_arch = "loongarch64"
    )
))]
const O_NOFOLLOW: i32 = 0o400_000;
#[cfg(all(
    any(target_os = "linux", target_os = "android"),
    any(target_arch = "aarch64", target_arch = "arm")
))]
const O_NOFOLLOW: i32 = 0o100_000;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd"
))]
const O_NOFOLLOW: i32 = 0x100;
#[cfg(not(any(
    all(
        any(target_os = "linux", target_os = "android"),
        any(
            target_arch = "x86_64",
            target_arch = "x86",
            target_arch = "riscv64",
            target_arch = "loongarch64",
            target_arch = "aarch64",
            target_arch = "arm"
        )
    ),
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "openbsd",
    target_os = "netbsd"
)))]
const O_NOFOLLOW: i32 = 0;

/// Replaces `path` with `bytes` atomically; the new file has `mode` (unix permission bits,
/// minus the umask; ignored elsewhere). An error before the rename removes the temporary
/// and leaves the old `path`, if any, as it was; only the directory fsync comes after it.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = directory_of(path);
    let (tmp, mut file) = create_temporary(path, &dir, mode)?;
    let replaced = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = replaced {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename is durable only once the directory entry is.
    File::open(&dir)?.sync_all()
}

/// Creates and removes a temporary beside `path`, so a caller can refuse to start with a
/// clear message instead of failing at its first write.
pub fn check_writable(path: &Path) -> io::Result<()> {
    let (tmp, file) = create_temporary(path, &directory_of(path), 0o600)?;
    drop(file);
    fs::remove_file(tmp)
}

/// Removes the temporaries of `path` that a writer killed mid-write left behind. Call it
/// only when no other writer of `path` can be running (at start).
pub fn remove_temporaries(path: &Path) {
    let Ok(prefix) = temporary_prefix(path) else {
        return;
    };
    let prefix = prefix.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir(directory_of(path)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            // A symlink is removed itself, not its target.
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The directory `path` is in; `.` for a bare file name.
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// `.NAME.tmp-` for `path` ending in `NAME`.
fn temporary_prefix(path: &Path) -> io::Result<OsString> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(TEMPORARY_MARK);
    Ok(prefix)
}

/// A new temporary for `path` in `dir`, under a random name nobody could have planted
/// anything at.
fn create_temporary(path: &Path, dir: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let prefix = temporary_prefix(path)?;
    let mut last = None;
    for _ in 0..NAME_ATTEMPTS {
        let mut name = prefix.clone();
        name.push(format!("{:016x}", rand::random::<u64>()));
        let tmp = dir.join(name);
        match create_new(&tmp, mode) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no temporary name was free")))
}

/// Opens `path` for writing only if nothing, not even a dangling symlink, is there yet.
fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode).custom_flags(O_NOFOLLOW);
    }
    #[cfg(not(unix))]
    let _ = (mode, O_NOFOLLOW);
    options.open(path)
}

#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_with_the_mode_asked_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.yaml");
        fs::write(&path, "old").expect("write");
        write(&path, b"new\n", 0o600).expect("written");
        assert_eq!(fs::read_to_string(&path).expect("read"), "new\n");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let other = dir.path().join("other.json");
        write(&other, b"{}", 0o644).expect("written");
        let mode = fs::metadata(&other).expect("meta").permissions().mode() & 0o777;
        assert!(
            mode & !0o644 == 0 && mode & 0o600 == 0o600,
            "0644 minus umask: {mode:o}"
        );
        assert_eq!(entries(dir.path()), ["other.json", "out.yaml"]);
    }

    #[test]
    fn a_symlink_at_a_temporary_name_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").expect("write");
        let planted = dir.path().join(".out.yaml.tmp-0123456789abcdef");
        symlink(&victim, &planted).expect("symlink");
        let err = create_new(&planted, 0o600).expect_err("a planted link refuses the open");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        // Dangling, so O_EXCL must refuse it without looking at where it points.
        let dangling = dir.path().join(".out.yaml.tmp-fedcba9876543210");
        symlink(dir.path().join("nowhere"), &dangling).expect("symlink");
        assert!(create_new(&dangling, 0o600).is_err());
        assert!(!dir.path().join("nowhere").exists());
        write(&dir.path().join("out.yaml"), b"new", 0o600).expect("written");
        assert_eq!(fs::read_to_string(&victim).expect("read"), "precious");
    }

    #[test]
    fn the_no_follow_flag_is_this_platforms() {
        if O_NOFOLLOW == 0 {
            return;
        }
        // With the right bit, opening a symlink fails (ELOOP); a wrong bit would open it.
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("target");
        fs::write(&target, "x").expect("write");
        let link = dir.path().join("link");
        symlink(&target, &link).expect("symlink");
        use std::os::unix::fs::OpenOptionsExt;
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(O_NOFOLLOW)
            .open(&link);
        assert!(
            opened.is_err(),
            "O_NOFOLLOW {O_NOFOLLOW:#o} did not refuse a link"
        );
        assert!(OpenOptions::new().read(true).open(&link).is_ok());
    }

    #[test]
    fn a_symlink_at_the_destination_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").expect("write");
        let path = dir.path().join("out.yaml");
        symlink(&victim, &path).expect("symlink");
        write(&path, b"new", 0o600).expect("written");
        assert_eq!(fs::read_to_string(&victim).expect("read"), "precious");
        let meta = fs::symlink_metadata(&path).expect("meta");
        assert!(meta.file_type().is_file(), "the link itself was replaced");
        assert_eq!(fs::read_to_string(&path).expect("read"), "new");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_and_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A non-empty directory at the destination: the temporary is created and written,
        // then the rename fails, even for root.
        let path = dir.path().join("out.yaml");
        fs::create_dir(&path).expect("mkdir");
        fs::write(path.join("inside"), "kept").expect("write");
        assert!(write(&path, b"new", 0o600).is_err());
        assert_eq!(entries(dir.path()), ["out.yaml"]);
        assert_eq!(
            fs::read_to_string(path.join("inside")).expect("read"),
            "kept"
        );
        // A parent that is a file: nothing can be created at all.
        let file = dir.path().join("file");
        fs::write(&file, "x").expect("write");
        assert!(write(&file.join("out.yaml"), b"new", 0o600).is_err());
        assert!(check_writable(&file.join("out.yaml")).is_err());
        assert_eq!(entries(dir.path()), ["file", "out.yaml"]);
        let err = write(Path::new("/"), b"x", 0o600).expect_err("no file name");
        assert_eq!(err.to_string(), "not a file name");
    }

    #[test]
    fn check_writable_leaves_nothing_and_stale_temporaries_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        check_writable(&path).expect("writable");
        assert!(entries(dir.path()).is_empty());
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").expect("write");
        fs::write(dir.path().join(".state.json.tmp-1234"), "stale").expect("write");
        fs::write(dir.path().join(".state.json.tmp-00ff00ff00ff00ff"), "x").expect("write");
        symlink(&victim, dir.path().join(".state.json.tmp-link")).expect("symlink");
        fs::write(dir.path().join(".other.json.tmp-1"), "not ours").expect("write");
        remove_temporaries(&path);
        assert_eq!(entries(dir.path()), [".other.json.tmp-1", "victim"]);
        assert_eq!(fs::read_to_string(&victim).expect("read"), "precious");
    }
}
