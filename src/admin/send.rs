//! `mailroom send`: put a captured SendGrid POST body on a queue in the router's envelope, as
//! the router would, to test a worker end to end without SendGrid or API Gateway.

use anyhow::{Context, Result};
use chrono::Utc;
use mailroom_envelope::{Envelope, Kind, Origin, Source, ENVELOPE_VERSION};

use super::{Ctx, SendArgs};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KindArg {
    /// An Event Webhook batch (JSON array).
    Events,
    /// An Inbound Parse post (multipart/form-data).
    Inbound,
}

/// The envelope for a captured body.
pub fn envelope(kind: KindArg, body: Vec<u8>, content_type: Option<String>) -> Envelope {
    let (kind, path) = match kind {
        KindArg::Events => (Kind::Events, "/sendgrid/events"),
        KindArg::Inbound => (Kind::Inbound, "/sendgrid/inbound"),
    };
    let content_type = content_type.or_else(|| match kind {
        Kind::Events => Some("application/json".into()),
        Kind::Inbound => {
            multipart_boundary(&body).map(|b| format!("multipart/form-data; boundary={b}"))
        }
        Kind::Message => None,
    });
    let mut headers = Vec::new();
    if let Some(ct) = &content_type {
        headers.push(("content-type".to_string(), ct.clone()));
    }
    Envelope {
        origin: Origin::Router {
            version: ENVELOPE_VERSION,
        },
        kind,
        received_at: Some(Utc::now()),
        source: Some(Source {
            path: path.into(),
            stage: None,
            request_id: Some(format!("mailroom-send-{}", std::process::id())),
            webhook: None,
        }),
        headers,
        content_type,
        body: body.into(),
        queue_url: None,
    }
}

/// The boundary of a multipart body: its first line is `--boundary`.
fn multipart_boundary(body: &[u8]) -> Option<String> {
    let line = body.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let boundary = line.strip_prefix("--")?;
    (!boundary.is_empty()).then(|| boundary.to_string())
}

pub async fn send(ctx: &Ctx, args: &SendArgs) -> Result<()> {
    let body =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let bytes = body.len();
    let wire = mailroom_envelope::encode(&envelope(args.kind, body, args.content_type.clone()));
    let url = ctx.queue_url(&args.queue).await?;
    let out = ctx
        .sqs
        .send_message()
        .queue_url(&url)
        .message_body(wire)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!(crate::sqs::describe(&e)))
        .with_context(|| format!("SendMessage to \"{}\"", args.queue))?;
    println!(
        "sent {} ({bytes} bytes) to \"{}\" as message {}",
        args.file.display(),
        args.queue,
        out.message_id.unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_boundary_comes_from_the_first_line() {
        let e = envelope(
            KindArg::Inbound,
            b"--xYzZY\r\nContent-Disposition: form-data; name=\"to\"\r\n".to_vec(),
            None,
        );
        assert_eq!(
            e.content_type.as_deref(),
            Some("multipart/form-data; boundary=xYzZY")
        );
        let e = envelope(KindArg::Events, b"[]".to_vec(), None);
        assert_eq!(e.content_type.as_deref(), Some("application/json"));
    }
}
