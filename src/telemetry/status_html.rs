//! The status page as HTML: server-rendered, inline CSS, no JavaScript (a `<meta refresh>`
//! reloads it every 5 s). Every dynamic value goes through [`escape`]: queue names come from
//! the config, dead-letter reasons and bodies and log messages from outside.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use super::status::{Section, Snapshot};

/// Escape text for HTML element content and double- or single-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1d2430}
header{background:#1d2430;color:#fff;padding:14px 24px;display:flex;gap:24px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:20px;margin:0}
main{padding:8px 24px 24px}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px rgba(0,0,0,.08)}
th,td{padding:6px 8px;border-bottom:1px solid #e3e6eb;text-align:left;vertical-align:top}
th{background:#eef0f3;font-weight:600;font-size:11px;text-transform:uppercase;letter-spacing:.03em}
td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.t{white-space:nowrap}
.wrap{overflow-x:auto}
.phase{padding:2px 10px;border-radius:10px;font-weight:600}
.phase-receiving{background:#2e7d32}.phase-quiet{background:#f9a825;color:#1d2430}
.phase-draining{background:#c62828}.phase-starting{background:#546e7a}
.empty,.muted{color:#6b7480}
.unavailable{color:#c62828;font-weight:600}
.ERROR{color:#c62828;font-weight:600}.WARN{color:#b26a00;font-weight:600}
code,pre{font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-all;margin:0}
td pre{min-width:14em;max-width:30em}
td.reason{min-width:16em;overflow-wrap:anywhere}
td.q{overflow-wrap:anywhere;min-width:8em}
";

/// The whole page.
pub fn render(s: &Snapshot) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Mailroom status</title><style>{STYLE}</style></head><body>\
         <header><h1>Mailroom</h1>\
         <span class=\"phase phase-{phase}\" id=\"phase\">{phase}</span>\
         <span>up {uptime} (since {started})</span>\
         <span>pid {pid}</span><span>version {version}</span>\
         <span class=\"muted\">at {now}; refreshes every 5 s; \
         <a href=\"/status.json\" style=\"color:#9cc4ff\">status.json</a>, \
         <a href=\"/metrics\" style=\"color:#9cc4ff\">metrics</a></span></header><main>",
        phase = escape(s.phase),
        uptime = duration(s.uptime_secs),
        started = time(&s.started_at),
        pid = s.pid,
        version = escape(s.version),
        now = time(&s.generated_at),
    );
    queues(&mut h, s);
    forwarders(&mut h, s);
    errors(&mut h, s);
    dead_letters(&mut h, &s.dead_letters);
    feed(&mut h, s);
    h.push_str("</main></body></html>\n");
    h
}

fn queues(h: &mut String, s: &Snapshot) {
    h.push_str(
        "<h2>Queues</h2><div class=\"wrap\"><table id=\"queues\"><tr><th>queue (handler)</th>\
         <th>visible</th><th>SQS in flight</th><th>delayed</th><th>DLQ</th>\
         <th>received</th><th>done</th><th>retry</th><th>transient</th><th>dead-lettered</th>\
         <th>received/s</th><th>handled/s</th><th>in flight here</th></tr>",
    );
    if s.queues.is_empty() {
        h.push_str("<tr><td colspan=\"13\" class=\"empty\">no queues configured</td></tr>");
    }
    for q in &s.queues {
        let depth = match q.depth {
            Some(d) => format!(
                "<td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>",
                d.visible, d.in_flight, d.delayed
            ),
            None => "<td colspan=\"3\" class=\"muted\">not read yet</td>".into(),
        };
        let dlq = q
            .dlq_visible
            .map_or_else(|| "&ndash;".to_string(), |v| v.to_string());
        let handled = |o: &str| q.handled.get(o).copied().unwrap_or(0);
        let _ = write!(
            h,
            "<tr><td class=\"q\"><b>{name}</b> <span class=\"muted\">({handler})</span></td>{depth}<td class=\"n\">{dlq}</td>\
             <td class=\"n\">{received}</td><td class=\"n\">{done}</td><td class=\"n\">{retry}</td>\
             <td class=\"n\">{transient}</td><td class=\"n\">{dead}</td>\
             <td class=\"n\">{rrate:.2}</td><td class=\"n\">{hrate:.2}</td>\
             <td class=\"n\">{in_flight}</td></tr>",
            name = escape(&q.name),
            handler = escape(&q.handler),
            received = q.received,
            done = handled("done"),
            retry = handled("retry"),
            transient = handled("transient"),
            dead = q.dead_lettered,
            rrate = q.received_per_sec,
            hrate = q.handled_per_sec,
            in_flight = q.in_flight,
        );
    }
    h.push_str(
        "</table></div><p class=\"muted\">Depth: the last GetQueueAttributes reading (every 30 s). \
         Counts since this process started; rates are counts over uptime.</p>",
    );
}

fn forwarders(h: &mut String, s: &Snapshot) {
    if s.forwarders.is_empty() {
        return;
    }
    h.push_str(
        "<h2>Forwarders</h2><table id=\"forwarders\"><tr><th>forwarder</th><th>delivered</th>\
         <th>retried</th><th>slowed</th><th>dead-lettered</th><th>lag</th></tr>",
    );
    for f in &s.forwarders {
        let _ = write!(
            h,
            "<tr><td><b>{}</b></td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{:.1} s</td></tr>",
            escape(&f.name),
            f.delivered,
            f.retried,
            f.slowed,
            f.dead_lettered,
            f.lag_secs
        );
    }
    h.push_str("</table>");
}

fn errors(h: &mut String, s: &Snapshot) {
    h.push_str("<h2>Recent warnings and errors</h2>");
    if s.recent_errors.is_empty() {
        h.push_str("<p class=\"empty\" id=\"errors\">none since start</p>");
        return;
    }
    h.push_str(
        "<div class=\"wrap\"><table id=\"errors\"><tr><th>at (UTC)</th><th>level</th><th>where</th><th>message</th></tr>",
    );
    for e in &s.recent_errors {
        let _ = write!(
            h,
            "<tr><td class=\"t\">{}</td><td class=\"{}\">{}</td><td><code>{}</code></td>\
             <td>{}<br><code class=\"muted\">{}</code></td></tr>",
            cell_time(&e.at),
            if e.level == "ERROR" { "ERROR" } else { "WARN" },
            escape(&e.level),
            escape(&e.target),
            escape(&e.message),
            escape(&e.fields),
        );
    }
    h.push_str("</table></div>");
}

fn dead_letters(h: &mut String, section: &Section<crate::store::admin::DeadLetterSummary>) {
    h.push_str("<h2>Recent dead letters</h2>");
    if let Some(why) = &section.unavailable {
        let _ = write!(
            h,
            "<p class=\"unavailable\" id=\"dead-letters\">unavailable: {}</p>",
            escape(why)
        );
        return;
    }
    if section.rows.is_empty() {
        h.push_str("<p class=\"empty\" id=\"dead-letters\">none</p>");
        return;
    }
    h.push_str(
        "<div class=\"wrap\"><table id=\"dead-letters\"><tr><th>id</th><th>failed at (UTC)</th><th>queue</th>\
         <th>handler</th><th>attempts</th><th>reason</th><th>body (start)</th></tr>",
    );
    for d in &section.rows {
        let more = if d.body_bytes as usize > d.body_start.len() {
            format!(" <span class=\"muted\">({} bytes)</span>", d.body_bytes)
        } else {
            String::new()
        };
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td class=\"t\">{}</td><td class=\"q\">{}</td><td>{}</td><td class=\"n\">{}</td>\
             <td class=\"reason\">{}</td><td><pre>{}</pre>{more}</td></tr>",
            d.id,
            cell_time(&d.failed_at),
            escape(&d.queue),
            escape(d.handler.as_deref().unwrap_or("")),
            d.attempts,
            escape(&d.reason),
            escape(&d.body_start),
        );
    }
    h.push_str(
        "</table></div><p class=\"muted\">The newest 20. <code>mailroom dead-letters list</code> \
         shows them all; <code>replay</code> and <code>export</code> act on them.</p>",
    );
}

fn feed(h: &mut String, s: &Snapshot) {
    h.push_str("<h2>Feed consumers</h2>");
    let section = &s.feed_consumers;
    if let Some(why) = &section.unavailable {
        let _ = write!(
            h,
            "<p class=\"unavailable\" id=\"feed\">unavailable: {}</p>",
            escape(why)
        );
        return;
    }
    if section.rows.is_empty() {
        h.push_str("<p class=\"empty\" id=\"feed\">none subscribed</p>");
        return;
    }
    h.push_str(
        "<table id=\"feed\"><tr><th>consumer</th><th>stream</th><th>position</th>\
         <th>pending</th><th>oldest pending</th><th>last ack</th></tr>",
    );
    for c in &section.rows {
        let _ = write!(
            h,
            "<tr><td><b>{}</b></td><td>{}</td><td><code>{}</code></td><td class=\"n\">{}{}</td>\
             <td>{}</td><td>{}</td></tr>",
            escape(&c.name),
            escape(&c.stream),
            escape(&c.position),
            c.pending,
            if c.pending_capped { "+" } else { "" },
            c.oldest_pending_stored_at
                .as_ref()
                .map_or_else(|| "&ndash;".to_string(), time),
            c.acked_at
                .as_ref()
                .map_or_else(|| "never".to_string(), time),
        );
    }
    h.push_str("</table>");
}

/// For table cells whose header says UTC.
fn cell_time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h {m}m")
    } else if h > 0 {
        format!("{h}h {m}m {s}s")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::recent::LogEntry;
    use super::super::status::{Depth, ForwarderStatus, QueueStatus};
    use super::*;
    use crate::store::admin::DeadLetterSummary;

    fn snapshot() -> Snapshot {
        Snapshot {
            version: "0.1.0",
            pid: 42,
            phase: "receiving",
            started_at: Utc::now(),
            uptime_secs: 3725,
            generated_at: Utc::now(),
            queues: vec![],
            forwarders: vec![],
            recent_errors: vec![],
            dead_letters: Section::ok(vec![]),
            feed_consumers: Section::ok(vec![]),
        }
    }

    const HOSTILE: &str = "<script>alert('x')</script>\"&<img src=x onerror=alert(1)>";

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("plain queue-1"), "plain queue-1");
    }

    #[test]
    fn empty_states() {
        let page = render(&snapshot());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("no queues configured"));
        assert!(page.contains("<p class=\"empty\" id=\"errors\">none since start</p>"));
        assert!(page.contains("<p class=\"empty\" id=\"dead-letters\">none</p>"));
        assert!(page.contains("none subscribed"));
        assert!(
            !page.contains("Forwarders"),
            "no forwarder section without forwarders"
        );
        assert!(page.contains("up 1h 2m 5s"));
        assert!(!page.contains("<script"), "no JavaScript at all");
    }

    #[test]
    fn unavailable_postgres_sections_say_so() {
        let mut s = snapshot();
        s.dead_letters = Section::unavailable("pool timed out <while> connecting".into());
        s.feed_consumers = Section::unavailable("pool timed out".into());
        let page = render(&s);
        assert!(page.contains(
            "<p class=\"unavailable\" id=\"dead-letters\">unavailable: pool timed out \
             &lt;while&gt; connecting</p>"
        ));
        assert!(
            page.contains("<p class=\"unavailable\" id=\"feed\">unavailable: pool timed out</p>")
        );
    }

    #[test]
    fn hostile_values_render_as_text() {
        let mut s = snapshot();
        s.phase = "quiet";
        s.queues = vec![QueueStatus {
            name: format!("q{HOSTILE}"),
            handler: HOSTILE.into(),
            depth: Some(Depth {
                visible: 7,
                in_flight: 2,
                delayed: 1,
            }),
            dlq_visible: None,
            received: 10,
            handled: BTreeMap::from([("done".to_string(), 9), ("dead_letter".to_string(), 1)]),
            dead_lettered: 1,
            received_per_sec: 0.5,
            handled_per_sec: 0.5,
            in_flight: 3,
        }];
        s.forwarders = vec![ForwarderStatus {
            name: HOSTILE.into(),
            delivered: 1,
            retried: 0,
            slowed: 0,
            dead_lettered: 0,
            lag_secs: 0.0,
        }];
        s.recent_errors = vec![LogEntry {
            at: Utc::now(),
            level: "ERROR".into(),
            target: HOSTILE.into(),
            message: HOSTILE.into(),
            fields: format!("reason={HOSTILE}"),
        }];
        s.dead_letters = Section::ok(vec![DeadLetterSummary {
            id: 5,
            queue: HOSTILE.into(),
            handler: Some(HOSTILE.into()),
            reason: HOSTILE.into(),
            body_start: HOSTILE.into(),
            body_bytes: 10_000,
            receive_count: 3,
            attempts: 1,
            failed_at: Utc::now(),
        }]);
        let page = render(&s);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"));
        assert!(page.contains("<td class=\"n\">7</td><td class=\"n\">2</td><td class=\"n\">1</td>"));
        assert!(page.contains("(10000 bytes)"));
        assert!(page.contains("phase-quiet"));
        assert!(page.contains("id=\"forwarders\""));
    }

    #[test]
    fn depth_not_read_yet() {
        let mut s = snapshot();
        s.queues = vec![QueueStatus {
            name: "events".into(),
            handler: "sendgrid".into(),
            depth: None,
            dlq_visible: None,
            received: 0,
            handled: BTreeMap::new(),
            dead_lettered: 0,
            received_per_sec: 0.0,
            handled_per_sec: 0.0,
            in_flight: 0,
        }];
        let page = render(&s);
        assert!(page.contains("not read yet"));
        assert!(page.contains("<b>events</b> <span class=\"muted\">(sendgrid)</span>"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 5s");
        assert_eq!(duration(90_061), "1d 1h 1m");
    }
}
