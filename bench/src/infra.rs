//! The bench's plumbing: queues on the SQS-compatible server, fresh databases, child processes
//! and their CPU time and peak RSS from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use sqlx::{Connection, PgConnection};

use crate::data::Message;

pub struct Env {
    /// The SQS server itself: filling queues and creating them go here, undelayed.
    pub endpoint: String,
    /// What the measured clients (worker, ideal client, peers) talk to: the delay proxy when
    /// `BENCH_SQS_LATENCY_MS` is set, else the server itself.
    pub worker_endpoint: String,
    /// An SQS client on `worker_endpoint`, for the ideal client.
    pub measured_sqs: Client,
    /// The added SQS latency each way (0: none).
    pub latency: Duration,
    _proxy: Option<crate::latency::DelayProxy>,
    /// Admin URL (any database on the server), used to create the bench databases.
    pub admin_url: String,
    pub mailroom: PathBuf,
    pub work: PathBuf,
    pub sqs: Client,
    pub s3: aws_sdk_s3::Client,
}

impl Env {
    pub async fn new(
        endpoint: &str,
        admin_url: &str,
        mailroom: &Path,
        work: &Path,
        latency: Duration,
    ) -> Result<Self> {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ] {
            if std::env::var(k).is_err() {
                std::env::set_var(k, v);
            }
        }
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&aws)
                .force_path_style(true)
                .build(),
        );
        std::fs::create_dir_all(work)?;
        let proxy = if latency.is_zero() {
            None
        } else {
            Some(crate::latency::start(endpoint, latency).await?)
        };
        let worker_endpoint = proxy
            .as_ref()
            .map_or_else(|| endpoint.to_string(), |p| p.url.clone());
        let measured = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(&worker_endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .load()
            .await;
        Ok(Self {
            endpoint: endpoint.into(),
            worker_endpoint,
            measured_sqs: Client::new(&measured),
            latency,
            _proxy: proxy,
            admin_url: admin_url.into(),
            mailroom: mailroom.into(),
            work: work.into(),
            sqs: Client::new(&aws),
            s3,
        })
    }

    pub async fn queue(&self, name: &str) -> Result<String> {
        let url = self
            .sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, "60")
            .send()
            .await
            .context("create queue")?
            .queue_url
            .context("queue url")?;
        Ok(url)
    }

    /// Send every message (batches of 10, 8 senders at once).
    pub async fn fill(&self, url: &str, messages: &[Message]) -> Result<()> {
        let bodies: Vec<&str> = messages.iter().map(|m| m.body.as_str()).collect();
        self.fill_bodies(url, &bodies, &[]).await
    }

    pub async fn fill_bodies(
        &self,
        url: &str,
        bodies: &[&str],
        attrs: &[(&str, &str)],
    ) -> Result<()> {
        use futures::StreamExt;
        let chunks: Vec<(usize, &[&str])> = bodies.chunks(10).enumerate().collect();
        let results: Vec<Result<()>> = futures::stream::iter(chunks)
            .map(|(c, chunk)| async move {
                let entries = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, body)| {
                        let mut e = SendMessageBatchRequestEntry::builder()
                            .id(format!("m{c}-{i}"))
                            .message_body(*body);
                        for (k, v) in attrs {
                            e = e.message_attributes(
                                *k,
                                aws_sdk_sqs::types::MessageAttributeValue::builder()
                                    .data_type("Number")
                                    .string_value(*v)
                                    .build()
                                    .expect("attr"),
                            );
                        }
                        e.build().expect("entry")
                    })
                    .collect::<Vec<_>>();
                let out = self
                    .sqs
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                    .context("send batch")?;
                if !out.failed.is_empty() {
                    bail!("send failed: {:?}", out.failed);
                }
                Ok(())
            })
            .buffer_unordered(8)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// A fresh, migrated database; returns its URL.
    pub async fn database(&self, name: &str) -> Result<String> {
        let mut admin = PgConnection::connect(&self.admin_url)
            .await
            .context("connect to Postgres")?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        let url = db_url(&self.admin_url, name);
        let config = self.config_file(name, "unused", &url, &WorkerTuning::default())?;
        let out = Command::new(&self.mailroom)
            .arg("--config")
            .arg(&config)
            .arg("migrate")
            // The config names the database; DATABASE_URL would override it.
            .env_remove("DATABASE_URL")
            .env_remove("MAILROOM_SQS_ENDPOINT_URL")
            .output()
            .context("mailroom migrate")?;
        if !out.status.success() {
            bail!(
                "mailroom migrate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(url)
    }

    pub async fn drop_database(&self, name: &str) {
        if let Ok(mut admin) = PgConnection::connect(&self.admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
        }
    }

    /// Write a worker config for one queue; returns its path. Only what `t` sets is written:
    /// everything else is the shipped default, so the bench measures what a user gets.
    pub fn config_file(
        &self,
        name: &str,
        queue_url: &str,
        database_url: &str,
        t: &WorkerTuning,
    ) -> Result<PathBuf> {
        let path = self.work.join(format!("{name}.toml"));
        let line =
            |key: &str, v: Option<String>| v.map(|v| format!("{key} = {v}\n")).unwrap_or_default();
        let text = format!(
            r#"[worker]
shutdown_timeout_secs = 5
{total}{worker_extra}[sqs]
endpoint_url = "{endpoint}"
region = "us-east-1"
{ack}[store]
database_url = "{database_url}"
{conns}[telemetry]
log_format = "json"
[[queue]]
name = "{name}"
url = "{queue_url}"
handler = "sendgrid"
retry_intervals_secs = [1, 2, 5]
{concurrency}{window}{max_batch}{loops}{queue_extra}{hooks}
"#,
            // BENCH_BUILTIN_HOOKS=off: the sendgrid handler without its message-status and
            // suppressions hooks, to measure what they cost.
            hooks = if std::env::var("BENCH_BUILTIN_HOOKS").as_deref() == Ok("off") {
                "[handlers.sendgrid]\nmessage_status = false\nsuppressions = false"
            } else {
                ""
            },
            total = line("total_concurrency", t.concurrency.map(|v| v.to_string())),
            // BENCH_WORKER_EXTRA: lines for [worker], to measure other settings with the same
            // binary side by side (e.g. "adaptive_concurrency = false").
            worker_extra = std::env::var("BENCH_WORKER_EXTRA")
                .map(|v| format!("{}\n", v.replace("\\n", "\n")))
                .unwrap_or_default(),
            concurrency = line("concurrency", t.concurrency.map(|v| v.to_string())),
            endpoint = self.worker_endpoint,
            ack = line(
                "ack_flush_interval_ms",
                t.ack_flush_ms.map(|v| v.to_string())
            ),
            conns = line("max_connections", t.max_connections.map(|v| v.to_string())),
            window = line("batch_window_ms", t.batch_window_ms.map(|v| v.to_string())),
            max_batch = line(
                "max_batch_messages",
                t.max_batch_messages.map(|v| v.to_string())
            ),
            loops = line("receive_loops", t.receive_loops.map(|v| v.to_string())),
            // Lines for the [[queue]] table: BENCH_QUEUE_EXTRA, or the BENCH_VERSUS contender's.
            queue_extra = t
                .queue_extra
                .as_deref()
                .map(|v| format!("{}\n", v.replace("\\n", "\n")))
                .unwrap_or_default(),
        );
        std::fs::write(&path, text)?;
        Ok(path)
    }

    pub fn spawn_worker(&self, config: &Path, log: &str) -> Result<Child> {
        let log = std::fs::File::create(self.work.join(log))?;
        Command::new(&self.mailroom)
            .arg("--config")
            .arg(config)
            .arg("run")
            // The in-flight limit's and the receive loops' moves too: `peak_logged` reads
            // them back for the notes.
            .env(
                "RUST_LOG",
                "warn,mailroom::engine::limit=debug,mailroom::engine::adapt=debug",
            )
            .env_remove("DATABASE_URL")
            .env_remove("MAILROOM_SQS_ENDPOINT_URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn mailroom run")
    }
}

/// The highest value of `field` a worker's log reports on its lines saying `message` (JSON
/// lines: "in-flight limit adjusted" with "limit", "receive loops adjusted" with "loops"), or
/// None when it never moved.
pub fn peak_logged(log: &Path, message: &str, field: &str) -> Option<u32> {
    let text = std::fs::read_to_string(log).ok()?;
    let key = format!("\"{field}\":");
    text.lines()
        .filter(|l| l.contains(message))
        .filter_map(|l| {
            let (_, rest) = l.split_once(&key)?;
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            digits.parse().ok()
        })
        .max()
}

/// Overrides of the worker's shipped defaults, each `None` (the default) unless a `BENCH_*`
/// variable or a special row (memory) sets it.
#[derive(Debug, Clone, Default)]
pub struct WorkerTuning {
    pub concurrency: Option<u32>,
    pub receive_loops: Option<u32>,
    pub batch_window_ms: Option<u64>,
    pub max_batch_messages: Option<u32>,
    pub max_connections: Option<u32>,
    pub ack_flush_ms: Option<u64>,
    /// Lines added to the queue's `[[queue]]` table.
    pub queue_extra: Option<String>,
}

impl WorkerTuning {
    /// What the bench's header says the worker ran with.
    pub fn describe(&self) -> String {
        let mut set = Vec::new();
        let mut add = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                set.push(format!("{k} {v}"));
            }
        };
        add("concurrency", self.concurrency.map(|v| v.to_string()));
        add("receive_loops", self.receive_loops.map(|v| v.to_string()));
        add(
            "batch_window_ms",
            self.batch_window_ms.map(|v| v.to_string()),
        );
        add(
            "max_batch_messages",
            self.max_batch_messages.map(|v| v.to_string()),
        );
        add(
            "max_connections",
            self.max_connections.map(|v| v.to_string()),
        );
        add(
            "ack_flush_interval_ms",
            self.ack_flush_ms.map(|v| v.to_string()),
        );
        add("queue lines", self.queue_extra.clone());
        if set.is_empty() {
            "the shipped defaults".into()
        } else {
            format!("the shipped defaults except {}", set.join(", "))
        }
    }
}

pub fn db_url(admin_url: &str, db: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    format!("{}/{db}{query}", &base[..host_end])
}

/// Rows stored so far: (event rows, distinct sg_event_id, inbound rows, dead letters).
pub async fn counts(conn: &mut PgConnection) -> Result<(i64, i64, i64, i64)> {
    let row: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM mailroom_events), \
                (SELECT count(DISTINCT sg_event_id) FROM mailroom_events), \
                (SELECT count(*) FROM mailroom_inbound_emails), \
                (SELECT count(*) FROM mailroom_dead_letters)",
    )
    .fetch_one(conn)
    .await?;
    Ok(row)
}

/// How many transactions stored the events (each batch transaction stamps its rows with its
/// id, `feed_xid`): read once after a run, to show how the worker cut its batches.
pub async fn event_transactions(conn: &mut PgConnection) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(DISTINCT feed_xid) FROM mailroom_events")
        .fetch_one(conn)
        .await?;
    Ok(n)
}

/// Ids the events and inbound-email sequences have handed out: an upper bound on the rows, read
/// in constant time.
pub async fn issued_ids(conn: &mut PgConnection) -> Result<(usize, usize)> {
    let (e, i): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM mailroom_events_id_seq), \
                (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM mailroom_inbound_emails_id_seq)",
    )
    .fetch_one(conn)
    .await?;
    Ok((e.max(0) as usize, i.max(0) as usize))
}

/// Poll until `events` event rows and `inbound` inbound rows are stored, or `limit` passes.
/// Returns the time it took (from `since`).
pub async fn wait_stored(
    url: &str,
    events: usize,
    inbound: usize,
    since: Instant,
    limit: Duration,
    watch: &mut [&mut Child],
) -> Result<Duration> {
    let (elapsed, e, i, finished) =
        wait_stored_partial(url, events, inbound, since, limit, watch).await?;
    if !finished {
        let mut conn = PgConnection::connect(url).await?;
        let (_, _, _, d) = counts(&mut conn).await?;
        bail!("timed out after {limit:?}: {e}/{events} events, {i}/{inbound} inbound, {d} dead letters");
    }
    Ok(elapsed)
}

/// Like [`wait_stored`], but a run that does not finish within `limit` is not an error: returns
/// (elapsed, events stored, inbound stored, finished) so a slow peer's rate can still be given.
/// A watched process that exits first is an error either way.
pub async fn wait_stored_partial(
    url: &str,
    events: usize,
    inbound: usize,
    since: Instant,
    limit: Duration,
    watch: &mut [&mut Child],
) -> Result<(Duration, usize, usize, bool)> {
    let mut conn = PgConnection::connect(url).await?;
    // What the sequences must reach before the next exact count: at first the totals; after a
    // count that came up short, where they stood then plus the shortfall (each missing row
    // takes at least one more value), so a run with duplicates is not counted every poll.
    let (mut next_e, mut next_i) = (events, inbound);
    loop {
        // The id sequences first: O(1), where counting a 121k-row table cost Postgres ~230 ms a
        // poll (about 3 CPU-seconds a run, taken from the inserts being measured). A sequence
        // runs ahead of the committed rows (a value is taken at insert, before the commit, and
        // an insert that lost a conflict took one too), so once the sequences say done the run
        // ends when no other transaction is open in the database (the last ones committed),
        // and only then, outside the timed window, does the exact count confirm it.
        let (e, i) = issued_ids(&mut conn).await?;
        if e >= next_e && i >= next_i && open_transactions(&mut conn).await? == 0 {
            let elapsed = since.elapsed();
            let (rows, _, emails, _) = counts(&mut conn).await?;
            let (rows, emails) = (rows as usize, emails as usize);
            if rows >= events && emails >= inbound {
                return Ok((elapsed, rows, emails, true));
            }
            next_e = e + events.saturating_sub(rows);
            next_i = i + inbound.saturating_sub(emails);
        }
        if since.elapsed() > limit {
            return Ok((since.elapsed(), e, i, false));
        }
        for child in watch.iter_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("process exited early ({status}) with {e}/{events} events stored");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Transactions open in this database other than ours: O(connections), from shared memory.
async fn open_transactions(conn: &mut PgConnection) -> Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND xact_start IS NOT NULL",
    )
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// CPU seconds (user + system) of a live process, from /proc/<pid>/stat.
pub fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(pid, false)
}

/// [`cpu_secs`] plus the CPU of the children it has reaped: for Postgres's postmaster, the
/// backends of connections that closed during the run.
fn cpu_secs_with_reaped(pid: u32) -> f64 {
    stat_cpu_secs(pid, true)
}

fn stat_cpu_secs(pid: u32, with_reaped: bool) -> f64 {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_ticks(&stat, with_reaped) / clock_ticks(),
        Err(_) => f64::NAN,
    }
}

/// Clock ticks in a /proc/<pid>/stat line: utime + stime (fields 14 and 15), plus cutime +
/// cstime (16 and 17, the reaped children's) when `with_reaped`. Fields are counted after the
/// parenthesised command name, which may hold spaces.
fn stat_ticks(stat: &str, with_reaped: bool) -> f64 {
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let last = if with_reaped { 14 } else { 12 };
    (11..=last)
        .map(|i| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0))
        .sum()
}

/// `getconf CLK_TCK`, asked once (the service CPU reads every Postgres process).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Peak RSS (VmHWM) in KiB of a live process.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU seconds and peak RSS of a process tree (the process and its direct children), for peers
/// that fork (Celery's prefork pool).
pub fn tree(pid: u32) -> (f64, u64) {
    let mut cpu = cpu_secs(pid);
    let mut rss = peak_rss_kib(pid);
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let c_cpu = cpu_secs(c);
            if c_cpu.is_finite() {
                cpu += c_cpu;
            }
            rss += peak_rss_kib(c);
        }
    }
    (cpu, rss)
}

/// CPU seconds used so far by every process named `postgres` (the server and its backends,
/// including those that exited: the postmaster reaps them) and every process named `rustack`
/// (the SQS-compatible server): read before and after a run, their difference is what the run
/// cost the services it leans on.
pub fn service_cpu() -> (f64, f64) {
    let total = |name: &str| -> f64 {
        pids_named(name)
            .into_iter()
            .map(cpu_secs_with_reaped)
            .filter(|cpu| cpu.is_finite())
            .sum()
    };
    (total("postgres"), total("rustack"))
}

/// Pids of the running processes whose name (`/proc/<pid>/comm`) is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// Postgres on CPUs of its own, as on a host of its own (BENCH_PIN_POSTGRES=1): every `postgres`
/// process (the postmaster too, so new backends inherit it) on the upper half of the CPUs, the
/// SQS server and this process (with the workers and peers it spawns) on the lower half. On
/// one shared machine the worker's and the SQS server's CPU otherwise come out of Postgres's
/// share, which a production deployment (Postgres on its own host, SQS remote) does not have.
/// Dropping it gives every process back all CPUs.
pub struct PinnedApart {
    pids: Vec<u32>,
    all: String,
}

impl PinnedApart {
    pub fn new() -> Result<Self> {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        if cpus < 2 {
            bail!("BENCH_PIN_POSTGRES needs at least 2 CPUs");
        }
        let split = cpus / 2;
        let list =
            |r: std::ops::Range<usize>| r.map(|c| c.to_string()).collect::<Vec<_>>().join(",");
        let (others, postgres) = (list(0..split), list(split..cpus));
        let mut pinned = Self {
            pids: Vec::new(),
            all: list(0..cpus),
        };
        let targets = pids_named("postgres")
            .into_iter()
            .map(|p| (p, &postgres))
            .chain(pids_named("rustack").into_iter().map(|p| (p, &others)))
            .chain(std::iter::once((std::process::id(), &others)));
        for (pid, cpus) in targets {
            if !set_cpus(pid, cpus).context("run taskset (util-linux)")? {
                bail!(
                    "taskset could not pin process {pid} (BENCH_PIN_POSTGRES needs the right to)"
                );
            }
            pinned.pids.push(pid);
        }
        eprintln!(
            "pinned: postgres on CPUs {postgres}, the SQS server and the contenders on {others}"
        );
        Ok(pinned)
    }
}

impl Drop for PinnedApart {
    fn drop(&mut self) {
        // The backends started while pinned inherited the postmaster's CPUs: every `postgres`
        // process now, and the others pinned at the start.
        let mut pids = pids_named("postgres");
        pids.extend(self.pids.iter().copied());
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            let _ = set_cpus(pid, &self.all);
        }
    }
}

/// `taskset -a -c -p CPUS PID`: every thread of the process onto the CPU list; whether it took.
fn set_cpus(pid: u32, cpus: &str) -> std::io::Result<bool> {
    Ok(Command::new("taskset")
        .args(["-a", "-c", "-p", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success())
}

/// SIGTERM, then wait up to `secs`, then SIGKILL.
pub fn stop(child: &mut Child, secs: u64) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Machine-wide CPU (busy, total) jiffies from /proc/stat, to report how busy all cores were.
pub fn machine_cpu() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Busy share of all cores between two [`machine_cpu`] readings, in percent.
pub fn busy_percent(before: (u64, u64), after: (u64, u64)) -> f64 {
    let busy = after.0.saturating_sub(before.0) as f64;
    let total = after.1.saturating_sub(before.1).max(1) as f64;
    busy / total * 100.0
}

#[cfg(test)]
mod tests {
    use super::stat_ticks;

    /// Regression: the bench read only utime + stime, so Postgres backends that exited during a
    /// run (their CPU then sits in the postmaster's cutime and cstime) were not counted, and a
    /// worker run showed 0.1 s of Postgres CPU.
    #[test]
    fn exited_postgres_backends_were_not_counted() {
        // pid (comm) state ppid ... utime=7 stime=3 cutime=500 cstime=40 ...
        let stat =
            "1234 (postgres: main) S 1 1234 1234 0 -1 4194560 100 2000 0 0 7 3 500 40 20 0 1";
        assert_eq!(stat_ticks(stat, false), 10.0);
        assert_eq!(stat_ticks(stat, true), 550.0);
    }
}
