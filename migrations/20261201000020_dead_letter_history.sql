-- A dead letter's history survives replays and fixes: when it first failed (failed_at is now
-- the last failure), how many times it failed, who last replayed it and when, and, once an
-- operator replaced its payload (`dead-letters replay --id N --body FILE`), the body it first
-- had and who changed it. Existing rows: first failure = their failed_at, one attempt.
ALTER TABLE mailroom_dead_letters
    ADD COLUMN first_failed_at timestamptz,
    ADD COLUMN attempts        integer NOT NULL DEFAULT 1,
    ADD COLUMN replayed_at     timestamptz,
    ADD COLUMN replayed_by     text,
    ADD COLUMN original_body   text,
    ADD COLUMN edited_at       timestamptz,
    ADD COLUMN edited_by       text;

UPDATE mailroom_dead_letters SET first_failed_at = failed_at WHERE first_failed_at IS NULL;

ALTER TABLE mailroom_dead_letters
    ALTER COLUMN first_failed_at SET DEFAULT now(),
    ALTER COLUMN first_failed_at SET NOT NULL;
