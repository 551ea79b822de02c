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

/// A new bucket holding `key` = a router envelope of `events` SendGrid events.
async fn bucket_with_envelope(
    s3: &aws_sdk_s3::Client,
    prefix: &str,
    key: &str,
    events: usize,
) -> String {
    let bucket = unique(prefix).replace('_', "-");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let body = envelope(
        mailroom_envelope::Kind::Events,
        "application/json",
        &events_body(prefix, 0, events),
    );
    s3.put_object()
        .bucket(&bucket)
        .key(key)
        .body(body.into_bytes().into())
        .send()
        .await
        .unwrap();
    bucket
}

/// Regression: the worker deleted an offloaded body once its message was stored, so a second
/// delivery of the same pointer (SQS delivers at least once) found the object gone and became a
/// dead letter although its data was stored. A pointer to a bucket that does not exist was
/// retried forever (NoSuchBucket counted as transient) instead of becoming a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_s3_pointer_is_done_and_a_missing_bucket_is_a_dead_letter() {
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let s3 = s3_client(&endpoint).await;
    let bucket = bucket_with_envelope(&s3, "hostile-s3-twice", "body", 7).await;
    let pointer = |bucket: &str| {
        mailroom_envelope::S3Pointer {
            bucket: bucket.into(),
            key: "body".into(),
        }
        .to_message_body()
    };
    let queue = unique("hostile-s3-twice");
    let url = create_queue(&sqs, &queue, 10, None).await;
    let missing_bucket = unique("no-such-bucket").replace('_', "-");
    let admin = admin_url();
    let db_name = unique("hostile_s3_twice");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("hostile-s3-twice");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.retry_intervals_secs = "[1, 1, 1, 1, 1, 1]".into();
    let config = cfg.write(&dir);
    let mut worker = Worker::start_numbered(&config, 0);

    send(&sqs, &url, &[pointer(&bucket)]).await;
    wait_stored(&db, 7, 0, 30, &mut worker).await;
    wait_drained(&sqs, &url, 30).await;
    // The same pointer again, after the first was stored and deleted from SQS.
    send(&sqs, &url, &[pointer(&bucket), pointer(&missing_bucket)]).await;
    wait_counts(&db, "1 dead letter", 30, &mut worker, |c| c.3 >= 1).await;
    wait_drained(&sqs, &url, 30).await;
    let letters = dead_letters(&db).await;
    assert_eq!(
        letters.len(),
        1,
        "only the missing bucket is a dead letter: {letters:?}"
    );
    assert_eq!(letters[0].1, pointer(&missing_bucket));
    assert!(letters[0].0.contains("does not exist"), "{}", letters[0].0);
    let (rows, distinct, _, _) = counts(&db).await.unwrap();
    assert_eq!(
        (rows, distinct),
        (7, 7),
        "the redelivery stored nothing twice"
    );
    assert!(
        s3.head_object()
            .bucket(&bucket)
            .key("body")
            .send()
            .await
            .is_ok(),
        "the body stays for the lifecycle rule to expire"
    );
    assert!(worker.terminate(15));
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: the worker followed pointers into any bucket its credentials could read (and
/// deleted what it read there). With `[s3] buckets`, a pointer elsewhere is a dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pointer_to_a_bucket_outside_the_configured_ones_is_a_dead_letter() {
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let s3 = s3_client(&endpoint).await;
    let foreign = bucket_with_envelope(&s3, "hostile-s3-foreign", "body", 3).await;
    let queue = unique("hostile-s3-foreign");
    let url = create_queue(&sqs, &queue, 10, None).await;
    let admin = admin_url();
    let db_name = unique("hostile_s3_foreign");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("hostile-s3-foreign");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.extra_queue = "[s3]\nbuckets = [\"mailroom-large-bodies\"]\n".into();
    let config = cfg.write(&dir);
    let mut worker = Worker::start_numbered(&config, 0);
    let pointer = mailroom_envelope::S3Pointer {
        bucket: foreign.clone(),
        key: "body".into(),
    }
    .to_message_body();
    send(&sqs, &url, &[pointer]).await;
    wait_counts(&db, "1 dead letter", 30, &mut worker, |c| c.3 >= 1).await;
    let letters = dead_letters(&db).await;
    assert!(
        letters[0].0.contains("not a configured large-body bucket"),
        "{}",
        letters[0].0
    );
    assert_eq!(counts(&db).await.unwrap().0, 0, "nothing stored from it");
    assert!(worker.terminate(15));
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Regression: memory was bounded by concurrency, not bytes: hostile S3 pointers to large
/// objects (up to the 64 MiB envelope limit) took peak RSS to 625 MiB (bodies in flight x body
/// size). Offloaded bodies now reserve their size in `max_body_bytes_in_flight` (64 MiB by
/// default) before they are read; the rest wait. `MAILROOM_BODY_BUDGET_BYTES` runs the same
/// load with another budget, for BENCHMARKS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_s3_bodies_wait_for_the_byte_budget_instead_of_piling_up_in_memory() {
    const BODIES: usize = 4;
    const BODY_BYTES: usize = 28 * 1024 * 1024;
    let endpoint = endpoint();
    let sqs = sqs_client(&endpoint).await;
    let s3 = s3_client(&endpoint).await;
    let bucket = unique("hostile-s3-budget").replace('_', "-");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    // An envelope whose body (28 MiB, ~37 MiB as base64) is not an Event Webhook batch: fetched,
    // decoded, refused by the handler, dead-lettered. Every byte of it passes through memory.
    let junk = vec![b'x'; BODY_BYTES];
    let object = envelope(mailroom_envelope::Kind::Events, "application/json", &junk);
    drop(junk);
    let mut pointers = Vec::new();
    for i in 0..BODIES {
        let key = format!("big-{i}");
        s3.put_object()
            .bucket(&bucket)
            .key(&key)
            .body(object.clone().into_bytes().into())
            .send()
            .await
            .unwrap();
        pointers.push(
            mailroom_envelope::S3Pointer {
                bucket: bucket.clone(),
                key,
            }
            .to_message_body(),
        );
    }
    drop(object);
    let queue = unique("hostile-s3-budget");
    let url = create_queue(&sqs, &queue, 60, None).await;
    let admin = admin_url();
    let db_name = unique("hostile_s3_budget");
    let db = fresh_db(&admin, &db_name).await;
    let dir = temp_dir("hostile-s3-budget");
    let mut cfg = WorkerConfig::new(&endpoint, &queue, &url, &db);
    cfg.visibility_timeout_secs = 60;
    cfg.heartbeat_secs = 5;
    let mut config_text = std::fs::read_to_string(cfg.write(&dir)).unwrap();
    if let Ok(budget) = std::env::var("MAILROOM_BODY_BUDGET_BYTES") {
        config_text = config_text.replacen(
            "[worker]\n",
            &format!("[worker]\nmax_body_bytes_in_flight = {budget}\n"),
            1,
        );
    }
    let config = dir.join("budget.toml");
    std::fs::write(&config, config_text).unwrap();
    send(&sqs, &url, &pointers).await;
    let mut worker = Worker::start_numbered(&config, 0);
    wait_counts(&db, "every body dead-lettered", 120, &mut worker, |c| {
        c.3 >= BODIES as i64
    })
    .await;
    let rss_mib = worker.peak_rss_kib() / 1024;
    assert!(worker.terminate(15));
    for i in 0..BODIES {
        let _ = s3
            .delete_object()
            .bucket(&bucket)
            .key(format!("big-{i}"))
            .send()
            .await;
    }
    drop_db(&admin, &db_name).await;
    let _ = std::fs::remove_dir_all(dir);
    eprintln!(
        "peak RSS with {BODIES} offloaded bodies of {} MiB: {rss_mib} MiB",
        BODY_BYTES >> 20
    );
    if std::env::var("MAILROOM_BODY_BUDGET_BYTES").is_err() {
        assert!(
            rss_mib <= 260,
            "{BODIES} bodies of {} MiB took {rss_mib} MiB of RSS: the budget did not hold",
            BODY_BYTES >> 20
        );
    }
}
