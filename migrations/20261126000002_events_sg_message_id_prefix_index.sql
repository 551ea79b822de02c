-- Event rows carry SendGrid's sg_message_id as "<send API message id>.filter...", so
-- applications look events up by prefix (sg_message_id LIKE 'id%'). A text_pattern_ops index
-- serves both that and plain equality, whatever the database collation; it replaces the
-- default-opclass index.
DROP INDEX mailroom_events_sg_message_id_idx;
CREATE INDEX mailroom_events_sg_message_id_prefix_idx
    ON mailroom_events (sg_message_id text_pattern_ops);
