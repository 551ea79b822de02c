//! Large Inbound Parse posts for the streaming tests (the router's `serve_large` and the root
//! crate's `e2e_large_inbound`, which includes this file): a multipart/form-data body like
//! SendGrid's parsed mode with a large attachment of pseudo-random bytes, and a raw HTTP/1.1
//! client that can send a body in pieces, chunked, or stop halfway.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const BOUNDARY: &str = "xYzZY-mailroom-large-7f3a9c";

/// A post and the attachment inside it.
pub struct LargePost {
    pub body: Vec<u8>,
    pub attachment: Vec<u8>,
    pub attachment_name: &'static str,
}

impl LargePost {
    pub fn content_type() -> String {
        format!("multipart/form-data; boundary={BOUNDARY}")
    }
}

/// Bytes that do not compress and hold every value (xorshift64*, seeded, so a failure can be
/// reproduced).
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        out.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A parsed-mode Inbound Parse post of exactly `total` bytes: the usual fields, one attachment
/// of `attachment_len` pseudo-random bytes, and an `html` field padding it to size.
pub fn large_post(total: usize, attachment_len: usize, seed: u64) -> LargePost {
    let attachment = pseudo_random(attachment_len, seed);
    let attachment_name = "scan.bin";
    let field = |name: &str, value: &str| {
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        )
    };
    let mut head = String::new();
    head += &field("from", "Alice <alice@example.com>");
    head += &field("to", "inbound@parse.example.com");
    head += &field("subject", "A large attachment");
    head += &field("text", "See the attached scan.");
    head += &field("attachments", "1");
    head += &field(
        "attachment-info",
        &format!(
            "{{\"attachment1\":{{\"filename\":\"{attachment_name}\",\"name\":\"{attachment_name}\",\"type\":\"application/octet-stream\"}}}}"
        ),
    );
    let html_head =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"html\"\r\n\r\n<p>");
    let html_tail = "</p>\r\n";
    let file_head = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"attachment1\"; filename=\"{attachment_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let file_tail = format!("\r\n--{BOUNDARY}--\r\n");
    let fixed = head.len()
        + html_head.len()
        + html_tail.len()
        + file_head.len()
        + attachment.len()
        + file_tail.len();
    assert!(fixed <= total, "{total} bytes cannot hold the attachment");
    let mut body = Vec::with_capacity(total);
    body.extend_from_slice(head.as_bytes());
    body.extend_from_slice(html_head.as_bytes());
    body.resize(body.len() + (total - fixed), b'x');
    body.extend_from_slice(html_tail.as_bytes());
    body.extend_from_slice(file_head.as_bytes());
    body.extend_from_slice(&attachment);
    body.extend_from_slice(file_tail.as_bytes());
    assert_eq!(body.len(), total);
    LargePost {
        body,
        attachment,
        attachment_name,
    }
}

/// The status code and body of an HTTP/1.1 response read to its end.
fn parse_response(response: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn request_head(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head + "\r\n"
}

/// Reads the response while a task writes the request: a server that answers before taking
/// the whole body (a refusal) is read, not mistaken for a broken connection.
async fn exchange(stream: TcpStream, head: String, body: Vec<Vec<u8>>) -> (u16, String) {
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        writer.write_all(head.as_bytes()).await?;
        for piece in body {
            writer.write_all(&piece).await?;
        }
        writer.flush().await?;
        // Keep the write half open until the answer is read (dropping it would half-close).
        Ok::<_, std::io::Error>(writer)
    });
    let mut response = Vec::new();
    // The router answers within its own timeouts; this bound only keeps a broken test from
    // hanging.
    let read = tokio::time::timeout(Duration::from_secs(120), reader.read_to_end(&mut response));
    let outcome = match read.await {
        Ok(Ok(_)) => parse_response(&response),
        Ok(Err(e)) if !response.is_empty() => {
            eprintln!("read ended with {e}");
            parse_response(&response)
        }
        Ok(Err(e)) => panic!("reading the response failed: {e}"),
        Err(_) => panic!("no response within 120 s"),
    };
    if let Ok(Err(e)) = write.await {
        eprintln!("the server stopped reading the body: {e}");
    }
    outcome
}

/// POSTs `body` with a Content-Length; returns the status and response body.
pub async fn post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("Content-Length", &length));
    let stream = TcpStream::connect(addr).await.expect("connect to serve");
    exchange(stream, request_head(addr, path, &all), vec![body.to_vec()]).await
}

/// POSTs `body` chunked (no Content-Length), in chunks of `chunk` bytes.
pub async fn post_chunked(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    chunk: usize,
) -> (u16, String) {
    let mut all = headers.to_vec();
    all.push(("Transfer-Encoding", "chunked"));
    let mut pieces: Vec<Vec<u8>> = body
        .chunks(chunk)
        .map(|piece| {
            let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
            framed.extend_from_slice(piece);
            framed.extend_from_slice(b"\r\n");
            framed
        })
        .collect();
    pieces.push(b"0\r\n\r\n".to_vec());
    let stream = TcpStream::connect(addr).await.expect("connect to serve");
    exchange(stream, request_head(addr, path, &all), pieces).await
}

/// Starts a POST declaring `declared` bytes, sends the first `sent` of `body`, and returns the
/// open connection (drop it to disconnect mid-upload).
pub async fn start_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    sent: usize,
) -> TcpStream {
    let length = body.len().to_string();
    let mut all = headers.to_vec();
    all.push(("Content-Length", &length));
    let mut stream = TcpStream::connect(addr).await.expect("connect to serve");
    stream
        .write_all(request_head(addr, path, &all).as_bytes())
        .await
        .expect("write head");
    stream.write_all(&body[..sent]).await.expect("write body");
    stream.flush().await.expect("flush");
    stream
}
