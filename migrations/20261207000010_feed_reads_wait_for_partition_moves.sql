-- The feed read waits for a partition move before it plans, and can read ahead of the position.
--
-- Why: `mailroom_events_week_partition()` moves a week's rows out of mailroom_events_default into
-- a new partition and attaches it, in one transaction. A feed read planned while that ran took
-- the parent's partition list first, then waited for the default partition's lock; after the
-- commit it ran with the old list (the new partition not in its plan) on a new snapshot (the
-- moved rows gone from the default partition). It returned the later rows without the moved
-- ones, the reader acknowledged, and the moved rows were behind its position for good (issue
-- 26, part 1; tests/feed_partition_moves.rs).
--
-- The fix is on the reader's side, so every reader in every language gets it from this one
-- function: before the query is planned, the read takes ACCESS SHARE on
-- mailroom_events_default, the lock ATTACH PARTITION holds in ACCESS EXCLUSIVE mode until it
-- commits. So the read either
--   - waits for a move that reached its ATTACH, and then plans with the new partition list
--     (taking the lock processes the move's invalidations, so a plan cached in this session is
--     rebuilt too) on a snapshot after the move; or
--   - holds the lock before the move's ATTACH, and then the move waits for the reader's
--     transaction to end: the rows it deleted from the default partition are still visible to
--     the reader (the delete has not committed).
-- Either way each row is read in exactly one place. Readers already took this lock for their
-- scan of the default partition; only its moment moves, to before planning.
--
-- Read ahead: `after_xid`, `after_id` (default 0:0) read after the later of the consumer's
-- position and this one, for a reader that keeps several pages in flight before it
-- acknowledges them (the forwarder). Calls with one or two arguments mean what they meant.

DROP FUNCTION mailroom_feed_events(text, integer);
CREATE FUNCTION mailroom_feed_events(
    consumer  text,
    max_rows  integer DEFAULT 100,
    after_xid xid8    DEFAULT '0',
    after_id  bigint  DEFAULT 0
)
RETURNS SETOF mailroom_events
LANGUAGE plpgsql AS $$
DECLARE
    c    mailroom_feed_consumers := mailroom_feed_lock(consumer, 'events');
    from_xid xid8;
    from_id  bigint;
BEGIN
    LOCK TABLE mailroom_events_default IN ACCESS SHARE MODE;
    IF (after_xid, after_id) > (c.position_xid, c.position_id) THEN
        from_xid := after_xid;
        from_id := after_id;
    ELSE
        from_xid := c.position_xid;
        from_id := c.position_id;
    END IF;
    IF to_regclass('mailroom_events_legacy') IS NULL THEN
        RETURN QUERY
            SELECT e.* FROM mailroom_events e
            WHERE (e.feed_xid, e.id) > (from_xid, from_id)
              AND e.feed_xid < mailroom_feed_horizon()
            ORDER BY e.feed_xid, e.id
            LIMIT greatest(max_rows, 0);
        RETURN;
    END IF;
    RETURN QUERY
        SELECT r.* FROM (
            SELECT e.* FROM mailroom_events e
            WHERE (e.feed_xid, e.id) > (from_xid, from_id)
              AND e.feed_xid < mailroom_feed_horizon()
            UNION ALL
            SELECT l.* FROM mailroom_events_legacy_rows l
            WHERE (l.feed_xid, l.id) > (from_xid, from_id)
              AND l.feed_xid < mailroom_feed_horizon()
        ) r
        ORDER BY r.feed_xid, r.id
        LIMIT greatest(max_rows, 0);
END $$;

DROP FUNCTION mailroom_feed_inbound_emails(text, integer);
CREATE FUNCTION mailroom_feed_inbound_emails(
    consumer  text,
    max_rows  integer DEFAULT 10,
    after_xid xid8    DEFAULT '0',
    after_id  bigint  DEFAULT 0
)
RETURNS SETOF mailroom_inbound_emails
LANGUAGE plpgsql AS $$
DECLARE
    c mailroom_feed_consumers := mailroom_feed_lock(consumer, 'inbound_emails');
    from_xid xid8;
    from_id  bigint;
BEGIN
    IF (after_xid, after_id) > (c.position_xid, c.position_id) THEN
        from_xid := after_xid;
        from_id := after_id;
    ELSE
        from_xid := c.position_xid;
        from_id := c.position_id;
    END IF;
    RETURN QUERY
        SELECT m.* FROM mailroom_inbound_emails m
        WHERE (m.feed_xid, m.id) > (from_xid, from_id)
          AND m.feed_xid < mailroom_feed_horizon()
        ORDER BY m.feed_xid, m.id
        LIMIT greatest(max_rows, 0);
END $$;
