//! HTTPS, as real gateways are reached: `tls: {generate: true}` makes a CA and a server
//! certificate for the loopback names at start and writes the CA where a calldrift config
//! can name it as `ca_file`; `tls: {cert_file, key_file}` serves a given certificate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use crate::atomic_file;

/// The names a generated certificate always holds: a client on this host reaches the
/// simulator by any of them.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// `tls:` in a scenario: generate a certificate, or serve the one in `cert_file`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// Make a CA and a certificate it signs at start.
    #[serde(default)]
    pub generate: bool,
    /// Names the generated certificate holds besides `localhost`, `127.0.0.1` and `::1`:
    /// DNS names, IP addresses, or wildcards over two labels or more (`*.sim.localhost`;
    /// rustls matches no wildcard over a single label such as `*.localhost`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Where the generated CA certificate (PEM) goes; a new temporary file if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The certificate chain (PEM) to serve instead of generating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of `cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Either generated or given, with what each needs and nothing of the other.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.generate {
            if self.cert_file.is_some() || self.key_file.is_some() {
                return Err("tls: `generate` and `cert_file`/`key_file` exclude each other".into());
            }
            if let Some(name) = self.names.iter().find(|n| !plausible_name(n)) {
                return Err(format!(
                    "tls.names: {name:?} is not a DNS name or IP address"
                ));
            }
            return Ok(());
        }
        if !self.names.is_empty() || self.ca_file.is_some() {
            return Err("tls: `names` and `ca_file` apply to `generate: true` only".into());
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), Some(_)) => Ok(()),
            _ => Err("tls: set `generate: true`, or both `cert_file` and `key_file`".into()),
        }
    }

    /// Relative paths taken from `dir` (the scenario file's directory).
    pub(super) fn resolve_paths(&mut self, dir: &Path) {
        for path in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file] {
            if let Some(p) = path.as_mut().filter(|p| p.is_relative()) {
                *p = dir.join(&*p);
            }
        }
    }
}

/// Printable ASCII without spaces or slashes: what a SAN can hold. rcgen checks the rest.
fn plausible_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Why the simulator cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the simulator's certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("writing the simulator's CA certificate to {path}: {source}")]
    WriteCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the simulator's TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// What a TLS simulator serves with, and where its generated CA is.
pub(super) struct ServerTls {
    pub(super) config: Arc<rustls::ServerConfig>,
    pub(super) ca_file: Option<CaFile>,
}

/// The generated CA's file; a temporary one is removed with the simulator.
pub(super) struct CaFile {
    pub(super) path: PathBuf,
    temporary: bool,
}

impl Drop for CaFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ServerTls {
    /// Generates or reads the certificate; a generated CA is written out first.
    pub(super) fn prepare(settings: &TlsSettings) -> Result<ServerTls, TlsError> {
        let (chain, key, ca_file) = match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) if !settings.generate => {
                (read_chain(cert)?, read_key(key)?, None)
            }
            _ => {
                let generated = generate(&settings.names)?;
                let ca_file = write_ca(&generated.ca_pem, settings.ca_file.as_deref())?;
                (vec![generated.cert], generated.key, Some(ca_file))
            }
        };
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            config: Arc::new(config),
            ca_file,
        })
    }
}

/// A server certificate, its key, and the PEM of the CA that signed it.
struct Generated {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    ca_pem: String,
}

fn generate(extra_names: &[String]) -> Result<Generated, rcgen::Error> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "calldrift simulator CA");
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);

    let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| (*n).to_owned()).collect();
    for name in extra_names {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "calldrift simulated Chat API");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Generated {
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        ca_pem,
    })
}

/// Writes the CA to `path`, or to a new file in the temporary directory.
fn write_ca(pem: &str, path: Option<&Path>) -> Result<CaFile, TlsError> {
    let (path, temporary) = match path {
        Some(p) => (p.to_path_buf(), false),
        None => {
            let name = format!("calldrift-sim-ca-{:016x}.pem", rand::random::<u64>());
            (std::env::temp_dir().join(name), true)
        }
    };
    // A CA certificate is public: readable by all, as calldrift may run as another user.
    atomic_file::write(&path, pem.as_bytes(), 0o644).map_err(|source| TlsError::WriteCa {
        path: path.clone(),
        source,
    })?;
    Ok(CaFile { path, temporary })
}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let pem_error = |message: String| TlsError::Pem {
        path: path.to_path_buf(),
        message,
    };
    let chain = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(format!("invalid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(pem_error("no PEM certificate".to_owned()));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    let pem_error = |message: String| TlsError::Pem {
        path: path.to_path_buf(),
        message,
    };
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| pem_error(format!("invalid PEM: {e}")))?
        .ok_or_else(|| pem_error("no PEM private key".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;

    #[test]
    fn a_generated_certificate_verifies_against_its_ca_for_every_loopback_name() {
        let dir = tempfile::tempdir().unwrap();
        let settings = TlsSettings {
            generate: true,
            names: vec!["*.sim.localhost".to_owned(), "localhost".to_owned()],
            ca_file: Some(dir.path().join("ca.pem")),
            ..TlsSettings::default()
        };
        settings.validate().unwrap();
        let generated = generate(&settings.names).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        let ca = rustls_pemfile::certs(&mut generated.ca_pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        roots.add(ca).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let now = rustls::pki_types::UnixTime::now();
        for name in ["localhost", "127.0.0.1", "::1", "gateway.sim.localhost"] {
            let name = rustls::pki_types::ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&generated.cert, &[], &name, &[], now)
                .unwrap_or_else(|e| panic!("{name:?}: {e}"));
        }
        for other in ["example.com", "sim.localhost", "a.b.sim.localhost"] {
            let other = rustls::pki_types::ServerName::try_from(other).unwrap();
            assert!(
                verifier
                    .verify_server_cert(&generated.cert, &[], &other, &[], now)
                    .is_err()
            );
        }

        let tls = ServerTls::prepare(&settings).unwrap();
        let ca_file = tls.ca_file.as_ref().unwrap();
        assert_eq!(ca_file.path, dir.path().join("ca.pem"));
        let written = std::fs::read_to_string(&ca_file.path).unwrap();
        assert!(written.starts_with("-----BEGIN CERTIFICATE-----"));
        drop(tls);
        assert!(dir.path().join("ca.pem").exists(), "a given path is kept");
    }

    #[test]
    fn a_temporary_ca_file_goes_with_the_simulator() {
        let tls = ServerTls::prepare(&TlsSettings {
            generate: true,
            ..TlsSettings::default()
        })
        .unwrap();
        let path = tls.ca_file.as_ref().unwrap().path.clone();
        assert!(path.starts_with(std::env::temp_dir()), "{}", path.display());
        assert!(path.exists());
        drop(tls);
        assert!(!path.exists());
    }

    #[test]
    fn a_given_certificate_is_served_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let settings = TlsSettings {
            cert_file: Some(cert.clone()),
            key_file: Some(key.clone()),
            ..TlsSettings::default()
        };
        settings.validate().unwrap();
        let tls = ServerTls::prepare(&settings).unwrap();
        assert!(tls.ca_file.is_none());

        let swapped = TlsSettings {
            cert_file: Some(key.clone()),
            key_file: Some(cert.clone()),
            ..TlsSettings::default()
        };
        let err = ServerTls::prepare(&swapped).err().unwrap().to_string();
        assert!(err.contains("k.pem: no PEM certificate"), "{err}");
        let missing = TlsSettings {
            cert_file: Some(dir.path().join("none.pem")),
            key_file: Some(key),
            ..TlsSettings::default()
        };
        let err = ServerTls::prepare(&missing).err().unwrap().to_string();
        assert!(
            err.starts_with("reading ") && err.contains("none.pem"),
            "{err}"
        );
    }

    #[test]
    fn settings_are_either_generated_or_given() {
        let refused = |settings: TlsSettings| settings.validate().unwrap_err();
        let path = || Some(PathBuf::from("x.pem"));
        assert!(refused(TlsSettings::default()).contains("set `generate: true`, or both"));
        assert!(
            refused(TlsSettings {
                cert_file: path(),
                ..TlsSettings::default()
            })
            .contains("both `cert_file` and `key_file`")
        );
        assert!(
            refused(TlsSettings {
                generate: true,
                key_file: path(),
                ..TlsSettings::default()
            })
            .contains("exclude each other")
        );
        assert!(
            refused(TlsSettings {
                cert_file: path(),
                key_file: path(),
                ca_file: path(),
                ..TlsSettings::default()
            })
            .contains("apply to `generate: true` only")
        );
        assert!(
            refused(TlsSettings {
                generate: true,
                names: vec!["a b".to_owned()],
                ..TlsSettings::default()
            })
            .contains("\"a b\" is not a DNS name")
        );
    }
}
