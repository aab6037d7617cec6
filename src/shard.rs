//! Sharding: `--shard INDEX/COUNT` (or `$CALLDRIFT_SHARD`) splits the targets of one config
//! over COUNT replicas, so each polls a part and all together poll every target once.
//!
//! - **Whole apps.** The shard of a target is a function of its SDKAppID alone, so every
//!   region of an app lands in the same replica and the per-app rate limit (the gateway's
//!   200 calls/s per app) is still enforced in one place.
//! - **Stable.** The hash is SHA-256 of the SDKAppID followed by Lamping and Veach's jump
//!   consistent hash. Both are fixed algorithms, so every replica, every build and every Rust
//!   version agrees on the split (`std`'s `DefaultHasher` promises none of that), and changing
//!   COUNT from N to N+1 moves only about 1/(N+1) of the apps, not nearly all of them.
//! - **Rate.** The global limit is divided by COUNT (rounded up, at least 1), so the replicas
//!   together stay near the configured total; the per-app limit stays as it is, because an
//!   app is only ever polled by one replica.
//!
//! [`Shard::apply`] narrows a validated [`Config`]; everything downstream (targets,
//! `calldrift_targets`, the interval warning) then sees only this shard. Secrets are read
//! for this shard's apps only ([`polls`] selects them), so a replica needs no other keys.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::config::{App, Config};

/// One replica's part of the targets: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard {0:?}: expected INDEX/COUNT, e.g. 0/3")]
    Syntax(String),
    #[error("--shard {text:?}: {part} {value:?} is not a whole number")]
    NotANumber {
        text: String,
        part: &'static str,
        value: String,
    },
    #[error("--shard {0}: COUNT must be at least 1")]
    ZeroCount(String),
    #[error("--shard {0}: INDEX must be below COUNT (INDEX is 0-based)")]
    IndexTooLarge(String),
}

impl FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (index, count) = trimmed
            .split_once('/')
            .ok_or_else(|| ShardError::Syntax(text.to_owned()))?;
        let number = |part: &'static str, value: &str| {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| ShardError::NotANumber {
                    text: text.to_owned(),
                    part,
                    value: value.to_owned(),
                })
        };
        let shard = Shard {
            index: number("INDEX", index)?,
            count: number("COUNT", count)?,
        };
        if shard.count == 0 {
            return Err(ShardError::ZeroCount(trimmed.to_owned()));
        }
        if shard.index >= shard.count {
            return Err(ShardError::IndexTooLarge(trimmed.to_owned()));
        }
        Ok(shard)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether this shard polls the app `sdkappid` (all its regions).
    pub fn owns(&self, sdkappid: u64) -> bool {
        bucket(sdkappid, self.count) == self.index
    }

    /// Keeps only this shard's apps and divides the global rate limit by COUNT.
    pub fn apply(&self, config: &mut Config) {
        config.apps.retain(|app| self.owns(app.sdkappid));
        config.rate_limit.per_second = self.rate(config.rate_limit.per_second);
    }

    /// This shard's part of a global rate: `total / count` rounded up, at least 1.
    pub fn rate(&self, total: u32) -> u32 {
        total.div_ceil(self.count.max(1)).max(1)
    }
}

/// Whether a replica started with `shard` (`None`: the only replica) polls `app`: the apps
/// whose secrets it reads.
pub fn polls(shard: Option<Shard>, app: &App) -> bool {
    shard.is_none_or(|s| s.owns(app.sdkappid))
}

/// The shard of `sdkappid` among `count`: jump consistent hash over a SHA-256 key.
fn bucket(sdkappid: u64, count: u32) -> u32 {
    let digest = Sha256::digest(sdkappid.to_be_bytes());
    let key = digest[..8]
        .iter()
        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
    jump(key, count)
}

/// Lamping and Veach, "A Fast, Minimal Memory, Consistent Hash Algorithm" (2014). The float
/// arithmetic is IEEE 754 division and multiplication, exactly rounded on every platform.
fn jump(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    // 0 <= b < buckets <= u32::MAX, so the conversion cannot fail.
    u32::try_from(b).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parsing_table() {
        let ok = [
            ("0/1", (0, 1)),
            ("0/3", (0, 3)),
            ("2/3", (2, 3)),
            (" 1 / 2 ", (1, 2)),
        ];
        for (text, (index, count)) in ok {
            assert_eq!(text.parse::<Shard>(), Ok(Shard { index, count }), "{text}");
        }
        let bad = [
            ("3/3", "--shard 3/3: INDEX must be below COUNT"),
            ("0/0", "--shard 0/0: COUNT must be at least 1"),
            ("1", "--shard \"1\": expected INDEX/COUNT"),
            ("", "--shard \"\": expected INDEX/COUNT"),
            ("-1/3", "INDEX \"-1\" is not a whole number"),
            ("a/3", "INDEX \"a\" is not a whole number"),
            ("1/x", "COUNT \"x\" is not a whole number"),
            (
                "$(CALLDRIFT_SHARD_INDEX)/3",
                "INDEX \"$(CALLDRIFT_SHARD_INDEX)\" is not a whole number",
            ),
            ("1/2/3", "COUNT \"2/3\" is not a whole number"),
        ];
        for (text, want) in bad {
            let err = text.parse::<Shard>().expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
        assert_eq!(Shard { index: 1, count: 4 }.to_string(), "1/4");
    }

    #[test]
    fn every_app_is_in_exactly_one_shard() {
        for count in [1u32, 2, 3, 5, 16] {
            for sdkappid in (1_400_000_000u64..1_400_000_500).chain([0, 1, u64::MAX]) {
                let owners = (0..count)
                    .filter(|&index| Shard { index, count }.owns(sdkappid))
                    .count();
                assert_eq!(owners, 1, "sdkappid {sdkappid} with COUNT {count}");
            }
        }
    }

    #[test]
    fn jump_matches_the_published_vectors() {
        // The vectors every port of the paper's reference code is tested against.
        for (key, buckets, want) in [
            (1u64, 1u32, 0u32),
            (42, 57, 43),
            (0xDEAD_10CC, 1, 0),
            (0xDEAD_10CC, 666, 361),
            (256, 1024, 520),
        ] {
            assert_eq!(jump(key, buckets), want, "key {key}, {buckets} buckets");
        }
    }

    #[test]
    fn the_split_is_pinned() {
        // Replicas of different builds must agree; a change here reshuffles every deployment.
        let got: Vec<u32> = (1_400_000_001u64..=1_400_000_010)
            .map(|id| bucket(id, 3))
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u32; 10] = [2, 0, 2, 1, 0, 2, 2, 0, 0, 2];

    #[test]
    fn distribution_is_roughly_even_over_ten_thousand_apps() {
        for count in [2u32, 3, 7] {
            let mut per = vec![0usize; count as usize];
            for id in 1_400_000_000u64..1_400_010_000 {
                per[bucket(id, count) as usize] += 1;
            }
            let fair = 10_000 / count as usize;
            for (index, n) in per.iter().enumerate() {
                assert!(
                    n.abs_diff(fair) * 10 < fair,
                    "COUNT {count}: shard {index} got {n} of 10000 (fair {fair})"
                );
            }
        }
    }

    #[test]
    fn growing_count_moves_few_apps() {
        let moved = (1_400_000_000u64..1_400_010_000)
            .filter(|&id| bucket(id, 3) != bucket(id, 4))
            .count();
        // Ideal is 1/4; anything near it beats mod-N hashing's 3/4.
        assert!(moved < 3_000, "{moved} of 10000 moved from 3 to 4 shards");
    }

    #[test]
    fn apply_keeps_whole_apps_and_divides_the_global_rate() {
        let mut text =
            String::from("rate_limit:\n  per_second: 10\n  per_app_per_second: 7\napps:\n");
        for id in 1..=40 {
            text.push_str(&format!(
                "  - name: a{id}\n    sdkappid: {id}\n    regions: [china, tokyo]\n    secret_key_env: K\n"
            ));
        }
        let (config, _) =
            crate::config::parse(&text, "c.yaml", Path::new(".")).expect("valid config");
        let mut seen = 0;
        for index in 0..3 {
            let shard = Shard { index, count: 3 };
            let mut part = config.clone();
            shard.apply(&mut part);
            assert_eq!(part.rate_limit.per_second, 4, "ceil(10 / 3)");
            assert_eq!(part.rate_limit.per_app_per_second, 7);
            for app in &part.apps {
                assert!(shard.owns(app.sdkappid));
                assert_eq!(app.regions.len(), 2, "all regions of an app stay together");
            }
            seen += part.target_count();
        }
        assert_eq!(seen, config.target_count());
        assert_eq!(
            Shard {
                index: 0,
                count: 64
            }
            .rate(10),
            1,
            "at least 1"
        );
        assert_eq!(Shard { index: 0, count: 1 }.rate(200), 200);
    }
}
