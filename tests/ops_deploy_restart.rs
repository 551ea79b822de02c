//! `scripts/deploy-restart.sh` against a stand-in `systemctl`: a shell script written into a
//! temp dir put first on PATH, which records every call and answers `list-units`, `is-active`,
//! `restart` and `show` from unit states kept in files (one instance can be made to fail on
//! purpose). `/ready` is a tiny HTTP server in the test's own process.
//!
//! Regressions from issue 12: `--help` printed a stray `set -euo pipefail` line; a failed
//! restart exited 1 with `restarting instance 3` as its last line and no word of what failed;
//! with no `--instances` it restarted inactive units too, though its help says "every active
//! mailroom@N"; `--dry-run` printed "instance N is ready" for instances it never touched.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/deploy-restart.sh");

/// The stand-in. Unit states live in `$STUB_DIR/units/<instance>`; `restart` of the instance in
/// `$STUB_DIR/fail` fails as systemd says it when ExecStartPre fails (and leaves the unit
/// failed); `list-units` honours `--state=` and `--all` as systemctl does (without either: active
/// and failed units).
const STUB: &str = r#"#!/usr/bin/env bash
dir="$STUB_DIR"
echo "$*" >> "$dir/calls"
verb=""; quiet=0; all=0; states=""; units=()
for a in "$@"; do
  case "$a" in
    --quiet|-q) quiet=1 ;;
    --all|-a) all=1 ;;
    --state=*) states="${a#--state=}" ;;
    -p|--plain|--no-legend|--no-pager|ActiveState|SubState|Result|ExecMainStatus) ;;
    -*) ;;
    *) if [ -z "$verb" ]; then verb="$a"; else units+=("$a"); fi ;;
  esac
done
instance() { local u="${1#mailroom@}"; echo "${u%.service}"; }
state() { cat "$dir/units/$(instance "$1")" 2>/dev/null || echo inactive; }
case "$verb" in
  list-units)
    for f in "$dir"/units/*; do
      i=$(basename "$f"); s=$(cat "$f")
      if [ -n "$states" ]; then
        [[ ",$states," == *",$s,"* ]] || continue
      elif (( ! all )) && [ "$s" != active ] && [ "$s" != failed ]; then
        continue
      fi
      sub=running; [ "$s" = active ] || sub=dead; [ "$s" = failed ] && sub=failed
      echo "mailroom@$i.service loaded $s $sub Mailroom worker $i"
    done ;;
  is-active)
    s=$(state "${units[0]}")
    (( quiet )) || echo "$s"
    [ "$s" = active ] ;;
  restart)
    rc=0
    for u in "${units[@]}"; do
      i=$(instance "$u")
      if [ "$i" = "$(cat "$dir/fail" 2>/dev/null)" ]; then
        echo failed > "$dir/units/$i"
        echo "Job for $u failed because the control process exited with error code." >&2
        echo "See \"systemctl status $u\" and \"journalctl -xeu $u\" for details." >&2
        rc=1
      else
        echo active > "$dir/units/$i"
      fi
    done
    exit $rc ;;
  show)
    s=$(state "${units[0]}")
    echo "ActiveState=$s"
    if [ "$s" = failed ]; then
      echo "SubState=failed"; echo "Result=exit-code"; echo "ExecMainStatus=1"
    else
      echo "SubState=running"; echo "Result=success"; echo "ExecMainStatus=0"
    fi ;;
  *) echo "stand-in systemctl: unexpected: $*" >&2; exit 64 ;;
esac
"#;

struct Host {
    dir: PathBuf,
}

impl Host {
    /// A temp dir with the stand-in `systemctl` and these (instance, state) units.
    fn new(units: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mailroom-deploy-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(dir.join("bin")).expect("bin");
        std::fs::create_dir_all(dir.join("units")).expect("units");
        let stub = dir.join("bin/systemctl");
        std::fs::write(&stub, STUB).expect("stub");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        for (i, state) in units {
            std::fs::write(dir.join("units").join(i), state).expect("unit");
        }
        std::fs::write(dir.join("calls"), "").expect("calls");
        Host { dir }
    }

    fn fail(&self, instance: &str) {
        std::fs::write(self.dir.join("fail"), instance).expect("fail");
    }

    fn run(&self, args: &[&str]) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .arg(SCRIPT)
            .args(args)
            .env("PATH", path)
            .env("STUB_DIR", &self.dir)
            .env_remove("SUDO")
            .output()
            .expect("run deploy-restart.sh")
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls"))
            .expect("calls")
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The instances `restart` was called for, in order.
    fn restarted(&self) -> Vec<String> {
        self.calls()
            .iter()
            .filter_map(|c| c.strip_prefix("restart "))
            .flat_map(|units| units.split_whitespace().map(str::to_string))
            .collect()
    }

    fn state(&self, instance: &str) -> String {
        std::fs::read_to_string(self.dir.join("units").join(instance)).expect("state")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn units(names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|i| format!("mailroom@{i}.service"))
        .collect()
}

/// A `/ready` server on loopback: `/ready/N` answers 200, unless N is in `not_ready` (503 with
/// a reason, as the worker's endpoint does). Records the paths asked for.
fn ready_server(not_ready: &'static [&'static str]) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let instance = path.rsplit('/').next().unwrap_or("").to_string();
            log.lock().expect("log").push(path);
            let (status, body) = if not_ready.contains(&instance.as_str()) {
                (
                    "503 Service Unavailable",
                    "not ready: postgres: connection refused",
                )
            } else {
                ("200 OK", "ready")
            };
            let _ = write!(
                stream,
                "HTTP/1.0 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, seen)
}

#[test]
fn help_prints_the_usage_without_a_stray_set_line() {
    let host = Host::new(&[("1", "active")]);
    let out = host.run(&["--help"]);
    let usage = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!usage.contains("set -euo pipefail"), "{usage}");
    assert!(!usage.contains("#!"), "{usage}");
    assert!(
        usage.starts_with("Restart Mailroom worker processes"),
        "{usage}"
    );
    assert!(
        usage.contains("--instances 4") && usage.contains("--dry-run"),
        "{usage}"
    );
    assert!(host.calls().is_empty(), "--help calls nothing");
}

#[test]
fn without_instances_only_active_units_are_restarted() {
    let host = Host::new(&[
        ("1", "active"),
        ("2", "inactive"),
        ("3", "active"),
        ("4", "failed"),
        ("10", "active"),
    ]);
    let out = host.run(&[]);
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(host.restarted(), units(&["1", "3", "10"]), "{err}");
    assert_eq!(host.state("2"), "inactive", "a stopped unit stays stopped");
    assert_eq!(
        host.state("4"),
        "failed",
        "a failed unit is left to the operator"
    );
    assert!(
        err.contains("rolling restart of 3 instance(s) via systemd: 1 3 10"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("done: 3 instance(s) restarted and ready"),
        "{err}"
    );
}

#[test]
fn failed_restart_says_what_failed_and_why() {
    let host = Host::new(&[
        ("1", "active"),
        ("2", "active"),
        ("3", "active"),
        ("4", "active"),
    ]);
    host.fail("3");
    let out = host.run(&["--instances", "4"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        host.restarted(),
        units(&["1", "2", "3"]),
        "stops at the failure"
    );
    assert_eq!(host.state("4"), "active");
    let last: Vec<&str> = err.lines().rev().take(5).collect();
    assert!(
        !err.trim_end().ends_with("restarting instance 3"),
        "the failure is not left unsaid:\n{err}"
    );
    assert!(
        err.contains(
            "FAILED: instance 3: systemctl restart mailroom@3.service failed (exit status 1)"
        ),
        "what failed:\n{err}"
    );
    assert!(
        err.contains("Job for mailroom@3.service failed because the control process exited"),
        "systemd's own reason:\n{err}"
    );
    assert!(
        err.contains("ActiveState=failed") && err.contains("Result=exit-code"),
        "the unit's state:\n{err}"
    );
    assert!(err.contains("journalctl -u mailroom@3.service"), "{err}");
    assert!(
        last[0].contains("restarted and ready before it: 1 2")
            && last[0].contains("not restarted (still on the old release): 4"),
        "the last line says where the fleet stands:\n{err}"
    );
    assert!(!err.contains("instance 3 is ready"), "{err}");
}

#[test]
fn all_at_once_failure_names_the_unit_that_is_not_active() {
    let host = Host::new(&[("1", "active"), ("2", "active"), ("3", "active")]);
    host.fail("2");
    let out = host.run(&["--all", "--instances", "3"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        host.restarted(),
        units(&["1", "2", "3"]),
        "one restart of every unit"
    );
    assert!(
        err.contains("(exit status 1); not active afterwards: 2"),
        "{err}"
    );
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.contains("mailroom@2.service: ActiveState=failed")),
        "{err}"
    );
}

#[test]
fn dry_run_says_what_it_would_do_and_claims_no_readiness() {
    let host = Host::new(&[("1", "active"), ("2", "inactive"), ("3", "active")]);
    let out = host.run(&["--dry-run", "--ready-url", "http://127.0.0.1:1/ready/%i"]);
    let (plan, err) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("is ready") && !plan.contains("is ready"),
        "{err}{plan}"
    );
    assert!(err.contains("would restart instance 1"), "{err}");
    assert!(err.contains("would restart instance 3"), "{err}");
    assert!(err.contains("nothing was restarted"), "{err}");
    assert!(
        plan.contains("+ timeout 120 systemctl restart mailroom@3.service"),
        "{plan}"
    );
    assert!(
        plan.contains("wait up to 120s for 200 from http://127.0.0.1:1/ready/3"),
        "{plan}"
    );
    assert!(
        !plan.contains("mailroom@2"),
        "inactive units are not planned: {plan}"
    );
    let calls = host.calls();
    assert!(
        calls.iter().all(|c| c.starts_with("list-units ")),
        "a dry run only lists units: {calls:?}"
    );
}

#[test]
fn ready_url_is_waited_for_and_a_unit_that_never_gets_ready_is_named() {
    let (port, seen) = ready_server(&["2"]);
    let host = Host::new(&[("1", "active"), ("2", "active"), ("3", "active")]);
    let url = format!("http://127.0.0.1:{port}/ready/%i");
    let out = host.run(&["--instances", "3", "--ready-url", &url, "--timeout", "2"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(host.restarted(), units(&["1", "2"]), "{err}");
    let asked = seen.lock().expect("seen").clone();
    assert_eq!(
        asked.first().map(String::as_str),
        Some("/ready/1"),
        "{asked:?}"
    );
    assert!(asked.iter().all(|p| p != "/ready/3"), "{asked:?}");
    assert!(err.contains("instance 1 is ready"), "{err}");
    assert!(
        err.contains(&format!(
            "FAILED: instance 2: http://127.0.0.1:{port}/ready/2 did not answer 200 within 2s"
        )),
        "{err}"
    );
    assert!(
        err.contains("last answer: HTTP 503: not ready: postgres: connection refused"),
        "the endpoint's reason:\n{err}"
    );
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.contains("not restarted (still on the old release): 3")),
        "{err}"
    );
    assert!(Path::new(SCRIPT).exists());
}
