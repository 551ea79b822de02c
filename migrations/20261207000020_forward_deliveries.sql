-- A forwarder's deliveries, recorded before they are sent (issue 26, parts 2 and 4).
--
-- Why: a forwarder cut its deliveries afresh from each page it read, and named each by its first
-- and last row. After a crash, the page read again could be longer (rows stored meanwhile), so
-- rows already sent went out again inside another delivery under another Idempotency-Key; an
-- application deduping on the key applied them twice. And a page was acknowledged only once all
-- of it had ended, so every restart re-sent the whole page, and a delivery the application had
-- already accepted could end as a dead letter when the endpoint failed on the re-send.
--
-- Now each delivery is a row here before its first attempt: the rows it carries (its first and
-- last position and how many) are fixed for good, so a re-send after a crash carries the same
-- rows under the same key. Its state moves to 'delivered' on a 2xx and 'dead_lettered' with
-- the dead letter, each in its own short transaction as it happens; the consumer's position
-- moves over the contiguous run of ended deliveries at the front, and their rows here go in the
-- same transaction. After a restart only the 'planned' ones are sent again: those that were in
-- flight (or not yet sent).

CREATE TABLE mailroom_forward_deliveries (
    forwarder  text        NOT NULL,
    first_xid  xid8        NOT NULL,
    first_id   bigint      NOT NULL,
    last_xid   xid8        NOT NULL,
    last_id    bigint      NOT NULL,
    rows       integer     NOT NULL CHECK (rows > 0),
    state      text        NOT NULL DEFAULT 'planned'
                           CHECK (state IN ('planned', 'delivered', 'dead_lettered')),
    planned_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    PRIMARY KEY (forwarder, last_xid, last_id)
);
