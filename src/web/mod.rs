//! `web_config_file`: TLS and basic auth for the HTTP server, in the format of the
//! Prometheus exporter-toolkit
//! (<https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md>),
//! so a file written for other exporters works here.
//!
//! Supported: `tls_server_config` (`cert_file`, `key_file`, `min_version`, `max_version`,
//! `client_auth_type` `NoClientCert` or `RequireAndVerifyClientCert` with
//! `client_ca_file`) and `basic_auth_users` (bcrypt hashes). `http_server_config` is
//! accepted and ignored with a warning. Every other key is an error: a typo must not
//! silently leave the endpoints open.
//!
//! This module loads and validates; [`tls`] builds the rustls config and [`auth`] checks
//! credentials (no password kept, timing that does not tell which users exist).

mod auth;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::positions::Positions;
use crate::config::wording::Vocabulary;
use crate::config::{Diagnostic, Diagnostics, Severity, report_unknown};

pub use auth::AuthFailure;

/// The `WWW-Authenticate` answer to a request without valid credentials.
pub const WWW_AUTHENTICATE: &str = "Basic realm=\"calldrift\"";

/// Keys exporter-toolkit knows that calldrift does not implement: named as such in the
/// error rather than as typos.
const TOOLKIT_UNSUPPORTED: [&str; 7] = [
    "rate_limit",
    "tls_server_config.cert",
    "tls_server_config.key",
    "tls_server_config.cipher_suites",
    "tls_server_config.curve_preferences",
    "tls_server_config.prefer_server_cipher_suites",
    "tls_server_config.client_allowed_sans",
];

/// The web config's keys, for messages in the operator's words.
const WEB: Vocabulary = Vocabulary {
    kind: "a calldrift web config",
    example_keys: "tls_server_config:, basic_auth_users:",
    describe: describe_web_field,
    known_keys: known_web_keys,
};

fn describe_web_field(path: &str) -> Option<&'static str> {
    match path {
        "tls_server_config" | "basic_auth_users" => Some("a mapping of keys (key: value)"),
        _ if path.starts_with("tls_server_config.") => Some("text"),
        _ => None,
    }
}

fn known_web_keys(section: &str) -> &'static [&'static str] {
    match section {
        "" => &[
            "tls_server_config",
            "http_server_config",
            "basic_auth_users",
        ],
        "tls_server_config" => &[
            "cert_file",
            "key_file",
            "client_auth_type",
            "client_ca_file",
            "min_version",
            "max_version",
        ],
        _ => &[],
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    #[error("{path}: cannot read web config: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Diagnostic>),
}

impl WebConfigError {
    /// Every diagnostic, for printing one per line.
    pub fn diagnostics(&self) -> Vec<String> {
        match self {
            WebConfigError::Invalid(all) => all.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// A validated web config: what the listener speaks and who may read it.
pub struct WebConfig {
    /// `Some`: the listener speaks TLS only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    auth: auth::BasicAuth,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig::new(None, BTreeMap::new())
    }
}

// Hand-written so hashes and TLS key material never reach Debug output.
impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("tls", &self.tls.as_ref().map(|_| "enabled"))
            .field("users", &self.auth.user_names().collect::<Vec<_>>())
            .finish()
    }
}

impl WebConfig {
    /// `users` maps user names to bcrypt hashes; empty means no authentication.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>, users: BTreeMap<String, String>) -> Self {
        WebConfig {
            tls,
            auth: auth::BasicAuth::new(users),
        }
    }

    /// Whether requests (probes aside) need basic auth.
    pub fn requires_auth(&self) -> bool {
        !self.auth.is_empty()
    }

    /// Checks an `Authorization` header value against `basic_auth_users`; the error says
    /// why it was refused. Unknown users take as long to refuse as wrong passwords.
    pub async fn authorize(&self, header: Option<&[u8]>) -> Result<(), AuthFailure> {
        self.auth.authorize(header).await
    }
}

// ---- raw, as written -------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    // Kept as an opaque value: its contents are ignored as a whole (with one warning).
    http_server_config: Option<serde_json::Value>,
    // Values are taken as any YAML value and checked here: serde's type errors quote the
    // value, and a password pasted where the hash belongs must not reach an error message.
    basic_auth_users: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawTls {
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
    max_version: Option<String>,
}

// ---- loading and validation ------------------------------------------------------------

/// Reads and validates a web config file; relative paths in it are taken from its
/// directory, as exporter-toolkit does. Returns the config and its warnings.
pub fn load(path: &Path) -> Result<(WebConfig, Vec<Diagnostic>), WebConfigError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Read {
        path: origin.clone(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    parse(&text, &origin, base_dir)
}

/// [`load`] for `Config.web_config_file`: no file means no TLS and no authentication.
pub fn load_optional(path: Option<&Path>) -> Result<(WebConfig, Vec<Diagnostic>), WebConfigError> {
    match path {
        Some(path) => load(path),
        None => Ok((WebConfig::default(), Vec::new())),
    }
}

/// Parses and validates web config text, reading the files it names; text nested deeper
/// than [`crate::config::MAX_DEPTH`] is refused before anything else reads it.
pub fn parse(
    text: &str,
    origin: &str,
    base_dir: &Path,
) -> Result<(WebConfig, Vec<Diagnostic>), WebConfigError> {
    if let Err((pos, message)) = crate::config::check_depth(text, "a calldrift config") {
        return Err(WebConfigError::Invalid(vec![Diagnostic {
            severity: Severity::Error,
            file: origin.to_owned(),
            pos,
            message,
        }]));
    }
    let positions = Positions::scan(text);
    let mut report = Diagnostics::new(origin, &positions);
    // Option: a file of comments only is an empty document, which means defaults.
    let (raw, unknown) = crate::config::decode_yaml::<Option<RawWebConfig>>(text, &WEB);
    let (unsupported, unknown): (Vec<String>, Vec<String>) = unknown
        .into_iter()
        .partition(|path| TOOLKIT_UNSUPPORTED.contains(&path.as_str()));
    for path in &unsupported {
        report.error_at_key(
            path,
            format!("{path} is an exporter-toolkit setting calldrift does not support; remove it"),
        );
    }
    let foreign = if unsupported.is_empty() {
        report_unknown(&unknown, &WEB, &mut report)
    } else {
        for path in &unknown {
            report.error_at_key(path, WEB.unknown_field(path));
        }
        false
    };
    let raw = match raw {
        Ok(_) if foreign => return Err(WebConfigError::Invalid(report.into_vec())),
        Ok(raw) => raw.unwrap_or_default(),
        Err((pos, message)) => {
            if !foreign {
                report.push(Severity::Error, pos, message);
            }
            return Err(WebConfigError::Invalid(report.into_vec()));
        }
    };

    if raw.http_server_config.is_some() {
        let pos = positions.key("http_server_config");
        report.push(
            Severity::Warning,
            pos,
            "http_server_config is ignored: calldrift serves HTTP/1.1 and sets no extra headers"
                .to_owned(),
        );
    }
    let users = validate_users(raw.basic_auth_users.unwrap_or_default(), &mut report);
    let tls = raw
        .tls_server_config
        .and_then(|tls| tls::validate_tls(tls, &mut report, base_dir));
    if report.has_errors() {
        return Err(WebConfigError::Invalid(report.into_vec()));
    }
    Ok((WebConfig::new(tls, users), report.into_vec()))
}

fn validate_users(
    raw: BTreeMap<String, serde_json::Value>,
    report: &mut Diagnostics,
) -> BTreeMap<String, String> {
    let mut users = BTreeMap::new();
    for (user, value) in raw {
        let path = format!("basic_auth_users.{user}");
        let hash = match value {
            serde_json::Value::String(hash) => hash,
            // Not a string (a number, a list…): refused below like any non-bcrypt text.
            _ => String::new(),
        };
        if user.is_empty() || user.contains(':') {
            report.error_at_key(
                &path,
                format!("basic_auth_users: user name {user:?} cannot be sent in basic auth (empty or containing ':')"),
            );
        }
        match check_bcrypt(&hash) {
            // The hash itself is not repeated: it is credential material.
            Err(why) => report.error(
                &path,
                format!(
                    "basic_auth_users: the hash of user {user:?} is not a bcrypt hash ({why}); \
                     make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
                ),
            ),
            Ok(cost) if cost > MAX_COST => report.error(
                &path,
                format!(
                    "basic_auth_users: the hash of user {user:?} has bcrypt cost {cost}; \
                     each step doubles the work (cost 10 takes about 0.1 s), so above \
                     {MAX_COST} one check outlasts a scrape's timeout and a few wrong \
                     passwords hold every login; make one with: htpasswd -nBC 10 \"\" | tr -d ':\\n'"
                ),
            ),
            Ok(_) => {}
        }
        users.insert(user, hash);
    }
    warn_mixed_costs(&users, report);
    users
}

/// Unknown user names are checked at the highest cost (see [`auth`]); users whose hash is
/// cheaper answer faster than an unknown name would, so their existence shows.
fn warn_mixed_costs(users: &BTreeMap<String, String>, report: &mut Diagnostics) {
    let costs: std::collections::BTreeSet<u32> = users
        .values()
        .filter(|hash| check_bcrypt(hash).is_ok())
        .filter_map(|hash| hash.parse::<bcrypt::HashParts>().ok())
        .map(|parts| parts.get_cost())
        .collect();
    if costs.len() < 2 {
        return;
    }
    let highest = auth::highest_cost(users);
    let listed: Vec<String> = costs.iter().map(u32::to_string).collect();
    let pos = report.positions().key("basic_auth_users");
    report.push(
        Severity::Warning,
        pos,
        format!(
            "basic_auth_users: the hashes have different bcrypt costs ({}); unknown user names \
             are checked at cost {highest}, so a user whose hash has a lower cost can be told \
             apart by response time; give every user the same cost",
            listed.join(", ")
        ),
    );
}

/// The highest bcrypt cost accepted: cost 16 takes several seconds per check on a
/// server core, near a scrape's 10 s timeout; cost 31 would take days.
const MAX_COST: u32 = 16;

/// Accepts what `bcrypt::verify` can check: `$2a$`, `$2b$` or `$2y$`, cost 4 to 31,
/// 22 characters of salt and 31 of hash; gives the cost.
fn check_bcrypt(hash: &str) -> Result<u32, String> {
    if !["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix))
    {
        return Err("it must start with $2a$, $2b$ or $2y$".to_owned());
    }
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e: bcrypt::BcryptError| e.to_string())?;
    if !(4..=31).contains(&parts.get_cost()) {
        return Err(format!("cost {} is outside 4 to 31", parts.get_cost()));
    }
    Ok(parts.get_cost())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn parse_in(
        dir: &Path,
        text: &str,
    ) -> Result<(WebConfig, Vec<Diagnostic>), WebConfigError> {
        parse(text, "web.yml", dir)
    }

    pub(super) fn errors(dir: &Path, text: &str) -> Vec<String> {
        match parse_in(dir, text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.diagnostics(),
        }
    }

    /// Writes a self-signed certificate and key for localhost into `dir`.
    pub(super) fn write_cert(dir: &Path, name: &str) {
        let certified = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("certificate");
        std::fs::write(dir.join(format!("{name}.crt")), certified.cert.pem()).expect("write cert");
        std::fs::write(
            dir.join(format!("{name}.key")),
            certified.signing_key.serialize_pem(),
        )
        .expect("write key");
    }

    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).expect("bcrypt hash")
    }

    #[test]
    fn deep_nesting_is_refused_before_decoding() {
        let dir = tempfile::tempdir().expect("tempdir");
        let deep = format!("basic_auth_users: {}\n", "{a: ".repeat(100_000));
        // The 64th `{` (the 65th level) starts at 19 + 4 * 63.
        assert_eq!(
            errors(dir.path(), &deep),
            vec![
                "web.yml:1:271: nested deeper than 64 levels; a calldrift config needs fewer than 10"
            ]
        );
    }

    #[test]
    fn empty_or_comment_only_files_mean_no_tls_and_no_auth() {
        let dir = tempfile::tempdir().expect("tempdir");
        for text in ["", "# nothing here\n"] {
            let (web, warnings) = parse_in(dir.path(), text).expect("valid");
            assert!(web.tls.is_none() && !web.requires_auth());
            assert!(warnings.is_empty());
        }
    }

    #[test]
    fn unknown_keys_name_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = format!(
            "basic_auth_users:\n  alice: \"{}\"\ntls_sever_config:\n  cert_file: x\n",
            hash("pw")
        );
        assert_eq!(
            errors(dir.path(), &text),
            vec![
                "web.yml:3:1: unknown field \"tls_sever_config\" at tls_sever_config; did you mean \"tls_server_config\"?"
            ]
        );
        write_cert(dir.path(), "server");
        let text =
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cert_fiel: x\n";
        assert_eq!(
            errors(dir.path(), text),
            vec![
                "web.yml:4:3: unknown field \"cert_fiel\" at tls_server_config.cert_fiel; did you mean \"cert_file\"?"
            ]
        );
    }

    #[test]
    fn toolkit_settings_calldrift_lacks_are_named_as_unsupported() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_cert(dir.path(), "server");
        let text = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n";
        let errors = errors(dir.path(), text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("web.yml:4:3: tls_server_config.cipher_suites is an exporter-toolkit setting calldrift does not support"),
            "{errors:?}"
        );
    }

    #[test]
    fn yaml_syntax_errors_name_line_and_column() {
        let dir = tempfile::tempdir().expect("tempdir");
        let errors = errors(dir.path(), "basic_auth_users:\n  alice: [unclosed\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("web.yml:"), "{errors:?}");
        let place: Vec<&str> = errors[0].splitn(4, ':').collect();
        assert!(
            place[1].parse::<usize>().is_ok() && place[2].parse::<usize>().is_ok(),
            "{errors:?}"
        );
    }

    #[test]
    fn hashes_that_are_not_bcrypt_are_refused_without_being_echoed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = hash("pw");
        let truncated = &good[..50];
        let wrong_prefix = good.replacen("$2b$", "$2x$", 1);
        let wrong_cost = format!("$2b$03${}", &good[7..]);
        for (bad, why) in [
            ("plaintext-password", "must start with $2a$, $2b$ or $2y$"),
            (truncated, "malformed"),
            (wrong_prefix.as_str(), "must start with"),
            (wrong_cost.as_str(), "cost 3 is outside 4 to 31"),
        ] {
            let text = format!("basic_auth_users:\n  ok: \"{good}\"\n  bob: \"{bad}\"\n");
            let errors = errors(dir.path(), &text);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].starts_with(
                    "web.yml:3:8: basic_auth_users: the hash of user \"bob\" is not a bcrypt hash"
                ),
                "{errors:?}"
            );
            assert!(errors[0].contains(why), "{why}: {errors:?}");
            assert!(!errors[0].contains(bad), "the hash is echoed: {errors:?}");
        }
        // A password pasted unquoted is not a YAML string; still not echoed.
        for bad in ["123456", "[hunter2]", "{hunter2: 1}"] {
            let errors = errors(dir.path(), &format!("basic_auth_users:\n  bob: {bad}\n"));
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(errors[0].contains("is not a bcrypt hash"), "{errors:?}");
            assert!(
                !errors[0].contains("123456") && !errors[0].contains("hunter2"),
                "{errors:?}"
            );
        }
        // A valid hash of a cost no login could wait for: refused, not echoed.
        let slow = format!("$2b$20${}", &good[7..]);
        let errors = errors(
            dir.path(),
            &format!("basic_auth_users:\n  bob: \"{slow}\"\n"),
        );
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(
                "web.yml:2:8: basic_auth_users: the hash of user \"bob\" has bcrypt cost 20;"
            ),
            "{errors:?}"
        );
        assert!(!errors[0].contains(&slow), "the hash is echoed: {errors:?}");
        for prefix in ["$2a$", "$2y$"] {
            let text = format!(
                "basic_auth_users:\n  bob: \"{}\"\n",
                good.replacen("$2b$", prefix, 1)
            );
            parse_in(dir.path(), &text).expect("2a and 2y are bcrypt too");
        }
    }

    #[test]
    fn a_valid_file_gives_tls_and_users_with_paths_from_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_cert(dir.path(), "server");
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  min_version: TLS13\n\
             http_server_config:\n  http2: false\nbasic_auth_users:\n  alice: {}\n",
            hash("pw")
        );
        let (web, warnings) = parse_in(dir.path(), &text).expect("valid");
        let tls = web.tls.as_ref().expect("TLS");
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(web.requires_auth());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0]
                .to_string()
                .starts_with("web.yml:5:1: warning: http_server_config is ignored"),
            "{warnings:?}"
        );
    }

    #[test]
    fn mixed_bcrypt_costs_are_warned_about() {
        let dir = tempfile::tempdir().expect("tempdir");
        let same = format!(
            "basic_auth_users:\n  alice: \"{}\"\n  bob: \"{}\"\n",
            hash("a"),
            hash("b")
        );
        let (_, warnings) = parse_in(dir.path(), &same).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        let mixed = format!(
            "basic_auth_users:\n  alice: \"{}\"\n  bob: \"{}\"\n",
            hash("a"),
            bcrypt::hash("b", 5).expect("bcrypt hash")
        );
        let (web, warnings) = parse_in(dir.path(), &mixed).expect("valid, with a warning");
        assert!(web.requires_auth());
        let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            vec![
                "web.yml:1:1: warning: basic_auth_users: the hashes have different bcrypt costs \
                 (4, 5); unknown user names are checked at cost 5, so a user whose hash has a \
                 lower cost can be told apart by response time; give every user the same cost"
            ]
        );
    }

    #[test]
    fn debug_output_shows_neither_hashes_nor_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let h = hash("pw");
        let (web, _) = parse_in(
            dir.path(),
            &format!("basic_auth_users:\n  alice: \"{h}\"\n"),
        )
        .expect("valid");
        let debug = format!("{web:?}");
        assert!(
            debug.contains("alice") && !debug.contains(&h[7..]),
            "{debug}"
        );
    }
}
