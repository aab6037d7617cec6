//! Arbitrary strings as a UserSig, verified with the key and SDKAppID of
//! tests/data/usersig-vectors.json (seeds in fuzz/seeds/usersig_verify are its real
//! UserSigs, so mutations reach zlib, JSON and the HMAC check). Never panics; anything
//! accepted must carry the identifier and SDKAppID it was verified for.
#![no_main]

use calldrift::tencent::usersig::{self, SecretKey};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";
const SDKAPPID: u64 = 1_400_000_000;
/// The vectors' `time` plus one, so the real ones are not expired.
const NOW: u64 = 1_700_000_001;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = usersig::decode(text);
    let key = SecretKey::new(KEY);
    for identifier in ["administrator", "ops-bot", ""] {
        if let Ok(decoded) = usersig::verify(&key, text, SDKAPPID, identifier, NOW) {
            assert_eq!(decoded.identifier, identifier);
            assert_eq!(decoded.sdkappid, SDKAPPID);
            assert_eq!(decoded.version, "2.0");
        }
    }
});
