//! The real `mailroom` binary as a child process: one-shot commands and a running worker.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `mailroom` in this crate's tests; in the example application's tests
/// (which include this module), its own `mailroom-app`, built from the same `Worker`.
pub const MAILROOM: &str = match (
    option_env!("CARGO_BIN_EXE_mailroom"),
    option_env!("CARGO_BIN_EXE_mailroom-app"),
) {
    (Some(bin), _) | (None, Some(bin)) => bin,
    (None, None) => panic!("no mailroom binary in this test crate"),
};

/// Run the binary to completion; returns (status, stdout, stderr).
pub fn mailroom(config: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(MAILROOM)
        .arg("--config")
        .arg(config)
        .args(args)
        .env("MAILROOM_LOG_FORMAT", "json")
        // The config names the database; an exported DATABASE_URL would win over it.
        .env_remove("DATABASE_URL")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run mailroom");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `mailroom migrate` with this config; panics unless it succeeds.
pub fn migrate(config: &Path) {
    let (status, out, err) = mailroom(config, &["migrate"]);
    assert!(status.success(), "migrate failed: {out}\n{err}");
}

/// A `mailroom run` child process; its stderr (JSON log lines) goes to a file. Killed on drop.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
}

impl Worker {
    /// Start `mailroom run` with `config`, logging to `log`, with `env` set on top of a clean
    /// environment: nothing from the test's own environment overrides the config, and no
    /// systemd or telemetry settings leak in.
    pub fn start(config: &Path, log: PathBuf, env: &[(&str, &str)]) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(MAILROOM);
        cmd.arg("--config")
            .arg(config)
            .arg("run")
            .env("MAILROOM_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .env_remove("DATABASE_URL")
            .env_remove("MAILROOM_SQS_ENDPOINT_URL")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("MAILROOM_TELEMETRY_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn mailroom run");
        Self { child, log }
    }

    /// [`Worker::start`] logging to `worker-{n}.log` next to the config, so restarts keep the
    /// earlier logs.
    pub fn start_numbered(config: &Path, n: usize) -> Self {
        Self::start(
            config,
            config.with_file_name(format!("worker-{n}.log")),
            &[],
        )
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -{sig}`; whether it was delivered.
    fn send_signal(&self, sig: &str) -> bool {
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `kill -{sig}`; panics unless delivered.
    pub fn signal(&self, sig: &str) {
        assert!(self.send_signal(sig), "kill -{sig} failed");
    }

    /// SIGKILL, no chance to release or flush anything.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (bounded, blocking) for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, secs: u64) -> bool {
        self.send_signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        false
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub async fn stop(mut self, secs: u64) -> ExitStatus {
        self.signal("TERM");
        self.wait(secs).await
    }

    /// Wait (bounded) for the exit status; panics, after SIGKILL, when it does not come.
    pub async fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("worker did not exit within {secs}s:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 30 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Wait for the log to contain `needle`, at most `secs`.
    pub async fn wait_log(&mut self, needle: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "worker exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the worker log after {secs}s:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Peak RSS (VmHWM) in KiB, while alive.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if self.alive() {
            self.kill9();
        }
    }
}
