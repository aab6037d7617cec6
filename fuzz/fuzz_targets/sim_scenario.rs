//! Arbitrary UTF-8 into `sim::Scenario::from_yaml_str`: Ok or Err, never a panic; an
//! accepted scenario validates and its errors display.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match calldrift::sim::Scenario::from_yaml_str(text, "fuzz.yaml") {
        Ok(scenario) => assert!(scenario.validate().is_ok()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
