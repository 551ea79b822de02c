//! The status page (`/` on the telemetry listener), in a real headless browser.
//!
//! A real `mailroom` worker runs with its telemetry listener against rustack and a fresh
//! database, on a queue whose label is HTML-hostile (`<i>` and `&` in it: labels come from the
//! config), and gets traffic: stored batches, an undecodable message whose body is a script
//! tag (a dead letter), and a dead letter whose reason carries a script (as a forwarder's does,
//! quoting the application's answer). Then Debian's `chromium` loads the page headless:
//! `--dump-dom` must show the queue, its counts and the dead letters' reasons as escaped text,
//! with no injected element (no script, no img, the title untouched), and `--screenshot` must
//! write a real PNG (kept at `target/status-page.png` for humans). `/status.json` must carry
//! the same data. Last, the dead-letter table is locked in a held transaction: the page must
//! still answer within a few seconds, saying that section is unavailable.
//!
//! Chromium missing: the test fails saying how to install it (`scripts/test.sh` does), unless
//! `MAILROOM_SKIP_BROWSER=1` (then the browser part is skipped with a note; the rest runs).

mod ops_support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use ops_support::*;

/// What a browser run may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(60);

const HOSTILE_REASON: &str = "application answered 500: <script>document.title='pwned';\
     document.body.setAttribute('data-pwned','1')</script><img src=x onerror=\"alert(1)\">";
const HOSTILE_BODY: &str = "<script>alert('body')</script> is no envelope";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// The chromium binary, or why there is none.
fn chromium() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("MAILROOM_CHROMIUM") {
        return Ok(PathBuf::from(path));
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(candidate).exists() {
            return Ok(PathBuf::from(candidate));
        }
    }
    Err(
        "chromium is not installed (/usr/bin/chromium): install it with \
         `DEBIAN_FRONTEND=noninteractive apt-get install -y chromium` (scripts/test.sh does), \
         or set MAILROOM_SKIP_BROWSER=1 to skip the browser checks"
            .into(),
    )
}

/// Run chromium headless with `args` and a fresh profile, killed (its whole process group)
/// after [`BROWSER_TIMEOUT`]; returns (success, stdout, stderr).
async fn run_chromium(bin: &Path, profile: &Path, args: &[String]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(args)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0)
    .kill_on_drop(true);
    let child = cmd.spawn().expect("spawn chromium");
    let pgid = child.id().expect("chromium pid");
    match tokio::time::timeout(BROWSER_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Ok(Err(e)) => panic!("chromium: {e}"),
        Err(_) => {
            // The renderer and GPU helpers are in the same group.
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            panic!(
                "chromium {args:?} did not finish within {} s (killed)",
                BROWSER_TIMEOUT.as_secs()
            );
        }
    }
}

/// The `<tr>` of the queues table for `escaped_name`.
fn queue_row<'a>(dom: &'a str, escaped_name: &str) -> &'a str {
    let start = dom
        .find(&format!("<b>{escaped_name}</b>"))
        .unwrap_or_else(|| panic!("no row for queue {escaped_name} in:\n{dom}"));
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

#[tokio::test]
async fn status_page_in_a_headless_browser() {
    let browser = match chromium() {
        Ok(bin) => Some(bin),
        Err(why) if std::env::var("MAILROOM_SKIP_BROWSER").as_deref() == Ok("1") => {
            println!("MAILROOM_SKIP_BROWSER=1: browser checks skipped ({why})");
            None
        }
        Err(why) => panic!("{why}"),
    };

    let sqs = sqs().await;
    let base = unique("status");
    let dlq_url = create_queue(&sqs, &format!("{base}-dlq"), 30, None).await;
    let dlq_arn = queue_arn(&sqs, &dlq_url).await;
    let url = create_queue(&sqs, &base, 30, Some(&dlq_arn)).await;
    // The label is the config's: anything an operator types, so HTML-hostile here.
    let label = format!("{base}<i>x</i>&amp");
    let escaped_label = format!("{base}&lt;i&gt;x&lt;/i&gt;&amp;amp");
    let db = TestDb::create().await;
    let tmp = temp_dir("ops-status-page");
    let port = free_port();
    let config = write_config(
        &tmp,
        &db.url,
        &[(&label, &url)],
        &format!("[telemetry]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    migrate(&config);
    let mut worker = Worker::start(&config, tmp.join("worker.log"), &[]);
    worker.wait_log("\"receiving\"", 30).await;

    // Traffic: three stored batches, then an undecodable message whose body is a script.
    for m in 0..3 {
        let ids: Vec<String> = (0..2).map(|e| format!("{base}-{m}-{e}")).collect();
        send(&sqs, &url, &[events_message(&ids)]).await;
    }
    eventually_async(30, "6 events stored", || async {
        count(&db, "select count(*) from mailroom_events").await == 6
    })
    .await;
    send(&sqs, &url, &[HOSTILE_BODY.to_string()]).await;
    eventually_async(30, "the undecodable message dead-lettered", || async {
        count(&db, "select count(*) from mailroom_dead_letters").await == 1
    })
    .await;
    // A dead letter whose reason quotes hostile HTML (as a forwarder's quotes the
    // application's answer).
    {
        let mut conn = db.connect().await;
        sqlx::query(
            "insert into mailroom_dead_letters (queue, sqs_message_id, body, attributes, \
             receive_count, handler, reason) values ('forward:app', 'fwd-1', $1, '{}', 1, \
             'forward', $2)",
        )
        .bind("{\"email\":\"<b>bold</b>@example.com\"}")
        .bind(HOSTILE_REASON)
        .execute(&mut conn)
        .await
        .expect("insert a dead letter");
    }
    // The counters and the depth poller's first reading are in.
    eventually_async(30, "the status page shows the traffic", || async {
        let Some((200, json)) = http_get(port, "/status.json").await else {
            return false;
        };
        let Ok(s) = serde_json::from_str::<serde_json::Value>(&json) else {
            return false;
        };
        let q = &s["queues"][0];
        q["received"] == 4
            && q["handled"]["done"] == 3
            && q["dead_lettered"] == 1
            && !q["depth"].is_null()
            && s["dead_letters"]["rows"].as_array().map(Vec::len) == Some(2)
    })
    .await;

    // /status.json: the same data for scripts.
    let (status, json) = http_get(port, "/status.json").await.expect("/status.json");
    assert_eq!(status, 200, "{json}");
    let snapshot: serde_json::Value = serde_json::from_str(&json).expect("status.json parses");
    assert_eq!(snapshot["phase"], "receiving", "{json}");
    assert_eq!(snapshot["queues"][0]["name"], label.as_str(), "{json}");
    assert_eq!(snapshot["queues"][0]["in_flight"], 0, "{json}");
    let rows = snapshot["dead_letters"]["rows"].as_array().expect("rows");
    assert_eq!(rows[0]["reason"], HOSTILE_REASON, "newest first: {json}");
    assert_eq!(rows[1]["body_start"], HOSTILE_BODY, "{json}");
    assert!(snapshot["dead_letters"]["unavailable"].is_null(), "{json}");
    let errors = snapshot["recent_errors"].as_array().expect("recent_errors");
    assert!(
        errors
            .iter()
            .any(|e| e["message"] == "message kept in the dead-letter table"),
        "the dead letter's warning is among the recent errors: {json}"
    );
    // The raw HTML as served (before any browser parses it).
    let (status, html) = http_get(port, "/").await.expect("/");
    assert_eq!(status, 200);
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains(&escaped_label), "{html}");
    assert_eq!(http_get(port, "/status").await.map(|r| r.0), Some(200));

    if let Some(bin) = &browser {
        let page = format!("http://127.0.0.1:{port}/");
        let (ok, dom, err) = run_chromium(
            bin,
            &tmp.join("profile-dom"),
            &["--dump-dom".into(), page.clone()],
        )
        .await;
        assert!(ok, "chromium --dump-dom failed:\n{err}");
        std::fs::write(tmp.join("status.dom.html"), &dom).expect("keep the DOM");
        assert!(
            dom.contains("<title>Mailroom status</title>"),
            "title untouched:\n{dom}"
        );
        assert!(dom.contains("id=\"phase\">receiving<"), "phase:\n{dom}");
        let lower = dom.to_lowercase();
        assert!(
            !lower.contains("<script"),
            "a script element in the DOM:\n{dom}"
        );
        assert!(!lower.contains("<img"), "an img element in the DOM:\n{dom}");
        assert!(
            !lower.contains("<i>x</i>"),
            "the label became markup:\n{dom}"
        );
        assert!(
            !dom.contains("data-pwned=\"") && dom.contains("<body><header>"),
            "an injected script ran:\n{dom}"
        );
        // The counts, in the queue's row: received 4, done 3, dead-lettered 1, none in flight.
        let row = queue_row(&dom, &escaped_label);
        let cells: Vec<&str> = row
            .split("<td class=\"n\">")
            .skip(1)
            .map(|c| c.split('<').next().unwrap_or(""))
            .collect();
        // visible, in flight, delayed, DLQ, received, done, retry, transient, dead-lettered,
        // received/s, handled/s, in flight here
        assert_eq!(cells.len(), 12, "{row}");
        assert_eq!(cells[4], "4", "received: {row}");
        assert_eq!(cells[5], "3", "done: {row}");
        assert_eq!(cells[8], "1", "dead-lettered: {row}");
        assert_eq!(cells[11], "0", "in flight here: {row}");
        // The reasons and bodies, as text.
        assert!(
            dom.contains(
                "application answered 500: &lt;script&gt;document.title='pwned';\
                 document.body.setAttribute('data-pwned','1')&lt;/script&gt;&lt;img src=x \
                 onerror=\"alert(1)\"&gt;"
            ),
            "the hostile reason as text:\n{dom}"
        );
        assert!(
            dom.contains("&lt;script&gt;alert('body')&lt;/script&gt; is no envelope"),
            "the hostile body as text:\n{dom}"
        );
        assert!(
            dom.contains("message kept in the dead-letter table"),
            "{dom}"
        );

        let png = tmp.join("status.png");
        let (ok, _, err) = run_chromium(
            bin,
            &tmp.join("profile-png"),
            &[
                format!("--screenshot={}", png.display()),
                "--window-size=1200,900".into(),
                page,
            ],
        )
        .await;
        assert!(ok, "chromium --screenshot failed:\n{err}");
        let bytes = std::fs::read(&png).expect("the screenshot exists");
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is a PNG"
        );
        assert!(
            bytes.len() > 10 * 1024,
            "the screenshot is {} bytes: a blank page?",
            bytes.len()
        );
        let keep = target_dir().join("status-page.png");
        std::fs::copy(&png, &keep).expect("keep the screenshot");
        println!("screenshot: {} ({} bytes)", keep.display(), bytes.len());
    }

    // Postgres stuck: the dead-letter table locked by a transaction that does not end. The
    // page answers anyway (within the statement timeout), saying the section is unavailable.
    let mut locker = db.connect().await;
    sqlx::query("begin")
        .execute(&mut locker)
        .await
        .expect("begin");
    sqlx::query("lock table mailroom_dead_letters in access exclusive mode")
        .execute(&mut locker)
        .await
        .expect("lock");
    // Past the page's cache of the last read.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let started = std::time::Instant::now();
    let (status, html) = http_get(port, "/")
        .await
        .expect("the page answers while Postgres is stuck");
    let took = started.elapsed();
    assert_eq!(status, 200, "{html}");
    assert!(took < Duration::from_secs(4), "the page took {took:?}");
    assert!(
        html.contains("<p class=\"unavailable\" id=\"dead-letters\">unavailable: "),
        "{html}"
    );
    assert!(
        html.contains(&escaped_label),
        "the rest of the page is there: {html}"
    );
    sqlx::query("rollback")
        .execute(&mut locker)
        .await
        .expect("rollback");
    drop(locker);

    let tail = worker.log_tail();
    let exit = worker.stop(30).await;
    let _ = std::fs::remove_dir_all(&tmp);
    db.drop_db().await;
    assert_eq!(exit.code(), Some(0), "worker exit; log tail:\n{tail}");
}
