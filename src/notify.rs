//! The sd_notify protocol, spoken directly: a datagram per state change to the unix socket named
//! in `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket). No libsystemd, so the binary
//! stays static-friendly and the protocol is testable with a plain socket.
//!
//! Why: with `Type=notify` systemd (and `systemctl restart`, hence rolling deploys) waits until
//! the worker says `READY=1`, which Mailroom says only once Postgres and SQS answered and its
//! receive loops run. `WATCHDOG=1` pings are sent only while the engine makes progress, so a
//! hung process is restarted instead of sitting on its in-flight messages.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Where notifications go; a no-op when the process was not started by a service manager.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    socket: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("NOTIFY_SOCKET {socket}: {source}")]
    Io {
        socket: String,
        source: std::io::Error,
    },
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; empty or absent means "not under systemd".
    pub fn from_env() -> Self {
        Self::new(std::env::var("NOTIFY_SOCKET").ok())
    }

    pub fn new(socket: Option<String>) -> Self {
        Self {
            socket: socket.filter(|s| !s.is_empty()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Send one notification, e.g. `"READY=1"` or `"STOPPING=1\nSTATUS=draining"`.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let Some(socket) = &self.socket else {
            return Ok(());
        };
        send(socket, state.as_bytes()).map_err(|source| NotifyError::Io {
            socket: socket.clone(),
            source,
        })
    }

    /// [`Notifier::notify`], logging instead of failing: a lost notification must not stop the
    /// worker (systemd will time out and say so).
    pub fn notify_or_log(&self, state: &str) {
        if let Err(error) = self.notify(state) {
            tracing::warn!(%error, state, "could not notify the service manager");
        }
    }
}

fn send(socket: &str, payload: &[u8]) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(payload, &addr)?;
    } else {
        sock.send_to(payload, socket)?;
    }
    Ok(())
}

/// The watchdog period systemd asked for (`WATCHDOG_USEC`, for this process when `WATCHDOG_PID`
/// is set), or None when there is no watchdog.
pub fn watchdog_period() -> Option<Duration> {
    watchdog_period_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_period_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// A counter the engine bumps whenever it makes progress (a receive returned, a heartbeat
/// tick ran). The watchdog pings only when it moved since the last ping.
#[derive(Debug, Clone, Default)]
pub struct Liveness(Arc<AtomicU64>);

impl Liveness {
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn value(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Ping `WATCHDOG=1` every half `period` while `liveness` moves; stops when `stop` fires.
/// Until `armed` (READY was sent) it pings unconditionally: start-up steps have their own
/// timeouts, and systemd's start timeout bounds them anyway.
pub async fn watchdog(
    notifier: Notifier,
    period: Duration,
    liveness: Liveness,
    armed: Arc<std::sync::atomic::AtomicBool>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval((period / 2).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = liveness.value();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = liveness.value();
        if !armed.load(Ordering::Relaxed) || now != last {
            notifier.notify_or_log("WATCHDOG=1");
        } else {
            tracing::warn!("no engine progress since the last watchdog ping; not pinging");
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_period_respects_pid_and_zero() {
        assert_eq!(
            watchdog_period_from(Some("2000000"), None, 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_period_from(Some("2000000"), Some("8"), 7), None);
        assert_eq!(
            watchdog_period_from(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_period_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_period_from(None, None, 7), None);
    }

    #[test]
    fn notifies_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("mailroom-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        Notifier::new(Some(path.display().to_string()))
            .notify("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("mailroom-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_listener = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(Some(format!("@{name}")))
            .notify("WATCHDOG=1")
            .unwrap();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn watchdog_pings_only_while_the_engine_makes_progress() {
        let dir = std::env::temp_dir().join(format!("mailroom-wd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("wd.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let count = |l: &UnixDatagram| {
            let mut buf = [0u8; 64];
            let mut n = 0;
            while l.recv(&mut buf).is_ok() {
                n += 1;
            }
            n
        };
        let liveness = Liveness::default();
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let stop = CancellationToken::new();
        let task = tokio::spawn(watchdog(
            Notifier::new(Some(path.display().to_string())),
            Duration::from_millis(40),
            liveness.clone(),
            armed,
            stop.clone(),
        ));
        // Progress: pings.
        for _ in 0..10 {
            liveness.bump();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(count(&listener) >= 3, "pings while progressing");
        // Hung: no bumps, no pings (after at most the one in flight).
        tokio::time::sleep(Duration::from_millis(60)).await;
        let _ = count(&listener);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(count(&listener), 0, "no pings without progress");
        stop.cancel();
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn no_socket_is_a_no_op() {
        assert!(!Notifier::new(Some(String::new())).enabled());
        Notifier::new(None).notify("READY=1").unwrap();
    }
}
