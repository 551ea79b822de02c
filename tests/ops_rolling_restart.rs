//! Rolling restarts under load: two real worker processes consume a steady stream of Event
//! Webhook batches (unique sg_event_ids) while each is restarted again and again (SIGTERM, exit 0,
//! start). Proves a deploy loses nothing and stores nothing twice: every event sent is in
//! mailroom_events exactly once, and the queue ends empty.

mod ops_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ops_support::*;

const TRAFFIC: Duration = Duration::from_secs(15);
const EVENTS_PER_MESSAGE: usize = 3;

#[tokio::test]
async fn rolling_restarts_lose_and_double_nothing() {
    let sqs = sqs().await;
    let name = unique("rolling");
    let url = create_queue(&sqs, &name, 30, None).await;
    let db = TestDb::create().await;
    let dir = temp_dir("ops-rolling");
    let config = write_config(&dir, &db.url, &[(&name, &url)], "");
    migrate(&config);

    let mut generation = 0;
    let mut start = |i: usize| {
        generation += 1;
        Worker::start(
            &config,
            dir.join(format!("worker-{i}-{generation}.log")),
            &[],
        )
    };
    let mut workers = vec![start(0), start(1)];
    for w in &mut workers {
        w.wait_log("\"receiving\"", 30).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (sqs, url, name, stop) = (sqs.clone(), url.clone(), name.clone(), stop.clone());
        tokio::spawn(async move {
            let mut sent = 0usize;
            let mut m = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<String> = (0..EVENTS_PER_MESSAGE)
                    .map(|e| format!("{name}-{m}-{e}"))
                    .collect();
                if sqs
                    .send_message()
                    .queue_url(&url)
                    .message_body(events_message(&ids))
                    .send()
                    .await
                    .is_ok()
                {
                    sent += ids.len();
                }
                m += 1;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            sent
        })
    };

    let began = Instant::now();
    let mut restarts = 0;
    while began.elapsed() < TRAFFIC {
        for (i, slot) in workers.iter_mut().enumerate() {
            let old = std::mem::replace(slot, start(i));
            // The new process starts while the old drains: a rolling restart keeps capacity.
            let status = old.stop(30).await;
            assert_eq!(status.code(), Some(0), "a drained worker exits 0");
            slot.wait_log("\"receiving\"", 30).await;
            restarts += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = producer.await.expect("producer");
    assert!(sent > 100, "a steady stream was sent ({sent} events)");
    assert!(restarts >= 4, "restarted repeatedly ({restarts})");
    eprintln!("rolling restart: {sent} events sent, {restarts} restarts");

    let stopped = Instant::now();
    eventually_async(60, "every event stored", || async {
        count(&db, "select count(*) from mailroom_events").await >= sent as i64
    })
    .await;
    eprintln!(
        "rolling restart: everything stored {:?} after the stream stopped",
        stopped.elapsed()
    );
    let mut conn = db.connect().await;
    let (total, distinct): (i64, i64) =
        sqlx::query_as("select count(*), count(distinct sg_event_id) from mailroom_events")
            .fetch_one(&mut conn)
            .await
            .expect("counts");
    assert_eq!(total, sent as i64, "every event sent is stored");
    assert_eq!(distinct, sent as i64, "none twice");
    let dead: i64 = count(&db, "select count(*) from mailroom_dead_letters").await;
    assert_eq!(dead, 0, "nothing dead-lettered");
    eventually_async(20, "queue drained", || async {
        depth(&sqs, &url).await == (0, 0)
    })
    .await;
    drop(conn);
    for w in workers {
        assert_eq!(w.stop(30).await.code(), Some(0));
    }
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}
