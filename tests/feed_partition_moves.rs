//! The feed never skips a row whatever maintenance does to the partitions (issue 26, part 1).
//!
//! `mailroom_events_week_partition()` moves a week's rows out of `mailroom_events_default` into
//! a new partition and attaches it in one transaction. A feed read planned while that ran used
//! the old partition list on a snapshot after the commit: the moved rows were in neither, the
//! reader acknowledged the later rows, and the moved ones were behind its position for good.
//!
//! Three tests: the deterministic repro with SQL only; every ordering of a writer's insert and
//! commit, a move and its commit, and a reader's read and acknowledgement; and the feed readers
//! docs/feed.md shows (Python, Ruby, the `mailroom feed` CLI), run from the docs' own text, with
//! a read blocked by a move.

#[path = "support/db.rs"]
#[allow(dead_code)]
mod db;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Duration as Days, Utc};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool, Row};
use tokio::sync::mpsc;

/// The tests of this file one at a time: each holds transactions open on purpose, and an open
/// transaction anywhere on the server holds every feed's horizon back.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The Monday 00:00 UTC of `weeks` weeks after the first week of 2031: weeks no maintenance
/// created, so a row there lands in the default partition until its week is made.
fn far_week(weeks: i64) -> DateTime<Utc> {
    let monday = DateTime::parse_from_rfc3339("2031-01-06T00:00:00Z")
        .expect("a date")
        .with_timezone(&Utc);
    monday + Days::days(7 * weeks)
}

async fn insert(conn: &mut PgConnection, id: &str, at: DateTime<Utc>) {
    sqlx::query(
        "INSERT INTO mailroom_events (sg_event_id, event, email, occurred_at, payload, \
         sqs_message_id, queue) VALUES ($1, 'delivered', $1, $2, json_build_object('sg_event_id', $1::text), 'm', 'q')",
    )
    .bind(id)
    .bind(at)
    .execute(&mut *conn)
    .await
    .expect("insert");
}

/// Which partition holds `id` (to check a test put its rows where it meant to).
async fn partition_of(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM mailroom_events WHERE sg_event_id = $1",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .expect("partition")
}

/// One page for `consumer` on `conn` (the caller's transaction, if any): `(feed_xid, id, sg_event_id)`.
async fn read_page(conn: &mut PgConnection, consumer: &str) -> Vec<(String, i64, String)> {
    sqlx::query("SELECT feed_xid::text, id, sg_event_id FROM mailroom_feed_events($1, 100)")
        .bind(consumer)
        .fetch_all(&mut *conn)
        .await
        .expect("read the feed")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

async fn ack(conn: &mut PgConnection, consumer: &str, last: &(String, i64, String), n: usize) {
    sqlx::query("SELECT mailroom_feed_ack($1, $2::xid8, $3, $4)")
        .bind(consumer)
        .bind(&last.0)
        .bind(last.1)
        .bind(n as i64)
        .execute(&mut *conn)
        .await
        .expect("ack");
}

/// Read and acknowledge on `conn` until `want` rows came back or 30 s passed; their ids.
async fn drain(conn: &mut PgConnection, consumer: &str, want: usize) -> Vec<String> {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while all.len() < want && tokio::time::Instant::now() < deadline {
        let mut tx = conn.begin().await.expect("begin");
        let page = read_page(&mut tx, consumer).await;
        if let Some(last) = page.last() {
            ack(&mut tx, consumer, last, page.len()).await;
        }
        tx.commit().await.expect("commit");
        if page.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        all.extend(page.into_iter().map(|r| r.2));
    }
    all
}

/// Whether backend `pid` waits for a lock right now.
async fn waits_for_lock(pool: &PgPool, pid: i32) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT coalesce(bool_or(wait_event_type = 'Lock'), false) FROM pg_stat_activity WHERE pid = $1",
    )
    .bind(pid)
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

/// Wait (60 s at most) until some backend of this database waits for a lock inside a feed read.
async fn wait_for_a_blocked_feed_read(pool: &PgPool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let blocked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query ILIKE '%mailroom_feed_events%')",
        )
        .fetch_one(pool)
        .await
        .expect("pg_stat_activity");
        if blocked {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no feed read blocked behind the partition move within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut *conn)
        .await
        .expect("pid")
}

async fn subscribe(pool: &PgPool, consumer: &str) {
    sqlx::query("SELECT mailroom_feed_subscribe($1, 'events', 'beginning')")
        .bind(consumer)
        .execute(pool)
        .await
        .expect("subscribe");
}

/// The issue's repro: A waits in the default partition for its week, C0 is in this week's
/// partition; a read blocked by the move of A's week returned C0 alone, and once C0 was
/// acknowledged A was never returned.
#[sqlx::test(migrations = "./migrations")]
async fn a_read_blocked_by_a_partition_move_skipped_the_moved_rows(pool: PgPool) {
    let _serial = serial().await;
    subscribe(&pool, "reader").await;
    let week = far_week(0);
    let mut conn = pool.acquire().await.expect("conn");
    insert(&mut conn, "A", week + Days::hours(1)).await;
    insert(&mut conn, "C0", Utc::now()).await;
    assert_eq!(partition_of(&pool, "A").await, "mailroom_events_default");

    let mut mover = pool.acquire().await.expect("mover");
    let mut move_tx = mover.begin().await.expect("begin");
    sqlx::query("SELECT mailroom_events_week_partition($1)")
        .bind(week)
        .execute(&mut *move_tx)
        .await
        .expect("move");

    let mut reader = pool.acquire().await.expect("reader");
    let read = tokio::spawn(async move {
        let mut tx = reader.begin().await.expect("begin");
        let page = read_page(&mut tx, "reader").await;
        if let Some(last) = page.last() {
            ack(&mut tx, "reader", last, page.len()).await;
        }
        tx.commit().await.expect("commit");
        (page.into_iter().map(|r| r.2).collect::<Vec<_>>(), reader)
    });
    wait_for_a_blocked_feed_read(&pool).await;
    move_tx.commit().await.expect("commit the move");
    let (first, mut reader) = read.await.expect("reader task");
    assert_eq!(
        partition_of(&pool, "A").await,
        format!("mailroom_events_w{}", week.format("%Y%m%d"))
    );

    // Later reads on the same connection (PL/pgSQL caches its plans per session) see the new
    // partition too.
    insert(&mut conn, "B", week + Days::hours(2)).await;
    let rest = drain(&mut reader, "reader", 3 - first.len()).await;
    let seen: Vec<String> = first.iter().chain(&rest).cloned().collect();
    assert_eq!(
        seen,
        ["A", "C0", "B"],
        "the blocked read returned {first:?}, then {rest:?}"
    );
}

/// One step of an actor; each actor runs its steps in order on its own connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    Writer,
    Mover,
    Reader,
}

const ACTORS: [Actor; 3] = [Actor::Writer, Actor::Mover, Actor::Reader];

/// Every interleaving of the three actors' two steps each (90 of them).
fn interleavings() -> Vec<Vec<Actor>> {
    fn go(left: [usize; 3], prefix: &mut Vec<Actor>, out: &mut Vec<Vec<Actor>>) {
        if left == [0, 0, 0] {
            out.push(prefix.clone());
            return;
        }
        for (i, actor) in ACTORS.iter().enumerate() {
            if left[i] > 0 {
                let mut next = left;
                next[i] -= 1;
                prefix.push(*actor);
                go(next, prefix, out);
                prefix.pop();
            }
        }
    }
    let mut out = Vec::new();
    go([2, 2, 2], &mut Vec::new(), &mut out);
    out
}

/// An actor's connection in a task: it runs the steps sent to it in order and reports each one
/// done, so the driver can tell a step that finished from one that waits for a lock.
struct Running {
    steps: mpsc::UnboundedSender<()>,
    done: mpsc::UnboundedReceiver<Vec<String>>,
    pid: i32,
    sent: usize,
    finished: usize,
    seen: Vec<String>,
}

impl Running {
    async fn start(pool: &PgPool, actor: Actor, week: DateTime<Utc>, run: usize) -> Self {
        let mut conn = pool.acquire().await.expect("conn").detach();
        let pid = pid(&mut conn).await;
        let (steps, mut rx) = mpsc::unbounded_channel::<()>();
        let (tx_done, done) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            sqlx::query("BEGIN")
                .execute(&mut conn)
                .await
                .expect("begin");
            rx.recv().await;
            let first = match actor {
                Actor::Writer => {
                    insert(&mut conn, &format!("w{run}-future"), week + Days::hours(3)).await;
                    insert(&mut conn, &format!("w{run}-now"), Utc::now()).await;
                    Vec::new()
                }
                Actor::Mover => {
                    sqlx::query("SELECT mailroom_events_week_partition($1)")
                        .bind(week)
                        .execute(&mut conn)
                        .await
                        .expect("move");
                    Vec::new()
                }
                Actor::Reader => {
                    let page = read_page(&mut conn, "reader").await;
                    if let Some(last) = page.last() {
                        ack(&mut conn, "reader", last, page.len()).await;
                    }
                    page.into_iter().map(|r| r.2).collect()
                }
            };
            let _ = tx_done.send(first);
            rx.recv().await;
            sqlx::query("COMMIT")
                .execute(&mut conn)
                .await
                .expect("commit");
            let _ = tx_done.send(Vec::new());
            let _ = conn.close().await;
        });
        Self {
            steps,
            done,
            pid,
            sent: 0,
            finished: 0,
            seen: Vec::new(),
        }
    }

    fn collect(&mut self) {
        while let Ok(rows) = self.done.try_recv() {
            self.finished += 1;
            self.seen.extend(rows);
        }
    }

    /// Send the next step and wait until it finished or waits for a lock (which a later step of
    /// another actor releases).
    async fn step(&mut self, watch: &PgPool) {
        self.steps.send(()).expect("actor alive");
        self.sent += 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            self.collect();
            if self.finished >= self.sent || waits_for_lock(watch, self.pid).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "a step neither finished nor waited"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn finish(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.finished < self.sent {
            assert!(
                tokio::time::Instant::now() < deadline,
                "an actor never finished"
            );
            match tokio::time::timeout(Duration::from_millis(100), self.done.recv()).await {
                Ok(Some(rows)) => {
                    self.finished += 1;
                    self.seen.extend(rows);
                }
                Ok(None) => panic!("actor task ended early"),
                Err(_) => {}
            }
        }
    }
}

/// Reads, commits and partition moves in every order: a writer stores a row in a week with no
/// partition yet and one in this week, a mover makes that week's partition, a reader reads a
/// page and acknowledges it; whatever the order (a step that waits for a lock lets the next one
/// go first), the reader's page and a drain afterwards on the same connection return every
/// committed row exactly once.
#[sqlx::test(migrations = "./migrations")]
async fn reads_commits_and_partition_moves_in_every_order_never_skip_a_row(pool: PgPool) {
    let _serial = serial().await;
    let watch = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("watch pool");
    let orders = interleavings();
    assert_eq!(orders.len(), 90);
    for (run, order) in orders.iter().enumerate() {
        sqlx::query("DELETE FROM mailroom_feed_consumers")
            .execute(&pool)
            .await
            .expect("reset consumers");
        subscribe(&pool, "reader").await;
        let week = far_week(run as i64 + 1);
        let mut setup = pool.acquire().await.expect("setup");
        insert(&mut setup, &format!("p{run}-future"), week + Days::hours(1)).await;
        insert(&mut setup, &format!("p{run}-now"), Utc::now()).await;
        drop(setup);

        let mut actors = Vec::new();
        for actor in ACTORS {
            actors.push(Running::start(&pool, actor, week, run).await);
        }
        for actor in order {
            let i = ACTORS.iter().position(|a| a == actor).expect("an actor");
            actors[i].step(&watch).await;
        }
        for a in actors.iter_mut() {
            a.finish().await;
        }
        let mid_read = std::mem::take(&mut actors[2].seen);

        let want: BTreeSet<String> = [
            format!("p{run}-future"),
            format!("p{run}-now"),
            format!("w{run}-future"),
            format!("w{run}-now"),
        ]
        .into();
        let mut conn = pool.acquire().await.expect("drain");
        let rest = drain(&mut conn, "reader", want.len() - mid_read.len()).await;
        let seen: Vec<String> = mid_read.iter().chain(&rest).cloned().collect();
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            (unique.len(), &unique),
            (seen.len(), &want),
            "order {order:?}: the reader's page was {mid_read:?}, the drain {rest:?}"
        );
        let name = format!("mailroom_events_w{}", week.format("%Y%m%d"));
        assert_eq!(partition_of(&pool, &format!("w{run}-future")).await, name);
        // Keep the table small for the next run: this week's rows were checked.
        sqlx::query(&format!("DROP TABLE {name}"))
            .execute(&pool)
            .await
            .expect("drop the week");
        sqlx::query("DELETE FROM mailroom_events")
            .execute(&pool)
            .await
            .expect("clear");
    }
}

/// The fenced code block of `lang` that follows `heading` in docs/feed.md.
fn docs_example(heading: &str, lang: &str) -> String {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/feed.md"))
        .expect("docs/feed.md");
    let after = &docs[docs
        .find(heading)
        .unwrap_or_else(|| panic!("{heading:?} in docs/feed.md"))..];
    let fence = format!("```{lang}\n");
    let start = after.find(&fence).expect("a code block") + fence.len();
    let len = after[start..].find("```").expect("its end");
    after[start..start + len].to_string()
}

/// A reader in another language: the program to run, or None (with the reason) when the
/// interpreter or its Postgres library is not installed here.
fn reader_program(lang: &str, url: &str) -> Result<Command, String> {
    let probe = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    match lang {
        "python" => {
            // Debian's psycopg (python3-psycopg) goes with Debian's interpreter.
            let python = ["/usr/bin/python3", "python3"]
                .into_iter()
                .find(|p| probe(p, &["-c", "import psycopg"]))
                .ok_or("no python3 with psycopg 3 (apt: python3-psycopg)")?;
            let example = docs_example("Python (psycopg 3):", "python");
            assert!(example.contains("\"postgresql:///mailroom\""), "{example}");
            let program = format!(
                "import sys\n\
                 class Crm:\n    \
                     def apply(self, event, email):\n        \
                         print(email, flush=True)\n        \
                         if email == 'stop':\n            \
                             sys.exit(0)\n\
                 crm = Crm()\n{}",
                example.replace("\"postgresql:///mailroom\"", &format!("{url:?}"))
            );
            let mut cmd = Command::new(python);
            cmd.args(["-c", &program]);
            Ok(cmd)
        }
        "ruby" => {
            if !probe("ruby", &["-e", "require 'active_record'; require 'pg'"]) {
                return Err(
                    "no ruby with activerecord and pg (apt: ruby-activerecord ruby-pg)".into(),
                );
            }
            let example = docs_example("Ruby (ActiveRecord)", "ruby");
            let program = format!(
                "require 'active_record'\n\
                 ActiveRecord::Base.establish_connection({url:?})\n\
                 class ApplicationRecord < ActiveRecord::Base\n  self.abstract_class = true\nend\n\
                 module Billing\n  \
                   def self.record_event!(event, email, payload)\n    \
                     puts email\n    STDOUT.flush\n    exit 0 if email == 'stop'\n  \
                   end\n\
                 end\n{example}"
            );
            let mut cmd = Command::new("ruby");
            cmd.args(["-e", &program]);
            Ok(cmd)
        }
        other => panic!("no reader for {other}"),
    }
}

/// The docs' readers, each with its first read blocked by a move of a week it has a row in:
/// Python and Ruby run the text of docs/feed.md (with an application stub that prints each
/// email and stops at `stop`), the shell reader is `mailroom feed read --ack`. Each must see
/// every row once, in feed order. Where an interpreter is missing the test says so and skips
/// that language, unless MAILROOM_REQUIRE_FEED_READERS is set (scripts/test.sh sets it and
/// installs them).
#[sqlx::test(migrations = "./migrations")]
async fn the_docs_feed_readers_never_skip_rows_a_partition_move_carries(pool: PgPool) {
    let _serial = serial().await;
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("db name");
    let url = db::db_url(&db::admin_url(), &db);
    let required = std::env::var_os("MAILROOM_REQUIRE_FEED_READERS").is_some();
    let config_dir = std::env::temp_dir().join(format!("mailroom-feed-readers-{db}"));
    std::fs::create_dir_all(&config_dir).expect("dir");
    let config = config_dir.join("mailroom.toml");
    std::fs::write(
        &config,
        "[[queue]]\nname = \"unused\"\nhandler = \"sendgrid\"\n",
    )
    .expect("config");

    for (n, (lang, consumer)) in [("python", "crm"), ("ruby", "billing"), ("shell", "shell")]
        .into_iter()
        .enumerate()
    {
        let week = far_week(200 + n as i64);
        subscribe(&pool, consumer).await;
        // Rows of the languages before are acknowledged by theirs, not this consumer: start it
        // past them.
        sqlx::query(
            "UPDATE mailroom_feed_consumers SET (position_xid, position_id) = \
             (SELECT feed_xid, id FROM mailroom_events ORDER BY feed_xid DESC, id DESC LIMIT 1) \
             WHERE name = $1 AND EXISTS (SELECT 1 FROM mailroom_events)",
        )
        .bind(consumer)
        .execute(&pool)
        .await
        .expect("start past the earlier rows");
        let mut conn = pool.acquire().await.expect("conn");
        let ids = |s: &str| format!("{lang}-{s}");
        insert(&mut conn, &ids("moved"), week + Days::hours(1)).await;
        insert(&mut conn, &ids("now"), Utc::now()).await;

        let mut mover = pool.acquire().await.expect("mover");
        let mut move_tx = mover.begin().await.expect("begin");
        sqlx::query("SELECT mailroom_events_week_partition($1)")
            .bind(week)
            .execute(&mut *move_tx)
            .await
            .expect("move");

        let seen: Vec<String> = if lang == "shell" {
            let cfg = config.clone();
            let url2 = url.clone();
            let read_once = move || {
                let out = Command::new(env!("CARGO_BIN_EXE_mailroom"))
                    .args(["--config", cfg.to_str().expect("utf-8")])
                    .args(["feed", "read", "shell", "--limit", "100", "--ack"])
                    .env("DATABASE_URL", &url2)
                    .stdin(Stdio::null())
                    .output()
                    .expect("run mailroom feed read");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(|l| {
                        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                        v["row"]["sg_event_id"]
                            .as_str()
                            .expect("sg_event_id")
                            .to_string()
                    })
                    .collect::<Vec<_>>()
            };
            let first = tokio::task::spawn_blocking(read_once.clone());
            wait_for_a_blocked_feed_read(&pool).await;
            move_tx.commit().await.expect("commit the move");
            let mut seen = first.await.expect("first read");
            insert(&mut conn, &ids("after"), week + Days::hours(2)).await;
            insert(&mut conn, "stop", Utc::now()).await;
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !seen.iter().any(|s| s == "stop") && std::time::Instant::now() < deadline {
                seen.extend(
                    tokio::task::spawn_blocking(read_once.clone())
                        .await
                        .expect("read"),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen.retain(|s| s != "stop");
            seen
        } else {
            let mut cmd = match reader_program(lang, &url) {
                Ok(cmd) => cmd,
                Err(why) if !required => {
                    eprintln!("skipping the {lang} reader: {why}");
                    move_tx.rollback().await.expect("rollback");
                    continue;
                }
                Err(why) => panic!("{why} (MAILROOM_REQUIRE_FEED_READERS is set)"),
            };
            let child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the reader");
            let pid = child.id();
            let output = tokio::task::spawn_blocking(move || child.wait_with_output());
            wait_for_a_blocked_feed_read(&pool).await;
            move_tx.commit().await.expect("commit the move");
            insert(&mut conn, &ids("after"), week + Days::hours(2)).await;
            // The stop row's email is "stop" (the stub exits there, its page not acknowledged).
            sqlx::query(
                "INSERT INTO mailroom_events (sg_event_id, event, email, occurred_at, payload, \
                 sqs_message_id, queue) VALUES ($1, 'delivered', 'stop', now(), '{}', 'm', 'q')",
            )
            .bind(ids("stop"))
            .execute(&mut *conn)
            .await
            .expect("insert the stop row");
            let out = match tokio::time::timeout(Duration::from_secs(60), output).await {
                Ok(out) => out.expect("join").expect("reader output"),
                Err(_) => {
                    let _ = Command::new("kill").arg(pid.to_string()).status();
                    panic!("the {lang} reader did not reach the stop row within 60 s");
                }
            };
            assert!(
                out.status.success(),
                "the {lang} reader failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| *l != "stop")
                .map(str::to_string)
                .collect()
        };
        // The stubs print the email column, which `insert` sets to the id.
        assert_eq!(
            seen,
            [ids("moved"), ids("now"), ids("after")],
            "the {lang} reader"
        );
    }
    let _ = std::fs::remove_dir_all(&config_dir);
}
