//! Reading the secret keys a config refers to: from a file (warning when others can read
//! it), an environment variable, or inline. Kept apart from parsing, so that parsing stays
//! a pure function of the text.

use std::collections::BTreeMap;
use std::path::Path;

use super::{App, Config, ConfigError, Diagnostic, SecretSource, Severity};
use crate::secret::SecretKey;

/// The secret key of every app, by app name.
#[derive(Debug, Default, Clone)]
pub struct Secrets(BTreeMap<String, SecretKey>);

impl Secrets {
    /// The key of the app named `app`.
    pub fn get(&self, app: &str) -> Option<&SecretKey> {
        self.0.get(app)
    }
}

/// Reads every app's secret key. Errors name the place in the config where the source is set.
pub fn resolve_secrets(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Secrets, Vec<Diagnostic>), ConfigError> {
    resolve_selected_secrets(config, env, &|_| true)
}

/// Reads the secret keys of the apps `wanted` selects; the others are neither read nor
/// required to be readable.
pub fn resolve_selected_secrets(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    wanted: &dyn Fn(&App) -> bool,
) -> Result<(Secrets, Vec<Diagnostic>), ConfigError> {
    let mut secrets = BTreeMap::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let diagnostic = |severity, app: &App, message: String| Diagnostic {
        severity,
        file: config.origin.clone(),
        pos: app.secret_pos,
        message,
    };
    for app in config.apps.iter().filter(|app| wanted(app)) {
        let key = match &app.secret {
            SecretSource::Inline(key) => Ok(key.expose().to_owned()),
            SecretSource::Env(name) => env(name)
                .ok_or_else(|| format!("app {}: environment variable {name} is not set", app.name)),
            SecretSource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    if let Some(mode) = loose_permissions(path) {
                        warnings.push(diagnostic(
                            Severity::Warning,
                            app,
                            format!("app {}: secret file {} is readable by group or others (mode {mode:o}); chmod 600 it", app.name, path.display()),
                        ));
                    }
                    Ok(text)
                }
                Err(e) => Err(format!(
                    "app {}: cannot read secret file {}: {e}",
                    app.name,
                    path.display()
                )),
            },
        };
        match key.map(|k| k.trim().to_owned()) {
            Ok(k) if k.is_empty() => errors.push(diagnostic(
                Severity::Error,
                app,
                format!("app {}: the secret key is empty", app.name),
            )),
            Ok(k) => {
                secrets.insert(app.name.clone(), SecretKey::new(k));
            }
            Err(message) => errors.push(diagnostic(Severity::Error, app, message)),
        }
    }
    if errors.is_empty() {
        Ok((Secrets(secrets), warnings))
    } else {
        Err(ConfigError::Invalid(errors))
    }
}

#[cfg(unix)]
fn loose_permissions(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn loose_permissions(_: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn secrets_resolve_from_file_and_env_with_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key_path = dir.path().join("key");
        std::fs::write(&key_path, "filekey\n").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
        let text = "apps:\n  - name: f\n    sdkappid: 1\n    regions: [china]\n    secret_key_file: key\n  - name: e\n    sdkappid: 2\n    regions: [china]\n    secret_key_env: KEY_E\n";
        let (config, _) = parse(text, "c.yaml", dir.path()).expect("valid");
        let env = |name: &str| (name == "KEY_E").then(|| "envkey".to_owned());
        let (secrets, warnings) = resolve_secrets(&config, &env).expect("resolves");
        assert_eq!(secrets.get("f").map(SecretKey::expose), Some("filekey"));
        assert_eq!(secrets.get("e").map(SecretKey::expose), Some("envkey"));
        assert!(
            warnings[0]
                .to_string()
                .contains("readable by group or others"),
            "{warnings:?}"
        );

        std::fs::remove_file(&key_path).expect("rm");
        let err = resolve_secrets(&config, &|_| None)
            .expect_err("both missing")
            .diagnostics();
        assert!(
            err[0].starts_with("c.yaml:5:22: app f: cannot read secret file"),
            "{err:?}"
        );
        assert_eq!(
            err[1],
            "c.yaml:9:21: app e: environment variable KEY_E is not set"
        );
    }

    #[test]
    fn only_the_selected_apps_secrets_are_read() {
        let text = "apps:\n  - name: mine\n    sdkappid: 1\n    regions: [china]\n    secret_key_env: KEY_MINE\n  - name: theirs\n    sdkappid: 2\n    regions: [china]\n    secret_key_file: /nonexistent/theirs\n";
        let (config, _) = parse(text, "c.yaml", Path::new("/etc")).expect("valid");
        let env = |name: &str| (name == "KEY_MINE").then(|| "mykey".to_owned());
        let (secrets, warnings) =
            resolve_selected_secrets(&config, &env, &|app| app.name == "mine").expect("resolves");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(secrets.get("mine").map(SecretKey::expose), Some("mykey"));
        assert!(secrets.get("theirs").is_none());
        // Every app's secret is read otherwise, and the missing file is an error.
        let err = resolve_secrets(&config, &env)
            .expect_err("theirs is missing")
            .diagnostics();
        assert_eq!(err.len(), 1);
        assert!(
            err[0].starts_with("c.yaml:9:22: app theirs: cannot read secret file"),
            "{err:?}"
        );
    }
}
