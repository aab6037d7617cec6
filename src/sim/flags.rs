//! The flags of `calldrift simulate` that say how far away the gateway seems. Each
//! overrides its key in the scenario file, so one scenario serves near and far runs.

use std::path::PathBuf;
use std::time::Duration;

use super::latency::{Distribution, Latency};
use super::scenario::Scenario;
use super::tls::TlsSettings;

/// `--latency 250ms --jitter 50ms --tls --close-after 100 ...`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GatewayFlags {
    /// Every /v4/ answer waits this long (scenario `latency.fixed`), e.g. 250ms.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub latency: Option<Duration>,
    /// Spread of the answer latency around --latency (scenario `latency.jitter`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub jitter: Option<Duration>,
    /// How the jitter spreads: uniform over ±jitter, or normal with jitter as standard
    /// deviation (never below 0).
    #[arg(long, value_enum, value_name = "DISTRIBUTION")]
    pub jitter_distribution: Option<Distribution>,
    /// Serve HTTPS only, with a CA and a certificate for localhost, 127.0.0.1 and ::1
    /// made at start; the CA's file is printed (scenario `tls: {generate: true}`).
    #[arg(long)]
    pub tls: bool,
    /// Another name for the generated certificate (repeatable), e.g. '*.localhost'.
    #[arg(long = "tls-name", value_name = "NAME", requires = "tls")]
    pub tls_names: Vec<String>,
    /// Write the generated CA certificate here instead of to a temporary file.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub ca_file: Option<PathBuf>,
    /// Close a connection after this many /v4/ answers, as load balancers do.
    #[arg(long, value_name = "K")]
    pub close_after: Option<u64>,
    /// With --close-after: close without `Connection: close`, so the next request on the
    /// connection meets the close.
    #[arg(long, requires = "close_after")]
    pub close_silently: bool,
    /// Close a connection idle for this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

impl GatewayFlags {
    /// Puts the flags given into `scenario`, then validates it again.
    pub fn apply(&self, scenario: &mut Scenario) -> Result<(), String> {
        if self.latency.is_some() || self.jitter.is_some() || self.jitter_distribution.is_some() {
            let latency = scenario.latency.get_or_insert(Latency {
                fixed: Duration::ZERO,
                jitter: Duration::ZERO,
                distribution: Distribution::Uniform,
            });
            latency.fixed = self.latency.unwrap_or(latency.fixed);
            latency.jitter = self.jitter.unwrap_or(latency.jitter);
            latency.distribution = self.jitter_distribution.unwrap_or(latency.distribution);
        }
        if self.tls {
            let tls = match scenario.tls.take() {
                Some(tls) if tls.generate => tls,
                _ => TlsSettings {
                    generate: true,
                    ..TlsSettings::default()
                },
            };
            let tls = scenario.tls.insert(tls);
            tls.names.extend(self.tls_names.iter().cloned());
            if self.ca_file.is_some() {
                tls.ca_file.clone_from(&self.ca_file);
            }
        }
        if let Some(k) = self.close_after {
            scenario.connections.close_after = Some(k);
            scenario.connections.announce = !self.close_silently;
        }
        if self.idle_timeout.is_some() {
            scenario.connections.idle_timeout = self.idle_timeout;
        }
        scenario.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: GatewayFlags,
    }

    fn flags(args: &[&str]) -> GatewayFlags {
        Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied()))
            .unwrap()
            .flags
    }

    #[test]
    fn flags_override_the_scenario_keys_they_name() {
        let text = "apps: []\nlatency: {fixed: 1s, jitter: 10ms, distribution: normal}\nconnections: {idle_timeout: 9s}\ntls: {generate: true, names: [a.localhost]}\n";
        let mut scenario = Scenario::from_yaml_str(text, "s.yaml").unwrap();
        flags(&["--latency", "250ms", "--tls", "--tls-name", "b.localhost"])
            .apply(&mut scenario)
            .unwrap();
        let latency = scenario.latency.unwrap();
        assert_eq!(latency.fixed, Duration::from_millis(250));
        assert_eq!(latency.jitter, Duration::from_millis(10), "kept");
        assert_eq!(latency.distribution, Distribution::Normal, "kept");
        assert_eq!(scenario.tls.unwrap().names, ["a.localhost", "b.localhost"]);
        assert_eq!(
            scenario.connections.idle_timeout,
            Some(Duration::from_secs(9))
        );

        let mut scenario = Scenario::default();
        flags(&[
            "--jitter",
            "50ms",
            "--jitter-distribution",
            "normal",
            "--close-after",
            "3",
            "--close-silently",
            "--idle-timeout",
            "2s",
        ])
        .apply(&mut scenario)
        .unwrap();
        let latency = scenario.latency.unwrap();
        assert_eq!(
            (latency.fixed, latency.jitter, latency.distribution),
            (
                Duration::ZERO,
                Duration::from_millis(50),
                Distribution::Normal
            )
        );
        assert_eq!(scenario.connections.close_after, Some(3));
        assert!(!scenario.connections.announce);
        assert_eq!(
            scenario.connections.idle_timeout,
            Some(Duration::from_secs(2))
        );
        assert!(scenario.tls.is_none());

        let mut scenario = Scenario::default();
        let err = flags(&["--close-after", "0"])
            .apply(&mut scenario)
            .unwrap_err();
        assert!(err.contains("close_after must be at least 1"), "{err}");
        let mut untouched = Scenario::default();
        flags(&[]).apply(&mut untouched).unwrap();
        assert_eq!(untouched, Scenario::default());
    }

    #[test]
    fn flags_that_refine_another_need_it() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("simulate").chain(args.iter().copied())).err()
        };
        assert!(parse(&["--close-silently"]).is_some());
        assert!(parse(&["--ca-file", "ca.pem"]).is_some());
        assert!(parse(&["--tls-name", "x"]).is_some());
        assert!(parse(&["--jitter-distribution", "poisson"]).is_some());
        assert!(parse(&["--tls", "--ca-file", "ca.pem"]).is_none());
    }
}
