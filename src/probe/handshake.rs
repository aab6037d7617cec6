//! One probe of one endpoint: resolve (the injected resolver or the system's), refuse
//! private ranges unless allowed, connect, TLS handshake with SNI and full verification,
//! close. No HTTP request is sent. The whole probe is bounded by `timeout`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::cert::RecordingVerifier;
use super::{Endpoint, ProbeResult, Reason, is_refused};
use crate::clock::Clock;
use crate::config::EndpointProbe;
use crate::tencent::{Resolver, root_store};

/// Why a [`Prober`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("endpoint_probe.{0}")]
    CaFile(String),
    #[error("cannot build the endpoint prober's TLS configuration: {0}")]
    Build(String),
}

/// Probes endpoints with one configuration: roots, resolver, timeout, allowed ranges.
pub struct Prober {
    tls: rustls::ClientConfig,
    webpki: Arc<WebPkiServerVerifier>,
    resolver: Option<Resolver>,
    clock: Arc<dyn Clock>,
    /// Each distinct endpoint at most this often (used by the daemon's loop).
    pub interval: Duration,
    pub timeout: Duration,
    pub allow_private: bool,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

/// A failed step: its reason and what went wrong.
type Failed = (Reason, String);

impl Prober {
    /// Reads `ca_file` (blocking) and builds the verifier.
    pub fn new(
        settings: &EndpointProbe,
        resolver: Option<Resolver>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ProbeError> {
        let roots = root_store(settings.ca_file.as_deref())
            .map_err(|e| ProbeError::CaFile(e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let webpki =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots.clone()), provider.clone())
                .build()
                .map_err(|e| ProbeError::Build(e.to_string()))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ProbeError::Build(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Prober {
            tls,
            webpki,
            resolver,
            clock,
            interval: settings.interval,
            timeout: settings.timeout,
            allow_private: settings.allow_private,
        })
    }

    /// Probes `endpoint` once, within `timeout`.
    pub async fn probe(&self, endpoint: &Endpoint) -> ProbeResult {
        let verifier = Arc::new(RecordingVerifier::new(self.webpki.clone()));
        let attempt = tokio::time::timeout(self.timeout, self.attempt(endpoint, verifier.clone()));
        let failed = match attempt.await {
            Ok(Ok(())) => None,
            Ok(Err(failed)) => Some(failed),
            Err(_) => Some((
                Reason::Timeout,
                format!(
                    "no verified handshake within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        };
        ProbeResult {
            at: self.clock.unix_f64(),
            failure: failed.as_ref().map(|f| f.0),
            not_after: verifier.earliest(),
            detail: failed.map(|f| f.1),
        }
    }

    async fn attempt(
        &self,
        endpoint: &Endpoint,
        verifier: Arc<RecordingVerifier>,
    ) -> Result<(), Failed> {
        let addresses = self.resolve(endpoint).await?;
        if !self.allow_private {
            if let Some(refused) = addresses.iter().find(|a| is_refused(a.ip())) {
                return Err((
                    Reason::BlockedAddress,
                    format!(
                        "{} is {}, in a loopback, private or link-local range; endpoint_probe.allow_private permits it",
                        endpoint.host,
                        refused.ip()
                    ),
                ));
            }
        }
        let tcp = connect(&addresses).await?;
        let name = endpoint.ip().map_or_else(
            || ServerName::try_from(endpoint.host.clone()),
            |ip| Ok(ServerName::from(ip)),
        );
        let name = name.map_err(|e| (Reason::TlsHandshake, format!("server name: {e}")))?;
        let mut config = self.tls.clone();
        config.dangerous().set_certificate_verifier(verifier);
        let mut tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(handshake_failure)?;
        // A clean close_notify; the verdict is already known, so its failure does not count.
        let _ = tls.shutdown().await;
        Ok(())
    }

    /// The endpoint's addresses: an IP literal as is, else the resolver's answer.
    async fn resolve(&self, endpoint: &Endpoint) -> Result<Vec<SocketAddr>, Failed> {
        if let Some(ip) = endpoint.ip() {
            return Ok(vec![SocketAddr::new(ip, endpoint.port)]);
        }
        let dns = |e: String| (Reason::Dns, format!("resolving {}: {e}", endpoint.host));
        let addresses: Vec<SocketAddr> = match &self.resolver {
            Some(resolver) => resolver
                .0
                .resolve(&endpoint.host)
                .await
                .map_err(|e| dns(e.to_string()))?
                .into_iter()
                .map(|a| SocketAddr::new(a.ip(), endpoint.port))
                .collect(),
            None => tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
                .await
                .map_err(|e| dns(e.to_string()))?
                .collect(),
        };
        if addresses.is_empty() {
            return Err(dns("no addresses".to_owned()));
        }
        Ok(addresses)
    }
}

/// The first address that accepts a connection.
async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, Failed> {
    let mut last = String::new();
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("connecting to {address}: {e}"),
        }
    }
    Err((Reason::Connect, last))
}

/// A refused certificate is `tls_verify`; anything else in the handshake `tls_handshake`.
fn handshake_failure(error: std::io::Error) -> Failed {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match rustls_error {
        Some(e @ rustls::Error::InvalidCertificate(_)) => (Reason::TlsVerify, e.to_string()),
        Some(e) => (Reason::TlsHandshake, e.to_string()),
        None => (Reason::TlsHandshake, error.to_string()),
    }
}
