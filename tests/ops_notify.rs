//! sd_notify end to end: the real binary, started as systemd would (NOTIFY_SOCKET,
//! WATCHDOG_USEC), against rustack and a fresh Postgres database. Proves READY=1 comes once the
//! worker receives, WATCHDOG=1 pings follow while it runs, STOPPING=1 comes on SIGTERM, in that
//! order, and the drain exits 0.

mod ops_support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use ops_support::*;

#[tokio::test]
async fn ready_then_watchdog_then_stopping_and_exit_0() {
    let sqs = sqs().await;
    let name = unique("notify");
    let url = create_queue(&sqs, &name, 30, None).await;
    let db = TestDb::create().await;
    let dir = temp_dir("ops-notify");
    let config = write_config(&dir, &db.url, &[(&name, &url)], "");
    migrate(&config);

    let socket = dir.join("notify.sock");
    let listener = UnixDatagram::bind(&socket).expect("bind notify socket");
    listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut worker = Worker::start(
        &config,
        dir.join("worker.log"),
        &[
            ("NOTIFY_SOCKET", socket.to_str().expect("utf-8 path")),
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    let mut seen: Vec<String> = Vec::new();
    let recv_until = |seen: &mut Vec<String>, done: &dyn Fn(&[String]) -> bool, secs: u64| {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 4096];
        while !done(seen) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for notifications; got {seen:?}"
            );
            if let Ok(n) = listener.recv(&mut buf) {
                for line in String::from_utf8_lossy(&buf[..n]).lines() {
                    seen.push(line.to_string());
                }
            }
        }
    };
    let pos = |seen: &[String], what: &str| seen.iter().position(|s| s == what);
    recv_until(&mut seen, &|s| pos(s, "READY=1").is_some(), 30);
    // Pings after READY, several of them (the engine makes progress: heartbeat, receives).
    recv_until(
        &mut seen,
        &|s| {
            let ready = pos(s, "READY=1").unwrap_or(usize::MAX);
            s.iter()
                .skip(ready)
                .filter(|l| l.as_str() == "WATCHDOG=1")
                .count()
                >= 3
        },
        10,
    );
    // Regression: quiet mode was invisible to `systemctl status` (no new STATUS=).
    worker.signal("USR1");
    recv_until(
        &mut seen,
        &|s| s.iter().any(|l| l.starts_with("STATUS=quiet")),
        10,
    );
    worker.signal("USR2");
    recv_until(
        &mut seen,
        &|s| {
            let quiet = s
                .iter()
                .position(|l| l.starts_with("STATUS=quiet"))
                .unwrap_or(usize::MAX);
            s.iter().skip(quiet).any(|l| l == "STATUS=receiving")
        },
        10,
    );
    worker.signal("TERM");
    recv_until(&mut seen, &|s| pos(s, "STOPPING=1").is_some(), 15);
    let status = worker.wait(30).await;
    assert_eq!(
        status.code(),
        Some(0),
        "drain exits 0:\n{}",
        worker.log_text()
    );

    let ready = pos(&seen, "READY=1").expect("READY=1");
    let first_ping_after_ready = seen
        .iter()
        .enumerate()
        .skip(ready)
        .find(|(_, l)| l.as_str() == "WATCHDOG=1")
        .map(|(i, _)| i)
        .expect("WATCHDOG=1 after READY=1");
    let stopping = pos(&seen, "STOPPING=1").expect("STOPPING=1");
    assert!(
        ready < first_ping_after_ready && first_ping_after_ready < stopping,
        "order READY, WATCHDOG, STOPPING: {seen:?}"
    );
    assert!(seen.iter().any(|l| l == "STATUS=receiving"), "{seen:?}");
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}
