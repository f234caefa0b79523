//! The one way an artifact is written, for dumps, snapshots and kcov traces alike: numbered in
//! the session's sequence, named `<seq>-<runtime>.<extension>` in its target's directory, sent to
//! the sinks, awaited until durable, then announced by its `artifact` event stamped with the time
//! it became durable. What became of it is the outcome the caller reports.
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    collect::Artifact,
    discover::Runtime,
    events::{Body, Event},
    layout::artifact::Triggered,
    stream::Sender,
    sys::clock,
};

/// An artifact's place in the session: its number and its file name.
pub(crate) struct Slot {
    pub seq: u64,
    /// `<seq>-<runtime>.<extension>`, in its target's directory.
    pub file: String,
}

impl Slot {
    /// The next number of the session's sequence (shared by all its targets).
    pub fn take(seq: &AtomicU64, runtime: Runtime) -> Self {
        let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
        Self {
            seq: n,
            file: format!("{n:06}-{}.{}", runtime.as_str(), runtime.extension()),
        }
    }
}

/// An artifact's name relative to the session directory: `<dir>/<file>`.
pub(crate) fn rel(dir: &str, file: &str) -> String {
    format!("{dir}/{file}")
}

/// Hand an artifact to the sinks and wait until it is durable; then send `before` (an event of
/// the caller's own, such as a snapshot's) and the artifact's `artifact` event, both stamped with
/// that time. Returns the artifact's name relative to the session directory, or why it is lost:
/// not written, or written but invalid (`<name> is not <valid_as>: <why>`).
pub(crate) async fn write(
    tx: &Sender,
    artifact: Artifact,
    before: Option<Body>,
    valid_as: &str,
) -> Result<String, String> {
    match send(tx, artifact, before, valid_as).await {
        Ok(pending) => pending.settle(tx).await,
        Err(why) => Err(why),
    }
}

/// An artifact handed to the sinks, not yet known durable. Settling it waits for the answer and
/// announces it; a collector keeps several in flight so that one artifact's sync does not hold
/// up reading the next dump (the directory sink commits them together).
pub(crate) struct Pending {
    rel: String,
    durable: tokio::sync::oneshot::Receiver<Result<u64, String>>,
    pid: u32,
    tid: u32,
    before: Option<Body>,
    announce: Body,
    end_ns: u64,
    /// Why the artifact is not valid, as `<name> is not <valid_as>: <why>`.
    invalid: Option<String>,
}

/// The first half of [`write`]: hand the artifact to the sinks.
pub(crate) async fn send(
    tx: &Sender,
    artifact: Artifact,
    before: Option<Body>,
    valid_as: &str,
) -> Result<Pending, String> {
    let rel = rel(&artifact.dir, &artifact.meta.file);
    let m = &artifact.meta;
    // What the `artifact` event says, taken before the artifact moves to the sinks. The metadata
    // may leave these out for readers of hand-made directories; covobs always fills them.
    let (Some(tid), Some(Triggered::Known(trigger)), Some(end_ns), Some(bytes)) =
        (m.tid, m.trigger.clone(), m.end_ns, m.bytes)
    else {
        return Err(format!(
            "writing {rel}: covobs' own failure: its metadata lacks the thread, trigger, end or size"
        ));
    };
    let invalid = m
        .invalid_reason
        .as_ref()
        .map(|why| format!("{rel} is not {valid_as}: {why}"));
    let announce = Body::Artifact {
        seq: m.seq,
        runtime: m.runtime.clone(),
        file: rel.clone(),
        bytes,
        valid: m.valid,
        source_path: m.source.path.clone(),
        offset: m.source.offset,
        trigger,
        // Set when it is durable.
        latency_ns: 0,
    };
    let pid = m.pid;
    let durable = tx.artifact(artifact).await;
    Ok(Pending {
        rel,
        durable,
        pid,
        tid,
        before,
        announce,
        end_ns,
        invalid,
    })
}

impl Pending {
    /// The second half of [`write`]: wait until the artifact is durable, then announce it.
    pub(crate) async fn settle(self, tx: &Sender) -> Result<String, String> {
        let Self {
            rel,
            durable,
            pid,
            tid,
            before,
            mut announce,
            end_ns,
            invalid,
        } = self;
        let at = match durable.await {
            Ok(Ok(at)) => at,
            Ok(Err(e)) => return Err(format!("writing {rel}: {e}")),
            Err(_) => return Err(format!("writing {rel}: the output pipeline closed")),
        };
        if let Body::Artifact { latency_ns, .. } = &mut announce {
            *latency_ns = at.saturating_sub(end_ns);
        }
        for body in before.into_iter().chain([announce]) {
            tx.event(Event {
                ts_ns: at,
                pid,
                tid,
                body,
            })
            .await;
        }
        match invalid {
            None => Ok(rel),
            Some(why) => Err(why),
        }
    }
}

/// A dump's `lost` event: what the runtime's dump would have given is not an artifact.
pub(crate) async fn lost(tx: &Sender, pid: u32, tid: u32, runtime: Runtime, reason: &str) {
    tx.event(Event {
        ts_ns: clock::boot_ns(),
        pid,
        tid,
        body: Body::Lost {
            reason: reason.to_owned(),
            what: runtime.as_str().into(),
            count: 1,
        },
    })
    .await;
}
