//! The raw-mode oracle corpus (issue 11): every message in `tests/data/inbound/corpus/` is
//! wrapped as a raw-mode Inbound Parse post, and what we decode must match what Python's
//! `email` package (policy=default) reads from it, recorded next to it as JSON by
//! `generate.py` (see there for the oracle; Python is not needed to run this test).
//!
//! Compared exactly: subject, text, html, and for every attachment in order its filename,
//! content type, size and sha256 of the decoded bytes; an attached message/rfc822 is decoded
//! again and its subject and text compared. Normalised: From and To, which we keep as the
//! header text decoded and Python re-renders from its address objects, compare as "every
//! address and display name Python read is in our text, and no other address".
//! Where Mailroom reads a malformed message differently on purpose (documented in
//! docs/schema.md), the JSON says so in `differs` and holds the expected value, with Python's
//! own reading kept under `python` for reference.

use std::path::PathBuf;

use mailroom_sendgrid::{parse_inbound, InboundEmail};
use serde_json::Value;
use sha2::{Digest, Sha256};

const FORM: &str = "multipart/form-data; boundary=xYzZY";

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/inbound/corpus")
}

fn raw_form(mime: &[u8]) -> Vec<u8> {
    let mut body = b"--xYzZY\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n".to_vec();
    body.extend_from_slice(mime);
    body.extend_from_slice(b"\r\n--xYzZY--\r\n");
    body
}

fn opt_str(v: &Value) -> Option<&str> {
    v.as_str()
}

fn check_addresses(name: &str, field: &str, ours: Option<&str>, expected: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(list) = expected.as_array() else {
        if ours.is_some() {
            problems.push(format!("{name}: {field}: expected none, got {ours:?}"));
        }
        return problems;
    };
    let Some(ours) = ours else {
        problems.push(format!("{name}: {field}: missing, expected {expected}"));
        return problems;
    };
    for pair in list {
        for part in pair
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !ours.contains(part) {
                problems.push(format!("{name}: {field}: {part:?} not in {ours:?}"));
            }
        }
    }
    if ours.matches('@').count() != list.len() {
        problems.push(format!(
            "{name}: {field}: {ours:?} does not hold exactly {} addresses",
            list.len()
        ));
    }
    problems
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn compare(name: &str, e: &InboundEmail, x: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let mut eq = |field: &str, ours: Option<&str>, expected: Option<&str>| {
        if ours != expected {
            p.push(format!(
                "{name}: {field}: got {ours:?}, expected {expected:?}"
            ));
        }
    };
    eq("subject", e.subject.as_deref(), opt_str(&x["subject"]));
    eq("text", e.text.as_deref(), opt_str(&x["text"]));
    eq("html", e.html.as_deref(), opt_str(&x["html"]));
    p.extend(check_addresses(name, "from", e.from.as_deref(), &x["from"]));
    p.extend(check_addresses(name, "to", e.to.as_deref(), &x["to"]));

    let expected = x["attachments"].as_array().cloned().unwrap_or_default();
    if e.attachments.len() != expected.len() {
        p.push(format!(
            "{name}: {} attachments, expected {}: {:?}",
            e.attachments.len(),
            expected.len(),
            e.attachments
                .iter()
                .map(|a| (&a.filename, &a.content_type))
                .collect::<Vec<_>>()
        ));
        return p;
    }
    for (i, (a, xa)) in e.attachments.iter().zip(&expected).enumerate() {
        let at = format!("{name}: attachment {i}");
        if a.filename.as_deref() != opt_str(&xa["filename"]) {
            p.push(format!(
                "{at}: filename {:?}, expected {}",
                a.filename, xa["filename"]
            ));
        }
        if a.content_type.as_deref() != opt_str(&xa["content_type"]) {
            p.push(format!(
                "{at}: content type {:?}, expected {}",
                a.content_type, xa["content_type"]
            ));
        }
        if let Some(msg) = xa.get("message") {
            match parse_inbound(FORM, &raw_form(&a.data)) {
                Ok(inner) => {
                    if inner.subject.as_deref() != opt_str(&msg["subject"])
                        || inner.text.as_deref() != opt_str(&msg["text"])
                    {
                        p.push(format!(
                            "{at}: attached message reads {:?} / {:?}, expected {msg}",
                            inner.subject, inner.text
                        ));
                    }
                }
                Err(err) => p.push(format!("{at}: attached message does not parse: {err}")),
            }
            continue;
        }
        if Some(a.data.len() as u64) != xa["size"].as_u64()
            || Some(hex_sha256(&a.data).as_str()) != opt_str(&xa["sha256"])
        {
            p.push(format!(
                "{at}: {} bytes {:?}, expected {} bytes {}",
                a.data.len(),
                String::from_utf8_lossy(&a.data[..a.data.len().min(60)]),
                xa["size"],
                xa["sha256"]
            ));
        }
    }
    p
}

#[test]
fn raw_mode_reads_what_python_reads() {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".eml").map(str::to_string))
        .collect();
    names.sort();
    assert!(names.len() >= 25, "corpus too small: {names:?}");
    let mut problems = Vec::new();
    for name in &names {
        let dir = corpus_dir();
        let eml = std::fs::read(dir.join(format!("{name}.eml"))).expect("eml");
        let json = std::fs::read(dir.join(format!("{name}.json"))).expect("json");
        let expected: Value = serde_json::from_slice(&json).expect("json");
        let result = parse_inbound(FORM, &raw_form(&eml));
        match (result, expected["error"].as_str()) {
            (Ok(e), None) => problems.extend(compare(name, &e, &expected)),
            (Err(err), Some(want)) if err.to_string().contains(want) => {}
            (Err(err), _) => problems.push(format!("{name}: refused: {err}")),
            (Ok(_), Some(want)) => problems.push(format!("{name}: read, expected {want:?}")),
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
