//! API Gateway's Java-map header text through `parse_java_map`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(pairs) = mailroom_envelope::parse_java_map(&text) {
        for (name, _) in pairs {
            assert!(!name.is_empty());
            assert_eq!(name, name.to_ascii_lowercase());
        }
    }
});
