//! Tidy tests (in the spirit of rust-analyzer's): the architecture's invariants, checked on the
//! source tree so a change that breaks one fails the suite instead of relying on review.
//! See ARCHITECTURE.md, "Invariants".

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("read source");
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

/// Lines of code (comments and doc comments left out) that contain any of `needles`.
fn offending_lines(text: &str, needles: &[&str]) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .filter(|line| needles.iter().any(|n| line.contains(n)))
        .map(|line| line.trim().to_string())
        .collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn only_the_acker_deletes_messages_or_changes_visibility() {
    // The operator's commands act on queues directly, on purpose, and say so
    // (`queues purge`, `queues dlq redrive`); the engine's every delete goes through acker.rs.
    let allowed = ["src/acker.rs", "src/admin/"];
    let calls = [
        ".delete_message(",
        ".delete_message_batch(",
        ".change_message_visibility(",
        ".change_message_visibility_batch(",
    ];
    let mut found = Vec::new();
    for (path, text) in sources(&root().join("src")) {
        let rel = relative(&path);
        if allowed.iter().any(|a| rel.starts_with(a)) {
            continue;
        }
        for line in offending_lines(&text, &calls) {
            found.push(format!("{rel}: {line}"));
        }
    }
    assert!(
        found.is_empty(),
        "SQS deletes or visibility changes outside src/acker.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn only_the_store_module_holds_sql() {
    let sql = [
        "sqlx::query",
        "query_scalar(",
        "query_as(",
        "raw_sql(",
        "INSERT INTO",
        "SELECT ",
        "UPDATE mailroom",
        "DELETE FROM",
    ];
    let mut found = Vec::new();
    for (path, text) in sources(&root().join("src")) {
        let rel = relative(&path);
        if rel.starts_with("src/store/") {
            continue;
        }
        for line in offending_lines(&text, &sql) {
            found.push(format!("{rel}: {line}"));
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside src/store/:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_decoder_crates_do_no_io() {
    // Their manifests name no runtime, network, AWS or database crate...
    let io_crates = [
        "tokio", "aws-", "sqlx", "hyper", "reqwest", "mio", "socket2", "lambda",
    ];
    for krate in ["envelope", "sendgrid"] {
        let manifest =
            std::fs::read_to_string(root().join(krate).join("Cargo.toml")).expect("manifest");
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .map(|rest| rest.split("\n[").next().unwrap_or(""))
            .unwrap_or("");
        for line in deps.lines() {
            let name = line.split('=').next().unwrap_or("").trim();
            assert!(
                !io_crates.iter().any(|io| name.starts_with(io)),
                "{krate}/Cargo.toml depends on {name}: decoders must do no IO"
            );
        }
        // ...and their code opens no file or socket.
        let io_paths = [
            "std::fs",
            "std::net",
            "std::process",
            "File::open",
            "TcpStream",
        ];
        for (path, text) in sources(&root().join(krate).join("src")) {
            let lines = offending_lines(&text, &io_paths);
            assert!(lines.is_empty(), "{} does IO: {lines:?}", relative(&path));
        }
    }
}

#[test]
fn handlers_never_see_sqs_types() {
    let mut found = Vec::new();
    for dir in ["src/handlers", "examples/custom-worker/src"] {
        for (path, text) in sources(&root().join(dir)) {
            for line in offending_lines(&text, &["aws_sdk_sqs", "sqs::Received", "receipt_handle"])
            {
                found.push(format!("{}: {line}", relative(&path)));
            }
        }
    }
    let handler = std::fs::read_to_string(root().join("src/handler.rs")).expect("handler.rs");
    for line in offending_lines(&handler, &["aws_sdk_sqs", "receipt_handle"]) {
        found.push(format!("src/handler.rs: {line}"));
    }
    assert!(
        found.is_empty(),
        "SQS types where handlers can see them:\n{}",
        found.join("\n")
    );
}

#[test]
fn binaries_are_thin() {
    // Assembly is the library's (`Worker`); a binary registers handlers and calls main.
    for bin in ["src/main.rs", "examples/custom-worker/src/main.rs"] {
        let text = std::fs::read_to_string(root().join(bin)).expect("binary source");
        let code = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with("//"))
            .count();
        assert!(
            code <= 15,
            "{bin} has {code} lines of code: move assembly into the library"
        );
    }
}
