-- Raw-mode attachments whose transfer encoding was broken (unpadded or truncated base64, stray
-- characters, a part labelled base64 that is not base64, malformed quoted-printable) are kept,
-- decoded as far as they decode, instead of losing the whole email; this says what was wrong.
-- NULL when the part decoded cleanly (and always in parsed mode). Nullable, no default: adding
-- it rewrites nothing.
ALTER TABLE mailroom_inbound_attachments ADD COLUMN decode_note text;
