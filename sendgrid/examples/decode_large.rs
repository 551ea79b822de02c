//! Decode time and peak memory for the largest inbound posts Mailroom supports (SendGrid caps
//! an email at 30 MB): a parsed-mode post with a 20 MiB attachment, and a raw-mode post whose
//! MIME carries the same attachment as base64. Prints one line per case; BENCHMARKS.md quotes it.
//!
//!   cargo run --release -p mailroom-sendgrid --example decode_large

use std::time::Instant;

use base64::Engine;

fn peak_rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
        })
        .unwrap_or(0)
        / 1024
}

fn attachment(bytes: usize) -> Vec<u8> {
    // Incompressible-looking bytes, deterministic.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn parsed_post(data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(data.len() + 4096);
    for (name, value) in [
        ("from", "Ada <ada@example.com>"),
        ("to", "inbound@example.com"),
        ("subject", "Large attachment"),
        ("text", "See the attached file."),
        ("attachments", "1"),
    ] {
        body.extend_from_slice(
            format!(
                "--xYzZY\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(
        b"--xYzZY\r\nContent-Disposition: form-data; name=\"attachment1\"; filename=\"big.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n",
    );
    body.extend_from_slice(data);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    body
}

fn raw_post(data: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut mime = String::with_capacity(b64.len() + b64.len() / 76 * 2 + 4096);
    mime.push_str(
        "From: Ada <ada@example.com>\r\nTo: inbound@example.com\r\nSubject: Large attachment\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
         Content-Type: text/plain\r\n\r\nSee the attached file.\r\n--b1\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"big.bin\"\r\n\r\n",
    );
    for line in b64.as_bytes().chunks(76) {
        mime.push_str(std::str::from_utf8(line).unwrap_or_default());
        mime.push_str("\r\n");
    }
    mime.push_str("--b1--\r\n");
    let mut body = Vec::with_capacity(mime.len() + 1024);
    body.extend_from_slice(
        b"--xYzZY\r\nContent-Disposition: form-data; name=\"to\"\r\n\r\ninbound@example.com\r\n--xYzZY\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n",
    );
    body.extend_from_slice(mime.as_bytes());
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    body
}

fn main() {
    let Some(mode) = std::env::args().nth(1) else {
        // One process per case, so each peak RSS is its own.
        let me = std::env::current_exe().expect("own path");
        for mode in ["parsed", "raw"] {
            let status = std::process::Command::new(&me).arg(mode).status();
            assert!(status.is_ok_and(|s| s.success()), "{mode} case failed");
        }
        return;
    };
    let data = attachment(20 * 1024 * 1024);
    let post = if mode == "raw" {
        raw_post(&data)
    } else {
        parsed_post(&data)
    };
    let before = peak_rss_mib();
    let started = Instant::now();
    let email = mailroom_sendgrid::parse_inbound("multipart/form-data; boundary=xYzZY", &post)
        .expect("decodes");
    let took = started.elapsed();
    let ok = email.attachments.first().is_some_and(|a| a.data == data);
    println!(
        "{mode:>6} mode: {:.1} MiB post, 20 MiB attachment: decoded in {:.0} ms, attachment \
         byte-exact: {ok}, peak RSS {} MiB ({before} MiB with the post and the expected bytes \
         built, before decoding)",
        post.len() as f64 / 1048576.0,
        took.as_secs_f64() * 1000.0,
        peak_rss_mib()
    );
}
