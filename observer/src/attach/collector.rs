//! Each target's collector: takes its finished dumps in order (so the profile cursor moves as the
//! target wrote), reads and validates what they wrote off the async threads, hands the artifacts
//! to the pipeline, waits until they are durable, and reports them. It owns the target's
//! `collect::Sources`.
use super::artifact;
use super::collections::Collecting;
use super::session::Outcome;
use crate::collect;
use crate::collect::Artifact;
use crate::collect::ArtifactMeta;
use crate::collect::FinishedDump;
use crate::collect::ModuleMeta;
use crate::collect::TargetDir;
use crate::discover::Runtime;
use crate::events::{Body, Event};
use crate::runtimes::llvm::path as llvm_path;
use crate::stream::Sender;
use crate::sys::clock;
use crate::{
    collect::{Extracted, PartMeta, Sources},
    layout::artifact::LAYOUT,
    runtimes::Merges,
};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// A finished dump for a target's collector, and the `covobs dump` requests it answers.
pub struct CollectJob {
    pub done: FinishedDump,
    pub requests: Vec<u64>,
}

/// What a collector needs to know about its target.
pub struct CollectorSetup {
    pub root: Arc<TargetDir>,
    /// Where the next dump lands in the LLVM profile file, placed when covobs adopted the
    /// process (or before, for the targets found at start).
    pub llvm: Option<llvm_path::ProfileCursor>,
    pub bisect: Option<crate::runtimes::bisect::coverage::BisectSource>,
    pub gcda: Vec<(String, String)>,
    pub dir: String,
    pub comm: String,
    /// When the process started (CLOCK_BOOTTIME ns): recorded in every artifact.
    pub process_start_ns: Option<u64>,
}

pub(super) async fn target_collector(
    mut jobs: mpsc::UnboundedReceiver<CollectJob>,
    setup: CollectorSetup,
    seq: Arc<AtomicU64>,
    tx: Sender,
    done_tx: mpsc::UnboundedSender<Outcome>,
    collecting: Arc<Collecting>,
) {
    let CollectorSetup {
        root,
        llvm,
        bisect,
        gcda,
        dir,
        comm,
        process_start_ns,
    } = setup;
    // bisect's cursor starts after the files there now: those are dumps from before covobs attached.
    let start_root = root.clone();
    let (mut sources, mut merges) = tokio::task::spawn_blocking(move || {
        let mut bisect = bisect;
        if let Some(b) = bisect.as_mut() {
            b.skip_existing(&start_root, None);
        }
        let sources = Sources { llvm, bisect, gcda };
        let merges = Merges::at_start(&sources, &start_root);
        (sources, merges)
    })
    .await
    .unwrap_or_default();
    // Artifacts handed to the sinks are settled (awaited durable, announced, reported) in order
    // by a task of their own, so that reading the next dump does not wait for this one's sync.
    let (settle, settling) = mpsc::channel(IN_FLIGHT);
    let announcer = tokio::spawn(settle_in_order(
        settling,
        tx.clone(),
        done_tx.clone(),
        collecting.clone(),
    ));
    // Jobs taken from the queue while passing over others, to be collected next, in order.
    let mut next: VecDeque<CollectJob> = VecDeque::new();
    loop {
        // Room among this target's artifacts in flight first; while there is none, the backlog
        // stays bounded and a stop still gives it up.
        while settle.capacity() == 0 && !collecting.abandon.load(Ordering::SeqCst) {
            if next.is_empty() && jobs.len() >= BACKLOG {
                let Some((s, rest)) =
                    pass_over_backlog(None, &mut jobs, sources, &root, &tx, &done_tx).await
                else {
                    return;
                };
                (sources, next) = (s, rest);
            }
            tokio::time::sleep(ROOM_POLL).await;
        }
        let mut job = match next.pop_front() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => break,
            },
        };
        // covobs is stopping and its bound for collecting the backlog has passed: this and what
        // is queued now are given up, counted in one `lost` event (never a silent loss).
        if collecting.abandon.load(Ordering::SeqCst) {
            let mut all = vec![job];
            all.extend(next.drain(..));
            while let Ok(more) = jobs.try_recv() {
                all.push(more);
            }
            let why = "covobs stopped before collecting it (what is still queued at the stop's bound, or at a second Ctrl-C or SIGTERM, is given up)";
            give_up(all, why, &tx, &done_tx).await;
            continue;
        }
        if next.is_empty() && jobs.len() >= BACKLOG {
            let Some((s, mut rest)) =
                pass_over_backlog(Some(job), &mut jobs, sources, &root, &tx, &done_tx).await
            else {
                return;
            };
            sources = s;
            match rest.pop_front() {
                Some(first) => (job, next) = (first, rest),
                None => continue,
            }
        }
        if let Some(why) = job.done.dump.dir_error.clone() {
            let reason = format!(
                "{} dump on thread {} (returned {}): covobs' own failure: {why}",
                job.done.dump.hook.runtime.as_str(),
                job.done.dump.tid,
                job.done.ret
            );
            let d = &job.done.dump;
            let (pid, tid, runtime) = (d.pid, d.tid, d.hook.runtime);
            report(&tx, &done_tx, pid, tid, runtime, job.requests, Err(reason)).await;
            continue;
        }
        let job_root = root.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let root: &TargetDir = job.done.dump.root.as_deref().unwrap_or(&job_root);
            let r = collect::extract(&job.done, root, &mut sources);
            (r, sources, job)
        })
        .await;
        let Ok((extracted, s, job)) = joined else {
            // The blocking task panicked: nothing sensible is left of this target's state.
            return;
        };
        let merge_pool = s.llvm.as_ref().is_some_and(|c| c.expanded.merge_pool);
        sources = s;
        let target = Target {
            dir: &dir,
            comm: &comm,
            process_start_ns,
            merge_pool,
            merges: &mut merges,
        };
        let to = Out {
            seq: &seq,
            tx: &tx,
            done_tx: &done_tx,
            settle: &settle,
            collecting: &collecting,
        };
        deliver(job, extracted, target, to).await;
    }
    drop(settle);
    let _ = announcer.await;
}

/// Dumps of one target waiting to be collected, at most: beyond, the oldest are passed over
/// (see the collector), so memory and the stop's backlog stay bounded however fast a target
/// dumps.
const BACKLOG: usize = 256;

/// How often a collector with no room among its artifacts in flight looks at its backlog.
const ROOM_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Fallen behind a target: its backlog is bounded. `first` and the oldest queued dumps, down to
/// half the bound, are passed over unread where that keeps later dumps right (see
/// `collect::pass_over`), counted lost in one event. Returns the target's sources and the dumps
/// taken that could not be passed over (from the first such one on), to be collected next in
/// order; None if the blocking task panicked (nothing sensible is left of the target's state).
async fn pass_over_backlog(
    first: Option<CollectJob>,
    jobs: &mut mpsc::UnboundedReceiver<CollectJob>,
    sources: Sources,
    root: &Arc<TargetDir>,
    tx: &Sender,
    done_tx: &mpsc::UnboundedSender<Outcome>,
) -> Option<(Sources, VecDeque<CollectJob>)> {
    let mut taken: Vec<CollectJob> = first.into_iter().collect();
    while jobs.len() > BACKLOG / 2 {
        let Ok(job) = jobs.try_recv() else { break };
        taken.push(job);
    }
    let root = root.clone();
    let (passed, mut taken, sources) = tokio::task::spawn_blocking(move || {
        let mut sources = sources;
        let dumps: Vec<&FinishedDump> = taken.iter().map(|j| &j.done).collect();
        let passed = collect::pass_over(&dumps, &root, &mut sources);
        (passed, taken, sources)
    })
    .await
    .ok()?;
    let rest: VecDeque<CollectJob> = taken.split_off(passed).into();
    let why = format!(
        "covobs' own limit: it fell behind this process ({BACKLOG} of its dumps were waiting to be collected) and passed over the oldest unread"
    );
    give_up(taken, &why, tx, done_tx).await;
    Some((sources, rest))
}

/// Artifacts of one target handed to the sinks and not yet settled, at most: enough for a
/// directory sink's group commit to take many at once, few enough to bound their bytes.
const IN_FLIGHT: usize = 64;

/// An artifact on its way to durability, and what its outcome answers.
struct Settling {
    pending: artifact::Pending,
    pid: u32,
    tid: u32,
    runtime: Runtime,
    requests: Vec<u64>,
}

/// Settle a collector's artifacts in the order it sent them: their `artifact` events and
/// outcomes keep the target's sequence.
async fn settle_in_order(
    mut settling: mpsc::Receiver<Settling>,
    tx: Sender,
    done_tx: mpsc::UnboundedSender<Outcome>,
    collecting: Arc<Collecting>,
) {
    while let Some(s) = settling.recv().await {
        let result = s.pending.settle(&tx).await;
        collecting.settling.fetch_sub(1, Ordering::SeqCst);
        report(&tx, &done_tx, s.pid, s.tid, s.runtime, s.requests, result).await;
    }
}

/// The target a collector delivers for.
struct Target<'a> {
    dir: &'a str,
    comm: &'a str,
    process_start_ns: Option<u64>,
    /// Its LLVM profile file is a merge pool.
    merge_pool: bool,
    /// What its files held before the next dump, for the runtimes that merge into them.
    merges: &'a mut Merges,
}

/// Where a collector's artifacts go.
struct Out<'a> {
    seq: &'a AtomicU64,
    tx: &'a Sender,
    done_tx: &'a mpsc::UnboundedSender<Outcome>,
    settle: &'a mpsc::Sender<Settling>,
    collecting: &'a Collecting,
}

/// Hand one dump's artifacts to the pipeline (or report it lost).
async fn deliver(
    job: CollectJob,
    extracted: Result<Vec<Extracted>, collect::CollectError>,
    target: Target<'_>,
    to: Out<'_>,
) {
    let Out {
        seq,
        tx,
        done_tx,
        settle,
        collecting,
    } = to;
    let (dir, comm) = (target.dir, target.comm);
    let CollectJob { done, requests } = job;
    let pid = done.dump.pid;
    let tid = done.dump.tid;
    let hook = done.dump.hook.clone();
    let runtime = hook.runtime;
    let trigger = done.dump.trigger;
    let (start_ns, end_ns, ret) = (done.dump.start_ns, done.end_ns, done.ret);
    let list = match extracted {
        Ok(l) => l,
        Err(e) => {
            // A failure of covobs' own is said to be one, never blamed on the target.
            let whose = if e.is_covobs_failure() {
                "covobs' own failure: "
            } else {
                ""
            };
            let reason = format!(
                "{} dump on thread {tid} (returned {ret}): {whose}{e}",
                runtime.as_str()
            );
            report(tx, done_tx, pid, tid, runtime, requests, Err(reason)).await;
            return;
        }
    };
    for x in list {
        // Found by modification time alone (no write seen), and byte for byte what covobs
        // collected last: the files' time was within the window, the dump wrote nothing.
        if let Some(why) = target.merges.nothing_new(runtime, &x) {
            let reason = format!(
                "{} dump on thread {tid} (returned {ret}): {why}",
                runtime.as_str()
            );
            report(
                tx,
                done_tx,
                pid,
                tid,
                runtime,
                requests.clone(),
                Err(reason),
            )
            .await;
            continue;
        }
        let slot = artifact::Slot::take(seq, runtime);
        let n = slot.seq;
        let valid = x.invalid_reason.is_none();
        let bytes = x.len();
        let checksum = if x.parts.is_empty() {
            collect::checksum(&x.data)
        } else {
            let all: Vec<u8> = x
                .parts
                .iter()
                .flat_map(|(_, d)| d.iter().copied())
                .collect();
            collect::checksum(&all)
        };
        // (name in the artifact directory, path in the target, bytes)
        let parts: Vec<(String, String, bytes::Bytes)> = x
            .parts
            .into_iter()
            .map(|(path, data)| (part_name(&path), path, bytes::Bytes::from(data)))
            .collect();
        // A merge pool's earlier content went into the counters this dump wrote.
        let mut extra = Vec::new();
        let merged = if valid {
            let (base, copy) =
                target
                    .merges
                    .merged(runtime, n, &x.source, &x.data, &parts, target.merge_pool);
            extra.extend(copy.map(|c| ("merged", c)));
            base
        } else {
            None
        };
        let meta = ArtifactMeta {
            seq: n,
            runtime: runtime.into(),
            pid,
            tid: Some(tid),
            comm: Some(comm.to_owned()),
            trigger: Some(trigger.into()),
            start_ns: Some(start_ns),
            end_ns: Some(end_ns),
            collected_ns: Some(clock::boot_ns()),
            bytes: Some(bytes),
            checksum: Some(checksum),
            valid,
            invalid_reason: x.invalid_reason.clone(),
            file: slot.file,
            source: x.source.clone(),
            format: x.format.clone(),
            module: Some(ModuleMeta::from(&*hook.module)),
            kcov: None,
            parts: parts
                .iter()
                .map(|(name, path, data)| PartMeta {
                    file: name.clone(),
                    path: path.clone(),
                    bytes: data.len() as u64,
                })
                .collect(),
            snapshot: None,
            process_start_ns: target.process_start_ns,
            merged,
            layout: LAYOUT,
        };
        let out = Artifact {
            dir: dir.to_owned(),
            meta,
            data: x.data.into(),
            parts: parts
                .into_iter()
                .map(|(name, _, data)| (name, data))
                .collect(),
            extra,
        };
        let valid_as = format!("valid {}", x.format.name);
        match artifact::send(tx, out, None, &valid_as).await {
            Ok(pending) => {
                let s = Settling {
                    pending,
                    pid,
                    tid,
                    runtime,
                    requests: requests.clone(),
                };
                // Room was waited for before this dump was read (a dump of several files may
                // wait here a moment, while the settling task goes on).
                collecting.settling.fetch_add(1, Ordering::SeqCst);
                if let Err(mpsc::error::SendError(s)) = settle.send(s).await {
                    // The settling task is gone (it ends only with this collector).
                    collecting.settling.fetch_sub(1, Ordering::SeqCst);
                    let result = s.pending.settle(tx).await;
                    report(tx, done_tx, pid, tid, runtime, requests.clone(), result).await;
                }
            }
            Err(reason) => {
                report(
                    tx,
                    done_tx,
                    pid,
                    tid,
                    runtime,
                    requests.clone(),
                    Err(reason),
                )
                .await;
            }
        }
    }
}

/// An artifact's outcome, with its `lost` event when it has none.
async fn report(
    tx: &Sender,
    done_tx: &mpsc::UnboundedSender<Outcome>,
    pid: u32,
    tid: u32,
    runtime: Runtime,
    requests: Vec<u64>,
    result: Result<String, String>,
) {
    if let Err(reason) = &result {
        artifact::lost(tx, pid, tid, runtime, reason).await;
    }
    let _ = done_tx.send(Outcome {
        pid,
        requests,
        result,
    });
}

/// Queued dumps covobs gives up unread: one `lost` event per runtime with their count (a
/// backlog of thousands must not become thousands of events at the moment covobs is behind),
/// and each dump's outcome.
async fn give_up(
    jobs: Vec<CollectJob>,
    why: &str,
    tx: &Sender,
    done_tx: &mpsc::UnboundedSender<Outcome>,
) {
    // (runtime, pid, the first dump's thread, count)
    let mut by_runtime: Vec<(Runtime, u32, u32, u64)> = Vec::new();
    for job in jobs {
        let CollectJob { done, requests } = job;
        let (pid, tid, runtime) = (done.dump.pid, done.dump.tid, done.dump.hook.runtime);
        match by_runtime.iter_mut().find(|(r, _, _, _)| *r == runtime) {
            Some((_, _, _, n)) => *n += 1,
            None => by_runtime.push((runtime, pid, tid, 1)),
        }
        let _ = done_tx.send(Outcome {
            pid,
            requests,
            result: Err(format!(
                "{} dump on thread {tid} (returned {}): {why}",
                runtime.as_str(),
                done.ret
            )),
        });
    }
    for (runtime, pid, tid, count) in by_runtime {
        let what = if count == 1 { "dump" } else { "dumps" };
        tx.event(Event {
            ts_ns: clock::boot_ns(),
            pid,
            tid,
            body: Body::Lost {
                reason: format!("{count} {} {what}: {why}", runtime.as_str()),
                what: runtime.as_str().into(),
                count,
            },
        })
        .await;
    }
}

/// A file name for a path inside an artifact directory: gcov's own mangling ('/' -> '#').
fn part_name(path: &str) -> String {
    path.trim_start_matches('/').replace('/', "#")
}
