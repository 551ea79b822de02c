//! Each message's status and the suppression list, kept by the sendgrid handler's built-in hooks,
//! against a real Postgres: the precedence rules one by one, out-of-order arrival across
//! batches, redeliveries counted once, concurrent overlapping batches (same result as the
//! rebuild from all events, no deadlock), group unsubscribe/resubscribe by occurred_at,
//! `mailroom_may_send`, the config switches, and the backfill agreeing with the hooks.

#[path = "data/store/support.rs"]
mod support;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use mailroom::handler::Outcome;
use mailroom::handlers::{
    HookError, SendgridHandler, SendgridHandlerConfig, SendgridHook, StoredBatch,
    MESSAGE_STATUS_HOOK, SUPPRESSIONS_HOOK,
};
use mailroom::store::status::{may_send, rebuild_status_tables};
use mailroom::store::Store;
use mailroom::BoxFuture;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use support::*;

/// 2026-09-21T...: a plausible SendGrid `timestamp` (seconds).
const T0: i64 = 1_790_000_000;
const MSG: &str = "msgA";

/// One Event Webhook event for message `MSG` to `a@example.com` (unless `extra` says otherwise).
fn ev(id: &str, event: &str, ts: Option<i64>, extra: Value) -> Value {
    let mut e = json!({
        "sg_event_id": id,
        "event": event,
        "email": "a@example.com",
        "sg_message_id": format!("{MSG}.filterdrecv-1-2"),
    });
    if let Some(ts) = ts {
        e["timestamp"] = json!(ts);
    }
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            e[k] = v;
        }
    }
    e
}

fn at(ts: i64) -> Option<i64> {
    Some(T0 + ts)
}

/// Store `events` as one SQS message in one batch through the sendgrid handler.
async fn store(h: &SendgridHandler, events: &[Value]) {
    let body = serde_json::to_vec(events).expect("json");
    let out = h
        .handle(&[events_job(&format!("m-{}", rand::random::<u64>()), body)])
        .await;
    assert_eq!(out, vec![Outcome::Done]);
}

#[derive(Debug, PartialEq, sqlx::FromRow)]
struct Status {
    state: Option<String>,
    state_rank: i16,
    state_sg_event_id: Option<String>,
    state_occurred_at: Option<DateTime<Utc>>,
    reason: Option<String>,
    bounce_type: Option<String>,
    first_event_at: Option<DateTime<Utc>>,
    last_event_at: Option<DateTime<Utc>>,
    event_count: i32,
    deferred_count: i32,
    open_count: i32,
    machine_open_count: i32,
    click_count: i32,
    first_opened_at: Option<DateTime<Utc>>,
    last_opened_at: Option<DateTime<Utc>>,
    first_clicked_at: Option<DateTime<Utc>>,
    last_clicked_at: Option<DateTime<Utc>>,
    spam_reported_at: Option<DateTime<Utc>>,
    unsubscribed_at: Option<DateTime<Utc>>,
}

async fn status(pool: &PgPool, message_id: &str, email: &str) -> Option<Status> {
    sqlx::query_as("SELECT * FROM mailroom_message_status WHERE message_id = $1 AND email = $2")
        .bind(message_id)
        .bind(email)
        .fetch_optional(pool)
        .await
        .expect("status")
}

async fn status_a(pool: &PgPool) -> Status {
    status(pool, MSG, "a@example.com")
        .await
        .expect("a status row for msgA / a@example.com")
}

/// The final state and the event that set it, after storing `batches` in order.
async fn state_after(pool: &PgPool, batches: &[&[Value]]) -> (Option<String>, Option<String>) {
    let h = handler(pool);
    for b in batches {
        store(&h, b).await;
    }
    let s = status_a(pool).await;
    (s.state, s.state_sg_event_id)
}

fn t(ts: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + ts, 0).expect("time")
}

fn pair(state: &str, id: &str) -> (Option<String>, Option<String>) {
    (Some(state.into()), Some(id.into()))
}

/// Both tables, whole, without the bookkeeping timestamps, in key order.
async fn snapshot(pool: &PgPool) -> (Vec<Value>, Vec<Value>) {
    let status: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(s) - 'created_at' - 'updated_at' FROM mailroom_message_status s
         ORDER BY message_id, email",
    )
    .fetch_all(pool)
    .await
    .expect("status rows");
    let suppressions: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(s) - 'created_at' - 'updated_at' FROM mailroom_suppressions s
         ORDER BY email, asm_group_id",
    )
    .fetch_all(pool)
    .await
    .expect("suppression rows");
    (status, suppressions)
}

/// What the migration's backfill computes from all stored events must equal what the hooks
/// built batch by batch.
async fn assert_rebuild_agrees(pool: &PgPool) {
    let incremental = snapshot(pool).await;
    let mut conn = pool.acquire().await.expect("conn");
    rebuild_status_tables(&mut conn).await.expect("rebuild");
    let rebuilt = snapshot(pool).await;
    assert_eq!(incremental.0, rebuilt.0, "message status: hooks vs rebuild");
    assert_eq!(incremental.1, rebuilt.1, "suppressions: hooks vs rebuild");
}

// ---------------------------------------------------------------------------------------------
// Precedence, one rule per test (each arrives in the "wrong" order, one event per batch).

#[sqlx::test(migrations = "./migrations")]
async fn delivered_beats_deferred_beats_processed(pool: PgPool) {
    let got = state_after(
        &pool,
        &[
            &[ev("e3", "delivered", at(3), json!({}))],
            &[ev("e2", "deferred", at(5), json!({"attempt": "2"}))],
            &[ev("e1", "processed", at(9), json!({}))],
        ],
    )
    .await;
    assert_eq!(got, pair("delivered", "e3"));
}

#[sqlx::test(migrations = "./migrations")]
async fn deferred_beats_processed(pool: PgPool) {
    let got = state_after(
        &pool,
        &[
            &[ev("e2", "deferred", at(1), json!({}))],
            &[ev("e1", "processed", at(5), json!({}))],
        ],
    )
    .await;
    assert_eq!(got, pair("deferred", "e2"));
}

#[sqlx::test(migrations = "./migrations")]
async fn blocked_beats_delivered(pool: PgPool) {
    let got = state_after(
        &pool,
        &[
            &[ev("e2", "bounce", at(1), json!({"type": "blocked"}))],
            &[ev("e1", "delivered", at(5), json!({}))],
        ],
    )
    .await;
    assert_eq!(got, pair("blocked", "e2"));
    assert_eq!(
        status_a(&pool).await.bounce_type.as_deref(),
        Some("blocked")
    );
}

#[sqlx::test(migrations = "./migrations")]
async fn a_hard_bounce_beats_blocked(pool: PgPool) {
    let got = state_after(
        &pool,
        &[
            &[ev(
                "e2",
                "bounce",
                at(1),
                json!({"type": "bounce", "reason": "550 no such user"}),
            )],
            &[ev("e1", "bounce", at(5), json!({"type": "blocked"}))],
        ],
    )
    .await;
    assert_eq!(got, pair("bounced", "e2"));
    let s = status_a(&pool).await;
    assert_eq!(s.reason.as_deref(), Some("550 no such user"));
    assert_eq!(s.bounce_type.as_deref(), Some("bounce"));
}

#[sqlx::test(migrations = "./migrations")]
async fn a_bounce_without_a_type_is_a_hard_bounce(pool: PgPool) {
    let got = state_after(&pool, &[&[ev("e1", "bounce", at(1), json!({}))]]).await;
    assert_eq!(got, pair("bounced", "e1"));
}

#[sqlx::test(migrations = "./migrations")]
async fn dropped_and_bounced_rank_equal_so_the_later_occurred_at_wins(pool: PgPool) {
    let got = state_after(
        &pool,
        &[
            &[ev(
                "e2",
                "dropped",
                at(7),
                json!({"reason": "Bounced Address"}),
            )],
            &[ev("e1", "bounce", at(3), json!({"type": "bounce"}))],
        ],
    )
    .await;
    assert_eq!(got, pair("dropped", "e2"));
}

#[sqlx::test(migrations = "./migrations")]
async fn equal_rank_and_time_the_larger_sg_event_id_wins(pool: PgPool) {
    let got = state_after(
        &pool,
        &[
            &[ev("b", "deferred", at(4), json!({"reason": "second"}))],
            &[ev("a", "deferred", at(4), json!({"reason": "first"}))],
        ],
    )
    .await;
    assert_eq!(got, pair("deferred", "b"));
    assert_eq!(status_a(&pool).await.reason.as_deref(), Some("second"));
}

#[sqlx::test(migrations = "./migrations")]
async fn a_missing_occurred_at_sorts_lowest(pool: PgPool) {
    // "z" > "a", but an event without a timestamp loses to any with one of equal rank.
    let got = state_after(
        &pool,
        &[
            &[ev("a", "deferred", at(1), json!({}))],
            &[ev("z", "deferred", None, json!({}))],
        ],
    )
    .await;
    assert_eq!(got, pair("deferred", "a"));
}

#[sqlx::test(migrations = "./migrations")]
async fn engagement_events_do_not_change_the_delivery_state(pool: PgPool) {
    let h = handler(&pool);
    store(&h, &[ev("d", "delivered", at(1), json!({}))]).await;
    store(
        &h,
        &[
            ev("o1", "open", at(10), json!({})),
            ev("c1", "click", at(11), json!({"url": "https://x"})),
            ev("s1", "spamreport", at(12), json!({})),
            ev("u1", "unsubscribe", at(13), json!({})),
            ev(
                "g1",
                "group_unsubscribe",
                at(14),
                json!({"asm_group_id": 7}),
            ),
            ev(
                "r1",
                "group_resubscribe",
                at(15),
                json!({"asm_group_id": 7}),
            ),
        ],
    )
    .await;
    let s = status_a(&pool).await;
    assert_eq!((s.state.as_deref(), s.state_rank), (Some("delivered"), 3));
    assert_eq!(s.state_occurred_at, Some(t(1)));
    assert_eq!((s.open_count, s.click_count, s.event_count), (1, 1, 7));
    assert_eq!(s.spam_reported_at, Some(t(12)));
    assert_eq!(s.unsubscribed_at, Some(t(13)));
    assert_eq!(
        (s.first_event_at, s.last_event_at),
        (Some(t(1)), Some(t(15)))
    );
}

/// The SQL functions behind the precedence table in docs/schema.md.
#[sqlx::test(migrations = "./migrations")]
async fn delivery_state_and_rank_functions_follow_the_documented_table(pool: PgPool) {
    let cases: &[(&str, Option<&str>, Option<&str>, i16)] = &[
        ("processed", None, Some("processed"), 1),
        ("deferred", None, Some("deferred"), 2),
        ("delivered", None, Some("delivered"), 3),
        ("bounce", Some("blocked"), Some("blocked"), 4),
        ("bounce", Some("Blocked"), Some("blocked"), 4),
        ("bounce", Some("bounce"), Some("bounced"), 5),
        ("bounce", None, Some("bounced"), 5),
        ("dropped", None, Some("dropped"), 5),
        ("open", None, None, 0),
        ("click", None, None, 0),
        ("spamreport", None, None, 0),
        ("unsubscribe", None, None, 0),
        ("group_unsubscribe", None, None, 0),
        ("some_future_event", None, None, 0),
    ];
    for (event, bounce_type, state, rank) in cases {
        let (got_state, got_rank): (Option<String>, i16) = sqlx::query_as(
            "SELECT mailroom_delivery_state($1, $2), \
             mailroom_delivery_rank(mailroom_delivery_state($1, $2))",
        )
        .bind(event)
        .bind(bounce_type)
        .fetch_one(&pool)
        .await
        .expect("functions");
        assert_eq!(
            (got_state.as_deref(), got_rank),
            (*state, *rank),
            "{event} {bounce_type:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Out-of-order arrival across batches.

#[sqlx::test(migrations = "./migrations")]
async fn bounce_first_then_delivered_in_a_later_batch_stays_bounced(pool: PgPool) {
    let got = state_after(
        &pool,
        &[
            &[ev("b", "bounce", at(5), json!({"type": "bounce"}))],
            &[ev("d", "delivered", at(9), json!({}))],
        ],
    )
    .await;
    assert_eq!(got, pair("bounced", "b"));
}

#[sqlx::test(migrations = "./migrations")]
async fn delivered_then_deferred_stays_delivered(pool: PgPool) {
    let got = state_after(
        &pool,
        &[
            &[ev("d", "delivered", at(5), json!({}))],
            &[
                ev("f1", "deferred", at(1), json!({})),
                ev("f2", "deferred", at(8), json!({})),
            ],
        ],
    )
    .await;
    assert_eq!(got, pair("delivered", "d"));
    assert_eq!(status_a(&pool).await.deferred_count, 2);
}

#[sqlx::test(migrations = "./migrations")]
async fn opens_before_delivered_are_counted_and_the_state_comes_with_delivered(pool: PgPool) {
    let h = handler(&pool);
    store(
        &h,
        &[
            ev("o1", "open", at(20), json!({})),
            ev("o2", "open", at(30), json!({"sg_machine_open": true})),
        ],
    )
    .await;
    let s = status_a(&pool).await;
    assert_eq!((s.state, s.state_rank, s.open_count), (None, 0, 2));
    store(&h, &[ev("d", "delivered", at(10), json!({}))]).await;
    store(&h, &[ev("o3", "open", at(25), json!({}))]).await;
    let s = status_a(&pool).await;
    assert_eq!(s.state.as_deref(), Some("delivered"));
    assert_eq!((s.open_count, s.machine_open_count), (3, 1));
    assert_eq!(
        (s.first_opened_at, s.last_opened_at),
        (Some(t(20)), Some(t(30)))
    );
    assert_eq!(
        (s.first_event_at, s.last_event_at),
        (Some(t(10)), Some(t(30)))
    );
    assert_rebuild_agrees(&pool).await;
}

// ---------------------------------------------------------------------------------------------
// Keys, skips, idempotency.

#[sqlx::test(migrations = "./migrations")]
async fn the_key_is_the_message_id_prefix_and_the_trimmed_lowercased_email(pool: PgPool) {
    let h = handler(&pool);
    store(
        &h,
        &[
            ev(
                "e1",
                "processed",
                at(1),
                json!({"email": " A@Example.COM "}),
            ),
            ev(
                "e2",
                "delivered",
                at(2),
                json!({"sg_message_id": "msgA.filterdrecv-other.3"}),
            ),
            // Skipped for status: no message id, no email, an empty one.
            ev("e3", "open", at(3), json!({"sg_message_id": null})),
            ev("e4", "open", at(3), json!({"email": null})),
            ev("e5", "open", at(3), json!({"email": "  "})),
        ],
    )
    .await;
    let s = status_a(&pool).await;
    assert_eq!((s.state.as_deref(), s.event_count), (Some("delivered"), 2));
    assert_eq!(count(&pool, "mailroom_message_status").await, 1);
    assert_eq!(count(&pool, "mailroom_events").await, 5);
}

#[sqlx::test(migrations = "./migrations")]
async fn redelivered_events_do_not_double_count(pool: PgPool) {
    let h = handler(&pool);
    let batch = [
        ev("d", "delivered", at(1), json!({})),
        ev("o1", "open", at(2), json!({})),
        ev("o2", "open", at(3), json!({})),
        ev("c1", "click", at(4), json!({})),
    ];
    store(&h, &batch).await;
    // The same SQS message again, the same events in another message with a new one, and two
    // copies in one message.
    store(&h, &batch).await;
    let mut more = batch.to_vec();
    more.push(ev("o3", "open", at(5), json!({})));
    store(&h, &more).await;
    let dup = [
        ev("o3", "open", at(5), json!({})),
        ev("o3", "open", at(5), json!({})),
    ];
    store(&h, &dup).await;
    let s = status_a(&pool).await;
    assert_eq!((s.event_count, s.open_count, s.click_count), (5, 3, 1));
    assert_rebuild_agrees(&pool).await;
}

/// A batch that rolls back (here: an application hook fails after the built-in ones ran) leaves
/// no status behind, and its redelivery counts once.
#[sqlx::test(migrations = "./migrations")]
async fn a_rolled_back_batch_leaves_no_status_and_its_retry_counts_once(pool: PgPool) {
    struct FailOnce(Mutex<bool>);
    impl SendgridHook for FailOnce {
        fn name(&self) -> &str {
            "fail_once"
        }
        fn on_stored<'a>(
            &'a self,
            _tx: &'a mut PgConnection,
            _batch: &'a StoredBatch<'a>,
        ) -> BoxFuture<'a, Result<(), HookError>> {
            let fail = std::mem::replace(&mut *self.0.lock().unwrap(), false);
            Box::pin(async move {
                if fail {
                    Err(HookError::retry("not yet"))
                } else {
                    Ok(())
                }
            })
        }
    }
    let h = handler(&pool).with_hook(Arc::new(FailOnce(Mutex::new(true))));
    let body = serde_json::to_vec(&[ev("o1", "open", at(1), json!({}))]).expect("json");
    let out = h.handle(&[events_job("m-1", body.clone())]).await;
    assert!(matches!(out[0], Outcome::Retry(_)), "{out:?}");
    assert_eq!(count(&pool, "mailroom_message_status").await, 0);
    assert_eq!(
        h.handle(&[events_job("m-1", body)]).await,
        vec![Outcome::Done]
    );
    assert_eq!(status_a(&pool).await.open_count, 1);
}

// ---------------------------------------------------------------------------------------------
// Order independence and concurrency.

/// A mixed set of events over a few messages and recipients, all rule kinds included.
fn mixed_events(n: usize, rng: &mut impl Rng) -> Vec<Value> {
    let kinds: &[(&str, Value)] = &[
        ("processed", json!({})),
        ("deferred", json!({"reason": "try later"})),
        ("delivered", json!({})),
        ("bounce", json!({"type": "blocked", "reason": "blocked"})),
        (
            "bounce",
            json!({"type": "bounce", "reason": "no such user"}),
        ),
        ("dropped", json!({"reason": "Bounced Address"})),
        ("dropped", json!({"reason": "Invalid SMTPAPI header"})),
        ("open", json!({})),
        ("open", json!({"sg_machine_open": true})),
        ("click", json!({"url": "https://example.com"})),
        ("spamreport", json!({})),
        ("unsubscribe", json!({})),
        ("group_unsubscribe", json!({"asm_group_id": 5})),
        ("group_resubscribe", json!({"asm_group_id": 5})),
    ];
    (0..n)
        .map(|i| {
            let (kind, extra) = &kinds[rng.random_range(0..kinds.len())];
            let mut e = ev(
                &format!("ev{i:05}"),
                kind,
                // Few distinct times, so ties (and the sg_event_id tie-break) happen; some none.
                (rng.random_range(0..10) > 0).then(|| T0 + rng.random_range(0..20)),
                extra.clone(),
            );
            e["sg_message_id"] = json!(format!("msg{}.filter", rng.random_range(0..4)));
            e["email"] = json!(format!("r{}@example.com", rng.random_range(0..5)));
            e
        })
        .collect()
}

/// Split `events` into batches of random sizes, in their order.
fn random_batches(events: &[Value], rng: &mut impl Rng) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut rest = events;
    while !rest.is_empty() {
        let n = rng.random_range(1..=rest.len().min(25));
        out.push(rest[..n].to_vec());
        rest = &rest[n..];
    }
    out
}

#[sqlx::test(migrations = "./migrations")]
async fn the_result_is_a_function_of_the_set_of_events_not_of_their_arrival_order(pool: PgPool) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let events = mixed_events(300, &mut rng);
    assert_order_and_batching_independent(&pool, &events, &mut rng).await;
}

/// As above, with every third event taking the `sg_event_id` of the one before it and another
/// timestamp (or none where it had one): two rows each, so every tie-break of the status and
/// suppression rules must still be total when ids repeat.
#[sqlx::test(migrations = "./migrations")]
async fn the_result_is_a_function_of_the_set_of_events_when_ids_repeat_with_other_timestamps(
    pool: PgPool,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(26);
    let mut events = mixed_events(300, &mut rng);
    for i in (1..events.len()).step_by(3) {
        let (id, ts) = (
            events[i - 1]["sg_event_id"].clone(),
            events[i - 1]["timestamp"].as_i64(),
        );
        events[i]["sg_event_id"] = id;
        match ts {
            // Another of the same few times, so ties with other events stay likely.
            Some(ts) if rng.random_range(0..5) > 0 => {
                events[i]["timestamp"] = json!(T0 + (ts - T0 + rng.random_range(1..20)) % 20)
            }
            Some(_) => {
                events[i]
                    .as_object_mut()
                    .expect("object")
                    .remove("timestamp");
            }
            None => events[i]["timestamp"] = json!(T0 + rng.random_range(0..20)),
        }
    }
    let expected_rows = events
        .iter()
        .map(|e| (e["sg_event_id"].to_string(), e["timestamp"].as_i64()))
        .collect::<std::collections::HashSet<_>>()
        .len();
    assert_eq!(expected_rows, 300, "no two events share id and timestamp");
    assert_order_and_batching_independent(&pool, &events, &mut rng).await;
    assert_eq!(count(&pool, "mailroom_events").await, 300);
}

/// Stores `events` four times from empty tables, each time shuffled and cut into random
/// batches: both tables come out the same every time, and equal to the rebuild.
async fn assert_order_and_batching_independent(
    pool: &PgPool,
    events: &[Value],
    rng: &mut impl Rng,
) {
    let h = handler(pool);
    let mut first = None;
    for round in 0..4 {
        sqlx::query("TRUNCATE mailroom_events, mailroom_message_status, mailroom_suppressions")
            .execute(pool)
            .await
            .expect("truncate");
        let mut shuffled = events.to_vec();
        shuffled.shuffle(rng);
        for b in random_batches(&shuffled, rng) {
            store(&h, &b).await;
        }
        let got = snapshot(pool).await;
        assert!(!got.0.is_empty() && !got.1.is_empty());
        match &first {
            None => first = Some(got),
            Some(first) => assert_eq!(first, &got, "round {round} differs from round 0"),
        }
        assert_rebuild_agrees(pool).await;
    }
}

#[sqlx::test(migrations = "./migrations")]
async fn concurrent_overlapping_batches_match_the_rebuild_and_do_not_deadlock(pool: PgPool) {
    let options = (*pool.connect_options()).clone();
    let wide = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .expect("pool");
    let h = Arc::new(handler(&wide));
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let events = mixed_events(2_000, &mut rng);
    // Each of 8 tasks stores the events in its own order and batching, so every key is written
    // by several transactions at once, and every event by several (one wins, the others skip).
    let mut tasks = Vec::new();
    for seed in 0..8 {
        let h = h.clone();
        let mut events = events.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            events.shuffle(&mut rng);
            let mut outcomes = Vec::new();
            for b in random_batches(&events, &mut rng) {
                let body = serde_json::to_vec(&b).expect("json");
                outcomes.extend(
                    h.handle(&[events_job(&format!("m-{seed}-{}", outcomes.len()), body)])
                        .await,
                );
            }
            outcomes
        }));
    }
    let deadline = std::time::Duration::from_secs(120);
    for task in tasks {
        let outcomes = tokio::time::timeout(deadline, task)
            .await
            .expect("no task hangs")
            .expect("task");
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Done),
            "a batch failed (a deadlock is retried): {:?}",
            outcomes.iter().find(|o| **o != Outcome::Done)
        );
    }
    assert_eq!(count(&pool, "mailroom_events").await, 2_000);
    let total: i64 =
        sqlx::query_scalar("SELECT sum(event_count)::int8 FROM mailroom_message_status")
            .fetch_one(&pool)
            .await
            .expect("sum");
    assert_eq!(total, 2_000, "every event counted exactly once");
    assert_rebuild_agrees(&pool).await;
    wide.close().await;
}

// ---------------------------------------------------------------------------------------------
// Suppressions and mailroom_may_send.

async fn may(pool: &PgPool, email: &str, group: Option<i64>) -> Option<bool> {
    let mut conn = pool.acquire().await.expect("conn");
    may_send(&mut conn, email, group).await.expect("may_send")
}

async fn suppression(pool: &PgPool, email: &str, group: i64) -> Option<(bool, String, String)> {
    sqlx::query_as(
        "SELECT active, reason, sg_event_id FROM mailroom_suppressions
         WHERE email = $1 AND asm_group_id = $2",
    )
    .bind(email)
    .bind(group)
    .fetch_optional(pool)
    .await
    .expect("suppression")
}

#[sqlx::test(migrations = "./migrations")]
async fn hard_bounces_bad_drops_spam_reports_and_unsubscribes_suppress_globally(pool: PgPool) {
    let h = handler(&pool);
    let to = |who: &str| json!({"email": format!("{who}@example.com")});
    let with = |who: &str, extra: Value| {
        let mut v = to(who);
        for (k, x) in extra.as_object().expect("object") {
            v[k] = x.clone();
        }
        v
    };
    store(
        &h,
        &[
            ev(
                "1",
                "bounce",
                at(1),
                with("hard", json!({"type": "bounce"})),
            ),
            ev(
                "2",
                "bounce",
                at(1),
                with("soft", json!({"type": "blocked"})),
            ),
            ev(
                "3",
                "dropped",
                at(1),
                with("bounced", json!({"reason": "Bounced Address"})),
            ),
            ev(
                "4",
                "dropped",
                at(1),
                with("invalid", json!({"reason": "Invalid"})),
            ),
            ev(
                "5",
                "dropped",
                at(1),
                with("spam", json!({"reason": "Spam Reporting Address"})),
            ),
            ev(
                "6",
                "dropped",
                at(1),
                with("unsub", json!({"reason": "Unsubscribed Address"})),
            ),
            ev(
                "7",
                "dropped",
                at(1),
                with("header", json!({"reason": "Invalid SMTPAPI header"})),
            ),
            ev("8", "spamreport", at(1), to("reporter")),
            ev("9", "unsubscribe", at(1), to("leaver")),
            ev("10", "delivered", at(1), to("fine")),
        ],
    )
    .await;
    for who in [
        "hard", "bounced", "invalid", "spam", "unsub", "reporter", "leaver",
    ] {
        let email = format!("{who}@example.com");
        assert_eq!(may(&pool, &email, None).await, Some(false), "{who}");
        assert_eq!(
            may(&pool, &email, Some(3)).await,
            Some(false),
            "{who}, any group"
        );
    }
    for who in ["soft", "header", "fine", "stranger"] {
        assert_eq!(
            may(&pool, &format!("{who}@example.com"), None).await,
            Some(true),
            "{who}"
        );
    }
    assert_eq!(
        suppression(&pool, "hard@example.com", 0).await,
        Some((true, "bounce".into(), "1".into()))
    );
    assert_eq!(may(&pool, "  HARD@Example.com ", None).await, Some(false));
    assert_eq!(may(&pool, "  ", None).await, None);
    assert_eq!(count(&pool, "mailroom_suppressions").await, 7);
}

#[sqlx::test(migrations = "./migrations")]
async fn group_unsubscribe_then_a_later_group_resubscribe_clears_it(pool: PgPool) {
    let h = handler(&pool);
    let g = |n: i64| json!({"asm_group_id": n});
    store(&h, &[ev("u", "group_unsubscribe", at(10), g(7))]).await;
    assert_eq!(may(&pool, "a@example.com", Some(7)).await, Some(false));
    assert_eq!(may(&pool, "a@example.com", Some(8)).await, Some(true));
    assert_eq!(may(&pool, "a@example.com", None).await, Some(true));
    store(&h, &[ev("r", "group_resubscribe", at(20), g(7))]).await;
    assert_eq!(may(&pool, "a@example.com", Some(7)).await, Some(true));
    assert_eq!(
        suppression(&pool, "a@example.com", 7).await,
        Some((false, "group_resubscribe".into(), "r".into())),
        "kept, inactive, with the event that cleared it"
    );
    // Unsubscribing again later suppresses again.
    store(&h, &[ev("u2", "group_unsubscribe", at(30), g(7))]).await;
    assert_eq!(may(&pool, "a@example.com", Some(7)).await, Some(false));
    assert_rebuild_agrees(&pool).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_resubscribe_that_occurred_before_the_unsubscribe_does_not_clear_it(pool: PgPool) {
    let h = handler(&pool);
    let g = json!({"asm_group_id": 7});
    // The unsubscribe happened at 20 and arrives first; the resubscribe happened at 10 and
    // arrives later.
    store(&h, &[ev("u", "group_unsubscribe", at(20), g.clone())]).await;
    store(&h, &[ev("r", "group_resubscribe", at(10), g.clone())]).await;
    assert_eq!(may(&pool, "a@example.com", Some(7)).await, Some(false));
    assert_eq!(
        suppression(&pool, "a@example.com", 7).await,
        Some((true, "group_unsubscribe".into(), "u".into()))
    );
    // At the same second, the suppression wins whatever the event ids.
    store(&h, &[ev("zz", "group_resubscribe", at(20), g.clone())]).await;
    assert_eq!(may(&pool, "a@example.com", Some(7)).await, Some(false));
    assert_rebuild_agrees(&pool).await;
}

#[sqlx::test(migrations = "./migrations")]
async fn a_group_resubscribe_does_not_clear_a_global_suppression(pool: PgPool) {
    let h = handler(&pool);
    store(
        &h,
        &[ev("u", "unsubscribe", at(1), json!({"asm_group_id": 7}))],
    )
    .await;
    store(
        &h,
        &[ev(
            "r",
            "group_resubscribe",
            at(5),
            json!({"asm_group_id": 7}),
        )],
    )
    .await;
    assert_eq!(may(&pool, "a@example.com", Some(7)).await, Some(false));
    assert_eq!(may(&pool, "a@example.com", None).await, Some(false));
}

// ---------------------------------------------------------------------------------------------
// Configuration and hook order.

#[sqlx::test(migrations = "./migrations")]
async fn the_config_switches_turn_each_built_in_hook_off(pool: PgPool) {
    let config = mailroom::Config::parse(
        "[store]\ndatabase_url = \"postgres://unused\"\n\
         [handlers.sendgrid]\nmessage_status = false\nsuppressions = false\n\
         [[queue]]\nname = \"q\"\nhandler = \"sendgrid\"\n",
        "test",
    )
    .expect("config");
    let registry = mailroom::Worker::new()
        .build_registry(&config, &Store::from_pool(pool.clone()))
        .expect("handlers build");
    let h = registry.get("sendgrid").expect("sendgrid");
    let body = serde_json::to_vec(&[ev("b", "bounce", at(1), json!({}))]).expect("json");
    assert_eq!(
        h.handle_batch(&[events_job("m-1", body)]).await,
        vec![Outcome::Done]
    );
    assert_eq!(count(&pool, "mailroom_events").await, 1);
    assert_eq!(count(&pool, "mailroom_message_status").await, 0);
    assert_eq!(count(&pool, "mailroom_suppressions").await, 0);

    let only_status = SendgridHandlerConfig {
        suppressions: false,
        ..Default::default()
    };
    let h = SendgridHandler::new(Store::from_pool(pool.clone()), only_status).expect("handler");
    assert_eq!(h.hook_names(), vec![MESSAGE_STATUS_HOOK]);
    let h = handler(&pool);
    assert_eq!(h.hook_names(), vec![MESSAGE_STATUS_HOOK, SUPPRESSIONS_HOOK]);
}

#[sqlx::test(migrations = "./migrations")]
async fn built_in_hooks_are_on_by_default_and_run_before_application_hooks(pool: PgPool) {
    /// Reads, inside the batch's transaction, what the built-in hooks wrote.
    struct Peek(Mutex<Vec<(Option<String>, Option<bool>)>>);
    impl SendgridHook for Peek {
        fn name(&self) -> &str {
            "peek"
        }
        fn on_stored<'a>(
            &'a self,
            tx: &'a mut PgConnection,
            _batch: &'a StoredBatch<'a>,
        ) -> BoxFuture<'a, Result<(), HookError>> {
            Box::pin(async move {
                let state: Option<String> = sqlx::query_scalar(
                    "SELECT state FROM mailroom_message_status WHERE message_id = 'msgA'",
                )
                .fetch_optional(&mut *tx)
                .await?
                .flatten();
                let may: Option<bool> =
                    sqlx::query_scalar("SELECT mailroom_may_send('a@example.com')")
                        .fetch_one(&mut *tx)
                        .await?;
                self.0.lock().unwrap().push((state, may));
                Ok(())
            })
        }
    }
    let peek = Arc::new(Peek(Mutex::new(Vec::new())));
    // Through the worker, as the shipped binary and the demo build it (no [handlers.sendgrid]).
    let config = mailroom::Config::parse(
        "[store]\ndatabase_url = \"postgres://unused\"\n[[queue]]\nname = \"q\"\nhandler = \"sendgrid\"\n",
        "test",
    )
    .expect("config");
    struct Shared(Arc<Peek>);
    impl SendgridHook for Shared {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn on_stored<'a>(
            &'a self,
            tx: &'a mut PgConnection,
            batch: &'a StoredBatch<'a>,
        ) -> BoxFuture<'a, Result<(), HookError>> {
            self.0.on_stored(tx, batch)
        }
    }
    let registry = mailroom::Worker::new()
        .sendgrid_hook(Shared(peek.clone()))
        .build_registry(&config, &Store::from_pool(pool.clone()))
        .expect("handlers build");
    let h = registry.get("sendgrid").expect("sendgrid");
    let body = serde_json::to_vec(&[ev("b", "bounce", at(1), json!({}))]).expect("json");
    assert_eq!(
        h.handle_batch(&[events_job("m-1", body)]).await,
        vec![Outcome::Done]
    );
    assert_eq!(
        *peek.0.lock().unwrap(),
        vec![(Some("bounced".to_string()), Some(false))]
    );
}

// ---------------------------------------------------------------------------------------------
// One sg_event_id with two timestamps (issue 26).

/// An event as a hook was handed it: (sg_event_id, occurred_at, event type).
type Handed = (String, Option<DateTime<Utc>>, String);

/// Records every event a hook is handed.
struct Recorder(Mutex<Vec<Handed>>);
impl SendgridHook for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    fn on_stored<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        batch: &'a StoredBatch<'a>,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        let mut seen = self.0.lock().unwrap();
        for e in &batch.events {
            seen.push((
                e.event.sg_event_id.clone(),
                e.event.occurred_at,
                e.event.event.clone(),
            ));
        }
        Box::pin(async { Ok(()) })
    }
}

/// What one way of batching left behind: the stored events (without ids, times of storing or
/// carrying message), both derived tables, and what the hooks were handed.
#[derive(Debug, PartialEq)]
struct Outcomes {
    rows: Vec<Value>,
    derived: (Vec<Value>, Vec<Value>),
    hooked: Vec<Handed>,
}

/// docs/retention.md: two events with the same `sg_event_id` and different timestamps are two
/// rows. The in-batch dedupe used the `sg_event_id` alone, so the second of such a pair was
/// dropped silently when both came in one post, or in two posts handled in one batch, and
/// stored when they came in separate batches; the derived tables and the hooks followed.
#[sqlx::test(migrations = "./migrations")]
async fn the_same_sg_event_id_with_two_timestamps_was_one_row_or_two_depending_on_batching(
    pool: PgPool,
) {
    // Each pair shares an id; the second of each changes what the derived tables say.
    let first = [
        ev(
            "pair-deferred",
            "deferred",
            at(1),
            json!({"reason": "try later"}),
        ),
        ev(
            "pair-group",
            "group_unsubscribe",
            at(3),
            json!({"asm_group_id": 5}),
        ),
        ev("pair-open", "open", None, json!({})),
        ev("pair-bounce", "bounce", at(5), json!({"type": "blocked"})),
    ];
    let second = [
        ev(
            "pair-deferred",
            "deferred",
            at(2),
            json!({"reason": "try later"}),
        ),
        ev(
            "pair-group",
            "group_resubscribe",
            at(4),
            json!({"asm_group_id": 5}),
        ),
        ev("pair-open", "open", at(6), json!({})),
        ev(
            "pair-bounce",
            "bounce",
            at(5_000),
            json!({"type": "bounce"}),
        ),
    ];
    let body = |events: &[Value]| serde_json::to_vec(events).expect("json");
    let one_post: Vec<Value> = first.iter().chain(&second).cloned().collect();

    let mut results = Vec::new();
    for batching in ["one post", "two posts, one batch", "separate batches"] {
        sqlx::query("TRUNCATE mailroom_events, mailroom_message_status, mailroom_suppressions")
            .execute(&pool)
            .await
            .expect("truncate");
        let recorder = Arc::new(Recorder(Mutex::new(Vec::new())));
        let h = handler(&pool).with_hook(recorder.clone());
        let outcomes = match batching {
            "one post" => h.handle(&[events_job("m-1", body(&one_post))]).await,
            "two posts, one batch" => {
                h.handle(&[
                    events_job("m-1", body(&first)),
                    events_job("m-2", body(&second)),
                ])
                .await
            }
            _ => {
                let mut out = h.handle(&[events_job("m-1", body(&first))]).await;
                out.extend(h.handle(&[events_job("m-2", body(&second))]).await);
                out
            }
        };
        assert!(
            outcomes.iter().all(|o| *o == Outcome::Done),
            "{batching}: {outcomes:?}"
        );
        let rows: Vec<Value> = sqlx::query_scalar(
            "SELECT jsonb_build_object('sg_event_id', sg_event_id, 'occurred_at', occurred_at,
                                       'event', event, 'payload', payload::jsonb)
             FROM mailroom_events ORDER BY sg_event_id, occurred_at NULLS FIRST",
        )
        .fetch_all(&pool)
        .await
        .expect("rows");
        assert_eq!(
            rows.len(),
            8,
            "{batching}: every event of every pair is a row"
        );
        assert_rebuild_agrees(&pool).await;
        let mut hooked = recorder.0.lock().unwrap().clone();
        hooked.sort();
        results.push((
            batching,
            Outcomes {
                rows,
                derived: snapshot(&pool).await,
                hooked,
            },
        ));
    }
    let (_, expected) = &results[0];
    assert_eq!(
        expected.hooked.len(),
        8,
        "each new row handed to the hooks once"
    );
    for (batching, got) in &results[1..] {
        assert_eq!(got, expected, "{batching} differs from one post");
    }
    // Both of each pair count: two deferrals, the resubscribe (later) wins, the hard bounce
    // (later, and higher) is the state.
    let s = status_a(&pool).await;
    assert_eq!((s.event_count, s.deferred_count, s.open_count), (8, 2, 2));
    assert_eq!(
        (s.state.as_deref(), s.state_occurred_at),
        (Some("bounced"), Some(t(5_000)))
    );
    assert_eq!(may(&pool, "a@example.com", Some(5)).await, Some(false));
    assert_eq!(
        suppression(&pool, "a@example.com", 5).await.map(|s| s.0),
        Some(false),
        "the later resubscribe clears the group unsubscribe"
    );
}
