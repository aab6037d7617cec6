//! Arbitrary UTF-8 into `config::parse`: it must return Ok or Err, never panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match calldrift::config::parse(text, "fuzz.yaml", Path::new("/nonexistent")) {
        Ok((config, warnings)) => {
            let _ = config.effective_interval();
            let _ = config.target_count();
            for w in warnings {
                let _ = w.to_string();
            }
        }
        Err(e) => {
            let _ = e.diagnostics();
        }
    }
});
