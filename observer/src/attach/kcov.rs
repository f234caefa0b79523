//! The session's kernel coverage: `kcov` events into the stream, and each captured trace (a
//! KCOV_DISABLE copy, a buffer read at its thread's exit or at detach) into an artifact
//! `<pid>-<comm>/<seq>-kcov.kcov` with its metadata, written off the event loop like the
//! LLVM collections.
use std::sync::{Arc, atomic::AtomicU64};

use tokio::sync::mpsc;

use super::{
    artifact::{self, Slot},
    session::Outcome,
};
use crate::{
    collect::{self, Artifact, ArtifactMeta, FormatInfo, LocatedBy, ModuleMeta, SourceInfo},
    discover::Runtime,
    kcov::{Capture, DEVICE},
    layout::artifact::LAYOUT,
    stream::Sender,
    sys::clock,
};

/// The `kcov` part of an artifact's metadata.
pub use crate::layout::artifact::KcovMeta;

/// Write a capture as an artifact; the outcome goes to `done_tx` like a collection's.
pub fn deliver(
    capture: Capture,
    dir: String,
    seq: Arc<AtomicU64>,
    tx: Sender,
    done_tx: mpsc::UnboundedSender<Outcome>,
) {
    tokio::spawn(async move {
        let pid = capture.pid;
        let tid = capture.tid;
        let slot = Slot::take(&seq, Runtime::Kcov);
        let data = capture.trace.to_bytes();
        let unique = {
            let mut pcs: Vec<u64> = capture.trace.pcs().collect();
            pcs.sort_unstable();
            pcs.dedup();
            pcs.len() as u64
        };
        let meta = ArtifactMeta {
            seq: slot.seq,
            runtime: Runtime::Kcov.into(),
            pid,
            tid: Some(tid),
            comm: Some(capture.comm.clone()),
            trigger: Some(capture.trigger.into()),
            start_ns: Some(capture.start_ns),
            end_ns: Some(capture.end_ns),
            collected_ns: Some(clock::boot_ns()),
            bytes: Some(data.len() as u64),
            checksum: Some(collect::checksum(&data)),
            valid: true,
            invalid_reason: None,
            file: slot.file,
            source: SourceInfo {
                path: DEVICE.into(),
                offset: 0,
                inode: None,
                dev: None,
                located_by: Some(if capture.exact {
                    LocatedBy::Kernel
                } else {
                    LocatedBy::View
                }),
            },
            format: FormatInfo {
                name: capture.trace.mode.format_name().into(),
                version: 1,
            },
            module: Some(ModuleMeta {
                path: Some("vmlinux".into()),
                build_id: capture.kernel.build_id.clone(),
                copy: None,
                producer: Some(format!("Linux {}", capture.kernel.release)),
                llvm_major: None,
            }),
            kcov: Some(KcovMeta {
                mode: capture.trace.mode,
                entries: capture.trace.count(),
                unique,
                exact: capture.exact,
                kernel_release: capture.kernel.release.clone(),
            }),
            snapshot: None,
            parts: Vec::new(),
            process_start_ns: None,
            merged: None,
            layout: LAYOUT,
        };
        let out = Artifact {
            dir,
            meta,
            data: data.into(),
            parts: Vec::new(),
            extra: Vec::new(),
        };
        // Always valid: a trace is whatever the kernel recorded.
        let result = artifact::write(&tx, out, None, "a kcov trace").await;
        if let Err(reason) = &result {
            artifact::lost(&tx, pid, tid, Runtime::Kcov, reason).await;
        }
        let _ = done_tx.send(Outcome {
            pid,
            requests: Vec::new(),
            result,
        });
    });
}
