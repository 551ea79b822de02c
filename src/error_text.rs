//! One line per error for people: an error and its causes, each said once. Used by the binary
//! edge (`cli`) and by the admin commands that report per-item failures and go on.

/// An error and its causes on one line, each cause once.
///
/// `{:#}` prints every error in the chain, but many errors (ours and sqlx's) already include
/// their cause in their own message, so a migration failure read "... already exists: while
/// executing migration ...: ... already exists: ... already exists" four times over. A cause
/// whose text the line already holds is left out.
pub fn error_text(err: &anyhow::Error) -> String {
    join_causes(err.chain())
}

/// [`error_text`] for a typed error below the edge (the forwarder's log lines).
pub fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    join_causes(std::iter::successors(Some(err), |e| e.source()))
}

fn join_causes<'a>(chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut text = String::new();
    for cause in chain {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    /// A regression test: `mailroom migrate` over an existing table printed the database's
    /// message four times.
    #[test]
    fn error_text_names_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("while executing migration 1: {0}")]
        struct Execute(#[source] std::io::Error);
        let inner = std::io::Error::other("relation \"t\" already exists");
        let err = anyhow::Error::new(Execute(inner)).context("applying migrations");
        assert_eq!(
            error_text(&err),
            "applying migrations: while executing migration 1: relation \"t\" already exists"
        );
        // Causes that do not repeat are all kept.
        let err = anyhow::anyhow!("disk full")
            .context("writing")
            .context("storing");
        assert_eq!(error_text(&err), "storing: writing: disk full");
    }
}
