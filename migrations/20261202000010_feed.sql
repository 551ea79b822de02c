-- The commit-ordered feed (docs/feed.md): named consumers read stored events and inbound emails
-- in the order their transactions became safe to read, and never skip or repeat one.
--
-- Why not `WHERE id > last_seen`: ids are taken at insert but transactions commit in another
-- order, so a row with a smaller id can become visible after a reader passed it. Each row here
-- carries the 64-bit id of the transaction that wrote it (`feed_xid`), and a reader only takes
-- rows whose transaction is older than every transaction still running
-- (`pg_snapshot_xmin(pg_current_snapshot())`): those have all committed or rolled back, so
-- nothing can appear behind the cursor later. The cursor is the pair (feed_xid, id).
--
-- Existing rows get feed_xid 0 (a constant default: no table rewrite) and are read first, in id
-- order. New rows get their transaction's id.
--
-- On a large existing table the index builds below hold writes back while they run. To avoid
-- that, create them first with the same names and CREATE INDEX CONCURRENTLY (docs/feed.md,
-- "Installing on a large database"); IF NOT EXISTS then skips them here.

ALTER TABLE mailroom_events ADD COLUMN IF NOT EXISTS feed_xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE mailroom_events ALTER COLUMN feed_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS mailroom_events_feed_idx ON mailroom_events (feed_xid, id);

ALTER TABLE mailroom_inbound_emails ADD COLUMN IF NOT EXISTS feed_xid xid8 NOT NULL DEFAULT '0';
ALTER TABLE mailroom_inbound_emails ALTER COLUMN feed_xid SET DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS mailroom_inbound_emails_feed_idx
    ON mailroom_inbound_emails (feed_xid, id);

-- One row per named consumer: which stream it reads and how far it has acknowledged.
CREATE TABLE mailroom_feed_consumers (
    name          text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    stream        text        NOT NULL CHECK (stream IN ('events', 'inbound_emails')),
    position_xid  xid8        NOT NULL DEFAULT '0',
    position_id   bigint      NOT NULL DEFAULT 0,
    acked_rows    bigint      NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    acked_at      timestamptz
);

-- The feed's horizon: rows whose feed_xid is below it are settled (committed or rolled back).
-- Read in the same statement as the rows it guards, so both use one snapshot.
CREATE FUNCTION mailroom_feed_horizon() RETURNS xid8
LANGUAGE sql STABLE AS $$ SELECT pg_snapshot_xmin(pg_current_snapshot()) $$;

-- Create a consumer (idempotent). start_at: 'beginning' (every stored row) or 'now' (rows whose
-- transaction had not finished when it was created, and later ones).
CREATE FUNCTION mailroom_feed_subscribe(
    consumer text,
    stream   text DEFAULT 'events',
    start_at text DEFAULT 'beginning'
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    existing text;
BEGIN
    IF stream NOT IN ('events', 'inbound_emails') THEN
        RAISE EXCEPTION 'mailroom feed: unknown stream "%" (streams: events, inbound_emails)', stream
            USING ERRCODE = '22023';
    END IF;
    IF start_at NOT IN ('beginning', 'now') THEN
        RAISE EXCEPTION 'mailroom feed: start_at must be ''beginning'' or ''now'', not "%"', start_at
            USING ERRCODE = '22023';
    END IF;
    SELECT c.stream INTO existing FROM mailroom_feed_consumers c WHERE c.name = consumer;
    IF FOUND THEN
        IF existing <> stream THEN
            RAISE EXCEPTION 'mailroom feed: consumer "%" already reads stream %, not %',
                consumer, existing, stream USING ERRCODE = '22023';
        END IF;
        RETURN;
    END IF;
    INSERT INTO mailroom_feed_consumers (name, stream, position_xid, position_id)
    VALUES (
        consumer,
        stream,
        CASE start_at WHEN 'now' THEN mailroom_feed_horizon() ELSE '0'::xid8 END,
        0
    )
    ON CONFLICT (name) DO NOTHING;
END $$;

-- The consumer's row, locked until the caller's transaction ends: two readers of one consumer
-- take turns, so the second reads after the first's acknowledgement, never the same page.
CREATE FUNCTION mailroom_feed_lock(consumer text, want_stream text)
RETURNS mailroom_feed_consumers
LANGUAGE plpgsql AS $$
DECLARE
    c mailroom_feed_consumers;
BEGIN
    SELECT * INTO c FROM mailroom_feed_consumers WHERE name = consumer FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'mailroom feed: no consumer named "%"', consumer
            USING ERRCODE = 'P0002',
                  HINT = format('create it: SELECT mailroom_feed_subscribe(%L, %L)', consumer, want_stream);
    END IF;
    IF c.stream <> want_stream THEN
        RAISE EXCEPTION 'mailroom feed: consumer "%" reads stream %, not %', consumer, c.stream, want_stream
            USING ERRCODE = '22023';
    END IF;
    RETURN c;
END $$;

-- The next rows after the consumer's position, oldest first. Does not move the position:
-- acknowledge with mailroom_feed_ack(consumer, feed_xid, id) of the last row handled, in the same
-- transaction as the application's own writes to make them commit together.
CREATE FUNCTION mailroom_feed_events(consumer text, max_rows integer DEFAULT 100)
RETURNS SETOF mailroom_events
LANGUAGE plpgsql AS $$
DECLARE
    c mailroom_feed_consumers := mailroom_feed_lock(consumer, 'events');
BEGIN
    RETURN QUERY
        SELECT e.* FROM mailroom_events e
        WHERE (e.feed_xid, e.id) > (c.position_xid, c.position_id)
          AND e.feed_xid < mailroom_feed_horizon()
        ORDER BY e.feed_xid, e.id
        LIMIT greatest(max_rows, 0);
END $$;

CREATE FUNCTION mailroom_feed_inbound_emails(consumer text, max_rows integer DEFAULT 10)
RETURNS SETOF mailroom_inbound_emails
LANGUAGE plpgsql AS $$
DECLARE
    c mailroom_feed_consumers := mailroom_feed_lock(consumer, 'inbound_emails');
BEGIN
    RETURN QUERY
        SELECT m.* FROM mailroom_inbound_emails m
        WHERE (m.feed_xid, m.id) > (c.position_xid, c.position_id)
          AND m.feed_xid < mailroom_feed_horizon()
        ORDER BY m.feed_xid, m.id
        LIMIT greatest(max_rows, 0);
END $$;

-- Move the consumer's position to (upto_xid, upto_id), the last row handled. Acknowledging a
-- position at or behind the current one does nothing (acks are idempotent), and returns false.
-- A position past the horizon is refused: it could pass rows that are not readable yet.
CREATE FUNCTION mailroom_feed_ack(consumer text, upto_xid xid8, upto_id bigint, rows_handled bigint DEFAULT 0)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    moved boolean;
BEGIN
    IF upto_xid >= mailroom_feed_horizon() AND upto_xid <> '0'::xid8 THEN
        RAISE EXCEPTION 'mailroom feed: position %:% is past the feed horizon (rows there are not readable yet)',
            upto_xid, upto_id USING ERRCODE = '22023';
    END IF;
    UPDATE mailroom_feed_consumers
       SET position_xid = upto_xid,
           position_id  = upto_id,
           acked_rows   = acked_rows + greatest(rows_handled, 0),
           acked_at     = now()
     WHERE name = consumer
       AND (upto_xid, upto_id) > (position_xid, position_id);
    moved := FOUND;
    IF NOT moved AND NOT EXISTS (SELECT 1 FROM mailroom_feed_consumers WHERE name = consumer) THEN
        RAISE EXCEPTION 'mailroom feed: no consumer named "%"', consumer USING ERRCODE = 'P0002';
    END IF;
    RETURN moved;
END $$;
