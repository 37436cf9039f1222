//! Arbitrary bytes as config.json: parsing and validation must return a
//! `Config` or a `ConfigError` whose message is one line, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match bbproxy_config::parse(text, std::path::Path::new("fuzz/config.json")) {
        Ok(config) => {
            // A config that parses is usable: every domain has backends.
            assert!(config.domains.iter().all(|d| !d.backends.is_empty()));
        }
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty());
            assert!(!message.contains('\n'), "multi-line error: {message}");
        }
    }
});
