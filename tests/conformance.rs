//! Conformance over real SendGrid payloads (`../shared/conformance`, see its README): every
//! documented event example and every Inbound Parse post goes through the real `sendgrid`
//! handler into a fresh Postgres database, and lands with the fields SendGrid documents.
//!
//! Ignored in a plain `cargo test`; scripts/test.sh runs it with `--ignored` when the folder
//! exists. Run by hand without the folder, it fails: it never passes silently.

mod support;

use std::path::PathBuf;

use chrono::Utc;
use mailroom::handler::{Job, Outcome};
use mailroom::handlers::{SendgridHandler, SendgridHandlerConfig};
use mailroom::store::Store;
use mailroom_envelope::{Envelope, Kind, Origin, Source};
use support::{admin_url, create_db, drop_db, unique};

/// (event, bounce_type, status, categories, bounce_classification, pool_name, url_offset_index,
/// asm_group_id)
type EventRow = (
    String,
    Option<String>,
    Option<String>,
    Vec<String>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i64>,
);
/// (mode, subject, has text, has html, spf)
type EmailRow = (String, Option<String>, bool, bool, Option<String>);

fn conformance_dir() -> PathBuf {
    let dir = std::env::var("MAILROOM_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/conformance"
            ))
        });
    assert!(
        dir.is_dir(),
        "conformance folder {} is missing",
        dir.display()
    );
    dir
}

fn read(rel: &str) -> Vec<u8> {
    let path = conformance_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn job(id: &str, kind: Kind, content_type: &str, body: Vec<u8>) -> Job {
    Job {
        message_id: id.into(),
        queue: "conformance".into(),
        receive_count: 1,
        sent_at: Some(Utc::now()),
        attributes: Default::default(),
        envelope: Envelope {
            origin: Origin::Router {
                version: mailroom_envelope::ENVELOPE_VERSION,
            },
            kind,
            received_at: Some(Utc::now()),
            source: Some(Source {
                path: "/sendgrid".into(),
                stage: None,
                request_id: None,
                webhook: None,
            }),
            headers: vec![("content-type".into(), content_type.into())],
            content_type: Some(content_type.into()),
            body: body.into(),
            queue_url: None,
        },
    }
}

/// A migrated database of this test's own; returns the store and the database's name.
async fn fresh_store() -> (Store, String) {
    let db = unique("conformance");
    let url = create_db(&admin_url(), &db).await;
    let store = Store::connect(&url, 4).await.unwrap();
    store.migrate().await.unwrap();
    (store, db)
}

#[tokio::test]
#[ignore = "reads ../shared/conformance; run by scripts/test.sh with --ignored"]
async fn documented_events_and_inbound_posts_store_as_documented() {
    let (store, db) = fresh_store().await;
    let handler = SendgridHandler::new(store.clone(), SendgridHandlerConfig::default()).unwrap();
    let form = "multipart/form-data; boundary=xYzZY";
    let jobs = vec![
        job(
            "events",
            Kind::Events,
            "application/json",
            read("events/documented-examples.json"),
        ),
        job(
            "parsed",
            Kind::Inbound,
            form,
            read("inbound-parse/parsed-mode.multipart"),
        ),
        job(
            "raw",
            Kind::Inbound,
            form,
            read("inbound-parse/raw-mode.multipart"),
        ),
        job(
            "raw-att",
            Kind::Inbound,
            form,
            read("inbound-parse/raw-mode-with-attachments.multipart"),
        ),
        job(
            "bad",
            Kind::Inbound,
            form,
            read("inbound-parse/bad-data.txt"),
        ),
    ];
    let outcomes = handler.handle(&jobs).await;
    assert_eq!(
        &outcomes[..4],
        &[Outcome::Done, Outcome::Done, Outcome::Done, Outcome::Done]
    );
    match &outcomes[4] {
        Outcome::DeadLetter { reason } => {
            assert!(reason.starts_with("inbound parse: "), "{reason}")
        }
        other => panic!("bad-data.txt must be dead-lettered with a reason, got {other:?}"),
    }
    // Stored again (SendGrid's retry, or a redelivery): nothing new.
    assert_eq!(handler.handle(&jobs[..4]).await, vec![Outcome::Done; 4]);

    let pool = store.pool();
    // In the file's order.
    let documented: Vec<serde_json::Value> =
        serde_json::from_slice(&read("events/documented-examples.json")).unwrap();
    let documented_ids: Vec<String> = documented
        .iter()
        .map(|e| e["sg_event_id"].as_str().unwrap().to_string())
        .collect();
    let rows: Vec<EventRow> =
        sqlx::query_as(
            "select event, bounce_type, status, categories, bounce_classification, pool_name, url_offset_index, asm_group_id
             from mailroom_events order by array_position($1::text[], sg_event_id)",
        )
        .bind(&documented_ids)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), 4, "all four documented events stored once");
    let (event, _, _, categories, _, pool_name, _, _) = &rows[0];
    assert_eq!(
        (event.as_str(), pool_name.as_deref()),
        ("processed", Some("new_MY_test"))
    );
    assert_eq!(
        categories,
        &vec!["cat facts".to_string()],
        "a string category becomes a list"
    );
    assert_eq!(
        (rows[1].1.as_deref(), rows[1].2.as_deref()),
        (Some("blocked"), Some("5.0.0"))
    );
    assert_eq!(
        rows[2].3,
        vec!["category1".to_string(), "category2".to_string()]
    );
    assert_eq!(
        (rows[2].6, rows[2].7),
        (Some(0), Some(1)),
        "click url_offset and asm group"
    );
    assert_eq!(
        (rows[3].4.as_deref(), rows[3].2.as_deref()),
        (Some("Unclassified"), None),
        "bounce without status"
    );
    let (custom,): (serde_json::Value,) =
        sqlx::query_as("select payload from mailroom_events where event = 'click'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        custom["unique_arg_key"], "unique_arg_value",
        "custom args kept in the payload"
    );
    assert_eq!(custom["newsletter"]["newsletter_id"], "1943530");

    let emails: Vec<EmailRow> = sqlx::query_as(
        "select mode, subject, text_body is not null, html_body is not null, spf from mailroom_inbound_emails order by id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(emails.len(), 3, "three inbound emails stored once");
    assert_eq!(
        (emails[0].0.as_str(), emails[0].1.as_deref()),
        ("parsed", Some("Testing non-raw"))
    );
    assert!(emails[0].2 && emails[0].3, "parsed mode has text and html");
    assert!(emails[0].4.is_some(), "parsed mode has SPF");
    assert_eq!(
        (emails[1].0.as_str(), emails[1].1.as_deref()),
        ("raw", Some("Testing with Request.bin"))
    );
    assert_eq!(
        (emails[2].0.as_str(), emails[2].1.as_deref()),
        ("raw", Some("Raw Payload"))
    );
    let attachments: Vec<(Option<String>, Vec<u8>)> =
        sqlx::query_as("select filename, content from mailroom_inbound_attachments order by id")
            .fetch_all(pool)
            .await
            .unwrap();
    let jpegs: Vec<_> = attachments
        .iter()
        .filter(|(name, _)| name.as_deref() == Some("SendGrid.jpg"))
        .collect();
    assert_eq!(
        jpegs.len(),
        1,
        "one SendGrid.jpg attachment: {:?}",
        attachments.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
    assert_eq!(
        &jpegs[0].1[..2],
        &[0xFF, 0xD8],
        "the JPEG is byte-exact (SOI marker)"
    );

    store.pool().close().await;
    drop_db(&admin_url(), &db).await;
}
