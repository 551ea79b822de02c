//! Unix signals, turned into the engine's controls:
//! - SIGTERM / SIGINT: stop receiving, drain, release, exit 0. A second one exits at once.
//! - SIGTSTP / SIGUSR1: go quiet (stop receiving, keep running), like Shoryuken's TSTP.
//! - SIGCONT / SIGUSR2: resume receiving.

// tokio names no SIGTSTP or SIGCONT constructor: libc's constants, not hard-coded numbers.
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};

/// Exit status when a second SIGTERM cuts the drain short.
pub const EXIT_FORCED: i32 = 130;

pub struct Signals {
    /// Resolves on the first SIGTERM or SIGINT.
    pub shutdown: oneshot::Receiver<()>,
    pub quiet: watch::Receiver<bool>,
}

pub fn install() -> std::io::Result<Signals> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tstp = signal(SignalKind::from_raw(libc::SIGTSTP))?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut cont = signal(SignalKind::from_raw(libc::SIGCONT))?;
    let (shutdown_tx, shutdown) = oneshot::channel();
    let (quiet_tx, quiet) = watch::channel(false);
    tokio::spawn(async move {
        let mut shutdown_tx = Some(shutdown_tx);
        loop {
            tokio::select! {
                _ = term.recv() => stop(&mut shutdown_tx, "SIGTERM"),
                _ = int.recv() => stop(&mut shutdown_tx, "SIGINT"),
                _ = tstp.recv() => quiet_mode(&quiet_tx, true, "SIGTSTP"),
                _ = usr1.recv() => quiet_mode(&quiet_tx, true, "SIGUSR1"),
                _ = usr2.recv() => quiet_mode(&quiet_tx, false, "SIGUSR2"),
                _ = cont.recv() => quiet_mode(&quiet_tx, false, "SIGCONT"),
            }
        }
    });
    Ok(Signals { shutdown, quiet })
}

fn stop(tx: &mut Option<oneshot::Sender<()>>, name: &str) {
    match tx.take() {
        Some(tx) => {
            tracing::info!(
                signal = name,
                "shutting down: draining (send it again to exit at once)"
            );
            let _ = tx.send(());
        }
        None => {
            tracing::warn!(signal = name, "second stop signal: exiting now; unfinished messages reappear after their visibility timeout");
            std::process::exit(EXIT_FORCED);
        }
    }
}

fn quiet_mode(tx: &watch::Sender<bool>, quiet: bool, name: &str) {
    if *tx.borrow() != quiet {
        tracing::info!(
            signal = name,
            quiet,
            "{}",
            if quiet {
                "quiet: no more receives"
            } else {
                "receiving again"
            }
        );
        let _ = tx.send(quiet);
    }
}
