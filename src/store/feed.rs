//! The commit-ordered feed: what `mailroom feed ...` and the forwarder read. The feed itself is
//! SQL (functions in `migrations/20261202000010_feed.sql`, documented in docs/feed.md) so that an
//! application in any language gets the same guarantees; this module only calls it.
//!
//! A position is the pair (`feed_xid`, `id`) of the last row a consumer handled. Reading does
//! not move it; [`ack`] does, and is idempotent (acking an older position is a no-op), so a
//! reader that crashes between handling and acking reads the same rows again: at-least-once to
//! the reader, exactly-once when its effects commit in the transaction that acks.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row};

use super::StoreError;

/// What a consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `mailroom_events` rows.
    Events,
    /// `mailroom_inbound_emails` rows.
    InboundEmails,
}

impl Stream {
    /// The name the SQL functions and `mailroom_feed_consumers.stream` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Events => "events",
            Stream::InboundEmails => "inbound_emails",
        }
    }
}

impl FromStr for Stream {
    type Err = FeedParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "events" => Ok(Stream::Events),
            "inbound_emails" | "inbound-emails" | "inbound" => Ok(Stream::InboundEmails),
            other => Err(FeedParseError::Stream(other.to_string())),
        }
    }
}

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Every stored row.
    Beginning,
    /// Rows whose transaction had not finished when the consumer was created, and later ones.
    Now,
}

impl Start {
    fn as_str(self) -> &'static str {
        match self {
            Start::Beginning => "beginning",
            Start::Now => "now",
        }
    }
}

/// A place in the feed: the row's `feed_xid` and `id`. Written `XID:ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub xid: u64,
    pub id: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.xid, self.id)
    }
}

/// A text that is not a stream name or a position.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FeedParseError {
    #[error("unknown feed stream {0:?} (streams: events, inbound_emails)")]
    Stream(String),
    #[error("a feed position is XID:ID (two integers, as `mailroom feed read` prints), not {0:?}")]
    Position(String),
}

impl FromStr for Position {
    type Err = FeedParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FeedParseError::Position(s.to_string());
        let (xid, id) = s.split_once(':').ok_or_else(bad)?;
        Ok(Position {
            xid: xid.trim().parse().map_err(|_| bad())?,
            id: id.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// One row of a feed page.
#[derive(Debug, Clone)]
pub struct FeedRow {
    pub position: Position,
    /// `mailroom_events.id` or `mailroom_inbound_emails.id`.
    pub id: i64,
    /// When the row was stored (the forwarder's lag is measured from it).
    pub stored_at: DateTime<Utc>,
    /// Events: the event exactly as SendGrid sent it (the `payload` column). Inbound emails: a
    /// JSON object of the stored columns, with attachments (see docs/feed.md).
    pub json: String,
}

/// Create `consumer` reading `stream` (idempotent; an existing consumer of another stream is an
/// error).
pub async fn subscribe(
    pool: &PgPool,
    consumer: &str,
    stream: Stream,
    start: Start,
) -> Result<(), StoreError> {
    sqlx::query("SELECT mailroom_feed_subscribe($1, $2, $3)")
        .bind(consumer)
        .bind(stream.as_str())
        .bind(start.as_str())
        .execute(pool)
        .await
        .map_err(StoreError::query("creating a feed consumer"))?;
    Ok(())
}

/// The stream `consumer` reads, or None when there is no such consumer.
pub async fn consumer_stream(pool: &PgPool, consumer: &str) -> Result<Option<Stream>, StoreError> {
    let stream: Option<String> =
        sqlx::query_scalar("SELECT stream FROM mailroom_feed_consumers WHERE name = $1")
            .bind(consumer)
            .fetch_optional(pool)
            .await
            .map_err(StoreError::query("reading feed consumers"))?;
    stream
        .map(|s| s.parse())
        .transpose()
        .map_err(|e: FeedParseError| StoreError::Schema(e.to_string()))
}

/// `consumer`'s position (the last row acknowledged), or None when there is no such consumer.
pub async fn position(
    conn: &mut PgConnection,
    consumer: &str,
) -> Result<Option<Position>, StoreError> {
    let row: Option<(String, i64)> = sqlx::query_as(
        "SELECT position_xid::text, position_id FROM mailroom_feed_consumers WHERE name = $1",
    )
    .bind(consumer)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::query("reading a feed position"))?;
    row.map(|(xid, id)| {
        Ok(Position {
            xid: xid
                .parse()
                .map_err(|e| StoreError::Schema(format!("position_xid {xid:?}: {e}")))?,
            id,
        })
    })
    .transpose()
}

/// The inbound-email JSON a feed row carries. Attachment bytes are included (base64) only when
/// asked, since they are the bulk of an email.
fn inbound_json(with_content: bool) -> String {
    let content = if with_content {
        ", 'content_base64', encode(a.content, 'base64')"
    } else {
        ""
    };
    format!(
        "json_build_object(
            'id', m.id, 'mode', m.mode, 'message_id', m.message_id, 'from', m.from_addr,
            'to', m.to_addrs, 'cc', m.cc_addrs, 'subject', m.subject, 'text', m.text_body,
            'html', m.html_body, 'headers', m.headers, 'envelope', m.envelope,
            'spam_score', m.spam_score, 'spf', m.spf, 'dkim', m.dkim, 'sender_ip', m.sender_ip,
            'queue', m.queue, 'source', m.source, 'received_at', m.received_at,
            'stored_at', m.stored_at,
            'attachments', coalesce((
                SELECT json_agg(json_build_object(
                    'id', a.id, 'position', a.position, 'filename', a.filename,
                    'content_type', a.content_type, 'content_id', a.content_id,
                    'disposition', a.disposition, 'size_bytes', a.size_bytes,
                    'sha256', a.sha256{content}) ORDER BY a.position)
                FROM mailroom_inbound_attachments a WHERE a.email_id = m.id), '[]'::json)
        )::text"
    )
}

/// The next rows after `consumer`'s position, at most `limit`, oldest first. Locks the
/// consumer's row until `conn`'s transaction ends (readers of one consumer take turns); the
/// position does not move until [`ack`].
pub async fn read(
    conn: &mut PgConnection,
    consumer: &str,
    stream: Stream,
    limit: i64,
    with_attachment_content: bool,
) -> Result<Vec<FeedRow>, StoreError> {
    read_after(
        conn,
        consumer,
        stream,
        limit,
        Position::default(),
        with_attachment_content,
    )
    .await
}

/// [`read`], after `after` when that is past the consumer's position: for a reader with pages
/// in flight that it has not acknowledged yet (the forwarder).
pub async fn read_after(
    conn: &mut PgConnection,
    consumer: &str,
    stream: Stream,
    limit: i64,
    after: Position,
    with_attachment_content: bool,
) -> Result<Vec<FeedRow>, StoreError> {
    let limit = limit.clamp(0, i32::MAX as i64) as i32;
    let sql = match stream {
        Stream::Events => "SELECT feed_xid::text, id, payload::text, stored_at \
                           FROM mailroom_feed_events($1, $2, $3::text::xid8, $4)"
            .to_string(),
        Stream::InboundEmails => format!(
            "SELECT m.feed_xid::text, m.id, {}, m.stored_at \
             FROM mailroom_feed_inbound_emails($1, $2, $3::text::xid8, $4) m",
            inbound_json(with_attachment_content)
        ),
    };
    let rows = sqlx::query(&sql)
        .bind(consumer)
        .bind(limit)
        .bind(after.xid.to_string())
        .bind(after.id)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::query("reading the feed"))?;
    rows.iter()
        .map(|row| {
            let xid: String = row.try_get(0)?;
            let id: i64 = row.try_get(1)?;
            Ok(FeedRow {
                position: Position {
                    xid: xid.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    id,
                },
                id,
                json: row.try_get(2)?,
                stored_at: row.try_get(3)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::query("reading the feed"))
}

/// Move `consumer` to `position` (the last row handled; `rows` handled since the last ack, for
/// the status counter). Returns false when the consumer was already there or past it.
pub async fn ack(
    conn: &mut PgConnection,
    consumer: &str,
    position: Position,
    rows: i64,
) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT mailroom_feed_ack($1, $2::text::xid8, $3, $4)")
        .bind(consumer)
        .bind(position.xid.to_string())
        .bind(position.id)
        .bind(rows)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::query("acknowledging a feed position"))
}

/// Queue the feed's wake-up notification for `stream` on `conn`'s transaction (sent at commit;
/// identical ones in one transaction are folded into one).
pub async fn notify(conn: &mut PgConnection, stream: Stream) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify('mailroom_feed', $1)")
        .bind(stream.as_str())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::query("notifying feed readers"))?;
    Ok(())
}

/// Try to become the one process that runs forwarder `name`: a session advisory lock on `conn`,
/// held for as long as that connection lives (a standby process keeps trying). Session locks
/// take no transaction id, so holding one does not hold the feed's horizon back.
pub async fn try_lead(conn: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('mailroom_forward:' || $1))")
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::query("taking the forwarder lock"))
}

/// Does `conn` still hold forwarder `name`'s lock? Asked of the server (`pg_locks`), not taken
/// from the connection answering: a connection that came back through a pooler, or a session
/// whose locks were released, answers but no longer leads. The key's two halves are how
/// Postgres shows a one-bigint advisory key (`classid` the high 32 bits, `objid` the low).
pub async fn still_leading(conn: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    sqlx::query_scalar(
        "WITH k AS (SELECT hashtext('mailroom_forward:' || $1)::bigint AS key)
         SELECT EXISTS (
             SELECT 1 FROM pg_locks l, k
             WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
               AND l.objsubid = 1
               AND l.classid::bigint = ((k.key >> 32) & 4294967295)
               AND l.objid::bigint = (k.key & 4294967295))",
    )
    .bind(name)
    .fetch_one(&mut *conn)
    .await
    .map_err(StoreError::query("checking the forwarder lock"))
}

/// Give up forwarder `name`'s lock on `conn` (the caller then closes it): released at once,
/// not when the server notices the connection is gone.
pub async fn release_lead(conn: &mut PgConnection, name: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_unlock(hashtext('mailroom_forward:' || $1))")
        .bind(name)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::query("releasing the forwarder lock"))?;
    Ok(())
}

/// One consumer, for `mailroom feed status` and the forwarder's lag metric.
#[derive(Debug, Clone)]
pub struct ConsumerStatus {
    pub name: String,
    pub stream: Stream,
    pub position: Position,
    pub acked_rows: i64,
    pub acked_at: Option<DateTime<Utc>>,
    /// Readable rows after the position, counted up to [`PENDING_COUNT_CAP`].
    pub pending: i64,
    /// When the oldest of them was stored.
    pub oldest_pending_stored_at: Option<DateTime<Utc>>,
}

/// `pending` counts at most this many rows, so status stays cheap for a consumer far behind.
pub const PENDING_COUNT_CAP: i64 = 100_000;

/// The first [`PENDING_COUNT_CAP`] readable rows after consumer `c`'s position in `table`, when `c`
/// reads `stream` (no rows otherwise).
fn pending_page(table: &str, stream: Stream) -> String {
    format!(
        "(SELECT t.stored_at FROM {table} t
          WHERE c.stream = '{stream}'
            AND (t.feed_xid, t.id) > (c.position_xid, c.position_id)
            AND t.feed_xid < mailroom_feed_horizon()
          ORDER BY t.feed_xid, t.id LIMIT $2)",
        stream = stream.as_str()
    )
}

/// [`status`]'s statement: each consumer with the count and age of what waits for it, from the
/// one table its stream reads.
static STATUS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT c.name, c.stream, c.position_xid::text, c.position_id, c.acked_rows, c.acked_at,
                p.pending, p.oldest
         FROM mailroom_feed_consumers c
         CROSS JOIN LATERAL (
             SELECT count(*) AS pending, min(stored_at) AS oldest
             FROM ({} UNION ALL {}) page
         ) p
         WHERE $1::text IS NULL OR c.name = $1
         ORDER BY c.name",
        pending_page("mailroom_events", Stream::Events),
        pending_page("mailroom_inbound_emails", Stream::InboundEmails),
    )
});

/// Every consumer (or only `name`), by name.
pub async fn status(pool: &PgPool, name: Option<&str>) -> Result<Vec<ConsumerStatus>, StoreError> {
    let rows = sqlx::query(&STATUS_SQL)
        .bind(name)
        .bind(PENDING_COUNT_CAP)
        .fetch_all(pool)
        .await
        .map_err(StoreError::query("reading feed consumers"))?;
    rows.iter()
        .map(|row| {
            let stream: String = row.try_get(1)?;
            let xid: String = row.try_get(2)?;
            Ok(ConsumerStatus {
                name: row.try_get(0)?,
                stream: stream
                    .parse()
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                position: Position {
                    xid: xid.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
                    id: row.try_get(3)?,
                },
                acked_rows: row.try_get(4)?,
                acked_at: row.try_get(5)?,
                pending: row.try_get(6)?,
                oldest_pending_stored_at: row.try_get(7)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .map_err(StoreError::query("reading feed consumers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_order_by_xid_then_id() {
        let p: Position = "42:7".parse().unwrap();
        assert_eq!(p, Position { xid: 42, id: 7 });
        assert_eq!(p.to_string(), "42:7");
        assert!(Position { xid: 41, id: 900 } < p);
        assert!(Position { xid: 42, id: 8 } > p);
        for bad in ["", "42", "x:1", "1:y", "1:2:3"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stream_names_parse() {
        assert_eq!("events".parse::<Stream>(), Ok(Stream::Events));
        assert_eq!(
            "inbound-emails".parse::<Stream>(),
            Ok(Stream::InboundEmails)
        );
        assert!("clicks".parse::<Stream>().is_err());
    }
}
