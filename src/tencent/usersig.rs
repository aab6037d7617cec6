//! UserSig (TLSSigAPIv2): minting, verification and a per-app cache.
//!
//! A UserSig is zlib-compressed JSON carrying an HMAC-SHA256 over four lines of text,
//! in a URL-safe Base64 variant. Official libraries differ in JSON spacing and zlib
//! level, so strings are not canonical: verification decodes and compares fields.

use std::fmt;
use std::io::Read;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::secret::SecretKey;

/// Largest decompressed UserSig we accept; real ones are ~200 bytes.
const MAX_DECODED_LEN: u64 = 64 * 1024;

/// A minted UserSig. A bearer credential, so it redacts itself like [`SecretKey`].
/// Shared, so the cache hands it to each request without a copy.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSig(Arc<str>);

impl UserSig {
    /// The string to put in the `usersig` query parameter.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserSig([REDACTED])")
    }
}

impl fmt::Display for UserSig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// The fields inside a UserSig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decoded {
    #[serde(rename = "TLS.ver")]
    pub version: String,
    #[serde(rename = "TLS.identifier")]
    pub identifier: String,
    #[serde(rename = "TLS.sdkappid")]
    pub sdkappid: u64,
    #[serde(rename = "TLS.expire")]
    pub expire: u64,
    #[serde(rename = "TLS.time")]
    pub time: u64,
    #[serde(rename = "TLS.sig")]
    pub sig: String,
}

/// Why a UserSig was refused; each maps to the gateway's ErrorCode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("UserSig is malformed: {0}")]
    Malformed(&'static str),
    #[error("UserSig was issued for another SDKAppID")]
    SdkAppIdMismatch,
    #[error("UserSig was issued for another identifier")]
    IdentifierMismatch,
    #[error("UserSig has expired")]
    Expired,
    #[error("UserSig signature does not match the key")]
    BadSignature,
}

impl VerifyError {
    /// The ErrorCode the REST gateway answers with for this failure.
    pub fn error_code(&self) -> i64 {
        match self {
            VerifyError::Malformed(_) => 70003,
            VerifyError::SdkAppIdMismatch => 70014,
            VerifyError::IdentifierMismatch => 70013,
            VerifyError::Expired => 70001,
            VerifyError::BadSignature => 70009,
        }
    }
}

/// The text whose HMAC is `TLS.sig`; every line ends in `\n`, the last one too.
pub fn content_to_sign(identifier: &str, sdkappid: u64, time: u64, expire: u64) -> String {
    format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    )
}

/// Standard Base64 of HMAC-SHA256 over [`content_to_sign`], keyed with the key's UTF-8 bytes.
pub fn signature(
    key: &SecretKey,
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
) -> String {
    STANDARD.encode(hmac_bytes(key, identifier, sdkappid, time, expire))
}

fn hmac_bytes(key: &SecretKey, identifier: &str, sdkappid: u64, time: u64, expire: u64) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(content_to_sign(identifier, sdkappid, time, expire).as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// Mints a UserSig valid from `time` (Unix seconds) for `expire` seconds.
pub fn mint(key: &SecretKey, sdkappid: u64, identifier: &str, time: u64, expire: u64) -> UserSig {
    let decoded = Decoded {
        version: "2.0".to_owned(),
        identifier: identifier.to_owned(),
        sdkappid,
        expire,
        time,
        sig: signature(key, identifier, sdkappid, time, expire),
    };
    // Serialising a struct of strings and integers into memory cannot fail.
    let json = serde_json::to_vec(&decoded).unwrap_or_default();
    UserSig(to_url_safe(&STANDARD.encode(zlib_stored(&json))).into())
}

/// zlib framing around stored (uncompressed) deflate blocks, the layout of Tencent's Go
/// library. A ~200-byte UserSig gains little from compression, and a deflate compressor
/// zeroes hundreds of KiB of state per call: with 10,000 apps that was seconds of CPU.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    const MAX_BLOCK: usize = 65_535;
    let mut out = Vec::with_capacity(data.len() + 16);
    // CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (no dictionary, level 0; 0x7801 % 31 == 0).
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = data.chunks(MAX_BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[0x01, 0x00, 0x00, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let last = u8::from(blocks.peek().is_none());
        let len = block.len() as u16;
        out.push(last);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for byte in chunk {
            a += u32::from(*byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

fn to_url_safe(b64: &str) -> String {
    b64.chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            other => other,
        })
        .collect()
}

fn from_url_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            other => other,
        })
        .collect()
}

/// Decodes a UserSig without checking it: Base64 variant, zlib, JSON.
pub fn decode(usersig: &str) -> Result<Decoded, VerifyError> {
    let compressed = STANDARD
        .decode(from_url_safe(usersig.trim()))
        .map_err(|_| VerifyError::Malformed("not base64"))?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(compressed.as_slice())
        .take(MAX_DECODED_LEN + 1)
        .read_to_end(&mut json)
        .map_err(|_| VerifyError::Malformed("not zlib"))?;
    if json.len() as u64 > MAX_DECODED_LEN {
        return Err(VerifyError::Malformed("too large"));
    }
    let decoded: Decoded = serde_json::from_slice(&json)
        .map_err(|_| VerifyError::Malformed("not the expected JSON"))?;
    if decoded.version != "2.0" {
        return Err(VerifyError::Malformed("unsupported TLS.ver"));
    }
    Ok(decoded)
}

/// Verifies a UserSig the way the gateway does, at Unix time `now`.
pub fn verify(
    key: &SecretKey,
    usersig: &str,
    sdkappid: u64,
    identifier: &str,
    now: u64,
) -> Result<Decoded, VerifyError> {
    let decoded = decode(usersig)?;
    if decoded.sdkappid != sdkappid {
        return Err(VerifyError::SdkAppIdMismatch);
    }
    if decoded.identifier != identifier {
        return Err(VerifyError::IdentifierMismatch);
    }
    if now > decoded.time.saturating_add(decoded.expire) {
        return Err(VerifyError::Expired);
    }
    let given = STANDARD
        .decode(&decoded.sig)
        .map_err(|_| VerifyError::Malformed("TLS.sig is not base64"))?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(
        content_to_sign(
            &decoded.identifier,
            decoded.sdkappid,
            decoded.time,
            decoded.expire,
        )
        .as_bytes(),
    );
    // verify_slice compares in constant time.
    mac.verify_slice(&given)
        .map_err(|_| VerifyError::BadSignature)?;
    Ok(decoded)
}

/// One app's current UserSig, re-minted at 80 % of its lifetime or on demand.
#[derive(Debug)]
pub struct UserSigCache {
    key: SecretKey,
    sdkappid: u64,
    identifier: String,
    ttl_secs: u64,
    current: Mutex<Option<(UserSig, u64)>>,
}

impl UserSigCache {
    pub fn new(key: SecretKey, sdkappid: u64, identifier: String, ttl_secs: u64) -> Self {
        Self {
            key,
            sdkappid,
            identifier,
            ttl_secs: ttl_secs.max(1),
            current: Mutex::new(None),
        }
    }

    /// The cached UserSig, minted anew at `now` when none is cached or 80 % of its TTL has passed.
    pub fn get(&self, now: u64) -> UserSig {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // 4/5 of the TTL, rounded down as `ttl * 4 / 5` would be, without its overflow.
        let renew_after = self.ttl_secs / 5 * 4 + self.ttl_secs % 5 * 4 / 5;
        match &*current {
            Some((sig, minted)) if now >= *minted && now - minted < renew_after => sig.clone(),
            _ => {
                let sig = mint(
                    &self.key,
                    self.sdkappid,
                    &self.identifier,
                    now,
                    self.ttl_secs,
                );
                *current = Some((sig.clone(), now));
                sig
            }
        }
    }

    /// Forgets the cached UserSig, after the gateway said it expired (70001, 70052).
    pub fn invalidate(&self) {
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Vectors {
        sdkappid: u64,
        key: String,
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        name: String,
        identifier: String,
        expire: u64,
        time: u64,
        content_to_sign: String,
        tls_sig_b64: String,
        decoded_json: String,
        usersig: String,
        usersig_go_layout: Option<String>,
    }

    fn vectors() -> Vectors {
        let text = include_str!("../../tests/data/usersig-vectors.json");
        serde_json::from_str(text).expect("vectors parse")
    }

    #[test]
    fn signer_matches_official_vectors() {
        let all = vectors();
        let key = SecretKey::new(all.key.clone());
        for v in &all.vectors {
            assert_eq!(
                content_to_sign(&v.identifier, all.sdkappid, v.time, v.expire),
                v.content_to_sign,
                "{}",
                v.name
            );
            assert_eq!(
                signature(&key, &v.identifier, all.sdkappid, v.time, v.expire),
                v.tls_sig_b64,
                "{}",
                v.name
            );
            let ours = decode(mint(&key, all.sdkappid, &v.identifier, v.time, v.expire).expose())
                .expect("own sig decodes");
            let theirs: Decoded =
                serde_json::from_str(&v.decoded_json).expect("decoded_json parses");
            assert_eq!(ours, theirs, "{}", v.name);
        }
    }

    #[test]
    fn verifier_accepts_python_and_go_layouts_and_rejects_tampering() {
        let all = vectors();
        let key = SecretKey::new(all.key.clone());
        let wrong_key = SecretKey::new("0".repeat(64));
        let mut checked_go = 0;
        for v in &all.vectors {
            let now = v.time + 1;
            let strings = std::iter::once(&v.usersig).chain(v.usersig_go_layout.iter());
            for s in strings {
                let decoded = verify(&key, s, all.sdkappid, &v.identifier, now).expect(&v.name);
                assert_eq!(decoded.sig, v.tls_sig_b64);
                assert_eq!(
                    verify(&wrong_key, s, all.sdkappid, &v.identifier, now),
                    Err(VerifyError::BadSignature)
                );
                assert_eq!(
                    verify(&key, s, all.sdkappid, &v.identifier, v.time + v.expire + 1),
                    Err(VerifyError::Expired)
                );
                assert!(
                    verify(&key, s, all.sdkappid, &v.identifier, v.time + v.expire).is_ok(),
                    "valid through its last second"
                );
                assert_eq!(
                    verify(&key, s, all.sdkappid, "someone-else", now),
                    Err(VerifyError::IdentifierMismatch)
                );
                assert_eq!(
                    verify(&key, s, all.sdkappid + 1, &v.identifier, now),
                    Err(VerifyError::SdkAppIdMismatch)
                );
            }
            checked_go += usize::from(v.usersig_go_layout.is_some());
        }
        assert!(checked_go >= 1, "the Go layout vector was exercised");
    }

    #[test]
    fn stored_zlib_is_read_by_a_real_zlib_decoder() {
        for len in [0usize, 1, 200, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut back = Vec::new();
            flate2::read::ZlibDecoder::new(zlib_stored(&data).as_slice())
                .read_to_end(&mut back)
                .expect("valid zlib");
            assert_eq!(back, data, "length {len}");
        }
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let key = SecretKey::new("k");
        for junk in ["", "%%%", "eJyr", "aGVsbG8_", &"A".repeat(10_000)] {
            assert!(
                matches!(
                    verify(&key, junk, 1, "a", 0),
                    Err(VerifyError::Malformed(_))
                ),
                "{junk}"
            );
        }
    }

    #[test]
    fn secrets_redact_themselves() {
        let key = SecretKey::new("supersecret");
        let sig = mint(&key, 1, "admin", 0, 10);
        for shown in [
            format!("{key:?}"),
            format!("{key}"),
            format!("{sig:?}"),
            format!("{sig}"),
        ] {
            assert!(
                !shown.contains("supersecret") && !shown.contains(sig.expose()),
                "{shown}"
            );
        }
    }

    #[test]
    fn cache_renews_at_eighty_percent_of_ttl_and_on_invalidate() {
        let cache = UserSigCache::new(SecretKey::new("k"), 1, "admin".into(), 100);
        let first = cache.get(1000);
        assert_eq!(cache.get(1079), first);
        let renewed = cache.get(1080);
        assert_ne!(renewed, first);
        assert_eq!(decode(renewed.expose()).unwrap().time, 1080);
        cache.invalidate();
        assert_eq!(decode(cache.get(1081).expose()).unwrap().time, 1081);
        for (ttl, last_cached) in [(7, 1004), (9, 1006)] {
            let cache = UserSigCache::new(SecretKey::new("k"), 1, "admin".into(), ttl);
            let first = cache.get(1000);
            assert_eq!(cache.get(last_cached), first, "ttl {ttl}");
            assert_ne!(cache.get(last_cached + 1), first, "ttl {ttl}");
        }
    }

    #[test]
    fn an_absurd_ttl_or_clock_does_not_panic() {
        for ttl in [u64::MAX, u64::MAX - 1, 180 * 86_400] {
            let cache = UserSigCache::new(SecretKey::new("k"), 1, "admin".into(), ttl);
            let first = cache.get(u64::MAX);
            assert_eq!(cache.get(u64::MAX), first);
            let decoded = decode(first.expose()).expect("decodes");
            assert_eq!((decoded.time, decoded.expire), (u64::MAX, ttl));
            assert!(verify(&SecretKey::new("k"), first.expose(), 1, "admin", u64::MAX).is_ok());
            // A clock that went back mints anew rather than trusting the cached one.
            assert_ne!(cache.get(0), first);
        }
    }
}
