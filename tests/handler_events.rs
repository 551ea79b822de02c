//! The "sendgrid" handler on Event Webhook jobs, against a real Postgres: every event type lands
//! with its typed columns, duplicates add nothing, bad bodies and bad rows are dead-lettered
//! without holding up the rest of the batch, database outages are transient.

#[path = "data/store/support.rs"]
mod support;

use chrono::{DateTime, TimeZone, Utc};
use mailroom::handler::{Handler, Outcome, Retry};
use mailroom::handlers::{SendgridConfigError, SendgridHandler, SendgridHandlerConfig};
use mailroom::store::Store;
use mailroom_envelope::Kind;
use mailroom_sendgrid::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use sqlx::PgPool;
use support::*;

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    sg_event_id: String,
    event: String,
    email: Option<String>,
    occurred_at: Option<DateTime<Utc>>,
    sg_message_id: Option<String>,
    smtp_id: Option<String>,
    categories: Vec<String>,
    reason: Option<String>,
    status: Option<String>,
    response: Option<String>,
    attempt: Option<i32>,
    bounce_type: Option<String>,
    bounce_classification: Option<String>,
    url: Option<String>,
    url_offset_index: Option<i32>,
    useragent: Option<String>,
    ip: Option<String>,
    tls: Option<bool>,
    sg_machine_open: Option<bool>,
    asm_group_id: Option<i64>,
    marketing_campaign_id: Option<i64>,
    marketing_campaign_name: Option<String>,
    pool_name: Option<String>,
    pool_id: Option<i64>,
    payload: serde_json::Value,
    sqs_message_id: String,
    queue: String,
    received_at: Option<DateTime<Utc>>,
    stored_at: DateTime<Utc>,
}

async fn event(pool: &PgPool, sg_event_id: &str) -> EventRow {
    sqlx::query_as("SELECT * FROM mailroom_events WHERE sg_event_id = $1")
        .bind(sg_event_id)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("event {sg_event_id}: {e}"))
}

fn at(offset: i64) -> Option<DateTime<Utc>> {
    Utc.timestamp_opt(1_764_190_000 + offset, 0).single()
}

#[sqlx::test(migrations = "./migrations")]
async fn every_event_type_lands_with_its_typed_columns(pool: PgPool) {
    let h = handler(&pool);
    let out = h
        .handle(&[events_job("m-all", fixture("events_all_types.json"))])
        .await;
    assert_eq!(out, vec![Outcome::Done]);
    assert_eq!(count(&pool, "mailroom_events").await, 14);

    let e = event(&pool, "evt-processed-1").await;
    assert_eq!(e.event, "processed");
    assert_eq!(e.email.as_deref(), Some("user1@example.com"));
    assert_eq!(e.occurred_at, at(1));
    assert_eq!(
        e.sg_message_id.as_deref(),
        Some("msg1.filter0001.16648.5515E0B8.0")
    );
    assert_eq!(e.smtp_id.as_deref(), Some("<msg1@ismtpd-555>"));
    assert_eq!(e.categories, vec!["welcome", "onboarding"]);
    assert_eq!(e.marketing_campaign_id, Some(12345));
    assert_eq!(e.marketing_campaign_name.as_deref(), Some("Welcome series"));
    assert_eq!(e.pool_name.as_deref(), Some("transactional"));
    assert_eq!(e.pool_id, Some(210));
    assert_eq!(e.payload["user_id"], "42", "custom args kept in payload");
    assert_eq!(e.payload["pool"]["id"], 210);
    assert_eq!(e.sqs_message_id, "m-all");
    assert_eq!(e.queue, QUEUE);
    assert_eq!(e.received_at, Some(received_at()));
    assert!(e.stored_at > received_at());

    let e = event(&pool, "evt-dropped-2").await;
    assert_eq!(e.event, "dropped");
    assert_eq!(e.reason.as_deref(), Some("Bounced Address"));
    assert_eq!(e.status.as_deref(), Some("5.0.0"));
    assert_eq!(
        e.categories,
        vec!["cat facts"],
        "a lone category string becomes a list"
    );

    let e = event(&pool, "evt-delivered-3").await;
    assert_eq!(e.response.as_deref(), Some("250 OK"));
    assert_eq!(e.ip.as_deref(), Some("168.1.1.1"));
    assert_eq!(e.tls, Some(true));
    assert!(e.categories.is_empty());

    let e = event(&pool, "evt-deferred-4").await;
    assert_eq!(e.event, "deferred");
    assert_eq!(e.response.as_deref(), Some("400 try again later"));
    assert_eq!(e.attempt, Some(5));
    assert_eq!(e.tls, Some(false));

    let e = event(&pool, "evt-bounce-5").await;
    assert_eq!(e.bounce_type.as_deref(), Some("bounce"));
    assert_eq!(e.bounce_classification.as_deref(), Some("Invalid Address"));
    assert_eq!(e.reason.as_deref(), Some("550 5.1.1 unknown recipient"));
    assert_eq!(e.status.as_deref(), Some("5.1.1"));

    let e = event(&pool, "evt-bounce-6").await;
    assert_eq!(e.bounce_type.as_deref(), Some("blocked"));
    assert_eq!(e.bounce_classification.as_deref(), Some("Reputation"));

    let e = event(&pool, "evt-open-7").await;
    assert_eq!(e.event, "open");
    assert_eq!(e.sg_machine_open, Some(true));
    assert_eq!(e.useragent.as_deref(), Some("Mozilla/5.0 (Macintosh)"));
    assert_eq!(e.ip.as_deref(), Some("203.0.113.7"));

    let e = event(&pool, "evt-click-8").await;
    assert_eq!(e.url.as_deref(), Some("https://example.com/pricing?utm=x"));
    assert_eq!(e.url_offset_index, Some(2));
    assert_eq!(e.useragent.as_deref(), Some("Mozilla/5.0 (Windows)"));

    assert_eq!(event(&pool, "evt-spamreport-9").await.event, "spamreport");
    assert_eq!(
        event(&pool, "evt-unsubscribe-10").await.event,
        "unsubscribe"
    );

    let e = event(&pool, "evt-group_unsubscribe-11").await;
    assert_eq!(e.asm_group_id, Some(10));
    assert_eq!(e.url.as_deref(), Some("https://example.com/unsub"));
    assert_eq!(e.url_offset_index, Some(0));

    let e = event(&pool, "evt-group_resubscribe-12").await;
    assert_eq!(e.asm_group_id, Some(10), "numeric string read as a number");

    let e = event(&pool, "evt-account_status_change-13").await;
    assert_eq!(e.event, "account_status_change");
    assert_eq!(e.email, None);
    assert_eq!(e.bounce_type.as_deref(), Some("compliance_suspend"));
    assert_eq!(e.occurred_at, at(13));

    let e = event(&pool, "evt-quantum_entangled-14").await;
    assert_eq!(
        e.event, "quantum_entangled",
        "unknown future types are stored, not rejected"
    );
    assert_eq!(
        e.payload["future_field"]["nested"],
        serde_json::json!([1, 2, 3])
    );
    assert_eq!(e.sg_event_id, "evt-quantum_entangled-14");
}

#[sqlx::test(migrations = "./migrations")]
async fn redelivery_and_duplicated_messages_add_no_rows(pool: PgPool) {
    let h = handler(&pool);
    let body = fixture("events_all_types.json");
    assert_eq!(
        h.handle(&[events_job("m-1", body.clone())]).await,
        vec![Outcome::Done]
    );
    assert_eq!(count(&pool, "mailroom_events").await, 14);

    // The same SQS message again (redelivery), then the same body under another message id
    // (a duplicated send), both in one batch and alone.
    let mut redelivered = events_job("m-1", body.clone());
    redelivered.receive_count = 2;
    let duplicate = events_job("m-2", body.clone());
    let out = h.handle(&[redelivered, duplicate.clone()]).await;
    assert_eq!(out, vec![Outcome::Done, Outcome::Done]);
    assert_eq!(h.handle(&[duplicate]).await, vec![Outcome::Done]);
    assert_eq!(count(&pool, "mailroom_events").await, 14);

    // The first writer wins: rows still point at the first message.
    let other: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mailroom_events WHERE sqs_message_id <> 'm-1'")
            .fetch_one(&pool)
            .await
            .expect("query");
    assert_eq!(other, 0);
}

#[sqlx::test(migrations = "./migrations")]
async fn the_same_event_twice_in_one_batch_is_stored_once(pool: PgPool) {
    let h = handler(&pool);
    let out = h
        .handle(&[
            events_job("m-dup", fixture("events_duplicate_ids.json")),
            events_job("m-dup-2", fixture("events_duplicate_ids.json")),
        ])
        .await;
    assert_eq!(out, vec![Outcome::Done, Outcome::Done]);
    assert_eq!(count(&pool, "mailroom_events").await, 2);
    assert_eq!(
        event(&pool, "evt-delivered-20").await.sqs_message_id,
        "m-dup"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn malformed_json_is_dead_lettered_and_the_rest_of_the_batch_stored(pool: PgPool) {
    let h = handler(&pool);
    let out = h
        .handle(&[
            events_job("m-bad", fixture("events_malformed.json")),
            events_job("m-good", fixture("events_duplicate_ids.json")),
        ])
        .await;
    match &out[0] {
        Outcome::DeadLetter { reason } => {
            assert!(reason.starts_with("event webhook body: "), "{reason}");
            assert!(reason.contains("not JSON"), "{reason}");
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    assert_eq!(out[1], Outcome::Done);
    assert_eq!(count(&pool, "mailroom_events").await, 2);

    for (body, what) in [
        (&b"{\"no\": \"event field\"}"[..], "no \"event\" field"),
        (b"42", "got a number"),
    ] {
        let out = h.handle(&[events_job("m-x", body.to_vec())]).await;
        match &out[0] {
            Outcome::DeadLetter { reason } => assert!(reason.contains(what), "{reason}"),
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }
}

/// A row Postgres can never accept (an email too large for its btree index: SQLSTATE 54000)
/// fails the batch transaction; the handler then isolates it: the other jobs are stored and
/// Done, the bad one is dead-lettered with the database's reason.
#[sqlx::test(migrations = "./migrations")]
async fn a_row_postgres_rejects_is_isolated_and_dead_lettered(pool: PgPool) {
    // Incompressible enough that TOAST cannot shrink it under the btree limit (~2.7 kB).
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let huge: String = (0..20_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect();
    let bad = serde_json::to_vec(&serde_json::json!([
        // The event id is in the unique btree index (since the events were partitioned, the
        // email and sg_message_id are not indexed).
        {"event": "delivered", "sg_event_id": format!("evt-{huge}"), "email": "huge@example.com"}
    ]))
    .expect("json");
    let good_a =
        br#"[{"event":"delivered","sg_event_id":"evt-a","email":"a@example.com"}]"#.to_vec();
    let good_b = br#"[{"event":"open","sg_event_id":"evt-b","email":"b@example.com"}]"#.to_vec();

    let h = handler(&pool);
    let out = h
        .handle(&[
            events_job("m-a", good_a),
            events_job("m-huge", bad),
            events_job("m-b", good_b),
        ])
        .await;
    assert_eq!(out[0], Outcome::Done);
    assert_eq!(out[2], Outcome::Done);
    match &out[1] {
        Outcome::DeadLetter { reason } => {
            assert!(
                reason.starts_with("database rejected the data: inserting events"),
                "{reason}"
            )
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT sg_event_id FROM mailroom_events ORDER BY sg_event_id")
            .fetch_all(&pool)
            .await
            .expect("query");
    assert_eq!(ids, vec!["evt-a", "evt-b"]);
}

#[sqlx::test(migrations = "./migrations")]
async fn nul_characters_are_removed_from_text_and_json(pool: PgPool) {
    let body = br#"[{"event":"bounce","sg_event_id":"evt-nul","reason":"bad\u0000byte","x\u0000":"y\u0000"}]"#;
    let h = handler(&pool);
    assert_eq!(
        h.handle(&[events_job("m-nul", body.to_vec())]).await,
        vec![Outcome::Done]
    );
    let e = event(&pool, "evt-nul").await;
    assert_eq!(e.reason.as_deref(), Some("badbyte"));
    assert_eq!(e.payload["x"], "y");
}

#[sqlx::test(migrations = "./migrations")]
async fn a_database_outage_is_transient_for_every_job(pool: PgPool) {
    let h = handler(&pool);
    pool.close().await;
    let out = h
        .handle(&[
            events_job("m-1", fixture("events_duplicate_ids.json")),
            events_job("m-2", fixture("events_malformed.json")),
            events_job("m-3", fixture("events_all_types.json")),
        ])
        .await;
    assert!(
        matches!(&out[1], Outcome::DeadLetter { .. }),
        "decode errors stay dead letters"
    );
    for o in [&out[0], &out[2]] {
        match o {
            Outcome::Retry(Retry {
                transient: true,
                reason,
                ..
            }) => {
                assert!(reason.starts_with("database unavailable: "), "{reason}")
            }
            other => panic!("expected a transient retry, got {other:?}"),
        }
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn a_thousand_events_in_ten_messages_are_stored_in_one_transaction(pool: PgPool) {
    let events: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            serde_json::json!({
                "event": if i % 2 == 0 { "delivered" } else { "open" },
                "sg_event_id": format!("bulk-{i:04}"),
                "email": format!("u{i}@example.com"),
                "timestamp": 1_764_190_000 + i,
                "category": ["bulk", format!("c{}", i % 7)],
            })
        })
        .collect();
    // Spread over 10 messages, as a batch window would gather them.
    let jobs: Vec<_> = events
        .chunks(100)
        .enumerate()
        .map(|(i, c)| events_job(&format!("m-bulk-{i}"), serde_json::to_vec(c).expect("json")))
        .collect();
    let h = handler(&pool);
    let started = std::time::Instant::now();
    let out = h.handle_batch(&jobs).await;
    eprintln!("1,000 events in {:?}", started.elapsed());
    assert!(out.iter().all(|o| *o == Outcome::Done), "{out:?}");
    assert_eq!(count(&pool, "mailroom_events").await, 1000);
    let e = event(&pool, "bulk-0999").await;
    assert_eq!(e.categories, vec!["bulk", "c5"]);
    assert_eq!(e.sqs_message_id, "m-bulk-9");
}

fn signed_job(message_id: &str, signature: Option<&str>) -> mailroom::handler::Job {
    let timestamp = fixture_text("events_all_types.timestamp");
    let mut headers = vec![(TIMESTAMP_HEADER, timestamp.as_str())];
    if let Some(s) = signature {
        headers.push((SIGNATURE_HEADER, s));
    }
    let env = envelope(
        Kind::Events,
        "application/json",
        fixture("events_all_types.json"),
        &headers,
    );
    job(message_id, env)
}

#[sqlx::test(migrations = "./migrations")]
async fn signatures_are_checked_when_a_key_is_configured(pool: PgPool) {
    let config = SendgridHandlerConfig {
        event_webhook_public_key: Some(fixture_text("signing_public_key.b64")),
        ..Default::default()
    };
    let h = SendgridHandler::new(Store::from_pool(pool.clone()), config).expect("valid key");
    let good = fixture_text("events_all_types.sig");
    // Flip the body: the same signature no longer matches.
    let mut tampered = signed_job("m-tampered", Some(&good));
    tampered.envelope.body = fixture("events_duplicate_ids.json").into();
    let out = h
        .handle(&[
            signed_job("m-signed", Some(&good)),
            signed_job("m-unsigned", None),
            tampered,
        ])
        .await;
    assert_eq!(out[0], Outcome::Done);
    for (o, what) in [(&out[1], "missing"), (&out[2], "event webhook signature: ")] {
        match o {
            Outcome::DeadLetter { reason } => {
                assert!(reason.starts_with("event webhook signature: "), "{reason}");
                assert!(reason.contains(what), "{reason}");
            }
            other => panic!("expected a dead letter, got {other:?}"),
        }
    }
    assert_eq!(count(&pool, "mailroom_events").await, 14);
}

/// Any valid P-256 public key other than the fixture's (this one is from a signed-webhook test
/// vector): signatures made with the fixture's key never verify with it.
const OTHER_KEY: &str = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpVKS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g==";

fn from_webhook(mut job: mailroom::handler::Job, webhook: &str) -> mailroom::handler::Job {
    if let Some(source) = job.envelope.source.as_mut() {
        source.webhook = Some(webhook.to_owned());
    }
    job
}

#[sqlx::test(migrations = "./migrations")]
async fn named_webhooks_were_checked_with_the_default_key(pool: PgPool) {
    // Before named routes, the worker checked every events message with the one default key;
    // a webhook signing with its own key would have been dead-lettered whole.
    let fixture_key = fixture_text("signing_public_key.b64");
    let config = SendgridHandlerConfig {
        event_webhook_public_key: Some(OTHER_KEY.into()),
        webhook_public_keys: [("marketing".to_owned(), vec![fixture_key.clone()])].into(),
        ..Default::default()
    };
    let h = SendgridHandler::new(Store::from_pool(pool.clone()), config).expect("valid keys");
    let good = fixture_text("events_all_types.sig");
    let out = h
        .handle(&[
            from_webhook(signed_job("m-marketing", Some(&good)), "marketing"),
            from_webhook(signed_job("m-marketing-unsigned", None), "marketing"),
            signed_job("m-default", Some(&good)),
        ])
        .await;
    assert_eq!(out[0], Outcome::Done, "verified with the route's own key");
    assert!(
        matches!(&out[1], Outcome::DeadLetter { reason }
            if reason.contains("route \"marketing\": missing")),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(&out[2], Outcome::DeadLetter { reason } if reason.starts_with("event webhook signature: the default route: ")),
        "the default route still uses the default key: {:?}",
        out[2]
    );
}

/// The dead letter's reason for `out`, or a panic saying what it was instead.
fn reason(out: &Outcome) -> &str {
    match out {
        Outcome::DeadLetter { reason } => reason,
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

/// Issue 26: with a key configured, an envelope naming a route the worker has no key for (an
/// unknown name, or a route only the router has a key for) was stored unverified, and so was
/// one naming a route the router would answer 404 for (`MARKETING`, the empty name).
#[sqlx::test(migrations = "./migrations")]
async fn an_unsigned_envelope_for_a_route_without_a_key_was_stored(pool: PgPool) {
    let config = SendgridHandlerConfig {
        event_webhook_public_key: Some(fixture_text("signing_public_key.b64")),
        webhook_public_keys: [("marketing".to_owned(), vec![OTHER_KEY.to_owned()])].into(),
        trust_router_for: ["partners".to_owned()].into(),
        ..Default::default()
    };
    let h = SendgridHandler::new(Store::from_pool(pool.clone()), config).expect("valid keys");
    let good = fixture_text("events_all_types.sig");
    for (route, expected) in [
        ("nosuchroute", "route \"nosuchroute\" has no key here"),
        ("MARKETING", "webhook route \"MARKETING\": not a route name"),
        ("", "webhook route \"\": not a route name"),
        ("-a", "webhook route \"-a\": not a route name"),
    ] {
        // Unsigned, and signed with the default route's key (which is not this route's).
        for signature in [None, Some(good.as_str())] {
            let out = h
                .handle(&[from_webhook(signed_job("m-forged", signature), route)])
                .await;
            let reason = reason(&out[0]);
            assert!(reason.contains(expected), "{route:?}: {reason}");
        }
    }
    assert_eq!(count(&pool, "mailroom_events").await, 0, "nothing stored");
    // A trusted route is stored as the router sent it; an untrusted one with keys is verified.
    let out = h
        .handle(&[
            from_webhook(signed_job("m-partners", None), "partners"),
            signed_job("m-default", Some(&good)),
        ])
        .await;
    assert_eq!(out, vec![Outcome::Done, Outcome::Done]);
    // The same fixture body twice: the verified copy's events are duplicates of the first.
    assert_eq!(count(&pool, "mailroom_events").await, 14);
    let sources: Vec<Option<String>> =
        sqlx::query_scalar("SELECT DISTINCT source FROM mailroom_events")
            .fetch_all(&pool)
            .await
            .expect("sources");
    assert_eq!(sources, vec![Some("partners".to_owned())]);
}

/// With keys for named routes only, the default route has no key: refused unless trusted.
#[sqlx::test(migrations = "./migrations")]
async fn the_default_route_without_a_key_is_refused_unless_trusted(pool: PgPool) {
    let named_only = |trust_default| SendgridHandlerConfig {
        webhook_public_keys: [(
            "marketing".to_owned(),
            vec![fixture_text("signing_public_key.b64")],
        )]
        .into(),
        trust_router_for_default_route: trust_default,
        ..Default::default()
    };
    let good = fixture_text("events_all_types.sig");
    let h = SendgridHandler::new(Store::from_pool(pool.clone()), named_only(false)).expect("ok");
    let out = h.handle(&[signed_job("m-default", None)]).await;
    assert!(
        reason(&out[0]).contains("the default route has no key here"),
        "{out:?}"
    );
    let out = h
        .handle(&[from_webhook(
            signed_job("m-marketing", Some(&good)),
            "marketing",
        )])
        .await;
    assert_eq!(out, vec![Outcome::Done]);
    let h = SendgridHandler::new(Store::from_pool(pool.clone()), named_only(true)).expect("ok");
    let out = h.handle(&[signed_job("m-default-2", None)]).await;
    assert_eq!(out, vec![Outcome::Done], "trusted");
}

/// Without any key nothing is verified, as before; a name the router never writes is still
/// refused, for inbound mail too (it would be stored as the row's `source`).
#[sqlx::test(migrations = "./migrations")]
async fn without_keys_only_names_the_router_never_writes_are_refused(pool: PgPool) {
    let h = handler(&pool);
    let out = h
        .handle(&[
            from_webhook(signed_job("m-unknown", None), "nosuchroute"),
            from_webhook(signed_job("m-upper", None), "MARKETING"),
            from_webhook(
                inbound_job("m-in", fixture("inbound_parsed.multipart")),
                "Bad Name",
            ),
        ])
        .await;
    assert_eq!(out[0], Outcome::Done);
    assert!(reason(&out[1]).contains("\"MARKETING\": not a route name"));
    assert!(reason(&out[2]).contains("\"Bad Name\": not a route name"));
}

#[sqlx::test(migrations = "./migrations")]
async fn route_settings_that_cannot_be_meant_are_startup_errors(pool: PgPool) {
    let key = fixture_text("signing_public_key.b64");
    let config = SendgridHandlerConfig {
        event_webhook_public_key: Some(key.clone()),
        webhook_public_keys: [
            ("Marketing".to_owned(), vec![key.clone()]),
            ("eu".to_owned(), vec![key.clone()]),
        ]
        .into(),
        trust_router_for: ["".to_owned(), "MARKETING".to_owned(), "eu".to_owned()].into(),
        trust_router_for_default_route: true,
        ..Default::default()
    };
    let err = SendgridHandler::new(Store::from_pool(pool), config).expect_err("bad settings");
    assert!(
        matches!(err, SendgridConfigError::RouteSettings(ref p) if p.len() == 5),
        "{err}"
    );
    let text = err.to_string();
    for expected in [
        "webhook_public_keys: \"Marketing\" is not a route name",
        "trust_router_for: \"\" is not a route name",
        "trust_router_for: \"MARKETING\" is not a route name",
        "trust_router_for names \"eu\", which has keys",
        "trust_router_for_default_route with event_webhook_public_key set",
    ] {
        assert!(text.contains(expected), "{text} should say {expected}");
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn during_a_key_rotation_either_key_verifies(pool: PgPool) {
    let config = SendgridHandlerConfig {
        event_webhook_public_key: Some(OTHER_KEY.into()),
        event_webhook_previous_public_key: Some(fixture_text("signing_public_key.b64")),
        ..Default::default()
    };
    let h = SendgridHandler::new(Store::from_pool(pool.clone()), config).expect("valid keys");
    let good = fixture_text("events_all_types.sig");
    let out = h.handle(&[signed_job("m-old-key", Some(&good))]).await;
    assert_eq!(out[0], Outcome::Done);
    let bad = SendgridHandlerConfig {
        webhook_public_keys: [("marketing".to_owned(), vec!["nope".to_owned()])].into(),
        ..Default::default()
    };
    let err = SendgridHandler::new(Store::from_pool(pool), bad).expect_err("bad key");
    assert!(
        err.to_string().contains("webhook_public_keys.marketing"),
        "{err}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_bad_public_key_is_a_startup_error(pool: PgPool) {
    let config = SendgridHandlerConfig {
        event_webhook_public_key: Some("not a key".into()),
        ..Default::default()
    };
    let err = SendgridHandler::new(Store::from_pool(pool), config).expect_err("bad key");
    assert!(matches!(err, SendgridConfigError::PublicKey(_)));
    assert!(
        err.to_string().contains("event_webhook_public_key"),
        "{err}"
    );
}

/// What `mailroom check` and `run` report for a trusted name the router would never route.
#[sqlx::test(migrations = "./migrations")]
async fn a_trusted_route_that_is_not_a_route_name_fails_the_config_check(pool: PgPool) {
    let config = mailroom::Config::parse(
        "[store]\ndatabase_url = \"postgres://unused\"\n[[queue]]\nname = \"q\"\nhandler = \"sendgrid\"\n\
         [handlers.sendgrid]\ntrust_router_for = [\"Marketing\"]\n",
        "test",
    )
    .expect("the file parses");
    let Err(problems) = mailroom::Worker::new().build_registry(&config, &Store::from_pool(pool))
    else {
        panic!("the sendgrid handler accepted trust_router_for = [\"Marketing\"]");
    };
    let text = problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("trust_router_for: \"Marketing\" is not a route name"),
        "{text}"
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn the_worker_registers_sendgrid(pool: PgPool) {
    let config = mailroom::Config::parse(
        "[store]\ndatabase_url = \"postgres://unused\"\n[[queue]]\nname = \"q\"\nhandler = \"sendgrid\"\n",
        "test",
    )
    .expect("config");
    let registry = mailroom::Worker::new()
        .build_registry(&config, &Store::from_pool(pool.clone()))
        .expect("handlers build");
    let h = registry
        .get("sendgrid")
        .expect("registered as \"sendgrid\"");
    let out = h
        .handle_batch(&[events_job("m-reg", fixture("events_duplicate_ids.json"))])
        .await;
    assert_eq!(out, vec![Outcome::Done]);
}

/// A revoked INSERT grant is an operator's problem, not the message's: every job is retried as
/// transient (kept in SQS), nothing is dead-lettered.
#[sqlx::test(migrations = "./migrations")]
async fn a_missing_privilege_is_transient_not_a_dead_letter(pool: PgPool) {
    let role = format!("mailroom_noinsert_{}", std::process::id());
    sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&pool)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(&pool)
        .await
        .expect("role");
    sqlx::query(&format!(
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
    ))
    .execute(&pool)
    .await
    .expect("grant");
    let options = (*pool.connect_options()).clone().username(&role);
    let limited = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .expect("connect as the limited role");
    let h = SendgridHandler::new(
        Store::from_pool(limited.clone()),
        SendgridHandlerConfig::default(),
    )
    .expect("handler");
    let out = h
        .handle(&[
            events_job("m-1", fixture("events_duplicate_ids.json")),
            inbound_job("m-2", fixture("inbound_parsed.multipart")),
        ])
        .await;
    limited.close().await;
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(&pool)
        .await
        .expect("drop owned");
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&pool)
        .await
        .expect("drop role");
    for o in &out {
        match o {
            Outcome::Retry(Retry {
                transient: true,
                reason,
                ..
            }) => {
                assert!(reason.contains("permission denied"), "{reason}")
            }
            other => panic!("expected a transient retry, got {other:?}"),
        }
    }
    assert_eq!(count(&pool, "mailroom_events").await, 0);
}

/// Legacy mapping-template messages carry no edge timestamp: rows fall back to the SQS send time.
#[sqlx::test(migrations = "./migrations")]
async fn legacy_shapes_use_the_sqs_send_time(pool: PgPool) {
    let mut legacy = events_job("m-legacy", fixture("events_duplicate_ids.json"));
    legacy.envelope.origin = mailroom_envelope::Origin::SeedJson;
    legacy.envelope.received_at = None;
    legacy.envelope.source = None;
    let sent = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single();
    legacy.sent_at = sent;
    assert_eq!(handler(&pool).handle(&[legacy]).await, vec![Outcome::Done]);
    assert_eq!(event(&pool, "evt-open-21").await.received_at, sent);
}
