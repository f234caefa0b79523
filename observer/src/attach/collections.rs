//! The collections a session has running: the artifacts' sequence numbers, the channel their
//! outcomes come back on, how many are still unanswered, and the flag that tells the collectors
//! to give up their backlog when covobs stops.
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use tokio::sync::mpsc;

/// What became of one expected dump.
#[derive(Debug)]
pub struct Outcome {
    pub pid: u32,
    /// The `covobs dump` requests this dump answers.
    pub requests: Vec<u64>,
    /// The artifact file (relative to the session directory), or why there is none.
    pub result: Result<String, String>,
}

/// What the session and its collectors share about the collection as a whole.
#[derive(Debug, Default)]
pub struct Collecting {
    /// Set when covobs stops and the backlog's bound has passed: collectors turn what they still
    /// hold into `lost` events instead of collecting it.
    pub abandon: AtomicBool,
    /// Artifacts handed to the output and not settled yet: they will be answered as the output
    /// directory's bounded queue drains, unlike a collection stuck in a read.
    pub settling: AtomicU64,
}

pub struct Collections {
    seq: Arc<AtomicU64>,
    done_tx: mpsc::UnboundedSender<Outcome>,
    in_flight: usize,
    shared: Arc<Collecting>,
}

impl Collections {
    pub fn new(done_tx: mpsc::UnboundedSender<Outcome>) -> Self {
        Self {
            seq: Arc::new(AtomicU64::new(0)),
            done_tx,
            in_flight: 0,
            shared: Arc::default(),
        }
    }

    /// The artifacts' sequence numbers, shared by every writer.
    pub fn seq(&self) -> Arc<AtomicU64> {
        self.seq.clone()
    }

    /// Where a collection's outcome goes.
    pub fn outcomes(&self) -> mpsc::UnboundedSender<Outcome> {
        self.done_tx.clone()
    }

    /// What the collectors share with the session (the give-up flag, the artifacts settling).
    pub fn shared(&self) -> Arc<Collecting> {
        self.shared.clone()
    }

    /// `n` more collections whose outcomes will come back.
    pub fn started(&mut self, n: usize) {
        self.in_flight += n;
    }

    /// One outcome came back (or one collection never started).
    pub fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Tell the collectors to give up their backlog.
    pub fn abandon(&self) {
        self.shared.abandon.store(true, Ordering::SeqCst);
    }

    /// The collections still unanswered, no longer waited for.
    pub fn take_unanswered(&mut self) -> usize {
        std::mem::take(&mut self.in_flight)
    }
}
