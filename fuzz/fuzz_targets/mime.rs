//! Raw-mode Inbound Parse: the input is the full MIME message, wrapped in an `email` field.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut body = b"--xYzZY\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n".to_vec();
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    let _ = mailroom_sendgrid::parse_inbound("multipart/form-data; boundary=xYzZY", &body);
});
