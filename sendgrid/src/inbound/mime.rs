//! Raw mode: the full MIME message, read as a mail client reads it. No email is refused for
//! one bad part or one bad header line: a part whose transfer encoding is broken keeps what
//! could be decoded (or its bytes as sent) with a note, a line that is not a header is skipped,
//! a missing closing boundary ends the part at the end of the message. Only a message with no
//! header field at all, one nested deeper than [`MAX_MIME_DEPTH`] or one with more than
//! [`MAX_MIME_PARTS`] parts is refused.
//!
//! Why our own MIME splitter rather than `mailparse::parse_mail`: mailparse refuses a whole
//! message for one undecodable base64 part or one odd header line, and recurses once per
//! nested multipart while parsing, so a deeply nested message overflows a small stack before
//! any depth check can run. Here the tree is built iteratively (a work list, no recursion),
//! the depth is checked before a level is split, and the walks that pick the body recurse at
//! most [`MAX_MIME_DEPTH`] levels. Header fields, encoded words and parameters are in
//! `header`, transfer encodings in `transfer`.
//!
//! Which part is what follows mail clients:
//! - `multipart/alternative`: the last alternative that has a text/plain body gives `text`, the
//!   last with a text/html body gives `html`; the text bodies of the other alternatives are
//!   other renderings of the same message and are dropped (they stay in `raw_mime`); their
//!   other parts are kept as attachments.
//! - `multipart/related`: the root (the `start` parameter's Content-ID, else the first part)
//!   holds the body; every other part is an attachment, `inline` unless it says otherwise.
//! - `message/rfc822`: an attached email is one attachment of that type (its bytes as sent);
//!   its own text is not merged into the outer body.
//! - elsewhere the first text/plain and the first text/html that are not attachments (no
//!   `attachment` disposition, no file name) are the bodies; every other leaf is an attachment.

use bytes::Bytes;

use super::header::{self, line_at, BlockEnd, HeaderBlock, Params, Quoting};
use super::transfer;
use super::InboundError;
use crate::Attachment;

/// Deepest multipart nesting accepted. Mail clients stop around here too (Thunderbird at 100
/// levels, Python's `email` has no limit but recurses); 32 levels of real mail do not occur.
pub const MAX_MIME_DEPTH: usize = 32;
/// Most MIME parts accepted in one message.
pub const MAX_MIME_PARTS: usize = 1000;

/// What the raw MIME message holds.
#[derive(Debug, Default)]
pub(crate) struct MimeContent {
    pub headers: String,
    pub message_id: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub cc: Option<String>,
    pub subject: Option<String>,
    pub text: Option<String>,
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
}

fn mime_err(e: impl std::fmt::Display) -> InboundError {
    InboundError::Mime(e.to_string())
}

/// One MIME part of the tree.
#[derive(Debug)]
struct Node<'a> {
    head: HeaderBlock<'a>,
    /// `type/subtype`, lower-case.
    ctype: String,
    params: Params,
    children: Vec<usize>,
    depth: usize,
}

impl<'a> Node<'a> {
    fn new(head: HeaderBlock<'a>, depth: usize, default_type: &str) -> Self {
        let params = head
            .get("Content-Type")
            .map(|v| header::parse_params(v, Quoting::Mime))
            .unwrap_or_default();
        // A missing or malformed type reads as the default (RFC 2045), as mail clients do.
        let valid = params
            .main
            .split_once('/')
            .is_some_and(|(t, s)| !t.is_empty() && !s.is_empty() && !params.main.contains(' '));
        let ctype = if valid {
            params.main.clone()
        } else {
            default_type.to_string()
        };
        Node {
            head,
            ctype,
            params,
            children: Vec::new(),
            depth,
        }
    }

    fn is_multipart(&self) -> bool {
        !self.children.is_empty()
    }

    fn disposition(&self) -> Params {
        self.head
            .get("Content-Disposition")
            .map(|v| header::parse_params(v, Quoting::Mime))
            .unwrap_or_default()
    }

    fn filename(&self, disposition: &Params) -> Option<String> {
        disposition
            .get("filename")
            .or_else(|| self.params.get("name"))
            .map(str::to_string)
    }

    fn content_id(&self) -> Option<String> {
        self.head.text("Content-ID").map(|v| strip_angles(&v))
    }

    /// A text/plain or text/html leaf that is a body, not an attachment.
    fn body_candidate(&self) -> bool {
        let d = self.disposition();
        !self.is_multipart()
            && (self.ctype == "text/plain" || self.ctype == "text/html")
            && d.main != "attachment"
            && self.filename(&d).is_none()
    }
}

/// `<id@host>` -> `id@host`, as `cid:` URLs name it.
fn strip_angles(v: &str) -> String {
    let v = v.trim();
    let v = v.strip_prefix('<').unwrap_or(v);
    v.strip_suffix('>').unwrap_or(v).trim().to_string()
}

/// The parts of a multipart body: between lines that are exactly `--boundary` (trailing
/// whitespace allowed), up to `--boundary--` or the end of the body. The line break before a
/// delimiter belongs to the delimiter. Stops after `limit` parts.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8], limit: usize) -> Vec<&'a [u8]> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() && parts.len() <= limit {
        let (line, next) = line_at(body, pos);
        if let Some(rest) = line.strip_prefix(delim.as_slice()) {
            let (close, rest) = match rest.strip_prefix(b"--") {
                Some(r) => (true, r),
                None => (false, rest),
            };
            if rest.iter().all(|&b| b == b' ' || b == b'\t') {
                if let Some(s) = start {
                    let mut end = pos;
                    if end > s && body.get(end - 1) == Some(&b'\n') {
                        end -= 1;
                        if end > s && body.get(end - 1) == Some(&b'\r') {
                            end -= 1;
                        }
                    }
                    parts.push(body.get(s..end).unwrap_or_default());
                }
                if close {
                    return parts;
                }
                start = Some(next);
            }
        }
        pos = next;
    }
    // No closing delimiter: the last part runs to the end (as every mail client reads it).
    if let Some(s) = start {
        if parts.len() <= limit {
            parts.push(body.get(s..).unwrap_or_default());
        }
    }
    parts
}

/// The MIME tree, breadth first, without recursion: nodes[0] is the message.
fn build_tree(root: HeaderBlock<'_>) -> Result<Vec<Node<'_>>, InboundError> {
    let mut nodes = vec![Node::new(root, 0, "text/plain")];
    let mut i = 0;
    while i < nodes.len() {
        let node = &nodes[i];
        let boundary = node
            .params
            .get("boundary")
            .filter(|b| !b.is_empty())
            .map(|b| b.as_bytes().to_vec());
        if let (true, Some(boundary)) = (node.ctype.starts_with("multipart/"), boundary) {
            let depth = node.depth + 1;
            let default_type = if node.ctype == "multipart/digest" {
                "message/rfc822"
            } else {
                "text/plain"
            };
            let room = MAX_MIME_PARTS.saturating_sub(nodes.len());
            let bodies = split_multipart(node.head.body, &boundary, room);
            if !bodies.is_empty() && depth > MAX_MIME_DEPTH {
                return Err(mime_err(format!(
                    "nested deeper than {MAX_MIME_DEPTH} levels"
                )));
            }
            if bodies.len() > room {
                // Each part starts at a boundary line; the wording is what operators grep for.
                return Err(mime_err(format!(
                    "more than {MAX_MIME_PARTS} parts (counted by boundary lines)"
                )));
            }
            let first = nodes.len();
            for b in bodies {
                nodes.push(Node::new(
                    header::split_header_block(b, BlockEnd::Lenient),
                    depth,
                    default_type,
                ));
            }
            let last = nodes.len();
            nodes[i].children = (first..last).collect();
        }
        i += 1;
    }
    Ok(nodes)
}

/// Parses a full MIME message.
pub(crate) fn parse_mime(raw: &Bytes) -> Result<MimeContent, InboundError> {
    let root = header::split_header_block(raw, BlockEnd::Lenient);
    if root.fields.is_empty() {
        return Err(mime_err("no header fields"));
    }
    let mut out = MimeContent {
        headers: String::from_utf8_lossy(root.raw)
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        message_id: root.text("Message-ID"),
        from: root.text("From"),
        to: root.text("To"),
        cc: root.text("Cc"),
        subject: root.text("Subject"),
        ..MimeContent::default()
    };
    let nodes = build_tree(root)?;
    Walker {
        raw,
        nodes: &nodes,
        out: &mut out,
    }
    .visit(0, Ctx::Body);
    Ok(out)
}

/// Where a part sits, for what it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// It may be the body.
    Body,
    /// A losing alternative: its text bodies are dropped, its other parts kept.
    OtherAlternative,
    /// A non-root part of multipart/related: an attachment, inline by default.
    Related,
}

struct Walker<'n, 'a> {
    /// The message, so a part kept as sent is a slice of it rather than a copy.
    raw: &'n Bytes,
    nodes: &'n [Node<'a>],
    out: &'n mut MimeContent,
}

impl Walker<'_, '_> {
    /// Does the part at `i` hold a body of type `kind` (as the body walk would find it)?
    /// Recurses at most the tree's depth, which is bounded by [`MAX_MIME_DEPTH`].
    fn provides(&self, i: usize, kind: &str) -> bool {
        let Some(node) = self.nodes.get(i) else {
            return false;
        };
        if !node.is_multipart() {
            return node.ctype == kind && node.body_candidate();
        }
        match node.ctype.as_str() {
            "multipart/related" => self
                .related_root(node)
                .is_some_and(|r| self.provides(r, kind)),
            _ => node.children.iter().any(|&c| self.provides(c, kind)),
        }
    }

    fn related_root(&self, node: &Node<'_>) -> Option<usize> {
        let start = node.params.get("start").map(strip_angles);
        start
            .and_then(|s| {
                node.children.iter().copied().find(|&c| {
                    self.nodes.get(c).and_then(Node::content_id).as_deref() == Some(s.as_str())
                })
            })
            .or_else(|| node.children.first().copied())
    }

    fn visit(&mut self, i: usize, ctx: Ctx) {
        let Some(node) = self.nodes.get(i) else {
            return;
        };
        if !node.is_multipart() {
            self.leaf(node, ctx);
            return;
        }
        let children = node.children.clone();
        match node.ctype.as_str() {
            "multipart/alternative" => {
                let last = |kind: &str| {
                    children
                        .iter()
                        .rev()
                        .copied()
                        .find(|&c| self.provides(c, kind))
                };
                let (text, html) = (last("text/plain"), last("text/html"));
                for c in children {
                    let chosen = ctx == Ctx::Body && (Some(c) == text || Some(c) == html);
                    let sub = match ctx {
                        Ctx::Related => Ctx::Related,
                        _ if chosen => Ctx::Body,
                        _ => Ctx::OtherAlternative,
                    };
                    self.visit(c, sub);
                }
            }
            "multipart/related" => {
                let root = self.related_root(node);
                for c in children {
                    let sub = if Some(c) == root { ctx } else { Ctx::Related };
                    self.visit(c, sub);
                }
            }
            _ => {
                for c in children {
                    self.visit(c, ctx);
                }
            }
        }
    }

    fn leaf(&mut self, node: &Node<'_>, ctx: Ctx) {
        if node.body_candidate() {
            match ctx {
                Ctx::Body => {
                    let slot = if node.ctype == "text/plain" {
                        &mut self.out.text
                    } else {
                        &mut self.out.html
                    };
                    if slot.is_none() {
                        *slot = Some(body_text(node));
                        return;
                    }
                }
                Ctx::OtherAlternative => return,
                Ctx::Related => {}
            }
        }
        let disposition = node.disposition();
        let content_id = node.content_id();
        let encoding = node.head.text("Content-Transfer-Encoding");
        let (data, decode_note) = if transfer::is_identity(encoding.as_deref()) {
            (share(self.raw, node.head.body), None)
        } else {
            let decoded = transfer::decode_body(encoding.as_deref(), node.head.body);
            (Bytes::from(decoded.data), decoded.note)
        };
        let kind = match disposition.main.as_str() {
            "attachment" => "attachment",
            "inline" => "inline",
            _ if content_id.is_some() || ctx == Ctx::Related => "inline",
            _ => "attachment",
        };
        self.out.attachments.push(Attachment {
            filename: node.filename(&disposition),
            content_type: Some(node.ctype.clone()),
            content_id,
            disposition: Some(kind.to_string()),
            data,
            decode_note,
        });
    }
}

/// `part` as a slice of `raw` when it lies inside it (every part of the tree does), else a copy.
fn share(raw: &Bytes, part: &[u8]) -> Bytes {
    let (start, end) = (raw.as_ptr() as usize, raw.as_ptr() as usize + raw.len());
    let at = part.as_ptr() as usize;
    if !part.is_empty() && at >= start && at + part.len() <= end {
        raw.slice_ref(part)
    } else {
        Bytes::copy_from_slice(part)
    }
}

/// A text body decoded by transfer encoding and charset. No charset (or us-ascii, which WHATWG
/// reads as windows-1252) decodes 8-bit bytes as windows-1252; an unknown charset as lossy UTF-8.
/// A body that could not be transfer-decoded is read as sent.
fn body_text(node: &Node<'_>) -> String {
    let decoded = transfer::decode_body(
        node.head.text("Content-Transfer-Encoding").as_deref(),
        node.head.body,
    );
    match node.params.get("charset").filter(|c| !c.trim().is_empty()) {
        Some(cs) => header::decode_charset(&decoded.data, cs),
        None => encoding_rs::WINDOWS_1252
            .decode_without_bom_handling(&decoded.data)
            .0
            .into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_parts_at_exact_delimiter_lines() {
        let body = b"preamble\r\n--b\r\none\r\n--b-not\r\n--b \r\ntwo\n--b--\r\nepilogue";
        assert_eq!(
            split_multipart(body, b"b", 10),
            vec![&b"one\r\n--b-not"[..], &b"two"[..]]
        );
        // No closing delimiter: the last part runs to the end.
        assert_eq!(split_multipart(b"--b\nx\n", b"b", 10), vec![&b"x\n"[..]]);
        assert!(split_multipart(b"no parts", b"b", 10).is_empty());
    }

    #[test]
    fn content_id_loses_its_brackets() {
        assert_eq!(strip_angles(" <pic1@x> "), "pic1@x");
        assert_eq!(strip_angles("pic1"), "pic1");
    }
}
