//! When a command stops: Ctrl-C, SIGTERM or the end of its `--duration`.
use std::time::Duration;

/// Ctrl-C, SIGTERM or the end of `--duration`. The signal handlers are installed when this is
/// created (tokio would otherwise install them only on first poll, and a signal arriving before
/// that would kill covobs with the default action instead of ending it cleanly).
pub struct Shutdown {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
    duration: Option<Duration>,
    deadline: Option<tokio::time::Instant>,
}

impl Shutdown {
    pub fn install(duration: Option<Duration>) -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
            duration,
            deadline: duration.map(|d| tokio::time::Instant::now() + d),
        }
    }

    /// `--duration` counts from now: from the moment the probes are in place, as `--interval`
    /// does, so a slow start (many modules to scan) does not eat into the observed time.
    pub fn start_clock(&mut self) {
        self.deadline = self.duration.map(|d| tokio::time::Instant::now() + d);
    }

    /// Resolves at the next Ctrl-C or SIGTERM (not at the end of `--duration`).
    pub async fn signalled(&mut self) {
        let interrupt = async {
            match self.interrupt.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let terminate = async {
            match self.terminate.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
        }
    }

    /// Resolves when it is time to stop.
    pub async fn wait(&mut self) {
        let deadline = self.deadline;
        let timer = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = self.signalled() => {}
            _ = timer => {}
        }
    }
}
