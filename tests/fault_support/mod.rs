//! Shared set-up for the fault-injection (`tests/fault_*.rs`) and hostile-input
//! (`tests/hostile_*.rs`) tests. They run the REAL `mailroom` binary as a child process, with a
//! config file in a temp dir, against:
//! - the rustack at `AWS_ENDPOINT_URL` (scripts/test.sh starts one), or a private rustack this
//!   module starts on a fixed free port when the test kills the server;
//! - the machine's Postgres at `DATABASE_URL` (a unique database per test), or a private
//!   Postgres cluster (initdb in a temp dir, own port) when the test stops or restarts Postgres.
//!
//! Every wait is bounded; every process started here is stopped on drop.
//!
//! The helpers every kind of test shares (names, clients, queues, databases, the worker process)
//! come from `tests/support`, re-exported here.
#![allow(dead_code)]

#[path = "../support/mod.rs"]
mod support;

#[allow(unused_imports)] // each test crate uses a different part
pub use support::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use mailroom_envelope::Kind;
use sqlx::{Connection, PgConnection};

/// Long variants (more repetitions, longer loads) run with MAILROOM_LONG_FAULTS=1.
pub fn long() -> bool {
    std::env::var("MAILROOM_LONG_FAULTS").is_ok_and(|v| v == "1")
}

/// SDK defaults for `endpoint` (the shared rustack or a private one).
fn aws_at(endpoint: &str) -> aws_config::ConfigLoader {
    set_aws_env();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
}

/// An SQS client whose calls give up sooner than the worker's (30 s per operation, 2
/// attempts), for tests that kill the server.
pub async fn sqs_client(endpoint: &str) -> Client {
    let aws = aws_at(endpoint)
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .load()
        .await;
    Client::new(&aws)
}

pub async fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let aws = aws_at(endpoint).load().await;
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&aws)
            .force_path_style(true)
            .build(),
    )
}

/// Poll (bounded) until the queue has nothing visible and nothing in flight.
pub async fn wait_drained(client: &Client, url: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let d = depth(client, url).await;
        if d == (0, 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue not drained after {secs}s: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An Event Webhook batch of `count` events with ids `{prefix}-{first..first+count}`.
pub fn events_body(prefix: &str, first: usize, count: usize) -> Vec<u8> {
    let events: Vec<serde_json::Value> = (first..first + count)
        .map(|i| {
            let kind = ["processed", "delivered", "open"][i % 3];
            serde_json::json!({
                "email": format!("user{i}@example.com"),
                "timestamp": 1_764_000_000 + i as i64,
                "event": kind,
                "sg_event_id": format!("{prefix}-{i}"),
                "sg_message_id": format!("msg{}.filter", i / 7),
                "category": ["fault"],
            })
        })
        .collect();
    serde_json::to_vec(&events).unwrap()
}

/// `messages` event messages of `per_message` events each: (SQS bodies, total events).
pub fn event_messages(prefix: &str, messages: usize, per_message: usize) -> (Vec<String>, usize) {
    let bodies = (0..messages)
        .map(|m| {
            envelope(
                Kind::Events,
                "application/json",
                &events_body(prefix, m * per_message, per_message),
            )
        })
        .collect();
    (bodies, messages * per_message)
}

// ---------------------------------------------------------------- Postgres

/// Create database `name` on the server of `admin_url` and apply the migrations with
/// `mailroom migrate`. Returns its URL.
pub async fn fresh_db(admin_url: &str, name: &str) -> String {
    let url = create_db(admin_url, name).await;
    let dir = temp_dir("migrate");
    let cfg = dir.join("m.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\ndatabase_url = \"{url}\"\n[[queue]]\nname = \"x\"\nhandler = \"sendgrid\"\n"
        ),
    )
    .unwrap();
    migrate(&cfg);
    let _ = std::fs::remove_dir_all(dir);
    url
}

/// (event rows, distinct sg_event_ids, inbound rows, dead letters); None while unreachable.
pub async fn counts(url: &str) -> Option<(i64, i64, i64, i64)> {
    let mut conn = PgConnection::connect(url).await.ok()?;
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM mailroom_events), \
                (SELECT count(DISTINCT sg_event_id) FROM mailroom_events), \
                (SELECT count(*) FROM mailroom_inbound_emails), \
                (SELECT count(*) FROM mailroom_dead_letters)",
    )
    .fetch_one(&mut conn)
    .await
    .ok()
}

/// Dead letters as (reason, body).
pub async fn dead_letters(url: &str) -> Vec<(String, String)> {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::query_as("SELECT reason, body FROM mailroom_dead_letters ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .expect("dead letters")
}

/// Poll every 100 ms until `events` event rows (and `inbound` inbound rows) are stored.
pub async fn wait_stored(url: &str, events: i64, inbound: i64, secs: u64, worker: &mut Worker) {
    wait_counts(
        url,
        &format!("{events} events, {inbound} inbound"),
        secs,
        worker,
        |c| c.0 >= events && c.2 >= inbound,
    )
    .await;
}

/// Poll [`counts`] every 100 ms until `done` holds, failing the test if the worker exits or
/// `secs` pass (naming `want` and the last counts).
pub async fn wait_counts(
    url: &str,
    want: &str,
    secs: u64,
    worker: &mut Worker,
    done: impl Fn((i64, i64, i64, i64)) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = None;
    loop {
        if let Some(c) = counts(url).await {
            if done(c) {
                return;
            }
            last = Some(c);
        }
        assert!(
            worker.alive(),
            "the worker exited; log:\n{}",
            worker.log_tail()
        );
        assert!(
            Instant::now() < deadline,
            "timed out after {secs}s: want {want}; have {last:?}; log:\n{}",
            worker.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A private Postgres cluster (initdb in a temp dir, its own port) that a test may stop and
/// restart without touching the machine's. initdb refuses root, so as root it runs as the
/// `postgres` user.
pub struct PrivatePostgres {
    pub dir: PathBuf,
    pub port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// MAILROOM_PG_BIN, else the newest /usr/lib/postgresql/*/bin, else 15's.
fn pg_bin(name: &str) -> PathBuf {
    let dir = std::env::var("MAILROOM_PG_BIN").ok().or_else(|| {
        let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        versions.sort();
        versions
            .last()
            .map(|v| format!("/usr/lib/postgresql/{v}/bin"))
    });
    Path::new(&dir.unwrap_or_else(|| PG_BIN.into())).join(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn pg_command(program: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_bin(program));
        c
    } else {
        Command::new(pg_bin(program))
    }
}

impl PrivatePostgres {
    pub fn start() -> Self {
        let dir = temp_dir("mailroom-pg");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(ok.success());
        }
        let data = dir.join("data");
        let out = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = Self {
            dir,
            port: free_port(),
        };
        pg.ctl_start();
        pg
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("postgres.log"))
            .args(["-o", &opts, "-t", "60"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("pg_ctl")
    }

    fn ctl_start(&self) {
        let out = self.ctl(&["-w", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn stop(&self) {
        let out = self.ctl(&["-w", "-m", "fast", "stop"]);
        assert!(out.status.success(), "pg_ctl stop");
    }

    pub fn start_again(&self) {
        self.ctl_start();
    }

    pub fn restart(&self) {
        let out = self.ctl(&["-w", "-m", "fast", "restart"]);
        assert!(
            out.status.success(),
            "pg_ctl restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.ctl(&["-w", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- rustack

/// A private rustack on a fixed port, for tests that kill the SQS-compatible server.
pub struct PrivateRustack {
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

fn rustack_bin() -> String {
    if let Ok(b) = std::env::var("MAILROOM_RUSTACK") {
        return b;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = format!("{home}/.cache/mailroom-tools/rustack-0.12.0/bin/rustack");
    if Path::new(&cached).exists() {
        return cached;
    }
    let cargo = format!("{home}/.cargo/bin/rustack");
    if Path::new(&cargo).exists() {
        return cargo;
    }
    "rustack".into()
}

impl PrivateRustack {
    pub fn start() -> Self {
        let mut r = Self {
            port: free_port(),
            child: None,
            log: temp_dir("rustack").join("rustack.log"),
        };
        r.start_again();
        r
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start_again(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(rustack_bin())
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{}", self.port))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rustack (set MAILROOM_RUSTACK to its path)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "rustack did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP or SIGCONT: a stopped server still accepts connections (the kernel does) but
    /// never answers, as an unreachable SQS behind a black-holing network would.
    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let ok = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill -{sig} rustack");
        }
    }

    pub fn kill(&mut self) {
        self.signal("CONT");
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRustack {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- the worker

/// Worker settings that tests vary; the rest of the config is fixed and small.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub endpoint: String,
    pub queue_name: String,
    pub queue_url: String,
    pub database_url: String,
    pub concurrency: u32,
    pub visibility_timeout_secs: u32,
    pub heartbeat_secs: u32,
    pub retry_intervals_secs: String,
    pub batch_window_ms: u64,
    pub extra_queue: String,
}

impl WorkerConfig {
    pub fn new(endpoint: &str, queue_name: &str, queue_url: &str, database_url: &str) -> Self {
        Self {
            endpoint: endpoint.into(),
            queue_name: queue_name.into(),
            queue_url: queue_url.into(),
            database_url: database_url.into(),
            concurrency: 32,
            visibility_timeout_secs: 5,
            heartbeat_secs: 2,
            retry_intervals_secs: "[1, 2]".into(),
            batch_window_ms: 10,
            extra_queue: String::new(),
        }
    }

    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("mailroom.toml");
        let text = format!(
            r#"[worker]
total_concurrency = {c}
shutdown_timeout_secs = 3
[sqs]
endpoint_url = "{endpoint}"
region = "us-east-1"
[store]
database_url = "{db}"
max_connections = 4
[telemetry]
log_format = "json"
[[queue]]
name = "{name}"
url = "{url}"
handler = "sendgrid"
concurrency = {c}
wait_time_secs = 1
visibility_timeout_secs = {vis}
heartbeat_secs = {hb}
retry_intervals_secs = {retry}
batch_window_ms = {window}
{extra}
"#,
            c = self.concurrency,
            endpoint = self.endpoint,
            db = self.database_url,
            name = self.queue_name,
            url = self.queue_url,
            vis = self.visibility_timeout_secs,
            hb = self.heartbeat_secs,
            retry = self.retry_intervals_secs,
            window = self.batch_window_ms,
            extra = self.extra_queue,
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}
