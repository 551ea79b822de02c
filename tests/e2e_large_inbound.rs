//! End to end for the email the Lambda path loses: a 30 MB Inbound Parse post (a 20 MB
//! attachment of pseudo-random bytes) through `serve` (in-process, streamed to rustack's S3 as a
//! multipart upload, its pointer on SQS) -> the real `mailroom run` binary -> Postgres, where the
//! attachment's bytes equal the posted ones and the email's dedup key is the SHA-256 of the
//! exact body.

mod common;
#[path = "../router/tests/large_post/mod.rs"]
mod large_post;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mailroom_router::{App, AwsSink, Config as RouterConfig};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

/// One stored attachment: position, filename, size_bytes, sha256, content.
type AttachmentRow = (i32, Option<String>, i64, String, Vec<u8>);

#[tokio::test]
async fn a_30_mb_inbound_post_through_serve_lands_in_postgres_byte_exact() {
    common::set_aws_env();
    let endpoint = common::endpoint();
    let aws = common::sdk_config(&endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    );
    let inbound_q = common::unique_dashed("e2e-large-inbound");
    // The worker's visibility timeout must cover fetching and storing 40 MB.
    let inbound_url = common::create_queue(&sqs, &inbound_q, 120, None).await;
    let bucket = common::unique_dashed("e2e-large-bodies");
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");

    let admin_url = common::admin_url();
    let db = common::unique("e2e_large");
    let database_url = common::create_db(&admin_url, &db).await;
    let dir = common::temp_dir("e2e_large");
    let config_path = dir.join("mailroom.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
            [worker]
            shutdown_timeout_secs = 10
            [store]
            database_url = "{database_url}"
            [sqs]
            endpoint_url = "{endpoint}"
            region = "us-east-1"
            [s3]
            buckets = ["{bucket}"]
            [[queue]]
            name = "{inbound_q}"
            url = "{inbound_url}"
            handler = "sendgrid"
            wait_time_secs = 1
            "#
        ),
    )
    .expect("write config");
    common::migrate(&config_path);
    let worker = common::Worker::start(&config_path, dir.join("worker.log"), &[]);

    let vars: HashMap<String, String> = [
        ("MAILROOM_INBOUND_QUEUE_URL", inbound_url.as_str()),
        ("MAILROOM_LARGE_BODY_BUCKET", bucket.as_str()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let app = Arc::new(App::new(
        RouterConfig::from_vars(vars).expect("router config"),
        AwsSink::from_sdk_config(&aws),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_router, router_stopped) = tokio::sync::oneshot::channel::<()>();
    let router = tokio::spawn(mailroom_router::serve::serve(app, listener, async {
        let _ = router_stopped.await;
    }));

    let post = large_post::large_post(30_000_000, 20_000_000, 30);
    let content_type = large_post::LargePost::content_type();
    let (status, answer) = large_post::post(
        addr,
        "/sendgrid/inbound",
        &[("Content-Type", &content_type)],
        &post.body,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    let mut conn = PgConnection::connect(&database_url).await.expect("db");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (emails, dead): (i64, i64) = sqlx::query_as(
            "select (select count(*) from mailroom_inbound_emails), \
             (select count(*) from mailroom_dead_letters)",
        )
        .fetch_one(&mut conn)
        .await
        .expect("count");
        assert_eq!(dead, 0, "nothing is dead-lettered");
        if emails >= 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the email was not stored within 120 s (log: {})",
            dir.join("worker.log").display()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (mode, subject, dedup_key): (String, Option<String>, String) =
        sqlx::query_as("select mode, subject, dedup_key from mailroom_inbound_emails")
            .fetch_one(&mut conn)
            .await
            .expect("the email");
    assert_eq!(mode, "parsed");
    assert_eq!(subject.as_deref(), Some("A large attachment"));
    assert_eq!(
        dedup_key,
        hex::encode(Sha256::digest(&post.body)),
        "keyed on the exact body"
    );
    let attachments: Vec<AttachmentRow> = sqlx::query_as(
        "select position, filename, size_bytes, sha256, content from mailroom_inbound_attachments",
    )
    .fetch_all(&mut conn)
    .await
    .expect("attachments");
    assert_eq!(attachments.len(), 1, "one attachment");
    let (position, filename, size, sha256, content) = &attachments[0];
    assert_eq!(*position, 0);
    assert_eq!(filename.as_deref(), Some(post.attachment_name));
    assert_eq!(*size, post.attachment.len() as i64);
    assert_eq!(*sha256, hex::encode(Sha256::digest(&post.attachment)));
    assert!(*content == post.attachment, "the attachment is byte-exact");
    assert_eq!(common::depth(&sqs, &inbound_url).await, (0, 0), "acked");

    let status = worker.stop(30).await;
    assert!(status.success(), "worker exit after SIGTERM: {status:?}");
    let _ = stop_router.send(());
    router.await.expect("router task").expect("router ran");
    drop(conn);
    common::drop_db(&admin_url, &db).await;
    let _ = sqs.delete_queue().queue_url(&inbound_url).send().await;
    let objects = s3
        .list_objects_v2()
        .bucket(&bucket)
        .send()
        .await
        .map(|o| o.contents().to_vec())
        .unwrap_or_default();
    for object in objects {
        if let Some(key) = object.key() {
            let _ = s3.delete_object().bucket(&bucket).key(key).send().await;
        }
    }
    let _ = s3.delete_bucket().bucket(&bucket).send().await;
    let _ = std::fs::remove_dir_all(dir);
}
