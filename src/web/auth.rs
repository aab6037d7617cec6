//! Basic auth against `basic_auth_users`' bcrypt hashes.
//!
//! **Invariants:**
//! - The answer's timing does not tell which user names exist: an unknown name is checked
//!   against a stand-in hash of the highest cost among the configured hashes, and the
//!   answer waits for that check exactly as for a known name with a wrong password.
//! - Every bcrypt check, real or stand-in, runs on the blocking pool while holding the one
//!   process-wide bcrypt slot, from start to end: a flood of credentials, known names or
//!   not, takes at most one core, and never the runtime thread.
//! - No password is kept. Verified credentials are remembered as a salted SHA-256 digest,
//!   so a scrape every 15 s costs one bcrypt check (~100 ms of CPU) per reload rather than
//!   per scrape.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use base64::engine::{GeneralPurpose, general_purpose};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// Verified credentials remembered per loaded web config; past this the memory is
/// cleared, so a client cycling through valid passwords cannot grow it without bound.
const MAX_VERIFIED: usize = 1024;

/// Cost of the stand-in hash when no configured hash states one (the cost
/// exporter-toolkit's docs suggest); validation refuses such configs, so this is a floor
/// for configs built in code.
const DEFAULT_COST: u32 = 10;

/// bcrypt checks run one at a time: each takes a core for ~100 ms or more, and a stream of
/// bad credentials must not starve polling on a small machine. Process-wide, so the
/// configs before and after a reload share it.
static BCRYPT_SLOTS: Semaphore = Semaphore::const_new(1);

/// bcrypt's own base64: its alphabet, no padding.
const BCRYPT_BASE64: GeneralPurpose =
    GeneralPurpose::new(&base64::alphabet::BCRYPT, general_purpose::NO_PAD);

/// Why credentials were refused: the `reason` label of
/// `calldrift_http_auth_failures_total`. Never carries the user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// A header that is not `Basic` and base64 of `user:password`.
    Malformed,
    /// A user name not in `basic_auth_users`.
    UnknownUser,
    /// A known user name with a wrong password.
    WrongPassword,
}

impl AuthFailure {
    /// Every reason, for metric series that exist before the first failure.
    pub const ALL: [AuthFailure; 4] = [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::UnknownUser,
        AuthFailure::WrongPassword,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::UnknownUser => "unknown_user",
            AuthFailure::WrongPassword => "wrong_password",
        }
    }
}

/// `basic_auth_users`, ready to check requests.
pub(super) struct BasicAuth {
    /// User name → bcrypt hash; empty means no authentication.
    users: BTreeMap<String, String>,
    /// Checked in place of a hash for unknown user names.
    stand_in: String,
    /// Salt of the digests in `verified`, fresh per loaded config.
    salt: [u8; 32],
    /// Digests of credentials that passed bcrypt.
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    /// Takes validated users; the stand-in hash is made here, once per loaded config.
    pub(super) fn new(users: BTreeMap<String, String>) -> Self {
        let stand_in = stand_in_hash(highest_cost(&users));
        BasicAuth {
            users,
            stand_in,
            salt: rand::random(),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// Whether no user is configured, so no authentication is asked for.
    pub(super) fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The configured user names.
    pub(super) fn user_names(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Checks an `Authorization` header value; the error says why it was refused.
    pub(super) async fn authorize(&self, header: Option<&[u8]>) -> Result<(), AuthFailure> {
        let header = header.ok_or(AuthFailure::Missing)?;
        let (user, password) = parse_basic(header).ok_or(AuthFailure::Malformed)?;
        let known = self.users.get(&user);
        // The hash is part of the key so an entry can only ever vouch for the hash it
        // was checked against.
        let key = self.digest(&user, known.map_or("", String::as_str), &password);
        if known.is_some() && self.lock_verified().contains(&key) {
            return Ok(());
        }
        // An unknown name pays, and waits for, a check of the same cost as a known one.
        let hash = known.unwrap_or(&self.stand_in).clone();
        let matched = verify_in_slot(password, hash).await;
        match (known, matched) {
            (None, _) => Err(AuthFailure::UnknownUser),
            (Some(_), false) => Err(AuthFailure::WrongPassword),
            (Some(_), true) => {
                let mut verified = self.lock_verified();
                if verified.len() >= MAX_VERIFIED {
                    verified.clear();
                }
                verified.insert(key);
                Ok(())
            }
        }
    }

    fn lock_verified(&self) -> MutexGuard<'_, HashSet<[u8; 32]>> {
        // A panic while holding the lock leaves a plain set behind; still usable.
        self.verified.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn digest(&self, user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
        let mut sha = Sha256::new();
        sha.update(self.salt);
        // Lengths first, so no two (user, hash, password) triples share an input.
        for part in [user.as_bytes(), hash.as_bytes(), password] {
            sha.update((part.len() as u64).to_be_bytes());
            sha.update(part);
        }
        sha.finalize().into()
    }
}

/// `bcrypt::verify` on the blocking pool, in the bcrypt slot. The blocking task owns the
/// slot, so a client that hangs up mid-check does not free it before the work ends.
async fn verify_in_slot(password: Vec<u8>, hash: String) -> bool {
    // The semaphore is never closed; refusing is the safe answer all the same.
    let Ok(slot) = BCRYPT_SLOTS.acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        bcrypt::verify(&password, &hash).unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// The highest cost among the hashes. With mixed costs no one stand-in matches every user;
/// the highest makes unknown names look like the most expensive users, never cheaper to
/// try than any real one (validation warns that the cheaper users stand out).
pub(super) fn highest_cost(users: &BTreeMap<String, String>) -> u32 {
    users
        .values()
        .filter_map(|hash| hash.parse::<bcrypt::HashParts>().ok())
        .map(|parts| parts.get_cost())
        // Costs bcrypt refuses to compute would make the stand-in fail at once.
        .filter(|cost| (4..=31).contains(cost))
        .max()
        .unwrap_or(DEFAULT_COST)
}

/// A hash in bcrypt's format with `cost` and a random salt and digest: checking a password
/// against it takes what checking a real hash of that cost does, and no password is known
/// to match it. Written out rather than computed, so making it costs no bcrypt work.
fn stand_in_hash(cost: u32) -> String {
    let salt: [u8; 16] = rand::random();
    let digest: [u8; 23] = rand::random();
    format!(
        "$2b${cost:02}${}{}",
        BCRYPT_BASE64.encode(salt),
        BCRYPT_BASE64.encode(digest)
    )
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(header: &[u8]) -> Option<(String, Vec<u8>)> {
    let text = std::str::from_utf8(header).ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    fn users(entries: &[(&str, String)]) -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|(user, hash)| ((*user).to_owned(), hash.clone()))
            .collect()
    }

    #[tokio::test]
    async fn authorize_checks_users_and_remembers_only_successes() {
        let hash = bcrypt::hash("right", 4).expect("bcrypt hash");
        let auth = BasicAuth::new(users(&[("alice", hash)]));
        assert_eq!(auth.authorize(None).await, Err(AuthFailure::Missing));
        for garbage in [
            &b"Bearer abc"[..],
            b"Basic !!!not-base64",
            b"Basic YWxpY2U=",
        ] {
            assert_eq!(
                auth.authorize(Some(garbage)).await,
                Err(AuthFailure::Malformed),
                "{garbage:?}"
            );
        }
        assert_eq!(
            auth.authorize(Some(&basic("alice", "wrong"))).await,
            Err(AuthFailure::WrongPassword)
        );
        assert_eq!(
            auth.authorize(Some(&basic("mallory", "right"))).await,
            Err(AuthFailure::UnknownUser)
        );
        assert!(auth.lock_verified().is_empty());
        assert_eq!(auth.authorize(Some(&basic("alice", "right"))).await, Ok(()));
        assert_eq!(
            auth.authorize(Some(b"basic YWxpY2U6cmlnaHQ=")).await,
            Ok(())
        );
        assert_eq!(auth.lock_verified().len(), 1);
        // The cache holds digests, never the password.
        let entry = *auth.lock_verified().iter().next().expect("one entry");
        assert!(!entry.windows(5).any(|w| w == b"right"));
    }

    #[test]
    fn the_stand_in_has_the_highest_configured_cost_and_is_checked_in_full() {
        let auth = BasicAuth::new(users(&[
            ("alice", bcrypt::hash("a", 4).expect("hash")),
            ("bob", bcrypt::hash("b", 6).expect("hash")),
        ]));
        let parts: bcrypt::HashParts = auth.stand_in.parse().expect("a bcrypt hash");
        assert_eq!(parts.get_cost(), 6);
        assert!(super::super::check_bcrypt(&auth.stand_in).is_ok());
        // Ok(false), not an error: an error would return before doing the work.
        assert!(matches!(bcrypt::verify("b", &auth.stand_in), Ok(false)));
        assert_eq!(highest_cost(&BTreeMap::new()), DEFAULT_COST);
        // Fresh per config, so no two loads share a stand-in.
        assert_ne!(BasicAuth::new(BTreeMap::new()).stand_in, auth.stand_in);
    }

    /// One bcrypt check of `hash` on the blocking pool, outside the slot: the scale the
    /// slot's holding times are compared with.
    async fn bare_check(hash: &str) -> Duration {
        let hash = hash.to_owned();
        let start = Instant::now();
        let checked = tokio::task::spawn_blocking(move || bcrypt::verify("wrong", &hash));
        assert!(matches!(checked.await, Ok(Ok(false))));
        start.elapsed()
    }

    /// How long one check of `header` keeps the bcrypt slot: the test holds the slot,
    /// queues the check behind it and a probe behind the check (the semaphore is FIFO),
    /// then measures from releasing the slot to the probe getting it.
    async fn time_in_slot(auth: &Arc<BasicAuth>, header: Vec<u8>) -> Duration {
        let held = BCRYPT_SLOTS.acquire().await.expect("slot");
        let check = tokio::spawn({
            let auth = auth.clone();
            async move { auth.authorize(Some(&header)).await }
        });
        // On this single-threaded runtime the check runs, and queues, while the test sleeps.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let probe = tokio::spawn(async {
            let _slot = BCRYPT_SLOTS.acquire().await.expect("slot");
            Instant::now()
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let released = Instant::now();
        drop(held);
        let got = probe.await.expect("probe");
        assert!(check.await.expect("check").is_err());
        got - released
    }

    /// How long the slot stays taken after the request checking `header` is dropped (its
    /// client hung up) a moment into its bcrypt check.
    async fn time_in_slot_after_hang_up(auth: &Arc<BasicAuth>, header: Vec<u8>) -> Duration {
        let held = BCRYPT_SLOTS.acquire().await.expect("slot");
        let check = tokio::spawn({
            let auth = auth.clone();
            async move { auth.authorize(Some(&header)).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The slot goes straight to the queued check, which then starts bcrypt.
        drop(held);
        tokio::time::sleep(Duration::from_millis(20)).await;
        check.abort();
        let hung_up = Instant::now();
        let _slot = BCRYPT_SLOTS.acquire().await.expect("slot");
        hung_up.elapsed()
    }

    #[tokio::test]
    async fn every_check_holds_the_bcrypt_slot_for_its_whole_run() {
        let hash = bcrypt::hash("right", 10).expect("bcrypt hash");
        let auth = Arc::new(BasicAuth::new(users(&[("alice", hash.clone())])));
        let (mut bare, mut known, mut unknown) = (Duration::MAX, Duration::MAX, Duration::MAX);
        // Interleaved, keeping each kind's fastest: other tests share the slot and the
        // cores, and can only make a measurement longer.
        for _ in 0..2 {
            bare = bare.min(bare_check(&hash).await);
            known = known.min(time_in_slot(&auth, basic("alice", "wrong")).await);
            unknown = unknown.min(time_in_slot(&auth, basic("mallory", "wrong")).await);
        }
        for (kind, held) in [("a known", known), ("an unknown", unknown)] {
            assert!(
                held >= bare / 2,
                "{kind} user held the slot {held:?}; one bcrypt check takes {bare:?}"
            );
        }
        // A client that hangs up mid-check does not free the slot for another check.
        let abandoned = time_in_slot_after_hang_up(&auth, basic("mallory", "wrong")).await;
        assert!(
            abandoned >= bare / 4,
            "the slot was free {abandoned:?} after a hang-up; one check takes {bare:?}"
        );
    }
}
