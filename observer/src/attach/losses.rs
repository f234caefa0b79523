//! Every loss of a session, counted in one place: what covobs saw the targets do that gave no
//! artifact (`counters.lost` in session.json, the sum of the `lost` events' counts), and the
//! records the kernel dropped on a full ring buffer (`counters.ring_buffer_drops`).
//!
//! A loss is counted where its `lost` event is sent: here for the session's own, and when its
//! outcome comes back for a collection or a snapshot (their tasks send the event themselves,
//! and a collection given up at the end is counted once, by the session, not again when its
//! late event arrives).
use std::collections::HashMap;

use crate::{
    events::{Body, Event},
    probes::{Probes, records},
    stream::Sender,
    sys::clock,
};

pub struct Losses {
    tx: Sender,
    lost: u64,
    drops: DropWatch,
}

impl Losses {
    pub fn new(tx: Sender) -> Self {
        Self {
            tx,
            lost: 0,
            drops: DropWatch::default(),
        }
    }

    /// One thing lost (`what`: a runtime, a snapshot, a probe...), with its `lost` event.
    pub async fn report(&mut self, pid: u32, tid: u32, what: &str, reason: String) {
        self.report_many(pid, tid, what, reason, 1).await;
    }

    /// `count` things lost for one reason, in one `lost` event.
    pub async fn report_many(
        &mut self,
        pid: u32,
        tid: u32,
        what: &str,
        reason: String,
        count: u64,
    ) {
        self.lost += count;
        self.tx
            .event(Event {
                ts_ns: clock::boot_ns(),
                pid,
                tid,
                body: Body::Lost {
                    reason,
                    what: what.to_owned(),
                    count,
                },
            })
            .await;
    }

    /// Losses whose `lost` events a collector or the snapshot side sent on its own.
    pub fn reported_elsewhere(&mut self, count: u64) {
        self.lost += count;
    }

    /// The kernel's drop counters, as `lost` events as they grow.
    pub async fn ring_buffer(&mut self, probes: &Probes) {
        self.drops.report(probes, &self.tx).await;
    }

    pub fn lost(&self) -> u64 {
        self.lost
    }

    pub fn ring_buffer_drops(&self) -> u64 {
        self.drops.total
    }
}

/// Turns the kernel's per-CPU drop counters into `lost` events as they grow.
#[derive(Default)]
struct DropWatch {
    seen: HashMap<u32, u64>,
    total: u64,
}

impl DropWatch {
    async fn report(&mut self, probes: &Probes, tx: &Sender) {
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
