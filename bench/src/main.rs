//! mailroom-bench: measures the worker side by side with an ideal SQS client, peers (npm
//! sqs-consumer + pg, Python Celery over kombu's SQS transport), several worker processes,
//! memory under load and with S3-offloaded bodies, and the store path alone (the worker's
//! transaction, no SQS). Prints a markdown table. Run it through `scripts/bench.sh`, which
//! builds the release binaries, starts rustack and Postgres and installs the peers.
//!
//! ```text
//! mailroom-bench --endpoint URL --database-url URL --mailroom target/release/mailroom \
//!     [--messages N] [--peers DIR] [--work DIR]
//!     [--only ideal,worker,peers,scaling,memory,large,pg,forward]   (peers = node,celery)
//!
//! BENCH_REPEAT=N runs the ideal client, the worker and the peers N times each, alternating, and
//! prints each one's median; every row shows the CPU seconds Postgres and the SQS server spent.
//! ```

mod data;
mod forward;
mod infra;
mod latency;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use infra::{Env, WorkerTuning};
use mailroom_envelope::Kind;

const LIMIT: Duration = Duration::from_secs(600);
/// Connection counts of the store-path-alone rows. The worker's default pool is 16, but with
/// the default 200 messages in flight and batches of up to 100 it has 2 or 3 transactions open.
const PG_CONNECTIONS: [usize; 3] = [1, 2, 4];
/// A peer that has not finished by then is stopped and its rate computed from what it stored.
const PEER_LIMIT: Duration = Duration::from_secs(120);

struct Args {
    endpoint: String,
    database_url: String,
    mailroom: PathBuf,
    work: PathBuf,
    messages: usize,
    peers: Option<PathBuf>,
    only: Vec<String>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        endpoint: std::env::var("AWS_ENDPOINT_URL").unwrap_or_default(),
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        mailroom: PathBuf::from("target/release/mailroom"),
        work: std::env::temp_dir().join(format!("mailroom-bench-{}", std::process::id())),
        messages: 5000,
        peers: None,
        only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => a.endpoint = value()?,
            "--database-url" => a.database_url = value()?,
            "--mailroom" => a.mailroom = value()?.into(),
            "--work" => a.work = value()?.into(),
            "--messages" => a.messages = value()?.parse()?,
            "--peers" => a.peers = Some(value()?.into()),
            "--only" => a.only = value()?.split(',').map(str::to_string).collect(),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.endpoint.is_empty() {
        bail!("--endpoint (or AWS_ENDPOINT_URL) is required");
    }
    Ok(a)
}

#[derive(Default, Clone)]
struct Row {
    name: String,
    msgs_per_s: f64,
    events_per_s: f64,
    cpu_per_1k: Option<f64>,
    rss_mib: Option<f64>,
    note: String,
    /// CPU seconds Postgres and the SQS server spent during the run (all their processes).
    pg_cpu_s: Option<f64>,
    sqs_cpu_s: Option<f64>,
}

/// Run `run`, recording what it cost Postgres and the SQS server.
async fn measured(run: impl std::future::Future<Output = Result<Row>>) -> Result<Row> {
    let (pg0, sqs0) = infra::service_cpu();
    let mut row = run.await?;
    let (pg1, sqs1) = infra::service_cpu();
    // A row that measured its own timed window (without set-up and the counts after it)
    // keeps that.
    row.pg_cpu_s = row.pg_cpu_s.or(Some(pg1 - pg0));
    row.sqs_cpu_s = row.sqs_cpu_s.or(Some(sqs1 - sqs0));
    Ok(row)
}

/// The median run of each name (by msgs/s), its note saying of how many and their range.
fn medians(rows: &[Row]) -> Vec<Row> {
    let mut names: Vec<&str> = Vec::new();
    for r in rows {
        if !names.contains(&r.name.as_str()) {
            names.push(&r.name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let mut runs: Vec<&Row> = rows.iter().filter(|r| r.name == name).collect();
            runs.sort_by(|a, b| a.msgs_per_s.total_cmp(&b.msgs_per_s));
            let mid = runs[runs.len() / 2].clone();
            if runs.len() == 1 {
                return mid;
            }
            let rates: Vec<String> = runs
                .iter()
                .map(|r| format!("{:.0}", r.msgs_per_s))
                .collect();
            Row {
                note: format!(
                    "median of {} runs (msgs/s {}); median run: {}",
                    runs.len(),
                    rates.join(", "),
                    mid.note
                ),
                ..mid
            }
        })
        .collect()
}

fn progress(r: &Row) {
    eprintln!(
        "  {}: {:.0} msgs/s, {:.0} events/s, cpu/1k {:?}, rss MiB {:?}; {}",
        r.name, r.msgs_per_s, r.events_per_s, r.cpu_per_1k, r.rss_mib, r.note
    );
}

fn print_table(rows: &[Row]) {
    println!("| run | msgs/s | events/s | CPU s / 1k msgs | Postgres CPU s | SQS server CPU s | peak RSS MiB | notes |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in rows {
        let opt = |v: Option<f64>, p: usize| v.map(|v| format!("{v:.p$}")).unwrap_or("-".into());
        println!(
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
            r.name,
            r.msgs_per_s,
            r.events_per_s,
            opt(r.cpu_per_1k, 3),
            opt(r.pg_cpu_s, 1),
            opt(r.sqs_cpu_s, 1),
            opt(r.rss_mib, 1),
            r.note
        );
    }
    println!(
        "\nPostgres and SQS server CPU: over the timed window for the worker and store-path rows \
         (from the start to the last row stored, without set-up or the counts after it); over \
         the whole run for the others."
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    // BENCH_SQS_LATENCY_MS: milliseconds added each way to every SQS call of the measured
    // clients (a delay proxy on loopback, bench/src/latency.rs); AWS is about 5-20.
    let latency = Duration::from_millis(
        std::env::var("BENCH_SQS_LATENCY_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    );
    let env = Env::new(&a.endpoint, &a.database_url, &a.mailroom, &a.work, latency).await?;
    let want = |s: &str| a.only.is_empty() || a.only.iter().any(|o| o == s);
    let run = format!("b{}", std::process::id());
    // BENCH_MAX_EVENTS: events per Event Webhook message are uniform in 1..=this (default 50);
    // 1 gives the per-message regime (one event per message).
    let max_events = std::env::var("BENCH_MAX_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let msgs = data::prefill(&run, a.messages, 42, max_events);
    let t = data::totals(&msgs);
    eprintln!(
        "prefill: {} messages, {} events, {} inbound emails, {:.1} MiB of SQS bodies",
        t.messages,
        t.events,
        t.inbound,
        t.bytes as f64 / 1048576.0
    );
    // Tuning overrides, for trade-off runs: BENCH_CONCURRENCY, BENCH_RECEIVE_LOOPS,
    // BENCH_BATCH_WINDOW_MS, BENCH_MAX_BATCH_MESSAGES, BENCH_MAX_CONNECTIONS.
    // Unset, the worker runs the shipped defaults (no hidden tuning): the published figures
    // are what a user gets.
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let tuning = WorkerTuning {
        concurrency: var("BENCH_CONCURRENCY").map(|v| v as u32),
        receive_loops: var("BENCH_RECEIVE_LOOPS").map(|v| v as u32),
        batch_window_ms: var("BENCH_BATCH_WINDOW_MS"),
        max_batch_messages: var("BENCH_MAX_BATCH_MESSAGES").map(|v| v as u32),
        max_connections: var("BENCH_MAX_CONNECTIONS").map(|v| v as u32),
        ack_flush_ms: var("BENCH_ACK_FLUSH_MS"),
        queue_extra: std::env::var("BENCH_QUEUE_EXTRA").ok(),
    };
    let mut rows = Vec::new();
    let mut ideal = None;
    let mut worker = None;

    // BENCH_REPEAT=N: the ideal client, the worker and the peers N times each, alternating, and
    // the median of each printed (on a shared 2-core machine identical runs drift 20-30% over
    // minutes: one run per row cannot support a ratio).
    let repeat = var("BENCH_REPEAT").unwrap_or(1).max(1);
    // BENCH_PIN_POSTGRES=1: Postgres on half the CPUs, everything else on the other half, for
    // the whole run (given back at the end): the shape of a deployment where Postgres has a
    // host of its own.
    let _pinned = match std::env::var("BENCH_PIN_POSTGRES").as_deref() {
        Ok("1") => {
            println!("Postgres pinned to CPUs of its own (BENCH_PIN_POSTGRES=1).\n");
            Some(infra::PinnedApart::new()?)
        }
        _ => None,
    };
    let mut repeated = Vec::new();
    for rep in 0..repeat {
        if repeat > 1 {
            eprintln!("round {} of {repeat}", rep + 1);
        }
        if want("ideal") {
            let r = measured(ideal_client(&env, &format!("{run}r{rep}"), &msgs)).await?;
            progress(&r);
            repeated.push(r);
        }
        if want("worker") {
            let r = measured(workers(&env, &format!("{run}r{rep}w"), &msgs, &tuning, 1)).await?;
            progress(&r);
            repeated.push(r);
            // BENCH_VERSUS: lines for the [[queue]] table of a second worker, run in the same
            // rounds, alternating with the first: a setting's effect measured side by side.
            if let Ok(lines) = std::env::var("BENCH_VERSUS") {
                let versus = WorkerTuning {
                    queue_extra: Some(lines.clone()),
                    ..tuning.clone()
                };
                let mut r =
                    measured(workers(&env, &format!("{run}r{rep}v"), &msgs, &versus, 1)).await?;
                r.name = format!(
                    "mailroom worker, versus: {}",
                    lines.replace("\\n", "; ").replace('\n', "; ")
                );
                progress(&r);
                repeated.push(r);
            }
        }
        // The store path alone, in the same rounds, so the worker's ratio to it is measured
        // side by side.
        if want("pg") {
            for conns in PG_CONNECTIONS {
                let r = measured(pg_ceiling(
                    &env,
                    &format!("{run}r{rep}p{conns}"),
                    &msgs,
                    conns,
                ))
                .await?;
                progress(&r);
                repeated.push(r);
            }
        }
        if want("peers") || want("node") || want("celery") {
            if let Some(dir) = &a.peers {
                if want("peers") || want("node") {
                    match measured(node_peer(&env, &format!("{run}r{rep}n"), &msgs, dir)).await {
                        Ok(r) => {
                            progress(&r);
                            repeated.push(r)
                        }
                        Err(e) => eprintln!("sqs-consumer peer failed: {e:#}"),
                    }
                }
                if want("peers") || want("celery") {
                    match measured(celery_peer(&env, &format!("{run}r{rep}c"), &msgs, dir)).await {
                        Ok(r) => {
                            progress(&r);
                            repeated.push(r)
                        }
                        Err(e) => eprintln!("celery peer failed: {e:#}"),
                    }
                }
            } else if rep == 0 {
                eprintln!("no --peers dir: peers skipped");
            }
        }
    }
    let mut store_alone = Vec::new();
    for r in medians(&repeated) {
        if r.name.starts_with("store path alone") {
            store_alone.push((r.name.clone(), r.msgs_per_s));
        }
        if r.name.starts_with("ideal") {
            ideal = Some(r.msgs_per_s);
        } else if r.name.starts_with("mailroom worker (") {
            worker = Some(r.msgs_per_s);
        }
        rows.push(r);
    }
    if want("scaling") {
        for procs in [1usize, 2, 4] {
            let r = measured(workers(
                &env,
                &format!("{run}s{procs}"),
                &msgs,
                &tuning,
                procs,
            ))
            .await?;
            progress(&r);
            rows.push(r);
        }
    }
    if want("memory") {
        let r = offloaded(&env, &format!("{run}m"), (a.messages / 100).clamp(20, 200)).await?;
        progress(&r);
        rows.push(r);
    }
    if want("large") {
        // BENCH_LARGE_MODES: "raw,parsed" (default), or one of them.
        let modes = std::env::var("BENCH_LARGE_MODES").unwrap_or_else(|_| "raw,parsed".into());
        for mode in modes.split(',') {
            let raw = match mode {
                "raw" => true,
                "parsed" => false,
                other => bail!("BENCH_LARGE_MODES: unknown mode {other}"),
            };
            let r = large_inbound(&env, &format!("{run}l{mode}"), raw, LARGE_EMAILS).await?;
            progress(&r);
            rows.push(r);
        }
    }
    if want("forward") {
        // Batches of 500 (the throughput case) and single-event deliveries (the per-request
        // cost), on the events of this run's size.
        for (batch, events) in [(500u32, t.events), (1u32, (t.events / 10).max(1_000))] {
            let r = measured(forward::forwarder(
                &env,
                &format!("{run}f{batch}"),
                events,
                batch,
                8,
            ))
            .await?;
            progress(&r);
            rows.push(r);
        }
    }

    println!();
    println!(
        "N = {} messages ({} events, 1-{} per Event Webhook message; {} inbound emails), SQS latency added: {} ms each way, worker: {}",
        t.messages,
        t.events,
        max_events,
        t.inbound,
        env.latency.as_millis(),
        tuning.describe()
    );
    println!();
    print_table(&rows);
    println!();
    if let (Some(w), Some(i)) = (worker, ideal) {
        println!("worker / ideal client: {:.2}", w / i);
    }
    if let Some(w) = worker {
        for (name, rate) in &store_alone {
            println!("worker / {name}: {:.2}", w / rate);
        }
        for r in rows.iter().filter(|r| r.name.starts_with("peer")) {
            println!("worker / {}: {:.1}x", r.name, w / r.msgs_per_s);
        }
    }
    // BENCH_KEEP_WORK: keep the configs and worker logs for a look afterwards.
    if std::env::var_os("BENCH_KEEP_WORK").is_none() {
        let _ = std::fs::remove_dir_all(&a.work);
    }
    Ok(())
}

/// Receive 10 + DeleteMessageBatch 10, no work, 8 loops.
async fn ideal_client(env: &Env, run: &str, msgs: &[data::Message]) -> Result<Row> {
    let url = env.queue(&format!("{run}-ideal")).await?;
    env.fill(&url, msgs).await?;
    let n = msgs.len();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let finished = std::sync::Arc::new(std::sync::Mutex::new(None::<(Duration, (u64, u64))>));
    let cpu_before = infra::machine_cpu();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (sqs, url, done, finished) = (
            env.measured_sqs.clone(),
            url.clone(),
            done.clone(),
            finished.clone(),
        );
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            while done.load(Ordering::SeqCst) < n && started.elapsed() < LIMIT {
                let out = sqs
                    .receive_message()
                    .queue_url(&url)
                    .max_number_of_messages(10)
                    .wait_time_seconds(1)
                    .send()
                    .await?;
                let got = out.messages.unwrap_or_default();
                if got.is_empty() {
                    continue;
                }
                let entries = got
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        aws_sdk_sqs::types::DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(m.receipt_handle().unwrap_or_default())
                            .build()
                            .expect("entry")
                    })
                    .collect::<Vec<_>>();
                sqs.delete_message_batch()
                    .queue_url(&url)
                    .set_entries(Some(entries))
                    .send()
                    .await?;
                if done.fetch_add(got.len(), Ordering::SeqCst) + got.len() >= n {
                    finished
                        .lock()
                        .expect("lock")
                        .get_or_insert((started.elapsed(), infra::machine_cpu()));
                }
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let (elapsed, cpu_after) = finished
        .lock()
        .expect("lock")
        .unwrap_or_else(|| (started.elapsed(), infra::machine_cpu()));
    let secs = elapsed.as_secs_f64();
    let events: usize = msgs.iter().map(|m| m.events).sum();
    Ok(Row {
        pg_cpu_s: None,
        sqs_cpu_s: None,
        name: "ideal client (receive 10 + delete batch, 8 loops, no work)".into(),
        msgs_per_s: n as f64 / secs,
        events_per_s: events as f64 / secs,
        note: format!(
            "{n} msgs in {secs:.2} s; all cores {:.0}% busy",
            infra::busy_percent(cpu_before, cpu_after)
        ),
        ..Row::default()
    })
}

/// `procs` worker processes on one pre-filled queue, until every event is stored.
async fn workers(
    env: &Env,
    run: &str,
    msgs: &[data::Message],
    tuning: &WorkerTuning,
    procs: usize,
) -> Result<Row> {
    let t = data::totals(msgs);
    let url = env.queue(&format!("{run}-q")).await?;
    env.fill(&url, msgs).await?;
    let db = env.database(run).await?;
    let config = env.config_file(run, &url, &db, tuning)?;
    let cpu_before = infra::machine_cpu();
    let services_before = infra::service_cpu();
    let started = Instant::now();
    let mut children = (0..procs)
        .map(|i| env.spawn_worker(&config, &format!("{run}-{i}.log")))
        .collect::<Result<Vec<_>>>()?;
    let waited = {
        let mut refs: Vec<&mut std::process::Child> = children.iter_mut().collect();
        infra::wait_stored(&db, t.events, t.inbound, started, LIMIT, &mut refs).await
    };
    let cpu_after = infra::machine_cpu();
    let services_after = infra::service_cpu();
    let (mut cpu, mut rss) = (0.0, 0u64);
    for c in &children {
        cpu += infra::cpu_secs(c.id());
        rss = rss.max(infra::peak_rss_kib(c.id()));
    }
    for c in &mut children {
        infra::stop(c, 10);
    }
    let secs = waited?.as_secs_f64();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db).await?;
    let (rows, distinct, inbound, dead) = infra::counts(&mut conn).await?;
    let transactions = infra::event_transactions(&mut conn).await?;
    drop(conn);
    env.drop_database(run).await;
    let lost = t.events as i64 - distinct;
    let doubled = rows - distinct;
    let peak = |message: &str, field: &str| {
        (0..procs)
            .filter_map(|i| {
                infra::peak_logged(&env.work.join(format!("{run}-{i}.log")), message, field)
            })
            .max()
    };
    let peak_limit = peak("in-flight limit adjusted", "limit");
    let peak_loops = peak("receive loops adjusted", "loops");
    let name = if procs == 1 && !run.contains('s') {
        "mailroom worker (release, 1 process)".to_string()
    } else {
        format!("scaling: {procs} worker process(es)")
    };
    Ok(Row {
        pg_cpu_s: Some(services_after.0 - services_before.0),
        sqs_cpu_s: Some(services_after.1 - services_before.1),
        name,
        msgs_per_s: t.messages as f64 / secs,
        events_per_s: t.events as f64 / secs,
        cpu_per_1k: Some(cpu / t.messages as f64 * 1000.0),
        rss_mib: Some(rss as f64 / 1024.0),
        note: format!(
            "{secs:.2} s; all cores {:.0}% busy; lost {lost}, doubled {doubled}, inbound {inbound}/{}, dead letters {dead}; {transactions} transactions stored events ({:.0} events each){}{}; receive loops peak {}",
            infra::busy_percent(cpu_before, cpu_after),
            t.inbound,
            distinct as f64 / transactions.max(1) as f64,
            if procs > 1 { "; RSS = largest process" } else { "" },
            match peak_limit {
                Some(peak) => format!("; in-flight limit peak {peak}"),
                None => "; in-flight limit never moved".to_string(),
            },
            peak_loops.unwrap_or(1)
        ),
    })
}

/// The peers' scripts, read from bench/peers (or MAILROOM_BENCH_PEER_SCRIPTS) at run time.
fn peer_script(name: &str) -> Result<String> {
    let dir = std::env::var("MAILROOM_BENCH_PEER_SCRIPTS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/peers").to_string());
    std::fs::read_to_string(std::path::Path::new(&dir).join(name))
        .with_context(|| format!("reading peer script {name} from {dir}"))
}

async fn peer_run(
    env: &Env,
    run: &str,
    msgs: &[data::Message],
    name: &str,
    mut child: impl FnMut(&str, &str) -> Result<std::process::Child>,
    fill: bool,
    url: String,
) -> Result<Row> {
    let t = data::totals(msgs);
    if fill {
        env.fill(&url, msgs).await?;
    }
    let db = env.database(run).await?;
    let started = Instant::now();
    let mut proc = child(&url, &db)?;
    let waited = infra::wait_stored_partial(
        &db,
        t.events,
        t.inbound,
        started,
        PEER_LIMIT,
        &mut [&mut proc],
    )
    .await;
    let (cpu, rss) = infra::tree(proc.id());
    infra::stop(&mut proc, 10);
    let (elapsed, events, inbound, finished) = waited?;
    let secs = elapsed.as_secs_f64();
    env.drop_database(run).await;
    // Messages done: inbound emails plus event messages at the load's mean events per message.
    let per_message = t.events as f64 / (t.messages - t.inbound).max(1) as f64;
    let messages = inbound as f64 + events as f64 / per_message;
    Ok(Row {
        pg_cpu_s: None,
        sqs_cpu_s: None,
        name: name.into(),
        msgs_per_s: messages / secs,
        events_per_s: events as f64 / secs,
        cpu_per_1k: Some(cpu / messages.max(1.0) * 1000.0),
        rss_mib: Some(rss as f64 / 1024.0),
        note: if finished {
            format!("{secs:.2} s")
        } else {
            format!(
                "stopped after {secs:.0} s (limit): {events}/{} events, {inbound}/{} emails; rate from those",
                t.events, t.inbound
            )
        },
    })
}

async fn node_peer(
    env: &Env,
    run: &str,
    msgs: &[data::Message],
    dir: &std::path::Path,
) -> Result<Row> {
    // BENCH_PEER_CONSUMERS: Consumer instances in the node peer (default 4).
    let consumers: u32 = std::env::var("BENCH_PEER_CONSUMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let node_dir = dir.join("node");
    std::fs::write(
        node_dir.join("sqs_consumer.mjs"),
        peer_script("sqs_consumer.mjs")?,
    )?;
    let url = env.queue(&format!("{run}-q")).await?;
    let endpoint = env.worker_endpoint.clone();
    let log = env.work.join(format!("{run}.log"));
    peer_run(
        env,
        run,
        msgs,
        &format!("peer: npm sqs-consumer 14 + pg (node 20), {consumers} consumer(s)"),
        |url, db| {
            Command::new("node")
                .arg("sqs_consumer.mjs")
                .current_dir(&node_dir)
                .env("QUEUE_URL", url)
                .env("DATABASE_URL", db)
                .env("AWS_ENDPOINT_URL", &endpoint)
                .env("CONSUMERS", consumers.to_string())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("spawn node")
        },
        true,
        url,
    )
    .await
}

async fn celery_peer(
    env: &Env,
    run: &str,
    msgs: &[data::Message],
    dir: &std::path::Path,
) -> Result<Row> {
    std::fs::write(dir.join("celery_peer.py"), peer_script("celery_peer.py")?)?;
    let queue = format!("{run}-q");
    let url = env.queue(&queue).await?;
    // Celery needs its own message format: the same envelopes, sent as Celery tasks by Celery.
    let payloads = env.work.join(format!("{run}.payloads"));
    let mut text = String::with_capacity(msgs.iter().map(|m| m.body.len() + 1).sum());
    for m in msgs {
        text.push_str(&m.body);
        text.push('\n');
    }
    std::fs::write(&payloads, text)?;
    let python = dir.join("celery-venv/bin/python");
    let out = Command::new(&python)
        .arg("celery_peer.py")
        .arg("fill")
        .arg(&payloads)
        .current_dir(dir)
        .env("QUEUE_NAME", &queue)
        .env("QUEUE_URL", &url)
        .env("AWS_ENDPOINT_URL", &env.endpoint)
        .output()?;
    if !out.status.success() {
        bail!(
            "celery fill failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let log = env.work.join(format!("{run}.log"));
    let endpoint = env.worker_endpoint.clone();
    let dir = dir.to_path_buf();
    peer_run(
        env,
        run,
        msgs,
        "peer: Celery 5.4 (kombu SQS transport, prefork) + psycopg2",
        |url, db| {
            Command::new(dir.join("celery-venv/bin/celery"))
                .args(["-A", "celery_peer", "worker", "--loglevel=WARNING", "-Q"])
                .arg(&queue)
                .current_dir(&dir)
                .env("QUEUE_NAME", &queue)
                .env("QUEUE_URL", url)
                .env("DATABASE_URL", db)
                .env("AWS_ENDPOINT_URL", &endpoint)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log)?)
                .spawn()
                .context("spawn celery")
        },
        false,
        url,
    )
    .await
}

/// 1 MiB inbound emails offloaded to S3 (Extended Client pointers): the worker fetches each
/// body from rustack's S3. Peak RSS with the inbound queue's suggested concurrency (8).
async fn offloaded(env: &Env, run: &str, n: usize) -> Result<Row> {
    use rand::SeedableRng;
    let bucket = format!("{run}-bodies");
    env.s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .context("create bucket")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut pointers = Vec::new();
    for i in 0..n {
        let body = data::inbound_body(&mut rng, run, i as u64, 1024 * 1024);
        let ct = data::inbound_content_type();
        let envelope = data::envelope(
            Kind::Inbound,
            &ct,
            vec![("content-type".into(), ct.clone())],
            body,
        );
        let key = format!("bodies/{i}");
        env.s3
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .body(envelope.into_bytes().into())
            .send()
            .await
            .context("put object")?;
        pointers.push(
            mailroom_envelope::S3Pointer {
                bucket: bucket.clone(),
                key,
            }
            .to_message_body(),
        );
    }
    let url = env.queue(&format!("{run}-q")).await?;
    let refs: Vec<&str> = pointers.iter().map(String::as_str).collect();
    env.fill_bodies(&url, &refs, &[("ExtendedPayloadSize", "1400000")])
        .await?;
    let db = env.database(run).await?;
    let tuning = WorkerTuning {
        concurrency: Some(8),
        receive_loops: Some(1),
        max_batch_messages: Some(10),
        ..WorkerTuning::default()
    };
    let config = env.config_file(run, &url, &db, &tuning)?;
    let started = Instant::now();
    let mut child = env.spawn_worker(&config, &format!("{run}.log"))?;
    let waited = infra::wait_stored(&db, 0, n, started, LIMIT, &mut [&mut child]).await;
    let cpu = infra::cpu_secs(child.id());
    let rss = infra::peak_rss_kib(child.id());
    infra::stop(&mut child, 10);
    let secs = waited?.as_secs_f64();
    env.drop_database(run).await;
    Ok(Row {
        pg_cpu_s: None,
        sqs_cpu_s: None,
        name: "memory: 1 MiB inbound emails via S3 pointers (concurrency 8)".into(),
        msgs_per_s: n as f64 / secs,
        events_per_s: 0.0,
        cpu_per_1k: Some(cpu / n as f64 * 1000.0),
        rss_mib: Some(rss as f64 / 1024.0),
        note: format!(
            "{n} x 1 MiB attachment, {:.1} MiB envelopes in S3, {secs:.2} s",
            n as f64 * 1.37
        ),
    })
}

/// The large-inbound rows: this many emails of [`LARGE_POST_BYTES`] each, one after another.
const LARGE_EMAILS: usize = 10;
/// 25 MB posts (SendGrid caps an email at 30 MB).
const LARGE_POST_BYTES: usize = 25_000_000;
/// The worker's body budget as shipped (`max_body_bytes_in_flight`, config/mailroom.example.toml).
const SHIPPED_BODY_BUDGET_MIB: f64 = 64.0;

/// Large inbound emails offloaded to S3, the worker on the example config's inbound settings
/// (concurrency 8, visibility 120 s, heartbeat 30 s) and the shipped body budget: peak RSS against
/// the promise in config/mailroom.example.toml (about 30 MiB + 3 x the budget), and every email
/// checked byte for byte in Postgres (dedup key = SHA-256 of the post; attachment and raw MIME
/// hashes). The envelopes are the router's (`mailroom_envelope::encode`, what `serve` streams to
/// S3), put into rustack's S3 one at a time.
async fn large_inbound(env: &Env, run: &str, raw: bool, n: usize) -> Result<Row> {
    use rand::SeedableRng;
    use sha2::{Digest, Sha256};
    let bucket = format!("{run}-bodies");
    env.s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .context("create bucket")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(if raw { 25 } else { 26 });
    let (mut pointers, mut keys, mut attachments, mut mimes) = (vec![], vec![], vec![], vec![]);
    let mut object_bytes = 0usize;
    for i in 0..n {
        let (body, mime, blob) = if raw {
            data::raw_inbound_body(&mut rng, run, i as u64, LARGE_POST_BYTES)
        } else {
            let body = data::inbound_body(&mut rng, run, i as u64, LARGE_POST_BYTES - 3000);
            (body, Vec::new(), Vec::new())
        };
        keys.push(hex::encode(Sha256::digest(&body)));
        if raw {
            attachments.push(hex::encode(Sha256::digest(&blob)));
            mimes.push(hex::encode(Sha256::digest(&mime)));
        }
        let ct = data::inbound_content_type();
        let envelope = data::envelope(
            Kind::Inbound,
            &ct,
            vec![("content-type".into(), ct.clone())],
            body,
        );
        object_bytes = object_bytes.max(envelope.len());
        let key = format!("bodies/{i}");
        env.s3
            .put_object()
            .bucket(&bucket)
            .key(&key)
            .body(envelope.into_bytes().into())
            .send()
            .await
            .context("put object")?;
        pointers.push(
            mailroom_envelope::S3Pointer {
                bucket: bucket.clone(),
                key,
            }
            .to_message_body(),
        );
    }
    let url = env.queue(&format!("{run}-q")).await?;
    let refs: Vec<&str> = pointers.iter().map(String::as_str).collect();
    env.fill_bodies(
        &url,
        &refs,
        &[("ExtendedPayloadSize", &object_bytes.to_string())],
    )
    .await?;
    let db = env.database(run).await?;
    let tuning = WorkerTuning {
        concurrency: Some(8),
        queue_extra: Some("visibility_timeout_secs = 120\nheartbeat_secs = 30".into()),
        ..WorkerTuning::default()
    };
    let config = env.config_file(run, &url, &db, &tuning)?;
    let started = Instant::now();
    let mut child = env.spawn_worker(&config, &format!("{run}.log"))?;
    let waited = infra::wait_stored(&db, 0, n, started, LIMIT, &mut [&mut child]).await;
    let cpu = infra::cpu_secs(child.id());
    let rss = infra::peak_rss_kib(child.id());
    infra::stop(&mut child, 10);
    let secs = waited?.as_secs_f64();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db).await?;
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let stored_keys: Vec<String> =
        sqlx::query_scalar("select dedup_key from mailroom_inbound_emails")
            .fetch_all(&mut conn)
            .await?;
    let mut exact = sorted(stored_keys) == sorted(keys);
    if raw {
        let stored: Vec<String> =
            sqlx::query_scalar("select sha256 from mailroom_inbound_attachments")
                .fetch_all(&mut conn)
                .await?;
        let stored_mime: Vec<String> = sqlx::query_scalar(
            "select encode(sha256(raw_mime), 'hex') from mailroom_inbound_emails",
        )
        .fetch_all(&mut conn)
        .await?;
        exact &= sorted(stored) == sorted(attachments) && sorted(stored_mime) == sorted(mimes);
    } else {
        // Parsed mode: each attachment is the post's file part; its size says it is whole.
        let short: i64 = sqlx::query_scalar(
            "select count(*) from mailroom_inbound_attachments where size_bytes <> $1",
        )
        .bind((LARGE_POST_BYTES - 3000) as i64)
        .fetch_one(&mut conn)
        .await?;
        exact &= short == 0;
    }
    drop(conn);
    env.drop_database(run).await;
    let promise = 30.0 + 3.0 * SHIPPED_BODY_BUDGET_MIB;
    let rss_mib = rss as f64 / 1024.0;
    Ok(Row {
        pg_cpu_s: None,
        sqs_cpu_s: None,
        name: format!(
            "memory: {n} x 25 MB {} inbound emails via S3 (budget 64 MiB, concurrency 8)",
            if raw { "raw-mode" } else { "parsed-mode" }
        ),
        msgs_per_s: n as f64 / secs,
        events_per_s: 0.0,
        cpu_per_1k: Some(cpu / n as f64 * 1000.0),
        rss_mib: Some(rss_mib),
        note: format!(
            "{secs:.2} s; envelopes {:.1} MiB each in S3; peak RSS {rss_mib:.0} MiB against the promised {promise:.0} MiB (30 + 3 x 64): {}; stored byte-exact: {}",
            object_bytes as f64 / 1048576.0,
            if rss_mib <= promise { "within" } else { "OVER" },
            if exact { "yes" } else { "NO" }
        ),
    })
}

/// One message, parsed as the sendgrid handler parses it.
struct Parsed {
    id: String,
    received_at: Option<chrono::DateTime<chrono::Utc>>,
    body: ParsedBody,
}

enum ParsedBody {
    Events(Vec<mailroom_sendgrid::Event>),
    /// An Inbound Parse post: the email and its dedup key (sha256 of the body).
    Inbound(Box<mailroom_sendgrid::InboundEmail>, String),
}

/// The store path alone: the statements of the worker's batch transaction (insert the events
/// with `RETURNING`, each inbound email with its attachments, then the built-in hooks, message
/// status and suppressions, unless BENCH_BUILTIN_HOOKS=off) on pre-decoded messages, batches of
/// 100 messages as they come in the queue (inbound posts among them), `conns` transactions at
/// once. What the worker would reach if SQS, decoding and acks cost nothing.
async fn pg_ceiling(env: &Env, run: &str, msgs: &[data::Message], conns: usize) -> Result<Row> {
    use mailroom::handlers::sendgrid::{MessageStatusHook, SuppressionsHook};
    use mailroom::store::{
        dedup_key, insert_events, insert_inbound, insert_new_events, EventRecord, InboundRecord,
    };
    use mailroom::{NewEmail, NewEvent, SendgridHook, StoredBatch};
    let hooks = std::env::var("BENCH_BUILTIN_HOOKS").as_deref() != Ok("off");
    let db = env.database(run).await?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(conns as u32)
        .connect(&db)
        .await?;
    let mut parsed = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let mailroom_envelope::Decoded::Envelope(e) = mailroom_envelope::decode(&m.body)? else {
            bail!("not an envelope");
        };
        let body = if m.inbound {
            let content_type = e
                .content_type
                .as_deref()
                .or_else(|| e.header("content-type"))
                .context("inbound without a content type")?;
            let email = mailroom_sendgrid::parse_inbound(content_type, &e.body)?;
            ParsedBody::Inbound(Box::new(email), dedup_key(&e.body))
        } else {
            ParsedBody::Events(mailroom_sendgrid::parse_events(&e.body)?)
        };
        parsed.push(Parsed {
            id: format!("msg-{i}"),
            received_at: e.received_at,
            body,
        });
    }
    let total: usize = parsed
        .iter()
        .map(|p| match &p.body {
            ParsedBody::Events(events) => events.len(),
            ParsedBody::Inbound(..) => 0,
        })
        .sum();
    let inbound = msgs.iter().filter(|m| m.inbound).count();
    let batches: Vec<&[Parsed]> = parsed.chunks(100).collect();
    let services_before = infra::service_cpu();
    let started = Instant::now();
    use futures::StreamExt;
    let results: Vec<Result<()>> = futures::stream::iter(batches)
        .map(|batch| {
            let pool = pool.clone();
            async move {
                let records: Vec<EventRecord<'_>> = batch
                    .iter()
                    .filter_map(|p| match &p.body {
                        ParsedBody::Events(events) => {
                            Some(events.iter().map(|event| EventRecord {
                                event,
                                sqs_message_id: &p.id,
                                queue: "bench",
                                received_at: p.received_at,
                                source: None,
                            }))
                        }
                        ParsedBody::Inbound(..) => None,
                    })
                    .flatten()
                    .collect();
                let mut tx = pool.begin().await?;
                let mut stored = StoredBatch::default();
                if hooks {
                    let new = insert_new_events(&mut tx, &records).await?;
                    stored.events = new.iter().map(NewEvent::from).collect();
                } else {
                    insert_events(&mut tx, &records).await?;
                }
                for p in batch {
                    if let ParsedBody::Inbound(email, key) = &p.body {
                        let record = InboundRecord {
                            email,
                            dedup_key: key,
                            sqs_message_id: &p.id,
                            queue: "bench",
                            received_at: p.received_at,
                            source: None,
                        };
                        if let Some(id) = insert_inbound(&mut tx, &record).await? {
                            stored.emails.push(NewEmail {
                                id,
                                email,
                                queue: "bench",
                                sqs_message_id: &p.id,
                            });
                        }
                    }
                }
                if hooks && !stored.is_empty() {
                    MessageStatusHook.on_stored(&mut tx, &stored).await?;
                    SuppressionsHook.on_stored(&mut tx, &stored).await?;
                }
                tx.commit().await?;
                Ok(())
            }
        })
        .buffer_unordered(conns)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    let secs = started.elapsed().as_secs_f64();
    let services_after = infra::service_cpu();
    pool.close().await;
    env.drop_database(run).await;
    Ok(Row {
        pg_cpu_s: Some(services_after.0 - services_before.0),
        sqs_cpu_s: Some(services_after.1 - services_before.1),
        name: format!("store path alone, {conns} connection(s)"),
        msgs_per_s: parsed.len() as f64 / secs,
        events_per_s: total as f64 / secs,
        note: format!(
            "{total} events and {inbound} inbound emails in {secs:.2} s, 100 messages per transaction; {}",
            if hooks {
                "events + inbound emails + message status + suppressions, as the worker's transaction"
            } else {
                "insert only (BENCH_BUILTIN_HOOKS=off)"
            }
        ),
        ..Row::default()
    })
}
