//! Per-source counts of what the SendGrid handler committed: how much each webhook route
//! (`source`, the router's route name; `default` for the unnamed routes) sends, so a dashboard
//! shows which tenant's webhook is surging and an alert can watch one that went quiet.
//!
//! - `mailroom_sendgrid_events_total{queue, source}`: events in committed batches (duplicates
//!   included: this is the traffic, the table holds each event once).
//! - `mailroom_sendgrid_inbound_emails_total{queue, source}`: inbound emails likewise.
//!
//! The source comes from the message, so a name that is not a plain route name (anything a
//! router would refuse at start) is counted as `other`: the label set stays bounded by the
//! router's configuration, whatever a producer writes on the queue.

use std::collections::HashMap;

/// The `source` label of the unnamed default routes.
pub const DEFAULT_SOURCE: &str = "default";
/// The `source` label of a name no router would have configured.
pub const OTHER_SOURCE: &str = "other";

/// Counts per (queue, source) of one committed batch.
#[derive(Default)]
pub struct SourceCounts<'a> {
    events: HashMap<(&'a str, &'a str), u64>,
    emails: HashMap<(&'a str, &'a str), u64>,
}

impl<'a> SourceCounts<'a> {
    pub fn add_events(&mut self, queue: &'a str, source: Option<&'a str>, n: usize) {
        *self.events.entry((queue, label(source))).or_default() += n as u64;
    }

    pub fn add_email(&mut self, queue: &'a str, source: Option<&'a str>) {
        *self.emails.entry((queue, label(source))).or_default() += 1;
    }

    /// Increments the counters; call after the batch's transaction committed.
    pub fn record(self) {
        for ((queue, source), n) in self.events {
            metrics::counter!("mailroom_sendgrid_events_total", "queue" => queue.to_owned(),
                "source" => source.to_owned())
            .increment(n);
        }
        for ((queue, source), n) in self.emails {
            metrics::counter!("mailroom_sendgrid_inbound_emails_total",
                "queue" => queue.to_owned(), "source" => source.to_owned())
            .increment(n);
        }
    }
}

/// The label for a message's source.
pub fn label(source: Option<&str>) -> &str {
    match source {
        None => DEFAULT_SOURCE,
        Some(name) if mailroom_envelope::valid_webhook_name(name) => name,
        Some(_) => OTHER_SOURCE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_stay_bounded() {
        assert_eq!(label(None), "default");
        assert_eq!(label(Some("marketing")), "marketing");
        assert_eq!(label(Some("Not A Route")), "other");
        assert_eq!(label(Some(&"a".repeat(65))), "other");
    }
}
