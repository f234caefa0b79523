//! The stream stage: everything covobs observes or collects flows through one pipeline to its
//! sinks. Stages only `send`; sinks only `accept`. A new sink (a socket to a remote reporting
//! stage, say) is one more `Sink` implementation, nothing else changes.
//!
//! Shape: stages send into one bounded queue; a dispatcher thread gives every item, in that one
//! order, to each sink's own bounded queue, and each sink runs on its own thread. The primary
//! sink (the output directory) is the one that defines durability: the dispatcher waits for room
//! in its queue, so a slow disk slows the stages down (and, through them, the ring-buffer reader,
//! whose overflow the kernel counts) as it always did. Any other sink (the terminal, stdout, a
//! network) is never waited for: what its queue cannot take is dropped for that sink alone,
//! counted, warned about and reported in session.json. Items are shared, never copied: artifact
//! bodies are `Bytes`, the rest behind an `Arc`.
use std::{
    fs::File,
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

use crate::{collect::Artifact, events::Event};

pub mod dir;
pub mod human;
pub mod json;
pub use covobs_layout::modes;
pub mod nats;
pub mod session_dir;
pub mod slow;
mod workers;

pub use dir::{DirSink, OutputHealth};
pub use human::HumanSink;
pub use json::JsonLinesSink;
pub use modes::OutputModes;
pub use workers::SinkStats;

/// What flows through the pipeline. Cloning is cheap: every sink gets the same item.
#[derive(Clone, Debug)]
pub enum Item {
    Event(Arc<Event>),
    /// Collected bytes and their metadata.
    Artifact(Arc<Artifact>),
    /// Keep a copy of an instrumented module (reports need it after the target is gone).
    Module(Arc<Module>),
}

impl Item {
    fn kind(&self) -> Kind {
        match self {
            Item::Event(_) => Kind::Event,
            Item::Artifact(_) => Kind::Artifact,
            Item::Module(_) => Kind::Module,
        }
    }

    /// Bytes the item holds alive while it waits in a queue.
    fn weight(&self) -> u64 {
        match self {
            Item::Artifact(a) => {
                (a.data.len()
                    + a.parts.iter().map(|(_, d)| d.len()).sum::<usize>()
                    + a.extra.iter().map(|(_, d)| d.len()).sum::<usize>()) as u64
            }
            _ => 0,
        }
    }
}

/// A module to copy into the session.
#[derive(Debug)]
pub struct Module {
    /// Relative path in the output directory (modules/<build-id>/<name>).
    pub copy: String,
    /// The module, opened when it was found (through /proc/PID/map_files/...): a process that
    /// exits before the copy is made leaves it readable. Shared by the sinks: read only with
    /// positioned reads, never through its offset.
    pub source: File,
}

/// The kinds of item, for a sink to say which it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Event,
    Artifact,
    Module,
}

/// Told when (CLOCK_BOOTTIME ns) an artifact became durable, or why it could not be written.
/// Only the primary sink ever holds one; without a primary sink (`--no-local`) the dispatcher
/// answers once the other sinks have the artifact.
pub type Durable = oneshot::Sender<Result<u64, String>>;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{sink}: {source}")]
    Io {
        sink: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} sink's thread panicked")]
    Panicked(&'static str),
    #[error("starting the stream thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// A destination for items other than the primary one. Runs on its own thread, so it may block
/// on I/O; it is never waited for by the stages.
pub trait Sink: Send {
    fn name(&self) -> &'static str;
    /// Whether it takes items of this kind: others are never queued for it (an artifact queued
    /// for a sink that ignores it would only keep its bytes alive).
    fn takes(&self, kind: Kind) -> bool {
        let _ = kind;
        true
    }
    /// Its queue, in items.
    fn queue(&self) -> usize {
        QUEUE
    }
    fn accept(&mut self, item: &Item) -> Result<(), StreamError>;
    /// Called after each batch of items (whatever was queued when the sink got to it).
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    /// Called once after the last item.
    fn finish(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
}

/// The sink that defines durability (the output directory). It alone is handed each artifact's
/// [`Durable`], and answers it once the artifact is durable: at the latest in the `commit` that
/// ends the batch the artifact came in.
pub trait PrimarySink: Send {
    fn name(&self) -> &'static str;
    fn accept(&mut self, item: &Item, durable: Option<Durable>) -> Result<(), StreamError>;
    /// End of a batch: make what was accepted durable, answer its responders.
    fn commit(&mut self) -> Result<(), StreamError>;
    /// Called once after the last item (after its commit).
    fn finish(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
}

/// Items in flight between the stages and the primary sink; a full queue slows the senders down,
/// and a slowed ring-buffer reader shows up as counted kernel drops rather than unbounded memory.
/// Also the default queue of every other sink.
const QUEUE: usize = 1 << 14;
/// The queue from the stages to the dispatcher (which only hands items on).
const INGRESS: usize = 1 << 10;
/// The most artifact bytes a non-primary sink may hold queued; beyond, it drops artifacts.
const SINK_BYTES: u64 = 64 << 20;
/// At the end, how long the other sinks get to take what is queued for them; what is left then
/// is counted as abandoned.
pub const FINISH_GRACE: Duration = Duration::from_secs(5);

/// Counters of what passed through.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StreamStats {
    pub events: u64,
    pub artifacts: u64,
    /// Every sink, the primary first: what it took, dropped and left.
    pub sinks: Vec<SinkStats>,
    /// The most descriptors covobs held at once, sampled as items flowed.
    pub descriptors_peak: u64,
}

impl StreamStats {
    /// One line per sink that could not take everything (empty when all did).
    pub fn warnings(&self) -> Vec<String> {
        self.sinks.iter().filter_map(SinkStats::warning).collect()
    }
}

/// What the stages send.
struct Envelope {
    item: Item,
    durable: Option<Durable>,
}

pub struct Pipeline {
    tx: mpsc::Sender<Envelope>,
    dispatcher: JoinHandle<workers::Dispatched>,
    primary: Option<workers::Worker>,
    others: Vec<workers::Worker>,
}

impl Pipeline {
    /// A pipeline to `primary` (when there is an output directory) and `others`.
    pub fn new(
        primary: Option<Box<dyn PrimarySink>>,
        others: Vec<Box<dyn Sink>>,
    ) -> Result<Self, StreamError> {
        let (tx, rx) = mpsc::channel::<Envelope>(INGRESS);
        let (primary_tx, primary) = match primary {
            Some(sink) => {
                let (tx, w) = workers::spawn_primary(sink, QUEUE)?;
                (Some(tx), Some(w))
            }
            None => (None, None),
        };
        let mut queues = Vec::new();
        let mut workers_ = Vec::new();
        for sink in others {
            let (q, w) = workers::spawn_other(sink, SINK_BYTES)?;
            queues.push(q);
            workers_.push(w);
        }
        let dispatcher = std::thread::Builder::new()
            .name("covobs-stream".into())
            .spawn(move || workers::dispatch(rx, primary_tx, queues))
            .map_err(StreamError::Spawn)?;
        Ok(Self {
            tx,
            dispatcher,
            primary,
            others: workers_,
        })
    }

    /// A handle stages use to send items.
    pub fn sender(&self) -> Sender {
        Sender(self.tx.clone())
    }

    /// Close the pipeline: wait until every item reached the primary sink and was committed, and
    /// give the other sinks [`FINISH_GRACE`] to take theirs.
    pub async fn finish(self) -> Result<StreamStats, StreamError> {
        self.finish_within(FINISH_GRACE).await
    }

    pub async fn finish_within(self, grace: Duration) -> Result<StreamStats, StreamError> {
        let Self {
            tx,
            dispatcher,
            primary,
            others,
        } = self;
        drop(tx);
        tokio::task::spawn_blocking(move || {
            let dispatched = dispatcher
                .join()
                .map_err(|_| StreamError::Panicked("stream"))?;
            let mut first_error = None;
            let mut sinks = Vec::new();
            if let Some(p) = primary {
                let (stats, err) = p.join_all();
                sinks.push(stats);
                if let Some(e) = err {
                    first_error.get_or_insert(e);
                }
            }
            let deadline = Instant::now() + grace;
            for w in others {
                let (stats, err) = w.join_by(deadline);
                sinks.push(stats);
                if let Some(e) = err {
                    first_error.get_or_insert(e);
                }
            }
            let stats = StreamStats {
                events: dispatched.events,
                artifacts: dispatched.artifacts,
                sinks,
                descriptors_peak: dispatched.descriptors_peak,
            };
            first_error.map_or(Ok(stats), Err)
        })
        .await
        .map_err(|_| StreamError::Panicked("stream"))?
    }
}

/// Cheap, clonable handle to the pipeline.
#[derive(Clone)]
pub struct Sender(mpsc::Sender<Envelope>);

impl Sender {
    async fn send(&self, item: Item, durable: Option<Durable>) {
        // An error means the pipeline is closed: covobs is shutting down and the item has nowhere
        // to go (an artifact's responder is dropped with it: its sender hears that).
        let _ = self.0.send(Envelope { item, durable }).await;
    }

    pub async fn event(&self, event: Event) {
        self.send(Item::Event(Arc::new(event)), None).await;
    }

    /// Send an artifact; the returned receiver says when (or whether) it became durable in the
    /// output directory (without one: when the other sinks have it).
    pub async fn artifact(
        &self,
        artifact: Artifact,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Item::Artifact(Arc::new(artifact)), Some(tx))
            .await;
        rx
    }

    /// Keep a copy of a module: opened now, copied by the sinks.
    pub async fn module(&self, copy: String, source: std::path::PathBuf) {
        match std::fs::File::open(&source) {
            Ok(source) => {
                self.send(Item::Module(Arc::new(Module { copy, source })), None)
                    .await;
            }
            Err(e) => tracing::warn!("no copy of {copy}: {}: {e}", source.display()),
        }
    }
}

/// Raise the soft limit on open descriptors to the hard limit (a busy session holds many:
/// probes, targets, artifacts in flight). Returns (soft, hard) as they are now.
pub fn raise_nofile_limit() -> (u64, u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    if soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("could not raise the open-file limit from {soft} to {hard}: {e}");
        return (soft, hard);
    }
    (hard.max(soft), hard)
}

/// The open-file limit now: (soft, hard); (0, 0) when it cannot be read.
pub fn nofile_limit() -> (u64, u64) {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap_or((0, 0))
}

/// The most resident memory this process has had (VmHWM), in bytes; 0 when /proc cannot say.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Descriptors this process holds now (0 when /proc cannot say).
pub fn descriptors_in_use() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64)
}

#[cfg(test)]
mod tests;
