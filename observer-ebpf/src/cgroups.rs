//! Processes moved into or out of the selected cgroup (`--cgroup`): container runtimes often
//! move a process into its cgroup without an exec afterwards, and a watched process may be moved
//! out while covobs runs.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use covobs_common::{COMM_LEN, TaskRecord, kind, watch};

use crate::{
    maps::{
        WATCHED_TGIDS, WATCHED_TIDS, config, header, reserve, selected_cgroup, selects,
        tgid_watched,
    },
    ns,
};

/// `cgroup_attach_task(struct cgroup *dst, const char *path, struct task_struct *task,
/// bool threadgroup)`, for each task that migrates. Attached only while a cgroup is selected.
#[raw_tracepoint(tracepoint = "cgroup_attach_task")]
pub fn covobs_cgroup_attach(ctx: RawTracePointContext) -> u32 {
    let _ = on_attach(&ctx);
    0
}

fn on_attach(ctx: &RawTracePointContext) -> Result<(), i64> {
    let cfg = config().ok_or(0)?;
    let id = selected_cgroup().ok_or(0)?;
    let dst: u64 = ctx.arg(0);
    let task: u64 = ctx.arg(2);
    let ids = ns::task_ids(cfg, task).ok_or(0)?;
    if ids.tgid == cfg.self_tgid {
        return Ok(());
    }
    let inside = ns::cgroup_under(cfg, dst, id);
    let comm = ns::task_comm(cfg, task);
    let entered = match tgid_watched(ids.tgid) {
        Some(flags) => {
            if inside {
                // Another thread of a process already watched.
                WATCHED_TIDS.insert(&ids.tid, &ids.tgid, 0)?;
                return Ok(());
            }
            // Only processes watched for being in the cgroup leave it; the process moves with
            // its leader.
            if flags & (watch::CGROUP | watch::BY_NAME) == 0 || ids.tid != ids.tgid {
                return Ok(());
            }
            0
        }
        None => {
            // Decided on the leader; userspace lists the other threads when it adopts the process.
            if !inside || ids.tid != ids.tgid {
                return Ok(());
            }
            let Some(flags) = selects(&comm, |_| true) else {
                return Ok(());
            };
            WATCHED_TGIDS.insert(&ids.tgid, &flags, 0)?;
            WATCHED_TIDS.insert(&ids.tid, &ids.tgid, 0)?;
            1
        }
    };
    let Some(mut entry) = reserve::<TaskRecord>(kind::CGROUP_MOVE) else {
        return Ok(());
    };
    entry.write(TaskRecord {
        hdr: header(kind::CGROUP_MOVE, ids.tgid, ids.tid),
        other_tgid: ids.tgid,
        other_tid: ids.tid,
        flags: entered,
        comm,
        comm2: [0; COMM_LEN],
    });
    entry.submit(0);
    Ok(())
}
