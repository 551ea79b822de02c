//! The service files: systemd units pass `systemd-analyze verify` with no complaint (run on
//! copies whose ExecStart points at the built binary), keep the semantics the worker relies on
//! (Type=notify, watchdog, stop timeout above the drain deadline, check before start), the
//! Upstart jobs carry the same, and deploy-restart.sh's plan is rolling by default. The router's
//! unit (`mailroom-router serve`) carries the worker's hardening, and its command line, run as
//! the unit runs it, serves `/healthz` and exits 0 on SIGTERM.
//!
//! scripts/test.sh installs systemd-analyze and sets MAILROOM_REQUIRE_SYSTEMD_ANALYZE=1, so the
//! verify step cannot be skipped there; elsewhere it is skipped when the tool is missing.

mod ops_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn unit(name: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join("systemd").join(name)).expect("unit file")
}

fn value<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn drain_deadline_secs() -> u64 {
    let example = std::fs::read_to_string(Path::new(ROOT).join("config/mailroom.example.toml"))
        .expect("example config");
    let mut config: mailroom::config::Config = toml::from_str(&example).expect("example parses");
    config.store.database_url = Some("postgres://x".into());
    config.worker.shutdown_timeout_secs
}

#[test]
fn units_keep_the_semantics_the_worker_relies_on() {
    let drain = drain_deadline_secs();
    for name in ["mailroom.service", "mailroom@.service"] {
        let text = unit(name);
        assert_eq!(value(&text, "Type"), ["notify"], "{name}");
        assert_eq!(value(&text, "KillSignal"), ["SIGTERM"], "{name}");
        assert_eq!(value(&text, "KillMode"), ["mixed"], "{name}");
        assert_eq!(value(&text, "Restart"), ["on-failure"], "{name}");
        assert!(
            value(&text, "ExecStartPre")[0].ends_with("mailroom check"),
            "{name}"
        );
        assert!(
            value(&text, "ExecStart")[0].ends_with("mailroom run"),
            "{name}"
        );
        let stop: u64 = value(&text, "TimeoutStopSec")[0].parse().expect("seconds");
        assert!(
            stop > drain,
            "{name}: TimeoutStopSec {stop} must exceed the drain {drain}"
        );
        assert!(!value(&text, "WatchdogSec").is_empty(), "{name}");
        assert!(value(&text, "EnvironmentFile").contains(&"-/etc/mailroom/mailroom.env"));
        assert_eq!(value(&text, "ProtectSystem"), ["strict"], "{name}");
        assert_eq!(value(&text, "NoNewPrivileges"), ["yes"], "{name}");
    }
    let template = unit("mailroom@.service");
    assert_eq!(value(&template, "PartOf"), ["mailroom.target"]);
    assert_eq!(value(&template, "WantedBy"), ["mailroom.target"]);

    for name in ["mailroom.conf", "mailroom-worker.conf"] {
        let text = unit(&format!("upstart/{name}"));
        for stanza in [
            "respawn\n",
            "respawn limit ",
            "kill signal SIGTERM",
            "mailroom check",
            "mailroom run",
            "/etc/mailroom/mailroom.env",
        ] {
            assert!(text.contains(stanza), "upstart/{name} lacks {stanza:?}");
        }
        let timeout: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("kill timeout "))
            .expect("kill timeout")
            .trim()
            .parse()
            .expect("seconds");
        assert!(
            timeout > drain,
            "upstart/{name}: kill timeout above the drain"
        );
    }
    assert!(unit("upstart/mailroom-worker.conf").contains("instance $N"));
}

/// The built `mailroom-router`, beside the `mailroom` binary under test: `cargo test
/// --workspace` (scripts/test.sh) builds it; alone, `cargo build -p mailroom-router` first.
fn router_binary() -> PathBuf {
    let path = Path::new(ops_support::MAILROOM).with_file_name("mailroom-router");
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build -p mailroom-router` first",
        path.display()
    );
    path
}

/// The directives that confine a unit: the worker's units and the router's carry the same.
const HARDENING: &[&str] = &[
    "DynamicUser",
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "NoNewPrivileges",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectClock",
    "ProtectHostname",
    "ProtectProc",
    "ProcSubset",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
    "MemoryDenyWriteExecute",
    "CapabilityBoundingSet",
    "AmbientCapabilities",
    "SystemCallArchitectures",
    "SystemCallFilter",
    "UMask",
];

#[test]
fn router_unit_is_hardened_like_the_worker() {
    let worker = unit("mailroom.service");
    let router = unit("mailroom-router.service");
    for key in HARDENING {
        let expected = value(&worker, key);
        assert!(!expected.is_empty(), "mailroom.service lacks {key}");
        assert_eq!(
            value(&router, key),
            expected,
            "mailroom-router.service: {key}"
        );
    }
    // serve sends no READY=1: as Type=notify, `systemctl start` would hang until
    // TimeoutStartSec and then kill a router that was serving all along.
    assert_eq!(value(&router, "Type"), ["exec"]);
    assert!(
        value(&router, "WatchdogSec").is_empty(),
        "serve pings no watchdog"
    );
    assert!(value(&router, "ExecStart")[0].ends_with("/mailroom-router serve"));
    assert!(value(&router, "ExecStartPre").is_empty());
    assert_eq!(value(&router, "KillSignal"), ["SIGTERM"]);
    assert_eq!(value(&router, "Restart"), ["on-failure"]);
    assert!(value(&router, "EnvironmentFile").contains(&"-/etc/mailroom/mailroom-router.env"));
    // A 30 MB Inbound Parse post in flight at SIGTERM needs time to finish streaming to S3.
    let stop: u64 = value(&router, "TimeoutStopSec")[0]
        .parse()
        .expect("seconds");
    assert!(
        stop >= 60,
        "TimeoutStopSec {stop}: too short to finish a 30 MB post"
    );
    for key in ["MemoryMax", "TasksMax", "LimitNOFILE"] {
        assert_eq!(
            value(&router, key).len(),
            1,
            "mailroom-router.service: {key}"
        );
    }
    assert_eq!(value(&router, "WantedBy"), ["multi-user.target"]);
}

/// The unit's `Environment=` assignments, in order (later ones win, as in systemd).
fn unit_environment(text: &str) -> Vec<(String, String)> {
    value(text, "Environment")
        .into_iter()
        .map(|assignment| {
            let (key, value) = assignment.split_once('=').expect("KEY=value");
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// GET `path` on 127.0.0.1:`port` over HTTP/1.0; the status code, or None if not answering.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

/// The router's ExecStart with the unit's environment (the env file's MAILROOM_LISTEN moved to a
/// free port, as an operator's would): it serves GET /healthz and, on the unit's KillSignal,
/// exits 0 well within TimeoutStopSec, so `systemctl stop` never ends in SIGKILL when idle.
#[test]
fn router_unit_command_serves_and_exits_0_on_sigterm() {
    let text = unit("mailroom-router.service");
    let exec = value(&text, "ExecStart")[0];
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/mailroom-router"));
    let args: Vec<&str> = words.collect();
    let port = ops_support::free_port();
    let mut command = Command::new(router_binary());
    command
        .args(&args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in unit_environment(&text) {
        command.env(key, value);
    }
    // What /etc/mailroom/mailroom-router.env would set; no AWS is called for /healthz.
    command
        .env("MAILROOM_LISTEN", format!("127.0.0.1:{port}"))
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
    let mut child = command.spawn().expect("start mailroom-router");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut status = None;
    while status.is_none() && Instant::now() < deadline {
        if let Some(exit) = child.try_wait().expect("wait") {
            panic!("mailroom-router exited at start: {exit}");
        }
        status = http_status(port, "/healthz");
        if status.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(status, Some(200), "GET /healthz on the unit's command");

    assert_eq!(value(&text, "KillSignal"), ["SIGTERM"]);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let stop: u64 = value(&text, "TimeoutStopSec")[0].parse().expect("seconds");
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            break exit;
        }
        // Idle, it has nothing to drain: far less than TimeoutStopSec is enough.
        let bound = Duration::from_secs(stop.min(20));
        if started.elapsed() > bound {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mailroom-router still running {bound:?} after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    use std::io::Read;
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(exit.success(), "exit after SIGTERM: {exit}\n{stderr}");
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let tool = Command::new("systemd-analyze").arg("--version").output();
    if tool.is_err() {
        assert!(
            std::env::var("MAILROOM_REQUIRE_SYSTEMD_ANALYZE").is_err(),
            "systemd-analyze is required here but missing"
        );
        eprintln!("systemd-analyze not installed: verify skipped");
        return;
    }
    let dir = ops_support::temp_dir("ops-units");
    for name in ["mailroom.service", "mailroom@.service", "mailroom.target"] {
        let text = unit(name).replace("/usr/local/bin/mailroom", ops_support::MAILROOM);
        std::fs::write(dir.join(name), &text).expect("copy");
        if name == "mailroom@.service" {
            std::fs::write(dir.join("mailroom@1.service"), &text).expect("instance copy");
        }
    }
    let router = router_binary();
    let text = unit("mailroom-router.service").replace(
        "/usr/local/bin/mailroom-router",
        router.to_str().expect("utf-8 path"),
    );
    std::fs::write(dir.join("mailroom-router.service"), text).expect("copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .current_dir(&dir)
        .args([
            "./mailroom.service",
            "./mailroom@1.service",
            "./mailroom.target",
            "./mailroom-router.service",
        ])
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Warnings (unknown keys, bad values) do not change the exit code: fail on any output.
    let complaints: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deploy_restart_plans_a_rolling_restart() {
    let script = Path::new(ROOT).join("scripts/deploy-restart.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args([
            "--dry-run",
            "--instances",
            "3",
            "--ready-url",
            "http://127.0.0.1:909%i/ready",
        ])
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    let restarts: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("systemctl restart"))
        .collect();
    assert_eq!(
        restarts.len(),
        3,
        "one restart per instance, in turn:\n{plan}"
    );
    for (i, line) in restarts.iter().enumerate() {
        assert!(
            line.ends_with(&format!("mailroom@{}.service", i + 1)),
            "{line}"
        );
    }
    assert!(plan.contains("http://127.0.0.1:9092/ready"), "{plan}");
    let all = Command::new("bash")
        .arg(&script)
        .args(["--dry-run", "--all", "--instances", "2"])
        .output()
        .expect("bash");
    let plan = String::from_utf8_lossy(&all.stdout);
    assert!(
        plan.contains("systemctl restart mailroom@1.service mailroom@2.service"),
        "{plan}"
    );
}
