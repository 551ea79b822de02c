//! The forwarder's own cost: a worker process with one `[[forward]]` delivers stored events to a
//! receiver in this process that answers 200 at once, at a rate limit far above what it reaches,
//! so what is measured is the forwarder (feed reads, request building and signing, acks) and not
//! the pace. Reported: deliveries and events per second, and the worker's CPU per delivery and per
//! event (its /proc CPU time; the receiver's time is this process's, not counted).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use mailroom::store::{insert_events, EventRecord};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sqlx::Connection;

use crate::infra::{self, Env, WorkerTuning};
use crate::Row;

#[derive(Default)]
struct Receiver {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn start_receiver(counts: Arc<Receiver>) -> Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let counts = counts.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            counts.requests.fetch_add(1, Ordering::Relaxed);
                            counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                            Ok::<_, Infallible>(hyper::Response::new(
                                Full::new(bytes::Bytes::new()),
                            ))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// `events` generated events stored directly (no SQS), then forwarded in `batch_size` batches.
pub async fn forwarder(
    env: &Env,
    run: &str,
    events: usize,
    batch_size: u32,
    concurrency: u32,
) -> Result<Row> {
    let db = env.database(run).await?;
    {
        let mut rng = StdRng::seed_from_u64(7);
        let values: Vec<serde_json::Value> = (0..events)
            .map(|i| crate::data::event(&mut rng, run, i as u64))
            .collect();
        let body = serde_json::to_vec(&values)?;
        let parsed = mailroom_sendgrid::parse_events(&body).context("bench events parse")?;
        let mut conn = sqlx::PgConnection::connect(&db).await?;
        for chunk in parsed.chunks(2_500) {
            let records: Vec<EventRecord<'_>> = chunk
                .iter()
                .map(|event| EventRecord {
                    event,
                    sqs_message_id: "bench",
                    queue: "bench",
                    received_at: None,
                    source: None,
                })
                .collect();
            insert_events(&mut conn, &records).await?;
        }
    }
    let counts = Arc::new(Receiver::default());
    let addr = start_receiver(counts.clone()).await?;
    let queue = env.queue(&format!("{run}-q")).await?;
    let config = env.config_file(run, &queue, &db, &WorkerTuning::default())?;
    let mut text = std::fs::read_to_string(&config)?;
    text.push_str(&format!(
        "\n[[forward]]\nname = \"bench\"\nurl = \"http://{addr}/events\"\nrate_per_second = 1000000\n\
         burst = 1000\nconcurrency = {concurrency}\nbatch_size = {batch_size}\npoll_interval_ms = 50\n\
         signing_secrets = [\"bench-secret\"]\n"
    ));
    std::fs::write(&config, text)?;

    let started = Instant::now();
    let mut child = env.spawn_worker(&config, &format!("{run}.log"))?;
    let mut conn = sqlx::PgConnection::connect(&db).await?;
    let done = loop {
        // One row's column: costs Postgres nothing next to the inserts it watches.
        let acked: Option<i64> = sqlx::query_scalar(
            "SELECT acked_rows FROM mailroom_feed_consumers WHERE name = 'bench'",
        )
        .fetch_optional(&mut conn)
        .await?;
        if acked == Some(events as i64) {
            break Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            break Err(anyhow::anyhow!(
                "forwarder did not finish in 600 s (acked {acked:?})"
            ));
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!("worker exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cpu = infra::cpu_secs(child.id());
    let rss = infra::peak_rss_kib(child.id());
    infra::stop(&mut child, 10);
    drop(conn);
    env.drop_database(run).await;
    // Startup (connect, migrate check, subscribe) is inside the time; small next to the run.
    let secs = done?.as_secs_f64();
    let requests = counts.requests.load(Ordering::Relaxed);
    let bytes = counts.bytes.load(Ordering::Relaxed);
    Ok(Row {
        pg_cpu_s: None,
        sqs_cpu_s: None,
        name: format!("forwarder (batch {batch_size}, concurrency {concurrency})"),
        msgs_per_s: requests as f64 / secs,
        events_per_s: events as f64 / secs,
        cpu_per_1k: Some(cpu / requests.max(1) as f64 * 1000.0),
        rss_mib: Some(rss as f64 / 1024.0),
        note: format!(
            "{events} events in {requests} deliveries ({:.1} MiB) in {secs:.2} s; worker CPU {:.1} us/event, {:.0} us/delivery (msgs = deliveries here)",
            bytes as f64 / 1048576.0,
            cpu / events as f64 * 1e6,
            cpu / requests.max(1) as f64 * 1e6
        ),
    })
}
