//! Event Webhook bodies through `parse_events`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = mailroom_sendgrid::parse_events(data) {
        for e in events {
            assert!(!e.sg_event_id.is_empty());
        }
    }
});
