//! Each target's collector: takes its finished dumps in order (so the profile cursor moves as the
//! target wrote), reads and validates what they wrote off the async threads, hands the artifacts
//! to the pipeline, waits until they are durable, and reports them. It owns the target's
//! `collect::Sources`.
use super::{artifact, session::*};
use crate::{
    collect::{Extracted, LocatedBy, PartMeta, Sources},
    layout::artifact::LAYOUT,
};

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
    pub bisect: Option<collect::bisect::BisectSource>,
    pub gcda: Vec<(String, String)>,
    pub dir: String,
    pub comm: String,
    /// When the process started (CLOCK_BOOTTIME ns): recorded in every artifact.
    pub process_start_ns: Option<u64>,
}

/// What an LLVM merge-pool file (`%m`) held after the last dump this collector saw (or when it
/// attached): the runtime merges it into its counters before its next write.
struct Pool {
    path: String,
    ino: Option<u64>,
    bytes: Vec<u8>,
    /// The artifact these bytes are, if covobs collected them.
    seq: Option<u64>,
}

pub(super) async fn target_collector(
    mut jobs: mpsc::UnboundedReceiver<CollectJob>,
    setup: CollectorSetup,
    seq: Arc<AtomicU64>,
    tx: Sender,
    done_tx: mpsc::UnboundedSender<Outcome>,
    abandon: Arc<AtomicBool>,
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
    let (mut sources, mut pool, mut gcda_before) = tokio::task::spawn_blocking(move || {
        let mut bisect = bisect;
        if let Some(b) = bisect.as_mut() {
            b.skip_existing(&start_root, None);
        }
        let pool = llvm.as_ref().and_then(|c| pool_now(c, &start_root));
        let before = super::gcda_before::GcdaBefore::at_start(&start_root, &gcda);
        (Sources { llvm, bisect, gcda }, pool, before)
    })
    .await
    .unwrap_or_default();
    while let Some(job) = jobs.recv().await {
        // covobs is stopping and its bound for collecting the backlog has passed: what is still
        // queued is given up, each dump with its `lost` event (never a silent loss).
        if abandon.load(Ordering::SeqCst) {
            give_up(job, &tx, &done_tx).await;
            continue;
        }
        if let Some(why) = job.done.dump.dir_error.clone() {
            let reason = format!(
                "{} dump on thread {} (returned {}): covobs' own failure: {why}",
                job.done.dump.hook.runtime.as_str(),
                job.done.dump.tid,
                job.done.ret
            );
            artifact::lost(
                &tx,
                job.done.dump.pid,
                job.done.dump.tid,
                job.done.dump.hook.runtime,
                &reason,
            )
            .await;
            let _ = done_tx.send(Outcome {
                pid: job.done.dump.pid,
                requests: job.requests,
                result: Err(reason),
            });
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
            pool: merge_pool.then_some(&mut pool),
            gcda_before: &mut gcda_before,
        };
        deliver(job, extracted, target, &seq, &tx, &done_tx).await;
    }
}

/// What a merge-pool file holds now (before the first dump covobs collects from it).
fn pool_now(c: &llvm_path::ProfileCursor, root: &TargetDir) -> Option<Pool> {
    let path = c.path.clone()?;
    let bytes = c.pool_content(root)?;
    Some(Pool {
        path,
        ino: c.ino,
        bytes,
        seq: None,
    })
}

/// The target a collector delivers for.
struct Target<'a> {
    dir: &'a str,
    comm: &'a str,
    process_start_ns: Option<u64>,
    /// Its LLVM profile file is a merge pool: what it held before the next dump.
    pool: Option<&'a mut Option<Pool>>,
    /// What its .gcda files held before the next gcov dump (libgcov merges it).
    gcda_before: &'a mut super::gcda_before::GcdaBefore,
}

/// Hand one dump's artifacts to the pipeline (or report it lost).
async fn deliver(
    job: CollectJob,
    extracted: Result<Vec<Extracted>, collect::CollectError>,
    mut target: Target<'_>,
    seq: &AtomicU64,
    tx: &Sender,
    done_tx: &mpsc::UnboundedSender<Outcome>,
) {
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
            artifact::lost(tx, pid, tid, runtime, &reason).await;
            let _ = done_tx.send(Outcome {
                pid,
                requests,
                result: Err(reason),
            });
            return;
        }
    };
    for x in list {
        // Found by modification time alone (no write seen), and byte for byte what covobs
        // collected last: the files' time was within the window, the dump wrote nothing.
        if runtime == Runtime::Gcov
            && x.source.located_by == Some(LocatedBy::Environment)
            && target.gcda_before.unchanged(&x.parts)
        {
            let reason = format!(
                "gcov dump on thread {tid} (returned {ret}): the gcov runtime wrote nothing new: GCC's runtime dumps once until __gcov_reset() is called"
            );
            artifact::lost(tx, pid, tid, runtime, &reason).await;
            let _ = done_tx.send(Outcome {
                pid,
                requests: requests.clone(),
                result: Err(reason),
            });
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
        let merged = match target.pool.as_deref_mut() {
            Some(pool) if runtime == Runtime::Llvm && valid => {
                // The same file: by name, or by inode (the kernel sees the name the target
                // opened, maybe relative).
                let before = pool.take().filter(|p| {
                    p.path == x.source.path || (p.ino.is_some() && p.ino == x.source.inode)
                });
                *pool = Some(Pool {
                    path: x.source.path.clone(),
                    ino: x.source.inode,
                    bytes: x.data.clone(),
                    seq: Some(n),
                });
                before.map(|p| {
                    let base = collect::MergedBase {
                        seq: p.seq,
                        file: p.seq.is_none().then(|| format!("{n:06}-llvm.merged")),
                        bytes: Some(p.bytes.len() as u64),
                        checksum: Some(collect::checksum(&p.bytes)),
                        parts: Vec::new(),
                    };
                    if p.seq.is_none() {
                        extra.push(("merged", bytes::Bytes::from(p.bytes)));
                    }
                    base
                })
            }
            _ if runtime == Runtime::Gcov && valid => {
                let (base, copy) = target.gcda_before.merged(n, &parts);
                if let Some(copy) = copy {
                    extra.push(("merged", bytes::Bytes::from(copy)));
                }
                base
            }
            _ => None,
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
        let result = artifact::write(tx, out, None, &valid_as).await;
        if let Err(reason) = &result {
            artifact::lost(tx, pid, tid, runtime, reason).await;
        }
        let _ = done_tx.send(Outcome {
            pid,
            requests: requests.clone(),
            result,
        });
    }
}

/// A queued dump covobs stopped before collecting.
async fn give_up(job: CollectJob, tx: &Sender, done_tx: &mpsc::UnboundedSender<Outcome>) {
    let CollectJob { done, requests } = job;
    let (pid, tid, runtime) = (done.dump.pid, done.dump.tid, done.dump.hook.runtime);
    let reason = format!(
        "{} dump on thread {tid} (returned {}): covobs stopped before collecting it (what is still queued at the stop's bound, or at a second Ctrl-C or SIGTERM, is given up)",
        runtime.as_str(),
        done.ret,
    );
    artifact::lost(tx, pid, tid, runtime, &reason).await;
    let _ = done_tx.send(Outcome {
        pid,
        requests,
        result: Err(reason),
    });
}

/// A file name for a path inside an artifact directory: gcov's own mangling ('/' -> '#').
fn part_name(path: &str) -> String {
    path.trim_start_matches('/').replace('/', "#")
}
