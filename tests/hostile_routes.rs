//! Envelopes put straight on the events queue (as anyone with SQS send access can), through the
//! real worker binary, real rustack and real Postgres, with the worker's signature check on:
//! every one the worker cannot verify (an unknown route, a name the router answers 404 for, a
//! route the router has a key for and the worker has none, a wrong signature) becomes a dead
//! letter whose reason names the route, once (no retry loop); a route the config trusts the
//! router for, and genuinely signed traffic of the default and a named route, are stored.

mod fault_support;

use base64::Engine as _;
use fault_support::*;
use mailroom_envelope::{Envelope, Kind, Origin, Source};
use mailroom_sendgrid::{SIGNATURE_HEADER, TIMESTAMP_HEADER};
use p256::ecdsa::signature::Signer;
use sqlx::{Connection, PgConnection};

/// A SendGrid-style signing key: fixed bytes, so no RNG is needed.
fn signing_key(seed: u8) -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_bytes(&[seed; 32].into()).expect("a valid scalar")
}

/// The key as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo (the fixed P-256
/// prefix, then the uncompressed point).
fn public_key_b64(key: &p256::ecdsa::SigningKey) -> String {
    const SPKI_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08,
        0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let point = key.verifying_key().to_encoded_point(false);
    base64::engine::general_purpose::STANDARD.encode([&SPKI_PREFIX[..], point.as_bytes()].concat())
}

/// How a message is signed.
#[derive(Clone, Copy)]
enum Signed<'a> {
    Not,
    With(&'a p256::ecdsa::SigningKey),
    Garbage,
}

/// A router envelope for `route` (None: the default route), as an SQS body.
fn message(route: Option<&str>, body: &[u8], signed: Signed<'_>) -> String {
    let timestamp = chrono::Utc::now().timestamp().to_string();
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let signature = match signed {
        Signed::Not => None,
        Signed::With(key) => {
            let signature: p256::ecdsa::Signature =
                key.sign(&[timestamp.as_bytes(), body].concat());
            Some(base64::engine::general_purpose::STANDARD.encode(signature.to_der().as_bytes()))
        }
        Signed::Garbage => Some("MEUCIQDnotasignature".to_owned()),
    };
    if let Some(signature) = signature {
        headers.push((SIGNATURE_HEADER.to_owned(), signature));
        headers.push((TIMESTAMP_HEADER.to_owned(), timestamp));
    }
    mailroom_envelope::encode(&Envelope {
        origin: Origin::Router {
            version: mailroom_envelope::ENVELOPE_VERSION,
        },
        kind: Kind::Events,
        received_at: Some(chrono::Utc::now()),
        source: Some(Source {
            path: route.map_or("/sendgrid/events".into(), |r| {
                format!("/sendgrid/events/{r}")
            }),
            stage: None,
            request_id: Some("forged".into()),
            webhook: route.map(str::to_owned),
        }),
        headers,
        content_type: Some("application/json".into()),
        body: body.to_vec().into(),
        queue_url: None,
    })
}

/// Regression (issue 26): an unsigned envelope naming "nosuchroute", "MARKETING" or "", or a
/// route the router has a key for and the worker has none, was stored unverified, with that
/// name as its `source`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_envelope_for_an_unknown_route_was_stored() {
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let queue = unique("routes");
    let url = create_queue(&sqs, &queue, 10, None).await;
    let admin = admin_url();
    let db_name = unique("routes");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("routes");

    let default_key = signing_key(1);
    let marketing_key = signing_key(2);
    let router_only_key = signing_key(3);
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.visibility_timeout_secs = 10;
    cfg.extra_queue = format!(
        "[handlers.sendgrid]\n\
         event_webhook_public_key = \"{}\"\n\
         trust_router_for = [\"partners\"]\n\
         [handlers.sendgrid.webhook_public_keys]\n\
         marketing = [\"{}\"]\n",
        public_key_b64(&default_key),
        public_key_b64(&marketing_key),
    );
    let config = cfg.write(&dir);

    // (SQS body, the route its dead letter's reason must name)
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    let mut body = || {
        n += 1;
        events_body(&format!("forged{n}"), 0, 2)
    };
    for route in ["nosuchroute", "MARKETING", ""] {
        for signed in [
            Signed::Not,
            Signed::Garbage,
            Signed::With(&default_key),
            Signed::With(&marketing_key),
        ] {
            refused.push((message(Some(route), &body(), signed), format!("{route:?}")));
        }
    }
    // The router has a key for "transactional"; the worker has none and does not trust it.
    for signed in [Signed::Not, Signed::With(&router_only_key)] {
        refused.push((
            message(Some("transactional"), &body(), signed),
            "route \"transactional\"".into(),
        ));
    }
    // Known routes, wrongly signed.
    for signed in [Signed::Not, Signed::Garbage, Signed::With(&default_key)] {
        refused.push((
            message(Some("marketing"), &body(), signed),
            "route \"marketing\"".into(),
        ));
    }
    for signed in [Signed::Not, Signed::With(&marketing_key)] {
        refused.push((message(None, &body(), signed), "the default route".into()));
    }
    let stored = [
        message(
            None,
            &events_body("genuine-default", 0, 3),
            Signed::With(&default_key),
        ),
        message(
            Some("marketing"),
            &events_body("genuine-marketing", 0, 3),
            Signed::With(&marketing_key),
        ),
        message(
            Some("partners"),
            &events_body("trusted-partners", 0, 3),
            Signed::Not,
        ),
    ];
    let bodies: Vec<String> = refused.iter().map(|(b, _)| b.clone()).collect();
    send(&sqs, &url, &bodies).await;
    send(&sqs, &url, &stored).await;
    let mut worker = Worker::start_numbered(&config, 0);

    let dead_expected = refused.len() as i64;
    wait_counts(
        &db,
        &format!("{dead_expected} dead letters, 9 events"),
        60,
        &mut worker,
        |c| c.3 >= dead_expected && c.0 >= 9,
    )
    .await;
    wait_drained(&sqs, &url, 30).await;

    let mut conn = PgConnection::connect(&db).await.expect("connect");
    let letters: Vec<(String, String, i32, i32)> = sqlx::query_as(
        "SELECT reason, body, receive_count, attempts FROM mailroom_dead_letters ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("dead letters");
    assert_eq!(letters.len(), refused.len(), "{letters:#?}");
    let mut problems = Vec::new();
    for (body, route) in &refused {
        match letters.iter().find(|(_, b, _, _)| b == body) {
            None => problems.push(format!("{route}: not dead-lettered")),
            Some((reason, _, receives, attempts)) => {
                if !reason.contains(route.as_str()) {
                    problems.push(format!("{route}: reason {reason:?} does not name it"));
                }
                if (*receives, *attempts) != (1, 1) {
                    problems.push(format!(
                        "{route}: received {receives} times, {attempts} attempts: retried"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    let rows: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT source, count(*) FROM mailroom_events GROUP BY source ORDER BY source NULLS FIRST",
    )
    .fetch_all(&mut conn)
    .await
    .expect("events by source");
    assert_eq!(
        rows,
        vec![
            (None, 3),
            (Some("marketing".to_owned()), 3),
            (Some("partners".to_owned()), 3)
        ],
        "only the genuine and the trusted messages are stored"
    );
    let forged: i64 =
        sqlx::query_scalar("SELECT count(*) FROM mailroom_events WHERE sg_event_id LIKE 'forged%'")
            .fetch_one(&mut conn)
            .await
            .expect("forged");
    assert_eq!(forged, 0);
    drop(conn);

    assert!(worker.terminate(15), "clean exit after SIGTERM");
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}
