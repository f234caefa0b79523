//! The stream stage: everything covobs observes or collects flows through one pipeline to its
//! sinks. Stages only `send`; sinks only `accept`. A new sink (a socket to a remote reporting
//! stage, say) is one more `Sink` implementation, nothing else changes.
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::events::Event;

pub mod dir;
pub mod human;
pub mod json;
pub mod modes;
pub mod session_dir;

pub use dir::{DirSink, OutputHealth};
pub use human::HumanSink;
pub use json::JsonLinesSink;
pub use modes::OutputModes;

use crate::collect::Artifact;

/// What flows through the pipeline.
#[derive(Debug)]
pub enum Item {
    Event(Event),
    /// Collected bytes and their metadata. `durable` is told when a sink has made it durable
    /// (CLOCK_BOOTTIME ns), so the collector can report the latency.
    Artifact {
        artifact: Box<Artifact>,
        durable: Option<tokio::sync::oneshot::Sender<Result<u64, String>>>,
    },
    /// Keep a copy of an instrumented module (reports need it after the target is gone).
    Module {
        /// Relative path in the output directory (modules/<build-id>/<name>).
        copy: String,
        /// The module, opened when it was found (through /proc/PID/map_files/...): a process
        /// that exits before the copy is made leaves it readable.
        source: std::fs::File,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{sink}: {source}")]
    Io {
        sink: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the sink thread panicked")]
    Panicked,
    #[error("starting the stream thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// A destination for items. Runs on the pipeline's own thread, so it may block on I/O.
pub trait Sink: Send {
    fn name(&self) -> &'static str;
    fn accept(&mut self, item: &mut Item) -> Result<(), StreamError>;
    /// Called once after the last item.
    fn finish(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
}

/// Items in flight between the stages and the sinks; a full queue slows the readers down, and a
/// slowed ring-buffer reader shows up as counted kernel drops rather than unbounded memory.
const QUEUE: usize = 1 << 16;

/// Counters of what passed through.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StreamStats {
    pub events: u64,
    pub artifacts: u64,
}

pub struct Pipeline {
    tx: mpsc::Sender<Item>,
    worker: JoinHandle<Result<StreamStats, StreamError>>,
}

impl Pipeline {
    pub fn new(mut sinks: Vec<Box<dyn Sink>>) -> Result<Self, StreamError> {
        let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
        let worker = std::thread::Builder::new()
            .name("covobs-stream".into())
            .spawn(move || {
                let mut stats = StreamStats::default();
                let mut first_error = None;
                while let Some(mut item) = rx.blocking_recv() {
                    match &item {
                        Item::Event(_) => stats.events += 1,
                        Item::Artifact { .. } => stats.artifacts += 1,
                        Item::Module { .. } => {}
                    }
                    for sink in sinks.iter_mut() {
                        if let Err(e) = sink.accept(&mut item) {
                            tracing::error!("{e}");
                            first_error.get_or_insert(e);
                        }
                    }
                }
                for sink in sinks.iter_mut() {
                    if let Err(e) = sink.finish() {
                        first_error.get_or_insert(e);
                    }
                }
                first_error.map_or(Ok(stats), Err)
            })
            .map_err(StreamError::Spawn)?;
        Ok(Self { tx, worker })
    }

    /// A handle stages use to send items.
    pub fn sender(&self) -> Sender {
        Sender(self.tx.clone())
    }

    /// Close the pipeline: wait until every item reached every sink.
    pub async fn finish(self) -> Result<StreamStats, StreamError> {
        drop(self.tx);
        let worker = self.worker;
        tokio::task::spawn_blocking(move || worker.join())
            .await
            .map_err(|_| StreamError::Panicked)?
            .map_err(|_| StreamError::Panicked)?
    }
}

/// Cheap, clonable handle to the pipeline.
#[derive(Clone)]
pub struct Sender(mpsc::Sender<Item>);

impl Sender {
    pub async fn event(&self, event: Event) {
        // An error means the pipeline is closed: covobs is shutting down and the item has nowhere
        // to go.
        let _ = self.0.send(Item::Event(event)).await;
    }

    /// Send an artifact; the returned receiver says when (or whether) it became durable.
    pub async fn artifact(
        &self,
        artifact: Artifact,
    ) -> tokio::sync::oneshot::Receiver<Result<u64, String>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self
            .0
            .send(Item::Artifact {
                artifact: Box::new(artifact),
                durable: Some(tx),
            })
            .await;
        rx
    }

    /// Keep a copy of a module: opened now, copied by the sinks.
    pub async fn module(&self, copy: String, source: std::path::PathBuf) {
        match std::fs::File::open(&source) {
            Ok(source) => {
                let _ = self.0.send(Item::Module { copy, source }).await;
            }
            Err(e) => tracing::warn!("no copy of {copy}: {}: {e}", source.display()),
        }
    }
}
