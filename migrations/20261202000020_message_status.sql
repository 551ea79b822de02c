-- Each SendGrid message's current status per recipient (mailroom_message_status), and the
-- addresses not to mail (mailroom_suppressions, read through mailroom_may_send). Both are kept
-- by the sendgrid handler's built-in hooks in the transaction that stores the events
-- (src/store/status.rs holds those statements); docs/schema.md documents them for applications.
--
-- Both tables are a pure function of the SET of stored events, whatever order they arrived in:
-- the rules are the functions below, shared by the incremental statements and by the rebuild
-- functions, which this migration calls once to backfill from the events already stored.

-- The recipient as a key: trimmed, lower-case; NULL when nothing is left.
CREATE FUNCTION mailroom_normalize_email(email text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT nullif(lower(btrim($1, E' \t\r\n')), '') $$;

-- The send API's X-Message-Id: the sg_message_id before its first '.'.
CREATE FUNCTION mailroom_message_id(sg_message_id text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT nullif(split_part(btrim($1), '.', 1), '') $$;

-- The delivery state an event stands for, NULL for events that are not delivery events
-- (open, click, spamreport, unsubscribe, ...). A bounce is 'blocked' (soft) only when its type
-- says so; any other bounce is a hard 'bounced'.
CREATE FUNCTION mailroom_delivery_state(event text, bounce_type text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE $1
        WHEN 'processed' THEN 'processed'
        WHEN 'deferred' THEN 'deferred'
        WHEN 'delivered' THEN 'delivered'
        WHEN 'bounce' THEN CASE WHEN lower($2) = 'blocked' THEN 'blocked' ELSE 'bounced' END
        WHEN 'dropped' THEN 'dropped'
    END $$;

-- Precedence of delivery states: the highest rank wins; equal ranks, the later occurred_at, then
-- the larger sg_event_id (byte order). 0 = no delivery event yet.
CREATE FUNCTION mailroom_delivery_rank(state text) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (CASE $1
        WHEN 'processed' THEN 1
        WHEN 'deferred' THEN 2
        WHEN 'delivered' THEN 3
        WHEN 'blocked' THEN 4
        WHEN 'bounced' THEN 5
        WHEN 'dropped' THEN 5
        ELSE 0
    END)::smallint $$;

-- Which suppression an event sets or clears: 0 = the global one, N = unsubscribe group N; NULL
-- when the event does not touch suppressions (a 'blocked' bounce, a drop for another reason, a
-- group event without a group).
CREATE FUNCTION mailroom_suppression_group(event text, bounce_type text, reason text,
                                           asm_group_id bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE
        WHEN $1 = 'bounce' THEN CASE WHEN lower($2) = 'blocked' THEN NULL ELSE 0 END
        WHEN $1 = 'dropped' THEN CASE
            WHEN lower(btrim($3)) IN ('bounced address', 'invalid', 'invalid address',
                                      'spam reporting address') THEN 0
            WHEN lower(btrim($3)) = 'unsubscribed address' THEN
                CASE WHEN $4 > 0 THEN $4 ELSE 0 END
        END
        WHEN $1 IN ('spamreport', 'unsubscribe') THEN 0
        WHEN $1 IN ('group_unsubscribe', 'group_resubscribe') THEN
            CASE WHEN $4 > 0 THEN $4 END
    END::bigint $$;

CREATE TABLE mailroom_message_status (
    message_id            text        NOT NULL,
    email                 text        NOT NULL,
    state                 text,
    state_rank            smallint    NOT NULL DEFAULT 0,
    state_sg_event_id     text,
    state_occurred_at     timestamptz,
    reason                text,
    smtp_status           text,
    response              text,
    bounce_type           text,
    bounce_classification text,
    first_event_at        timestamptz,
    last_event_at         timestamptz,
    event_count           integer     NOT NULL DEFAULT 0,
    deferred_count        integer     NOT NULL DEFAULT 0,
    open_count            integer     NOT NULL DEFAULT 0,
    machine_open_count    integer     NOT NULL DEFAULT 0,
    click_count           integer     NOT NULL DEFAULT 0,
    first_opened_at       timestamptz,
    last_opened_at        timestamptz,
    first_clicked_at      timestamptz,
    last_clicked_at       timestamptz,
    spam_reported_at      timestamptz,
    unsubscribed_at       timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (message_id, email)
);
CREATE INDEX mailroom_message_status_email_idx ON mailroom_message_status (email);
CREATE INDEX mailroom_message_status_updated_at_idx ON mailroom_message_status (updated_at);

CREATE TABLE mailroom_suppressions (
    email        text        NOT NULL,
    asm_group_id bigint      NOT NULL,
    active       boolean     NOT NULL,
    reason       text        NOT NULL,
    detail       text,
    sg_event_id  text        NOT NULL,
    occurred_at  timestamptz,
    message_id   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (email, asm_group_id)
);

-- May an application send to this address (in this unsubscribe group)? False when the address
-- is suppressed globally or, given a group, in that group; NULL for a NULL address.
CREATE FUNCTION mailroom_may_send(email text, asm_group_id bigint DEFAULT NULL) RETURNS boolean
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN mailroom_normalize_email($1) IS NULL THEN NULL ELSE NOT EXISTS (
        SELECT 1 FROM mailroom_suppressions s
        WHERE s.email = mailroom_normalize_email($1)
          AND s.active
          AND (s.asm_group_id = 0 OR s.asm_group_id = $2)
    ) END $$;

-- Recompute mailroom_message_status from every stored event (the backfill below; also safe to
-- run on a live system, e.g. after workers without the hooks wrote events). The table lock
-- waits for the batches writing it and holds new ones until this commits, so none is counted
-- twice or lost. Returns the number of rows.
CREATE FUNCTION mailroom_rebuild_message_status() RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    n bigint;
BEGIN
    LOCK TABLE mailroom_message_status IN EXCLUSIVE MODE;
    DELETE FROM mailroom_message_status;
    WITH keyed AS (
        SELECT mailroom_message_id(e.sg_message_id) AS message_id,
               mailroom_normalize_email(e.email) AS email,
               mailroom_delivery_state(e.event, e.bounce_type) AS state,
               e.sg_event_id, e.event, e.occurred_at, e.reason, e.status, e.response,
               e.bounce_type, e.bounce_classification, e.sg_machine_open
        FROM mailroom_events e
        WHERE mailroom_message_id(e.sg_message_id) IS NOT NULL
          AND mailroom_normalize_email(e.email) IS NOT NULL
    ),
    agg AS (
        SELECT message_id, email,
               min(occurred_at) AS first_event_at,
               max(occurred_at) AS last_event_at,
               count(*)::int AS event_count,
               (count(*) FILTER (WHERE event = 'deferred'))::int AS deferred_count,
               (count(*) FILTER (WHERE event = 'open'))::int AS open_count,
               (count(*) FILTER (WHERE event = 'open' AND sg_machine_open))::int AS machine_open_count,
               (count(*) FILTER (WHERE event = 'click'))::int AS click_count,
               min(occurred_at) FILTER (WHERE event = 'open') AS first_opened_at,
               max(occurred_at) FILTER (WHERE event = 'open') AS last_opened_at,
               min(occurred_at) FILTER (WHERE event = 'click') AS first_clicked_at,
               max(occurred_at) FILTER (WHERE event = 'click') AS last_clicked_at,
               min(occurred_at) FILTER (WHERE event = 'spamreport') AS spam_reported_at,
               min(occurred_at) FILTER (WHERE event IN ('unsubscribe', 'group_unsubscribe'))
                   AS unsubscribed_at
        FROM keyed
        GROUP BY message_id, email
    ),
    best AS (
        SELECT DISTINCT ON (message_id, email)
               message_id, email, state, mailroom_delivery_rank(state) AS state_rank,
               sg_event_id, occurred_at, reason, status, response, bounce_type,
               bounce_classification
        FROM keyed
        WHERE state IS NOT NULL
        ORDER BY message_id, email, mailroom_delivery_rank(state) DESC,
                 occurred_at DESC NULLS LAST, sg_event_id COLLATE "C" DESC
    )
    INSERT INTO mailroom_message_status (
        message_id, email, state, state_rank, state_sg_event_id, state_occurred_at, reason,
        smtp_status, response, bounce_type, bounce_classification, first_event_at, last_event_at,
        event_count, deferred_count, open_count, machine_open_count, click_count,
        first_opened_at, last_opened_at, first_clicked_at, last_clicked_at, spam_reported_at,
        unsubscribed_at
    )
    SELECT a.message_id, a.email, b.state, coalesce(b.state_rank, 0), b.sg_event_id,
           b.occurred_at, b.reason, b.status, b.response, b.bounce_type, b.bounce_classification,
           a.first_event_at, a.last_event_at, a.event_count, a.deferred_count, a.open_count,
           a.machine_open_count, a.click_count, a.first_opened_at, a.last_opened_at,
           a.first_clicked_at, a.last_clicked_at, a.spam_reported_at, a.unsubscribed_at
    FROM agg a LEFT JOIN best b USING (message_id, email);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Recompute mailroom_suppressions from every stored event; as mailroom_rebuild_message_status.
-- For each (email, group) the latest event wins: later occurred_at (NULL lowest), then a
-- suppression over a resubscribe, then the larger sg_event_id.
CREATE FUNCTION mailroom_rebuild_suppressions() RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    n bigint;
BEGIN
    LOCK TABLE mailroom_suppressions IN EXCLUSIVE MODE;
    DELETE FROM mailroom_suppressions;
    INSERT INTO mailroom_suppressions (
        email, asm_group_id, active, reason, detail, sg_event_id, occurred_at, message_id
    )
    SELECT DISTINCT ON (email, asm_group_id)
           email, asm_group_id, active, reason, detail, sg_event_id, occurred_at, message_id
    FROM (
        SELECT mailroom_normalize_email(e.email) AS email,
               mailroom_suppression_group(e.event, e.bounce_type, e.reason, e.asm_group_id)
                   AS asm_group_id,
               e.event <> 'group_resubscribe' AS active,
               e.event AS reason, e.reason AS detail, e.sg_event_id, e.occurred_at,
               mailroom_message_id(e.sg_message_id) AS message_id
        FROM mailroom_events e
        WHERE e.event IN ('bounce', 'dropped', 'spamreport', 'unsubscribe', 'group_unsubscribe',
                          'group_resubscribe')
    ) s
    WHERE email IS NOT NULL AND asm_group_id IS NOT NULL
    ORDER BY email, asm_group_id, occurred_at DESC NULLS LAST, active DESC,
             sg_event_id COLLATE "C" DESC;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Backfill from the events already stored.
SELECT mailroom_rebuild_message_status();
SELECT mailroom_rebuild_suppressions();
