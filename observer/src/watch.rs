//! `covobs watch`: live threads, processes and signals of the targets, triggering nothing.
use std::time::Duration;

use anyhow::Context as _;

use crate::{
    BadInput,
    events::{Body, Event},
    probes::{ProbeOptions, Probes, records},
    stream::{HumanSink, JsonLinesSink, Pipeline, Sender, Sink},
    sys::clock,
    target::{TargetSpec, Tracker},
};

pub struct WatchOptions {
    pub target: TargetSpec,
    pub json: bool,
    pub duration: Option<Duration>,
    /// With --name: keep waiting when no process has the name yet.
    pub wait: bool,
    pub follow_forks: bool,
    pub ebpf_log: bool,
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

pub async fn run(opts: WatchOptions) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install(opts.duration);
    crate::require_privileges()?;
    let probe_opts = ProbeOptions {
        ebpf_log: opts.ebpf_log,
        ..Default::default()
    };
    let mut probes = Probes::load(&probe_opts).map_err(|e| {
        let bad = e.is_bad_input();
        classify(e, bad)
    })?;
    let mut tracker = Tracker::new(opts.target.clone(), opts.follow_forks);
    let initial = tracker.start(&mut probes, opts.wait).map_err(|e| {
        let bad = e.is_bad_input();
        classify(e, bad)
    })?;
    if initial.is_empty()
        && let Some(pattern) = tracker.pattern()
    {
        eprintln!(
            "covobs: no process named {:?} yet; waiting for one",
            pattern.as_str()
        );
    }

    let sink: Box<dyn Sink> = if opts.json {
        Box::new(JsonLinesSink::new(std::io::stdout(), "stdout"))
    } else {
        Box::new(HumanSink::new(std::io::stdout()))
    };
    let pipeline = Pipeline::new(vec![sink])?;
    let tx = pipeline.sender();
    for event in initial {
        tx.event(event).await;
    }

    let mut reader = probes
        .take_reader()
        .context("opening the eBPF ring buffer")?;
    let mut drops = DropWatch::default();
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));

    loop {
        tokio::select! {
            read = reader.read(&mut batch) => {
                read.context("reading the eBPF ring buffer")?;
                forward(&mut tracker, &mut probes, &mut batch, &tx).await;
                if tracker.finished() {
                    break;
                }
            }
            _ = tick.tick() => drops.report(&probes, &tx).await,
            _ = shutdown.wait() => break,
        }
    }
    reader.drain(&mut batch);
    forward(&mut tracker, &mut probes, &mut batch, &tx).await;
    drops.report(&probes, &tx).await;
    let bad = reader.bad_records;
    // Detach every program before the last output is written.
    drop(reader);
    drop(probes);
    drop(tx);
    let stats = pipeline.finish().await?;
    if !opts.json {
        eprintln!(
            "covobs: {} events, {} lost to a full ring buffer{}; every probe detached",
            stats.events,
            drops.total,
            if bad > 0 {
                format!(", {bad} undecodable")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

async fn forward(
    tracker: &mut Tracker,
    probes: &mut Probes,
    batch: &mut Vec<records::Record>,
    tx: &Sender,
) {
    for record in batch.drain(..) {
        if let records::Record::Event(decoded) = record {
            for event in tracker.on_record(probes, decoded) {
                tx.event(event).await;
            }
        }
    }
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
    deadline: Option<tokio::time::Instant>,
}

impl Shutdown {
    pub fn install(duration: Option<Duration>) -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
            deadline: duration.map(|d| tokio::time::Instant::now() + d),
        }
    }

    /// Resolves when it is time to stop.
    pub async fn wait(&mut self) {
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
        let timer = async {
            match self.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate => {}
            _ = timer => {}
        }
    }
}
