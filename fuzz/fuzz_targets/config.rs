//! The config file parser: any text gives a config or an error naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use touchwire::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/project/.touchwire.json");
    match Config::from_file_text(text, path) {
        Ok(config) => {
            assert!(!config.targets.value.is_empty(), "a config without targets: {text:?}");
            if let Some(name) = &config.default_target.value {
                assert!(config.targets.value.contains_key(name));
            }
        }
        Err(err) => assert!(err.0.contains("/project/.touchwire.json"), "error does not name the file: {}", err.0),
    }
});
