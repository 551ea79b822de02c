//! Hostile input through S3: an Extended Client pointer to a body over the 64 MiB limit
//! (mailroom_envelope::MAX_MESSAGE_BYTES), and a pointer to an object that does not exist. The
//! first is dead-lettered as too large, the second as missing (the message can never be
//! handled); the worker survives both.

mod fault_support;

use fault_support::*;

/// 1 KiB over the envelope limit.
const OVERSIZED_BYTES: usize = mailroom_envelope::MAX_MESSAGE_BYTES + 1024;

/// A new bucket (named from `prefix`) holding object "big": a JSON array padded with spaces to
/// [`OVERSIZED_BYTES`].
async fn bucket_with_oversized_body(s3: &aws_sdk_s3::Client, prefix: &str) -> String {
    let bucket = unique(prefix).replace('_', "-");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let mut body = vec![b' '; OVERSIZED_BYTES];
    body[0] = b'[';
    body[OVERSIZED_BYTES - 1] = b']';
    s3.put_object()
        .bucket(&bucket)
        .key("big")
        .body(body.into())
        .send()
        .await
        .unwrap();
    bucket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_missing_s3_bodies_are_dead_lettered() {
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let s3 = s3_client(&endpoint).await;
    let bucket = bucket_with_oversized_body(&s3, "hostile-s3").await;
    let pointer = |key: &str| {
        mailroom_envelope::S3Pointer {
            bucket: bucket.clone(),
            key: key.into(),
        }
        .to_message_body()
    };
    let queue = unique("hostile-s3");
    let url = create_queue(&sqs, &queue, 10, None).await;
    send(&sqs, &url, &[pointer("big"), pointer("missing")]).await;

    let admin = admin_url();
    let db_name = unique("hostile_s3");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("hostile-s3");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.visibility_timeout_secs = 10;
    let config = cfg.write(&dir);
    let mut worker = Worker::start_numbered(&config, 0);
    wait_counts(&db, "2 dead letters", 60, &mut worker, |c| c.3 >= 2).await;
    let rss_mib = worker.peak_rss_kib() / 1024;
    let letters = dead_letters(&db).await;
    let reason = |key: &str| {
        letters
            .iter()
            .find(|(_, b)| *b == pointer(key))
            .map(|(r, _)| r.clone())
            .unwrap_or_default()
    };
    let too_large = reason("big").to_lowercase();
    assert!(
        too_large.contains("large") || too_large.contains("limit") || too_large.contains("bytes"),
        "the reason says the body is too large: {too_large}"
    );
    assert!(
        reason("missing").to_lowercase().contains("missing")
            || reason("missing").contains("NoSuchKey")
            || reason("missing").contains("no such"),
        "the reason says the object is missing: {}",
        reason("missing")
    );
    assert!(worker.alive());
    assert!(worker.terminate(15));
    eprintln!(
        "peak RSS while refusing a {} MiB body: {rss_mib} MiB",
        OVERSIZED_BYTES >> 20
    );
    let _ = s3.delete_object().bucket(&bucket).key("big").send().await;
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: `Bodies::fetch` used to collect the whole S3 object, copy it and make it a String
/// before the envelope's size check, so refusing a 64 MiB body cost ~160 MiB of RSS. It now
/// refuses by the declared length before reading, and never reads past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_s3_body_is_refused_before_it_is_read() {
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let s3 = s3_client(&endpoint).await;
    let bucket = bucket_with_oversized_body(&s3, "hostile-s3-big").await;
    let queue = unique("hostile-s3-big");
    let url = create_queue(&sqs, &queue, 10, None).await;
    let pointer = mailroom_envelope::S3Pointer {
        bucket: bucket.clone(),
        key: "big".into(),
    }
    .to_message_body();
    send(&sqs, &url, &[pointer]).await;
    let admin = admin_url();
    let db_name = unique("hostile_s3_big");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("hostile-s3-big");
    let config = WorkerConfig::new(&endpoint, &queue, &url, &db).write(&dir);
    let mut worker = Worker::start_numbered(&config, 0);
    wait_counts(&db, "1 dead letter", 60, &mut worker, |c| c.3 >= 1).await;
    let rss_mib = worker.peak_rss_kib() / 1024;
    assert!(worker.terminate(15));
    let _ = s3.delete_object().bucket(&bucket).key("big").send().await;
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
    assert!(
        rss_mib <= 64,
        "refusing a {} MiB body took {rss_mib} MiB of RSS: it was read whole",
        OVERSIZED_BYTES >> 20
    );
}
