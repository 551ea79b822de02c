//! Posts to a named route that does not exist: logged once per name per minute, not per request.
//!
//! A wrong URL in SendGrid's settings is a configuration error, not a drop risk worth a 5xx (a
//! 404 tells whoever tests the URL at once). But SendGrid retries, and a busy webhook would
//! flood the log with one line per post; one line per name per minute says the same. The
//! memory is bounded: names come from the request path, so at most [`MAX_NAMES`] are
//! remembered, and the oldest are forgotten first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mailroom_envelope::Kind;

use crate::routing::kind_name;
use crate::telemetry;

/// How often one unknown name is logged.
pub const LOG_EVERY: Duration = Duration::from_secs(60);
/// How many unknown names are remembered at once.
pub const MAX_NAMES: usize = 256;
/// How much of an unknown name is logged (it comes from the request path).
const MAX_LOGGED_LEN: usize = 80;

/// When each unknown name was last logged, and how many posts it had since.
#[derive(Default)]
pub struct UnknownWebhooks {
    seen: Mutex<HashMap<(Kind, String), Seen>>,
}

struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

impl UnknownWebhooks {
    /// Counts one post to an unknown name; logs it unless this name was logged within
    /// [`LOG_EVERY`]. Returns whether it logged.
    pub fn report(&self, kind: Kind, name: &str) -> bool {
        if telemetry::enabled() {
            metrics::counter!(telemetry::UNKNOWN_WEBHOOK, "kind" => kind_name(kind)).increment(1);
        }
        let name: String = name.chars().take(MAX_LOGGED_LEN).collect();
        let now = Instant::now();
        let suppressed = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = seen.get_mut(&(kind, name.clone())) {
                if now.duration_since(entry.logged_at) < LOG_EVERY {
                    entry.suppressed += 1;
                    return false;
                }
                let suppressed = entry.suppressed;
                *entry = Seen {
                    logged_at: now,
                    suppressed: 0,
                };
                suppressed
            } else {
                if seen.len() >= MAX_NAMES {
                    forget_oldest(&mut seen);
                }
                seen.insert(
                    (kind, name.clone()),
                    Seen {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                0
            }
        };
        tracing::warn!(kind = kind_name(kind), webhook = %name, suppressed_since_last = suppressed,
            "post to an unknown webhook route (404): add it to MAILROOM_ROUTES or fix the URL \
             in SendGrid's settings; logged once a minute per name");
        true
    }
}

fn forget_oldest(seen: &mut HashMap<(Kind, String), Seen>) {
    let mut by_age: Vec<_> = seen.iter().map(|(k, v)| (v.logged_at, k.clone())).collect();
    by_age.sort_unstable_by_key(|(at, _)| *at);
    for (_, key) in by_age.into_iter().take(MAX_NAMES / 4) {
        seen.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_log_line_per_name_per_minute() {
        let unknown = UnknownWebhooks::default();
        assert!(unknown.report(Kind::Events, "typo"));
        assert!(!unknown.report(Kind::Events, "typo"));
        assert!(!unknown.report(Kind::Events, "typo"));
        assert!(unknown.report(Kind::Inbound, "typo"), "per kind");
        assert!(unknown.report(Kind::Events, "other"));
    }

    #[test]
    fn memory_stays_bounded_under_many_names() {
        let unknown = UnknownWebhooks::default();
        for i in 0..(MAX_NAMES * 4) {
            unknown.report(Kind::Events, &format!("name-{i}"));
        }
        assert!(unknown.seen.lock().unwrap().len() <= MAX_NAMES);
    }
}
