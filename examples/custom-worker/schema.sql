-- The example application's own tables. In a real application its own migrations (Rails,
-- Django, sqlx) own these; Mailroom's migrations never touch them.
CREATE TABLE IF NOT EXISTS app_orders (
    order_id       text PRIMARY KEY,
    customer_email text NOT NULL,
    total_cents    bigint NOT NULL,
    currency       text NOT NULL,
    sqs_message_id text NOT NULL,
    stored_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS app_users (
    email           text PRIMARY KEY,
    email_status    text NOT NULL DEFAULT 'ok',
    email_status_at timestamptz
);

-- One row per effect of the SendGrid hook: what it did, for which event. No unique key on
-- sg_event_id, on purpose: the hook runs once per event because it only sees newly stored
-- events, and a second effect would show here as a second row (the tests count them).
CREATE TABLE IF NOT EXISTS app_email_status_changes (
    id           bigserial PRIMARY KEY,
    email        text NOT NULL,
    status       text NOT NULL,
    sg_event_id  text NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
