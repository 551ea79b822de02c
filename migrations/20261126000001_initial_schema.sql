-- Mailroom's initial schema. Applications read these tables; see docs/schema.md for which
-- columns are a stable interface. Every write Mailroom does is idempotent (delivery is
-- at-least-once), hence the natural unique keys below.

-- SendGrid Event Webhook events, one row per event. sg_event_id is the idempotency key.
CREATE TABLE mailroom_events (
    id                      bigserial PRIMARY KEY,
    sg_event_id             text        NOT NULL UNIQUE,
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
    payload                 jsonb       NOT NULL,
    sqs_message_id          text        NOT NULL,
    queue                   text        NOT NULL,
    received_at             timestamptz,
    stored_at               timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mailroom_events_email_idx ON mailroom_events (email, occurred_at);
CREATE INDEX mailroom_events_sg_message_id_idx ON mailroom_events (sg_message_id);
CREATE INDEX mailroom_events_event_occurred_at_idx ON mailroom_events (event, occurred_at);
CREATE INDEX mailroom_events_occurred_at_idx ON mailroom_events (occurred_at);

-- SendGrid Inbound Parse posts, one row per email. dedup_key is hex sha256 of the exact
-- request body, so SQS redelivery, a duplicated message and SendGrid's own retries of the
-- same post all collapse to one row.
CREATE TABLE mailroom_inbound_emails (
    id              bigserial PRIMARY KEY,
    dedup_key       text        NOT NULL UNIQUE,
    sqs_message_id  text        NOT NULL,
    queue           text        NOT NULL,
    mode            text        NOT NULL CHECK (mode IN ('parsed', 'raw')),
    message_id      text,
    from_addr       text,
    to_addrs        text,
    cc_addrs        text,
    subject         text,
    text_body       text,
    html_body       text,
    headers         text,
    envelope        jsonb,
    charsets        jsonb,
    content_ids     jsonb,
    attachment_info jsonb,
    spam_score      double precision,
    spam_report     text,
    spf             text,
    dkim            text,
    sender_ip       text,
    raw_mime        bytea,
    received_at     timestamptz,
    stored_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mailroom_inbound_emails_message_id_idx ON mailroom_inbound_emails (message_id);
CREATE INDEX mailroom_inbound_emails_received_at_idx ON mailroom_inbound_emails (received_at);

-- Attachments and inline parts of inbound emails, bytes exact.
CREATE TABLE mailroom_inbound_attachments (
    id            bigserial PRIMARY KEY,
    email_id      bigint      NOT NULL REFERENCES mailroom_inbound_emails (id) ON DELETE CASCADE,
    position      integer     NOT NULL,
    filename      text,
    content_type  text,
    content_id    text,
    disposition   text,
    size_bytes    bigint      NOT NULL,
    sha256        text        NOT NULL,
    content       bytea       NOT NULL,
    UNIQUE (email_id, position)
);

CREATE INDEX mailroom_inbound_attachments_sha256_idx ON mailroom_inbound_attachments (sha256);

-- Messages that will never be handled as they are, kept whole for inspection and replay.
-- A redelivery dead-lettered again updates its row instead of adding one.
CREATE TABLE mailroom_dead_letters (
    id              bigserial PRIMARY KEY,
    queue           text        NOT NULL,
    sqs_message_id  text        NOT NULL,
    body            text        NOT NULL,
    attributes      jsonb       NOT NULL DEFAULT '{}',
    receive_count   integer     NOT NULL,
    handler         text,
    reason          text        NOT NULL,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (queue, sqs_message_id)
);

CREATE INDEX mailroom_dead_letters_failed_at_idx ON mailroom_dead_letters (failed_at);
