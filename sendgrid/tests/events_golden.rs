//! Golden files for Event Webhook batches: one per documented event type, plus the quirks real
//! payloads have and the malformed batches that must be refused with a reason naming the element.

use mailroom_sendgrid::{parse_events, Event, EventsError};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn events(name: &str) -> Vec<Event> {
    parse_events(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn one(name: &str) -> Event {
    let mut v = events(name);
    assert_eq!(v.len(), 1, "{name}");
    v.remove(0)
}

fn common(e: &Event, kind: &str) {
    assert_eq!(e.event, kind);
    assert_eq!(e.sg_event_id, format!("id-{kind}-1"));
    assert_eq!(e.email.as_deref(), Some("alice@example.com"));
    assert_eq!(e.occurred_at.map(|t| t.timestamp()), Some(1_700_000_000));
    assert_eq!(e.smtp_id.as_deref(), Some("<abc123@mail.example.com>"));
    assert_eq!(e.sg_message_id.as_deref(), Some("msg-1.filter0001.1.0"));
    assert_eq!(e.raw.to_value()["event"], kind);
}

#[test]
fn processed_with_pool_and_string_ids() {
    let e = one("processed.json");
    common(&e, "processed");
    assert_eq!(e.pool_name.as_deref(), Some("transactional"));
    assert_eq!(e.pool_id, Some(210));
    assert_eq!(e.categories, ["receipts"]);
    assert_eq!(e.asm_group_id, Some(42));
    assert_eq!(e.marketing_campaign_id, Some(12345));
    assert_eq!(e.marketing_campaign_name.as_deref(), Some("Winter"));
    assert_eq!(e.status, None);
}

#[test]
fn dropped() {
    let e = one("dropped.json");
    common(&e, "dropped");
    assert_eq!(e.reason.as_deref(), Some("Bounced Address"));
    assert_eq!(e.status.as_deref(), Some("5.0.0"));
}

#[test]
fn delivered_tls_number() {
    let e = one("delivered.json");
    common(&e, "delivered");
    assert_eq!(e.response.as_deref(), Some("250 OK queued as 1234"));
    assert_eq!(e.tls, Some(true));
    assert_eq!(e.ip.as_deref(), Some("168.1.1.1"));
}

#[test]
fn deferred_attempt_string_and_tls_string() {
    let e = one("deferred.json");
    common(&e, "deferred");
    assert_eq!(e.attempt, Some(5));
    assert_eq!(e.tls, Some(false));
    assert_eq!(one("attempt_number.json").attempt, Some(3));
}

#[test]
fn bounce_and_blocked() {
    let v = events("bounce.json");
    common(&v[0], "bounce");
    assert_eq!(v[0].bounce_type.as_deref(), Some("bounce"));
    assert_eq!(
        v[0].bounce_classification.as_deref(),
        Some("Invalid Address")
    );
    assert_eq!(v[0].status.as_deref(), Some("5.1.1"));
    assert_eq!(v[1].bounce_type.as_deref(), Some("blocked"));
    assert_eq!(v[1].bounce_classification.as_deref(), Some("Reputation"));
    assert_eq!(v[1].status, None);
}

#[test]
fn open_machine_open_bool_and_number() {
    let v = events("open.json");
    common(&v[0], "open");
    assert_eq!(v[0].sg_machine_open, Some(true));
    assert_eq!(v[0].useragent.as_deref(), Some("Mozilla/5.0"));
    assert_eq!(v[1].sg_machine_open, Some(false));
}

#[test]
fn click_url_offset() {
    let e = one("click.json");
    common(&e, "click");
    assert_eq!(e.url.as_deref(), Some("https://example.com/a?b=c"));
    assert_eq!(e.url_offset_index, Some(3));
    assert_eq!(e.raw.to_value()["url_offset"]["type"], "html");
}

#[test]
fn spamreport_unsubscribe_groups() {
    common(&one("spamreport.json"), "spamreport");
    common(&one("unsubscribe.json"), "unsubscribe");
    let g = one("group_unsubscribe.json");
    common(&g, "group_unsubscribe");
    assert_eq!(g.asm_group_id, Some(7));
    let r = one("group_resubscribe.json");
    common(&r, "group_resubscribe");
    assert_eq!(r.asm_group_id, Some(7));
}

#[test]
fn account_status_change() {
    let e = one("account_status_change.json");
    assert_eq!(e.event, "account_status_change");
    assert_eq!(e.email, None);
    assert_eq!(e.bounce_type.as_deref(), Some("compliance_suspend"));
}

#[test]
fn unknown_future_type_is_kept() {
    let e = one("future_type.json");
    common(&e, "quantum_entangled");
    assert_eq!(e.raw.to_value()["new_field"]["nested"][2], 3);
}

#[test]
fn millisecond_and_float_timestamps() {
    let v = events("ms_timestamp.json");
    assert_eq!(
        v[0].occurred_at.map(|t| t.timestamp_millis()),
        Some(1_700_000_000_123)
    );
    assert_eq!(
        v[1].occurred_at.map(|t| t.timestamp_millis()),
        Some(1_700_000_000_500)
    );
}

#[test]
fn category_array() {
    assert_eq!(one("category_array.json").categories, ["a", "b", "3"]);
}

#[test]
fn single_object_is_a_batch_of_one() {
    assert_eq!(one("single_object.json").event, "delivered");
}

#[test]
fn missing_sg_event_id_gets_a_stable_synthetic_id() {
    let e = one("missing_sg_event_id.json");
    // sha256 of the canonical text: keys sorted, no whitespace.
    let canonical = r#"{"email":"bob@example.com","event":"delivered","timestamp":1700000000}"#;
    use sha2::{Digest, Sha256};
    let want = format!("synthetic:{}", hex::encode(Sha256::digest(canonical)));
    assert_eq!(e.sg_event_id, want);
}

#[test]
fn crlf_separated_batch_and_empty_batch() {
    let v = events("crlf_batch.json");
    assert_eq!(v.len(), 2);
    assert_eq!(v[1].sg_event_id, "x2");
    assert!(events("empty_batch.json").is_empty());
}

#[test]
fn malformed_batches() {
    let err = |name: &str| parse_events(&fixture(name)).unwrap_err();
    assert!(matches!(err("bad_not_json.json"), EventsError::NotJson(_)));
    assert_eq!(
        err("bad_scalar.json").to_string(),
        "events body must be a JSON array of event objects (or a single object), got a string"
    );
    assert_eq!(
        err("bad_element.json"),
        EventsError::NotAnObject {
            index: 1,
            got: "a number"
        }
    );
    assert_eq!(
        err("bad_missing_event.json").to_string(),
        "event at index 1 has no \"event\" field"
    );
    assert_eq!(
        err("bad_event_type.json"),
        EventsError::EventNotString { index: 0 }
    );
}
