//! `covobs watch`: live threads, processes and signals of the targets, triggering nothing.
use std::time::Duration;

use crate::{
    BadInput,
    events::{Body, Event},
    probes::{Probes, records},
    stream::Sender,
    sys::clock,
    target::TargetSpec,
};

pub struct WatchOptions {
    pub target: TargetSpec,
    pub json: bool,
    pub duration: Option<Duration>,
    /// With --name: keep waiting when no process has the name yet.
    pub wait: bool,
    pub follow_forks: bool,
    pub ebpf_log: bool,
    pub ocaml_thread_name: String,
    /// Also publish the events to a fleet's NATS JetStream.
    pub publish: Option<crate::stream::nats::PublishOptions>,
}

/// Map a library error to BadInput (exit 2) when the user or the machine must change something.
pub fn classify<E: std::error::Error + Send + Sync + 'static>(
    err: E,
    bad_input: bool,
) -> anyhow::Error {
    if bad_input {
        BadInput(err.to_string()).into()
    } else {
        err.into()
    }
}

/// `watch` is an attach session that only observes: discovery, OCaml thread identity and dump
/// probes, but no signal, no collection and no output directory.
pub async fn run(opts: WatchOptions) -> anyhow::Result<()> {
    crate::attach::run(crate::attach::AttachOptions {
        target: opts.target,
        out: None,
        modes: Default::default(),
        interval: None,
        serve: None,
        once: false,
        duration: opts.duration,
        signal: nix::sys::signal::Signal::SIGUSR2,
        thread: crate::trigger::ThreadChoice::Auto,
        force: false,
        json: opts.json,
        wait: opts.wait,
        follow_forks: opts.follow_forks,
        ebpf_log: opts.ebpf_log,
        dump_timeout: Duration::from_secs(1),
        no_report: true,
        file_tracking: crate::probes::FileTrackingPolicy::Off,
        observe_only: true,
        deliver: crate::attach::Deliver::Pidfd,
        ocaml_thread_name: opts.ocaml_thread_name,
        mode: crate::cli::Mode::Signal,
        final_snapshot: false,
        command: Vec::new(),
        vmlinux: None,
        publish: opts.publish,
    })
    .await
}

/// Turns the kernel's per-CPU drop counters into `lost` events as they grow.
#[derive(Default)]
pub struct DropWatch {
    seen: std::collections::HashMap<u32, u64>,
    pub total: u64,
}

impl DropWatch {
    pub async fn report(&mut self, probes: &Probes, tx: &Sender) {
        let Ok(counts) = probes.drops() else {
            return;
        };
        for (kind, count) in counts {
            let before = self.seen.insert(kind, count).unwrap_or(0);
            if count > before {
                self.total += count - before;
                tx.event(Event {
                    ts_ns: clock::boot_ns(),
                    pid: 0,
                    tid: 0,
                    body: Body::Lost {
                        reason: "eBPF ring buffer full".into(),
                        what: records::kind_name(kind).into(),
                        count: count - before,
                    },
                })
                .await;
            }
        }
    }
}

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
