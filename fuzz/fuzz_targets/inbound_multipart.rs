//! Inbound Parse posts through `parse_inbound`: the first line of the input is the
//! Content-Type, the rest the body; a fixed form-data content type is tried too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ct, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (String::from_utf8_lossy(&data[..i]).into_owned(), &data[i + 1..]),
        None => (String::new(), data),
    };
    let _ = mailroom_sendgrid::parse_inbound(&ct, body);
    let _ = mailroom_sendgrid::parse_inbound("multipart/form-data; boundary=xYzZY", data);
});
