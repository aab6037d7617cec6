//! Arbitrary bytes as a `get_callback` answer body: decoding never panics, and every
//! result can be shown, classified and checked against the default expectation.
#![no_main]

use calldrift::drift::{self, Expected};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (result, _request_id) = calldrift::tencent::decode_get_callback(data);
    match result {
        Ok(observed) => {
            let _ = observed.fingerprint();
            let _ = observed.describe();
            for finding in drift::check(&Expected::default(), &observed) {
                let _ = finding.to_string();
            }
        }
        Err(e) => {
            let _ = (e.to_string(), e.reason(), e.class(), e.error_code());
        }
    }
});
