//! Fair queues through the real server: the router sets `MessageGroupId` on a standard queue
//! (SQS fair queues) and on a FIFO queue (ordering groups, with a deduplication id), per route;
//! the unchanged `mailroom run` binary takes both and stores every event once, each row with
//! the name of the route it came in on (`source`).
//!
//! rustack rejects a group id on a standard queue (SQS before July 2025 did too), so the fair
//! queue case runs against LocalStack (ignored in a plain `cargo test`; scripts/test.sh runs it
//! with `--ignored` and LOCALSTACK_ENDPOINT_URL set); the FIFO case runs on rustack.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use mailroom_router::{App, AwsSink, CallbackRequest, Config as RouterConfig};
use sqlx::{Connection, PgConnection};

fn batch(tenant: &str, prefix: &str, n: usize) -> Vec<u8> {
    let events: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"email": format!("{prefix}{i}@example.com"), "timestamp": 1764190000 + i,
                "event": "delivered", "sg_event_id": format!("{prefix}-{i}"), "tenant": tenant})
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

/// Receives what is on `url` without deleting it (visibility 0 afterwards is not needed: the
/// worker starts after the timeout), returning each message's group id.
async fn group_ids(sqs: &aws_sdk_sqs::Client, url: &str, want: usize) -> Vec<Option<String>> {
    let mut groups = Vec::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(1)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("receive");
        for message in out.messages() {
            groups.push(
                message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                    .cloned(),
            );
        }
        if groups.len() >= want {
            break;
        }
    }
    groups.sort();
    groups
}

#[tokio::test]
async fn fifo_message_groups_reach_postgres_unchanged() {
    common::set_aws_env();
    through(&common::endpoint(), false).await;
}

#[tokio::test]
#[ignore = "needs LocalStack; run by scripts/test.sh with --ignored"]
async fn fair_queue_group_ids_on_a_standard_queue_reach_postgres_unchanged() {
    common::set_aws_env();
    let endpoint = std::env::var("LOCALSTACK_ENDPOINT_URL")
        .expect("LOCALSTACK_ENDPOINT_URL is not set: run this through scripts/test.sh");
    through(&endpoint, true).await;
}

/// Posts through the router to a standard queue (with per-tenant groups when `fair`) and a FIFO
/// queue, checks the group ids SQS kept, then lets the worker store it all.
async fn through(endpoint: &str, fair: bool) {
    let endpoint = endpoint.to_owned();
    let aws = common::sdk_config(&endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let fair_q = common::unique_dashed("fair-events");
    let fair_url = common::create_queue(&sqs, &fair_q, 2, None).await;
    let fifo_q = format!("{}.fifo", common::unique_dashed("fair-ordered"));
    let fifo_url = sqs
        .create_queue()
        .queue_name(&fifo_q)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, "2")
        .send()
        .await
        .expect("create FIFO queue")
        .queue_url
        .expect("queue url");

    let tenants = if fair {
        r#"{"message_group": {"field": "tenant"}}"#
    } else {
        "{}"
    };
    let routes = format!(
        r#"{{"events": {{
            "tenants": {tenants},
            "ordered": {{"queue_url": "{fifo_url}", "message_group": "webhook"}}}}}}"#
    );
    let vars: HashMap<String, String> = HashMap::from([
        ("MAILROOM_EVENTS_QUEUE_URL".to_owned(), fair_url.clone()),
        ("MAILROOM_ROUTES".to_owned(), routes),
    ]);
    let app = Arc::new(App::new(
        RouterConfig::from_vars(vars).expect("router config"),
        AwsSink::from_sdk_config(&aws),
    ));
    let post = |path: &'static str, body: Vec<u8>| {
        let app = Arc::clone(&app);
        async move {
            let request = CallbackRequest::new(hyper::Method::POST, path, body)
                .with_header("content-type", "application/json");
            let reply = app.handle(request).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        }
    };
    post("/sendgrid/events/tenants", batch("acme", "acme", 3)).await;
    post("/sendgrid/events/tenants", batch("globex", "globex", 2)).await;
    post("/sendgrid/events/ordered", batch("initech", "ordered", 4)).await;
    // SendGrid's retry of the same post: one FIFO message (deduplicated by the body's digest)
    // and, wherever it lands, no second row.
    post("/sendgrid/events/ordered", batch("initech", "ordered", 4)).await;

    let want: Vec<Option<String>> = if fair {
        vec![Some("acme".to_owned()), Some("globex".to_owned())]
    } else {
        vec![None, None]
    };
    assert_eq!(
        group_ids(&sqs, &fair_url, 2).await,
        want,
        "a standard queue keeps each message's group (fair queues), or has none"
    );
    let on_fifo = sqs
        .get_queue_attributes()
        .queue_url(&fifo_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .expect("FIFO queue attributes");
    assert_eq!(
        on_fifo
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::ApproximateNumberOfMessages))
            .map(String::as_str),
        Some("1"),
        "SendGrid's retry of the same post is one FIFO message (deduplicated by the body's digest)"
    );
    assert_eq!(
        group_ids(&sqs, &fifo_url, 1).await,
        [Some("ordered".to_owned())],
        "the FIFO message is in the route's group"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    let db = common::unique("e2e_fair");
    let admin_url = common::admin_url();
    let database_url = common::create_db(&admin_url, &db).await;
    let dir = common::temp_dir(&db);
    let config_path = dir.join("mailroom.toml");
    std::fs::write(
        &config_path,
        format!(
            r#"
            [worker]
            shutdown_timeout_secs = 5
            [store]
            database_url = "{database_url}"
            [sqs]
            endpoint_url = "{endpoint}"
            region = "us-east-1"
            [[queue]]
            name = "fair"
            url = "{fair_url}"
            handler = "sendgrid"
            wait_time_secs = 1
            [[queue]]
            name = "ordered"
            url = "{fifo_url}"
            handler = "sendgrid"
            wait_time_secs = 1
            "#
        ),
    )
    .unwrap();
    common::migrate(&config_path);
    let mut worker = common::Worker::start(&config_path, dir.join("worker.log"), &[]);

    let mut conn = PgConnection::connect(&database_url).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar("select count(*) from mailroom_events")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if n >= 9 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {n} of 9 events stored in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let by_queue: Vec<(String, i64)> =
        sqlx::query_as("select queue, count(*) from mailroom_events group by queue order by queue")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        by_queue,
        [("fair".to_owned(), 5), ("ordered".to_owned(), 4)],
        "every event once, from both kinds of queue"
    );
    let has_source: bool = sqlx::query_scalar(
        "select exists (select 1 from information_schema.columns
                        where table_name = 'mailroom_events' and column_name = 'source')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    if has_source {
        let by_source: Vec<(Option<String>, i64)> = sqlx::query_as(
            "select source, count(*) from mailroom_events group by source order by source",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(
            by_source,
            [
                (Some("ordered".to_owned()), 4),
                (Some("tenants".to_owned()), 5)
            ]
        );
    }
    let dead: i64 = sqlx::query_scalar("select count(*) from mailroom_dead_letters")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        dead,
        0,
        "{}",
        std::fs::read_to_string(dir.join("worker.log")).unwrap_or_default()
    );
    assert!(worker.alive());
    drop(worker);
    drop(conn);
    common::drop_db(&admin_url, &db).await;
}
