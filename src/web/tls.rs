//! `tls_server_config`: versions, client certificates and the rustls server config.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::version::{TLS12, TLS13};

use super::RawTls;
use crate::config::Diagnostics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TlsVersion {
    V12,
    V13,
}

fn tls_version(
    raw: Option<&str>,
    path: &str,
    default: TlsVersion,
    report: &mut Diagnostics,
) -> TlsVersion {
    match raw {
        None | Some("") => default,
        Some("TLS12") => TlsVersion::V12,
        Some("TLS13") => TlsVersion::V13,
        Some(old @ ("TLS10" | "TLS11")) => {
            report.error(
                path,
                format!("{path}: {old} is not supported; calldrift speaks TLS12 and TLS13"),
            );
            default
        }
        Some(other) => {
            report.error(
                path,
                format!("{path}: unknown TLS version {other:?}; use TLS12 or TLS13"),
            );
            default
        }
    }
}

/// A file path from the web config, relative to its directory; empty means unset.
fn file_path(raw: Option<String>, base_dir: &Path) -> Option<PathBuf> {
    raw.filter(|p| !p.is_empty()).map(|p| {
        let p = PathBuf::from(p);
        if p.is_relative() { base_dir.join(p) } else { p }
    })
}

fn read_file(path: &Path, key: &str, report: &mut Diagnostics) -> Option<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            report.error(key, format!("{key}: cannot read {}: {e}", path.display()));
            None
        }
    }
}

fn read_certs(
    path: &Path,
    key: &str,
    report: &mut Diagnostics,
) -> Option<Vec<CertificateDer<'static>>> {
    let pem = read_file(path, key, report)?;
    match rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if certs.is_empty() => {
            report.error(
                key,
                format!("{key}: {} holds no PEM certificate", path.display()),
            );
            None
        }
        Ok(certs) => Some(certs),
        Err(e) => {
            report.error(key, format!("{key}: {}: invalid PEM: {e}", path.display()));
            None
        }
    }
}

fn read_key(path: &Path, key: &str, report: &mut Diagnostics) -> Option<PrivateKeyDer<'static>> {
    let pem = read_file(path, key, report)?;
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(k)) => Some(k),
        Ok(None) => {
            report.error(
                key,
                format!("{key}: {} holds no PEM private key", path.display()),
            );
            None
        }
        Err(e) => {
            report.error(key, format!("{key}: {}: invalid PEM: {e}", path.display()));
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    None,
    RequireAndVerify,
}

/// `client_auth_type`; `None` when the value was refused, so its consequences are not
/// reported twice.
fn client_auth(raw: Option<&str>, report: &mut Diagnostics) -> Option<ClientAuth> {
    match raw {
        None | Some("") | Some("NoClientCert") => Some(ClientAuth::None),
        Some("RequireAndVerifyClientCert") => Some(ClientAuth::RequireAndVerify),
        Some(other) => {
            let known = matches!(
                other,
                "RequestClientCert" | "RequireAnyClientCert" | "VerifyClientCertIfGiven"
            );
            report.error(
                "tls_server_config.client_auth_type",
                format!(
                    "tls_server_config.client_auth_type: {} {other:?}; use NoClientCert or RequireAndVerifyClientCert (with client_ca_file)",
                    if known { "calldrift does not support" } else { "unknown value" }
                ),
            );
            None
        }
    }
}

/// Checks `tls_server_config` and builds the rustls server config; `None` after an error
/// (reported) or when the files do not make a usable config.
pub(super) fn validate_tls(
    raw: RawTls,
    report: &mut Diagnostics,
    base_dir: &Path,
) -> Option<Arc<rustls::ServerConfig>> {
    const TLS: &str = "tls_server_config";
    let min = tls_version(
        raw.min_version.as_deref(),
        "tls_server_config.min_version",
        TlsVersion::V12,
        report,
    );
    let max = tls_version(
        raw.max_version.as_deref(),
        "tls_server_config.max_version",
        TlsVersion::V13,
        report,
    );
    if min > max {
        report.error(
            "tls_server_config.min_version",
            "tls_server_config: min_version is above max_version",
        );
    }
    let client_auth = client_auth(raw.client_auth_type.as_deref(), report);
    let ca_file = file_path(raw.client_ca_file, base_dir);
    match (client_auth, &ca_file) {
        (Some(ClientAuth::RequireAndVerify), None) => report.error(
            "tls_server_config.client_auth_type",
            "tls_server_config: RequireAndVerifyClientCert needs client_ca_file",
        ),
        // exporter-toolkit refuses this too: CAs without a policy would verify nothing.
        (Some(ClientAuth::None), Some(_)) => report.error(
            "tls_server_config.client_ca_file",
            "tls_server_config: client_ca_file is set but client_auth_type is NoClientCert; set client_auth_type: RequireAndVerifyClientCert",
        ),
        _ => {}
    }
    let cert_file = file_path(raw.cert_file, base_dir);
    let key_file = file_path(raw.key_file, base_dir);
    if cert_file.is_none() {
        report.error_at_key(TLS, "tls_server_config: cert_file is required");
    }
    if key_file.is_none() {
        report.error_at_key(TLS, "tls_server_config: key_file is required");
    }
    let certs = cert_file
        .as_deref()
        .and_then(|p| read_certs(p, "tls_server_config.cert_file", report));
    let key = key_file
        .as_deref()
        .and_then(|p| read_key(p, "tls_server_config.key_file", report));
    let cas = match (&ca_file, client_auth) {
        (Some(p), Some(ClientAuth::RequireAndVerify)) => {
            Some(read_certs(p, "tls_server_config.client_ca_file", report)?)
        }
        _ => None,
    };
    let (certs, key) = (certs?, key?);
    if report.has_errors() {
        return None;
    }
    match server_config(certs, key, cas, min, max) {
        Ok(config) => Some(Arc::new(config)),
        Err(e) => {
            report.error_at_key(TLS, format!("tls_server_config: {e}"));
            None
        }
    }
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_cas: Option<Vec<CertificateDer<'static>>>,
    min: TlsVersion,
    max: TlsVersion,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(TlsVersion::V12, &TLS12), (TlsVersion::V13, &TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, v)| v)
            .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let builder = match client_cas {
        None => builder.with_no_client_auth(),
        Some(cas) => {
            let mut roots = rustls::RootCertStore::empty();
            for ca in cas {
                roots.add(ca).map_err(|e| format!("client_ca_file: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("client_ca_file: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert_file and key_file: {e}"))?;
    // The server speaks HTTP/1.1 only; saying so lets clients skip trying h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{errors, parse_in, write_cert};

    #[test]
    fn missing_files_are_errors_naming_the_key_and_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_cert(dir.path(), "server");
        let text = "tls_server_config:\n  cert_file: nowhere.crt\n  key_file: server.key\n";
        let errors = errors(dir.path(), text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let missing = dir.path().join("nowhere.crt");
        assert!(
            errors[0].starts_with(&format!(
                "web.yml:2:14: tls_server_config.cert_file: cannot read {}:",
                missing.display()
            )),
            "{errors:?}"
        );
        let errors = self::errors(dir.path(), "tls_server_config:\n  cert_file: server.crt\n");
        assert_eq!(
            errors,
            vec!["web.yml:1:1: tls_server_config: key_file is required"]
        );
        // A certificate file where the key should be: no key in it.
        let errors = self::errors(
            dir.path(),
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n",
        );
        assert!(errors[0].contains("holds no PEM private key"), "{errors:?}");
    }

    #[test]
    fn tls_versions_and_client_auth_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_cert(dir.path(), "server");
        write_cert(dir.path(), "ca");
        let base = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";
        let cases = [
            ("  min_version: TLS11\n", "TLS11 is not supported"),
            ("  max_version: TLS14\n", "unknown TLS version \"TLS14\""),
            (
                "  min_version: TLS13\n  max_version: TLS12\n",
                "min_version is above max_version",
            ),
            (
                "  client_auth_type: RequireAnyClientCert\n",
                "calldrift does not support \"RequireAnyClientCert\"",
            ),
            (
                "  client_auth_type: Sometimes\n",
                "unknown value \"Sometimes\"",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n",
                "needs client_ca_file",
            ),
            (
                "  client_ca_file: ca.crt\n",
                "client_ca_file is set but client_auth_type is NoClientCert",
            ),
            (
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: absent.crt\n",
                "tls_server_config.client_ca_file: cannot read",
            ),
        ];
        for (extra, expected) in cases {
            let errors = errors(dir.path(), &format!("{base}{extra}"));
            assert!(
                errors.len() == 1 && errors[0].contains(expected),
                "{extra}: {errors:?}"
            );
        }
        let text = format!(
            "{base}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
        );
        let (web, _) = parse_in(dir.path(), &text).expect("valid");
        assert!(web.tls.is_some());
    }
}
