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
    let (pid, invalid) = (m.pid, m.invalid_reason.clone());
    let (seq, runtime, valid) = (m.seq, m.runtime.clone(), m.valid);
    let (source_path, offset) = (m.source.path.clone(), m.source.offset);
    let file = rel.clone();
    let announce = move |at: u64| Body::Artifact {
        seq,
        runtime,
        file,
        bytes,
        valid,
        source_path,
        offset,
        trigger,
        latency_ns: at.saturating_sub(end_ns),
    };
    let durable = tx.artifact(artifact).await;
    let at = match durable.await {
        Ok(Ok(at)) => at,
        Ok(Err(e)) => return Err(format!("writing {rel}: {e}")),
        Err(_) => return Err(format!("writing {rel}: the output pipeline closed")),
    };
    for body in before.into_iter().chain([announce(at)]) {
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
        Some(why) => Err(format!("{rel} is not {valid_as}: {why}")),
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
