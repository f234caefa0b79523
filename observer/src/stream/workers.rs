//! The pipeline's threads: the dispatcher, which hands each item to every sink's queue, and one
//! worker per sink, which takes its queue in batches.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use super::{Envelope, Item, Kind, PrimarySink, Sink, StreamError};

/// The most items a worker takes before it flushes (commits, for the primary).
const BATCH: usize = 256;
/// How often the dispatcher counts the descriptors in use.
const SAMPLE_FDS: Duration = Duration::from_millis(250);
/// After the grace period, how long a sink told to abandon its queue gets to stop.
const ABANDON_WAIT: Duration = Duration::from_secs(1);

/// What one sink took, dropped and left (session.json `counters.sinks`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SinkStats {
    pub name: &'static str,
    /// The sink that defines durability (waited for; never drops).
    pub primary: bool,
    /// Its queue, in items.
    pub queue: usize,
    /// Items it accepted.
    pub delivered: u64,
    /// Items it could not take while covobs ran (its queue, or its share of memory, was full).
    pub dropped: u64,
    /// Items still queued for it when covobs stopped and its grace period was over.
    pub abandoned: u64,
    /// The most items that waited in its queue at once.
    pub max_backlog: u64,
}

impl SinkStats {
    pub fn warning(&self) -> Option<String> {
        if self.dropped == 0 && self.abandoned == 0 {
            return None;
        }
        Some(format!(
            "the {} sink fell behind: {} items dropped (its queue of {} was full), {} left unwritten when covobs stopped; {} delivered",
            self.name, self.dropped, self.queue, self.abandoned, self.delivered
        ))
    }
}

/// Counters a sink's worker and the dispatcher share.
struct Shared {
    name: &'static str,
    primary: bool,
    capacity: usize,
    queued: AtomicU64,
    queued_bytes: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    abandoned: AtomicU64,
    max_backlog: AtomicU64,
    /// Set at the end of the grace period: count what is left instead of taking it.
    abandon: AtomicBool,
}

impl Shared {
    fn new(name: &'static str, primary: bool, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            name,
            primary,
            capacity,
            queued: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            max_backlog: AtomicU64::new(0),
            abandon: AtomicBool::new(false),
        })
    }

    fn queued(&self, weight: u64) {
        let n = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.queued_bytes.fetch_add(weight, Ordering::Relaxed);
        self.max_backlog.fetch_max(n, Ordering::Relaxed);
    }

    fn taken(&self, weight: u64) {
        self.queued.fetch_sub(1, Ordering::Relaxed);
        self.queued_bytes.fetch_sub(weight, Ordering::Relaxed);
    }

    fn stats(&self) -> SinkStats {
        SinkStats {
            name: self.name,
            primary: self.primary,
            queue: self.capacity,
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            max_backlog: self.max_backlog.load(Ordering::Relaxed),
        }
    }
}

/// A sink's thread.
pub(super) struct Worker {
    handle: JoinHandle<Option<StreamError>>,
    shared: Arc<Shared>,
}

impl Worker {
    /// Wait for the sink to take everything (the primary: durability depends on it).
    pub(super) fn join_all(self) -> (SinkStats, Option<StreamError>) {
        let err = match self.handle.join() {
            Ok(e) => e,
            Err(_) => Some(StreamError::Panicked(self.shared.name)),
        };
        (self.shared.stats(), err)
    }

    /// Wait until `deadline`; then have the sink count what is left instead of taking it, and
    /// give up on a sink stuck in its own I/O (its thread ends with the process).
    pub(super) fn join_by(self, deadline: Instant) -> (SinkStats, Option<StreamError>) {
        if !wait_finished(&self.handle, deadline) {
            self.shared.abandon.store(true, Ordering::Relaxed);
            if !wait_finished(&self.handle, Instant::now() + ABANDON_WAIT) {
                let mut stats = self.shared.stats();
                stats.abandoned += self.shared.queued.load(Ordering::Relaxed);
                return (stats, None);
            }
        }
        self.join_all()
    }
}

fn wait_finished<T>(handle: &JoinHandle<T>, deadline: Instant) -> bool {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, StreamError> {
    std::thread::Builder::new()
        .name(format!("covobs-sink-{name}"))
        .spawn(f)
        .map_err(StreamError::Spawn)
}

/// The primary sink's worker: batches of what is queued, each ended by a commit.
pub(super) fn spawn_primary(
    mut sink: Box<dyn PrimarySink>,
    capacity: usize,
) -> Result<(PrimaryQueue, Worker), StreamError> {
    let shared = Shared::new(sink.name(), true, capacity);
    let (tx, rx) = sync_channel::<Envelope>(capacity);
    let s = shared.clone();
    let handle = spawn_named(sink.name(), move || {
        let mut first_error = None;
        let mut keep = |r: Result<(), StreamError>| {
            if let Err(e) = r {
                tracing::error!("{e}");
                first_error.get_or_insert(e);
            }
        };
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            let mut n = 0;
            while let Some(env) = next.take() {
                s.taken(0);
                keep(sink.accept(&env.item, env.durable));
                s.delivered.fetch_add(1, Ordering::Relaxed);
                n += 1;
                if n < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            keep(sink.commit());
        }
        keep(sink.finish());
        first_error
    })?;
    Ok((
        PrimaryQueue {
            tx,
            shared: shared.clone(),
        },
        Worker { handle, shared },
    ))
}

/// The dispatcher's end of the primary sink's queue: waited for.
pub(super) struct PrimaryQueue {
    tx: SyncSender<Envelope>,
    shared: Arc<Shared>,
}

/// Any other sink's worker.
pub(super) fn spawn_other(
    mut sink: Box<dyn Sink>,
    byte_budget: u64,
) -> Result<(OtherQueue, Worker), StreamError> {
    let capacity = sink.queue().max(1);
    let takes = [Kind::Event, Kind::Artifact, Kind::Module].map(|k| sink.takes(k));
    let shared = Shared::new(sink.name(), false, capacity);
    let (tx, rx): (_, Receiver<Item>) = sync_channel(capacity);
    let s = shared.clone();
    let handle = spawn_named(sink.name(), move || {
        let mut first_error = None;
        while let Ok(first) = rx.recv() {
            let mut next = Some(first);
            let mut n = 0;
            while let Some(item) = next.take() {
                s.taken(item.weight());
                if s.abandon.load(Ordering::Relaxed) {
                    s.abandoned.fetch_add(1, Ordering::Relaxed);
                } else {
                    if let Err(e) = sink.accept(&item) {
                        tracing::error!("{e}");
                        first_error.get_or_insert(e);
                    }
                    s.delivered.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
                if n < BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = sink.flush() {
                first_error.get_or_insert(e);
            }
        }
        if let Err(e) = sink.finish() {
            first_error.get_or_insert(e);
        }
        first_error
    })?;
    Ok((
        OtherQueue {
            tx,
            takes,
            byte_budget,
            shared: shared.clone(),
            warned: false,
        },
        Worker { handle, shared },
    ))
}

/// The dispatcher's end of another sink's queue: offered to, never waited for.
pub(super) struct OtherQueue {
    tx: SyncSender<Item>,
    takes: [bool; 3],
    byte_budget: u64,
    shared: Arc<Shared>,
    warned: bool,
}

/// What a sink did with an item offered to it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Offered {
    /// Not a kind it takes.
    NotWanted,
    Queued,
    /// Its queue was full: dropped for it alone (counted).
    Dropped,
}

impl OtherQueue {
    fn offer(&mut self, item: &Item) -> Offered {
        let wanted = match item.kind() {
            Kind::Event => self.takes[0],
            Kind::Artifact => self.takes[1],
            Kind::Module => self.takes[2],
        };
        if !wanted {
            return Offered::NotWanted;
        }
        let weight = item.weight();
        let room = weight == 0
            || self.shared.queued_bytes.load(Ordering::Relaxed) + weight <= self.byte_budget;
        if room {
            // Counted before it is queued: the worker may take it at once.
            self.shared.queued(weight);
            match self.tx.try_send(item.clone()) {
                Ok(()) => return Offered::Queued,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.shared.taken(weight);
                }
            }
        }
        self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        if !self.warned {
            self.warned = true;
            tracing::warn!(
                "the {} sink is falling behind (its queue of {} is full): what it cannot take is dropped for it alone and counted (session.json counters.sinks)",
                self.shared.name,
                self.shared.capacity
            );
        }
        Offered::Dropped
    }
}

/// What the dispatcher counted.
pub(super) struct Dispatched {
    pub events: u64,
    pub artifacts: u64,
    pub descriptors_peak: u64,
}

/// Hand every item, in the order the stages sent them, to each sink.
pub(super) fn dispatch(
    mut rx: mpsc::Receiver<Envelope>,
    primary: Option<PrimaryQueue>,
    mut others: Vec<OtherQueue>,
) -> Dispatched {
    let mut counted = Dispatched {
        events: 0,
        artifacts: 0,
        descriptors_peak: super::descriptors_in_use(),
    };
    let mut sampled = Instant::now();
    while let Some(env) = rx.blocking_recv() {
        match env.item.kind() {
            Kind::Event => counted.events += 1,
            Kind::Artifact => counted.artifacts += 1,
            Kind::Module => {}
        }
        if sampled.elapsed() >= SAMPLE_FDS {
            sampled = Instant::now();
            counted.descriptors_peak = counted.descriptors_peak.max(super::descriptors_in_use());
        }
        let (mut dropped_by, mut queued) = (None, false);
        for q in others.iter_mut() {
            match q.offer(&env.item) {
                Offered::Dropped => dropped_by = Some(q.shared.name),
                Offered::Queued => queued = true,
                Offered::NotWanted => {}
            }
        }
        if let Some(p) = &primary {
            p.shared.queued(0);
            // Waits while the primary's queue is full: the back-pressure the stages feel. An
            // error means its thread is gone (a panic, reported by `finish`); the artifact's
            // responder drops with the item, which its sender hears.
            if p.tx.send(env).is_err() {
                p.shared.taken(0);
            }
        } else if let Some(durable) = env.durable {
            // No output directory (`--no-local`): handed to the other sinks (the fleet's, which
            // publishes or spools it) is as far as it goes here. One that had to drop it loses
            // it for good (there is no local copy): said as covobs' own loss, never as collected.
            let _ = durable.send(match (dropped_by, queued) {
                (Some(name), _) => Err(format!(
                    "covobs' own backlog: the {name} sink's queue was full, and with --no-local there is no local copy"
                )),
                (None, true) => Ok(crate::sys::clock::boot_ns()),
                (None, false) => Err("no sink keeps artifacts".to_owned()),
            });
        }
    }
    counted.descriptors_peak = counted.descriptors_peak.max(super::descriptors_in_use());
    counted
}
