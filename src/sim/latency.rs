//! Answer latency: how far away the simulated gateway seems. A fixed delay plus jitter,
//! spread uniformly or normally and never below zero; for every app, or one app's own.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::Simulator;
use super::scenario::{Scenario, humantime_duration};

/// How the jitter spreads answers around `fixed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Evenly over `[fixed - jitter, fixed + jitter]`.
    #[default]
    Uniform,
    /// Normally around `fixed`, `jitter` being the standard deviation.
    Normal,
}

/// `latency: {fixed: 250ms, jitter: 50ms, distribution: uniform}`: how long each `/v4/`
/// answer waits before it is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    #[serde(with = "humantime_duration")]
    pub fixed: Duration,
    #[serde(default, with = "humantime_duration")]
    pub jitter: Duration,
    #[serde(default)]
    pub distribution: Distribution,
}

impl Latency {
    /// One answer's delay: `fixed` moved by jitter drawn from `rng`, clamped at zero.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        if self.jitter.is_zero() {
            return self.fixed;
        }
        let jitter = self.jitter.as_secs_f64();
        let offset = match self.distribution {
            Distribution::Uniform => rng.random_range(-jitter..=jitter),
            Distribution::Normal => jitter * standard_normal(rng),
        };
        let seconds = (self.fixed.as_secs_f64() + offset).max(0.0);
        // Only a delay beyond Duration's range fails; the fixed part is then delay enough.
        Duration::try_from_secs_f64(seconds).unwrap_or(self.fixed)
    }
}

/// A standard normal draw by Box–Muller: two uniforms make one. `u1` lies in (0, 1], so
/// its logarithm is finite and a draw stays within about 8.6 standard deviations.
fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Each app's latency, and the one for every other request; fixed at start.
#[derive(Debug, Default)]
pub(super) struct LatencyPlan {
    global: Option<Latency>,
    apps: HashMap<u64, Latency>,
}

impl LatencyPlan {
    pub(super) fn new(scenario: &Scenario) -> LatencyPlan {
        LatencyPlan {
            global: scenario.latency,
            apps: scenario
                .apps
                .iter()
                .filter_map(|app| Some((app.sdkappid, app.latency?)))
                .collect(),
        }
    }

    /// The latency of a request naming `sdkappid`: its app's own, else the global one.
    fn for_app(&self, sdkappid: Option<u64>) -> Option<&Latency> {
        sdkappid
            .and_then(|id| self.apps.get(&id))
            .or(self.global.as_ref())
    }
}

impl Simulator {
    /// How long the answer to a `/v4/` request naming `sdkappid` waits; zero without a
    /// latency in the scenario.
    pub(super) fn answer_latency(&self, sdkappid: Option<u64>) -> Duration {
        self.inner
            .latency
            .for_app(sdkappid)
            .map_or(Duration::ZERO, |latency| latency.sample(&mut rand::rng()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn samples(latency: Latency, n: usize) -> Vec<f64> {
        let mut rng = StdRng::seed_from_u64(20);
        (0..n)
            .map(|_| latency.sample(&mut rng).as_secs_f64() * 1000.0)
            .collect()
    }

    fn mean_and_deviation(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        (mean, variance.sqrt())
    }

    #[test]
    fn uniform_jitter_stays_within_its_bounds_and_centres_on_fixed() {
        let latency = Latency {
            fixed: ms(100),
            jitter: ms(20),
            distribution: Distribution::Uniform,
        };
        let values = samples(latency, 20_000);
        assert!(values.iter().all(|v| (80.0..=120.0).contains(v)));
        let (mean, deviation) = mean_and_deviation(&values);
        assert!((mean - 100.0).abs() < 0.5, "{mean}");
        // A uniform spread of half-width 20 has a standard deviation of 20/sqrt(3).
        assert!((deviation - 20.0 / 3f64.sqrt()).abs() < 0.5, "{deviation}");
        // Both ends are reached, not only the middle.
        assert!(values.iter().any(|v| *v < 81.0) && values.iter().any(|v| *v > 119.0));
    }

    #[test]
    fn normal_jitter_is_the_standard_deviation() {
        let latency = Latency {
            fixed: ms(250),
            jitter: ms(50),
            distribution: Distribution::Normal,
        };
        let values = samples(latency, 20_000);
        let (mean, deviation) = mean_and_deviation(&values);
        assert!((mean - 250.0).abs() < 2.0, "{mean}");
        assert!((deviation - 50.0).abs() < 2.0, "{deviation}");
        // About 68 % within one standard deviation, 95 % within two.
        let within = |k: f64| {
            values
                .iter()
                .filter(|v| (*v - 250.0).abs() <= k * 50.0)
                .count() as f64
                / values.len() as f64
        };
        assert!((within(1.0) - 0.683).abs() < 0.02, "{}", within(1.0));
        assert!((within(2.0) - 0.954).abs() < 0.01, "{}", within(2.0));
        assert!(values.iter().all(|v| *v < 250.0 + 9.0 * 50.0));
    }

    #[test]
    fn jitter_larger_than_fixed_is_clamped_at_zero() {
        for distribution in [Distribution::Uniform, Distribution::Normal] {
            let latency = Latency {
                fixed: ms(10),
                jitter: ms(40),
                distribution,
            };
            let values = samples(latency, 10_000);
            let zeros = values.iter().filter(|v| **v == 0.0).count() as f64 / 10_000.0;
            // Uniform over [-30, 50]: 3/8 fall below zero; normal: P(Z < -0.25) = 0.40.
            let expected = match distribution {
                Distribution::Uniform => 0.375,
                Distribution::Normal => 0.401,
            };
            assert!((zeros - expected).abs() < 0.02, "{distribution:?}: {zeros}");
            assert!(values.iter().all(|v| *v >= 0.0));
        }
    }

    #[test]
    fn without_jitter_every_answer_waits_exactly_fixed() {
        let latency = Latency {
            fixed: ms(75),
            jitter: Duration::ZERO,
            distribution: Distribution::Normal,
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..100).all(|_| latency.sample(&mut rng) == ms(75)));
    }

    #[test]
    fn an_app_latency_replaces_the_global_one() {
        let global = Latency {
            fixed: ms(250),
            jitter: Duration::ZERO,
            distribution: Distribution::Uniform,
        };
        let own = Latency {
            fixed: ms(50),
            ..global
        };
        let plan = LatencyPlan {
            global: Some(global),
            apps: HashMap::from([(7, own)]),
        };
        assert_eq!(plan.for_app(Some(7)), Some(&own));
        assert_eq!(plan.for_app(Some(8)), Some(&global));
        assert_eq!(plan.for_app(None), Some(&global));
        assert_eq!(LatencyPlan::default().for_app(Some(7)), None);
    }

    #[tokio::test]
    async fn answers_wait_each_on_their_own_timer() {
        use crate::sim::harness::*;
        let mut scenario = scenario();
        scenario.latency = Some(Latency {
            fixed: Duration::from_secs(2),
            jitter: Duration::ZERO,
            distribution: Distribution::Uniform,
        });
        scenario.apps[1].latency = Some(Latency {
            fixed: Duration::ZERO,
            jitter: Duration::ZERO,
            distribution: Distribution::Uniform,
        });
        let server = Server::start(scenario).await;
        let addr = server.addr;
        // Every request is handled while the others wait: all arrive before any answer.
        let slow: Vec<_> = (0..100)
            .map(|_| tokio::spawn(async move { get_code(addr, CLEAN).await }))
            .collect();
        while server.sim.stats().requests_total < 100 {
            assert!(slow.iter().all(|task| !task.is_finished()));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // An app without latency is answered while they wait; control never waits.
        assert_eq!(get_code(addr, BARE).await, 100301);
        let stats = call(addr, hyper::Method::GET, "/__sim/stats", "").await;
        assert_eq!(stats.status, hyper::StatusCode::OK);
        assert!(slow.iter().all(|task| !task.is_finished()));
        for task in slow {
            assert_eq!(task.await.unwrap(), 0);
        }
        server.stop().await;
    }
}
