-- Events stored by week of their own time, so that retention is DROP TABLE of an old week
-- (never a DELETE that locks and bloats a table of hundreds of millions of rows), and cheaper
-- to write: payload is `json` (SendGrid's exact text, no jsonb parse per row) and only the
-- indexes that documented queries need are kept. docs/retention.md explains the choices.
--
-- Layout: mailroom_events is PARTITION BY RANGE (occurred_at), one partition per UTC week
-- (mailroom_events_wYYYYMMDD, the Monday it starts), created ahead by `mailroom maintain` (and
-- the worker's maintenance task); mailroom_events_default takes rows no week partition covers:
-- events without a usable timestamp (occurred_at NULL), and dates before the first or after
-- the last week created.
--
-- Dedup: the unique key must include the partition key, so it is (sg_event_id, occurred_at)
-- NULLS NOT DISTINCT (Postgres 15). A duplicate of an event (SQS redelivery, SendGrid retry)
-- carries the same timestamp, so it lands in the same partition and meets the same key; an
-- event without a timestamp has NULL there and is deduplicated in the default partition, since
-- NULLS NOT DISTINCT makes two NULLs equal.
--
-- Conversion of an existing table: metadata only, whatever its size. The old table is renamed
-- mailroom_events_legacy and stays readable through the view mailroom_events_legacy_rows,
-- which the feed reads together with the new table and the store's insert checks for
-- duplicates, so nothing is skipped or doubled while rows remain there. Small tables (up to
-- 100,000 rows) are moved here; larger ones are moved by `mailroom maintain` in batches (ids
-- and feed_xid kept), which then empties the view and drops the old table.

ALTER TABLE mailroom_events RENAME TO mailroom_events_legacy;
ALTER TABLE mailroom_events_legacy ADD COLUMN IF NOT EXISTS source text;
ALTER TABLE mailroom_events_legacy RENAME CONSTRAINT mailroom_events_pkey TO mailroom_events_legacy_pkey;
ALTER TABLE mailroom_events_legacy
    RENAME CONSTRAINT mailroom_events_sg_event_id_key TO mailroom_events_legacy_sg_event_id_key;
ALTER INDEX mailroom_events_email_idx RENAME TO mailroom_events_legacy_email_idx;
ALTER INDEX mailroom_events_sg_message_id_prefix_idx RENAME TO mailroom_events_legacy_sg_message_id_prefix_idx;
ALTER INDEX mailroom_events_event_occurred_at_idx RENAME TO mailroom_events_legacy_event_occurred_at_idx;
ALTER INDEX mailroom_events_occurred_at_idx RENAME TO mailroom_events_legacy_occurred_at_idx;
ALTER INDEX mailroom_events_feed_idx RENAME TO mailroom_events_legacy_feed_idx;

-- The feed functions return the table's row type: they go with the old table and come back
-- below for the new one.
DROP FUNCTION mailroom_feed_events(text, integer);

CREATE TABLE mailroom_events (
    id                      bigint      NOT NULL DEFAULT nextval('mailroom_events_id_seq'),
    sg_event_id             text        NOT NULL,
    event                   text        NOT NULL,
    email                   text,
    occurred_at             timestamptz,
    sg_message_id           text,
    smtp_id                 text,
    categories              text[]      NOT NULL DEFAULT '{}',
    reason                  text,
    status                  text,
    response                text,
    attempt                 integer,
    bounce_type             text,
    bounce_classification   text,
    url                     text,
    url_offset_index        integer,
    useragent               text,
    ip                      text,
    tls                     boolean,
    sg_machine_open         boolean,
    asm_group_id            bigint,
    marketing_campaign_id   bigint,
    marketing_campaign_name text,
    pool_name               text,
    pool_id                 bigint,
    payload                 json        NOT NULL,
    sqs_message_id          text        NOT NULL,
    queue                   text        NOT NULL,
    received_at             timestamptz,
    stored_at               timestamptz NOT NULL DEFAULT now(),
    feed_xid                xid8        NOT NULL DEFAULT pg_current_xact_id(),
    source                  text
) PARTITION BY RANGE (occurred_at);

ALTER SEQUENCE mailroom_events_id_seq OWNED BY mailroom_events.id;

-- The idempotency key (see above). No other unique key: `id` comes from the sequence.
CREATE UNIQUE INDEX mailroom_events_event_key
    ON mailroom_events (sg_event_id, occurred_at) NULLS NOT DISTINCT;
-- The feed's order, and the hooks' lookup of the rows their transaction inserted.
CREATE INDEX mailroom_events_feed_idx ON mailroom_events (feed_xid, id);
-- No index on sg_message_id, email or event: each cost about 5 us of Postgres CPU per stored
-- event (sg_message_id alone 6 of the 20 left, measured in BENCHMARKS.md), and their questions
-- are answered by mailroom_message_status (per message and recipient) and mailroom_suppressions.
-- docs/schema.md shows how to add one back, partition by partition, for an application that
-- needs raw events by message.
-- Time ranges inside a week: rows arrive in about time order, so a BRIN is nearly free.
CREATE INDEX mailroom_events_occurred_at_brin ON mailroom_events USING brin (occurred_at);
-- Events of one webhook route in a time range; the default route (NULL) costs nothing here.
CREATE INDEX mailroom_events_source_idx ON mailroom_events (source, occurred_at)
    WHERE source IS NOT NULL;

CREATE TABLE mailroom_events_default PARTITION OF mailroom_events DEFAULT;

-- The week partition starting at `week` (a Monday, 00:00 UTC), created if missing. Rows of that
-- week already in the default partition are moved into it first (attaching checks the default
-- holds none). The SHARE lock on the parent waits for running insert transactions and holds new
-- ones back until the commit: an insert that had already routed a row to the default partition
-- with the old list of partitions would otherwise fail on the default's new constraint, and one
-- landing there between the move and the attach would make the attach fail. Readers are not
-- blocked. `mailroom maintain` calls this with a short lock_timeout and retries
-- (src/store/partitions.rs).
CREATE FUNCTION mailroom_events_week_partition(week timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamptz := date_trunc('week', week AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi   timestamptz := lo + interval '7 days';
    name text := 'mailroom_events_w' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD');
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN name;
    END IF;
    LOCK TABLE mailroom_events IN SHARE MODE;
    EXECUTE format('CREATE TABLE %I (LIKE mailroom_events INCLUDING DEFAULTS)', name);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (occurred_at IS NOT NULL AND occurred_at >= %L AND occurred_at < %L)',
                   name, name || '_range', lo, hi);
    EXECUTE format('WITH moved AS (DELETE FROM mailroom_events_default WHERE occurred_at >= %L AND occurred_at < %L RETURNING *) '
                   'INSERT INTO %I SELECT * FROM moved', lo, hi, name);
    EXECUTE format('ALTER TABLE mailroom_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   name, lo, hi);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', name, name || '_range');
    RETURN name;
END $$;

-- This week and the next four.
SELECT mailroom_events_week_partition(now() + make_interval(days => 7 * w))
FROM generate_series(0, 4) AS w;

-- The old table's rows, in the new table's columns, while any remain there; replaced by an
-- empty view of the same shape once they are all moved.
CREATE VIEW mailroom_events_legacy_rows AS
SELECT id, sg_event_id, event, email, occurred_at, sg_message_id, smtp_id, categories, reason,
       status, response, attempt, bounce_type, bounce_classification, url, url_offset_index,
       useragent, ip, tls, sg_machine_open, asm_group_id, marketing_campaign_id,
       marketing_campaign_name, pool_name, pool_id, payload::json AS payload, sqs_message_id,
       queue, received_at, stored_at, feed_xid, source
FROM mailroom_events_legacy;

-- The feed reads both while the conversion runs: a row is in exactly one of them at any
-- snapshot (a move deletes and inserts in one transaction), with the same (feed_xid, id). Once
-- the old table is gone it reads the partitioned table alone: the UNION ALL, even with the empty
-- view, keeps the planner from merging the partitions' (feed_xid, id) indexes, and a page would
-- sort every pending row (144 ms for 320,000 pending, against 0.14 ms).
CREATE FUNCTION mailroom_feed_events(consumer text, max_rows integer DEFAULT 100)
RETURNS SETOF mailroom_events
LANGUAGE plpgsql AS $$
DECLARE
    c mailroom_feed_consumers := mailroom_feed_lock(consumer, 'events');
BEGIN
    IF to_regclass('mailroom_events_legacy') IS NULL THEN
        RETURN QUERY
            SELECT e.* FROM mailroom_events e
            WHERE (e.feed_xid, e.id) > (c.position_xid, c.position_id)
              AND e.feed_xid < mailroom_feed_horizon()
            ORDER BY e.feed_xid, e.id
            LIMIT greatest(max_rows, 0);
        RETURN;
    END IF;
    RETURN QUERY
        SELECT r.* FROM (
            SELECT e.* FROM mailroom_events e
            WHERE (e.feed_xid, e.id) > (c.position_xid, c.position_id)
              AND e.feed_xid < mailroom_feed_horizon()
            UNION ALL
            SELECT l.* FROM mailroom_events_legacy_rows l
            WHERE (l.feed_xid, l.id) > (c.position_xid, c.position_id)
              AND l.feed_xid < mailroom_feed_horizon()
        ) r
        ORDER BY r.feed_xid, r.id
        LIMIT greatest(max_rows, 0);
END $$;

-- Replace the legacy view by an empty one and drop the old table (all rows moved). Called here
-- for a small table and by `mailroom maintain` when its batches have emptied a large one.
CREATE FUNCTION mailroom_events_legacy_finish() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF to_regclass('mailroom_events_legacy') IS NULL THEN
        RETURN;
    END IF;
    -- By the primary key: a sequential scan would read every dead row the move left behind.
    IF EXISTS (SELECT 1 FROM mailroom_events_legacy ORDER BY id LIMIT 1) THEN
        RAISE EXCEPTION 'mailroom_events_legacy still holds rows: move them first (mailroom maintain)';
    END IF;
    CREATE OR REPLACE VIEW mailroom_events_legacy_rows AS
    SELECT NULL::bigint AS id, NULL::text AS sg_event_id, NULL::text AS event, NULL::text AS email,
           NULL::timestamptz AS occurred_at, NULL::text AS sg_message_id, NULL::text AS smtp_id,
           NULL::text[] AS categories, NULL::text AS reason, NULL::text AS status,
           NULL::text AS response, NULL::integer AS attempt, NULL::text AS bounce_type,
           NULL::text AS bounce_classification, NULL::text AS url,
           NULL::integer AS url_offset_index, NULL::text AS useragent, NULL::text AS ip,
           NULL::boolean AS tls, NULL::boolean AS sg_machine_open, NULL::bigint AS asm_group_id,
           NULL::bigint AS marketing_campaign_id, NULL::text AS marketing_campaign_name,
           NULL::text AS pool_name, NULL::bigint AS pool_id, NULL::json AS payload,
           NULL::text AS sqs_message_id, NULL::text AS queue, NULL::timestamptz AS received_at,
           NULL::timestamptz AS stored_at, NULL::xid8 AS feed_xid, NULL::text AS source
    WHERE false;
    DROP TABLE mailroom_events_legacy;
END $$;

-- Move a small table now: a partition for every week it has rows in (from 2000 to the weeks
-- created above; rows outside go to the default partition), then the rows, then finish.
DO $$
DECLARE
    week timestamptz;
BEGIN
    IF (SELECT count(*) FROM (SELECT 1 FROM mailroom_events_legacy LIMIT 100001) s) > 100000 THEN
        RAISE NOTICE 'mailroom_events_legacy holds more than 100,000 rows: mailroom maintain moves them in batches (docs/retention.md)';
        RETURN;
    END IF;
    FOR week IN
        SELECT DISTINCT date_trunc('week', occurred_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        FROM mailroom_events_legacy
        WHERE occurred_at >= '2000-01-01 00:00:00+00' AND occurred_at < now() + interval '35 days'
    LOOP
        PERFORM mailroom_events_week_partition(week);
    END LOOP;
    INSERT INTO mailroom_events SELECT * FROM mailroom_events_legacy_rows;
    TRUNCATE mailroom_events_legacy;
    PERFORM mailroom_events_legacy_finish();
END $$;

-- The webhook route that received an inbound email (NULL for the default route).
ALTER TABLE mailroom_inbound_emails ADD COLUMN IF NOT EXISTS source text;
CREATE INDEX IF NOT EXISTS mailroom_inbound_emails_source_idx
    ON mailroom_inbound_emails (source, received_at) WHERE source IS NOT NULL;
