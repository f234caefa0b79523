//! Final snapshots: when the last thread of a registered process exits, copy its coverage
//! counters into the `SNAPSHOTS` ring buffer before the kernel frees its memory. Userspace is too
//! late by then; here the copy is made by the exiting thread itself, inside `do_exit()`, where (on
//! kernels that trace `sched_process_exit` before `exit_mm()`) its address space still exists and
//! no user code of the process runs any more.
use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_user},
    macros::{map, raw_tracepoint},
    maps::{HashMap, RingBuf},
    programs::RawTracePointContext,
};
use covobs_common::{SnapChunkRecord, SnapEndRecord, SnapRegions, kind, snap};

use crate::maps::{config, current, header};

/// Processes to copy at exit: tgid -> the ranges (set by userspace).
#[map]
pub static SNAP_REGIONS: HashMap<u32, SnapRegions> = HashMap::with_max_entries(4096, 0);

/// Final snapshot chunks for userspace. Userspace sets the real size with `map_max_entries`.
#[map]
pub static SNAPSHOTS: RingBuf = RingBuf::with_byte_size(1 << 16, 0);

const PAGE: u64 = snap::CHUNK_BYTES as u64;

/// The state one region's copy loop carries between iterations.
#[repr(C)]
struct Copy {
    tgid: u32,
    tid: u32,
    generation: u64,
    addr: u64,
    len: u64,
    region: u32,
    chunks: u32,
    failed: u32,
    dropped: u32,
}

/// `sched_process_exit(struct task_struct *p, bool group_dead)`, as a raw tracepoint: nothing is
/// built for the exits of the many processes nobody registered.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn covobs_final_snapshot(ctx: RawTracePointContext) -> u32 {
    let group_dead: u64 = ctx.arg(1);
    final_snapshot(Some(group_dead & 0xff != 0))
}

/// The same for kernels whose `sched_process_exit` has only the task argument (no `group_dead`):
/// a program that reads a second argument cannot attach there.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn covobs_final_snapshot_leader(_ctx: RawTracePointContext) -> u32 {
    final_snapshot(None)
}

#[inline(always)]
fn final_snapshot(group_dead: Option<bool>) -> u32 {
    let Some(cfg) = config() else { return 0 };
    // Registered by covobs under its own PID namespace's ids (a process it cannot see has none).
    let Some(cur) = current(cfg) else { return 0 };
    let Some(regions) = SNAP_REGIONS.get_ptr(&cur.tgid) else {
        return 0;
    };
    // Without `group_dead` the leader is the best guess (it usually exits last).
    let last_thread = group_dead.unwrap_or(cur.tid == cur.tgid);
    if !last_thread {
        return 0;
    }
    // SAFETY: a map value pointer from a successful lookup, valid for this program run; the
    // fields are plain integers copied out before the entry is removed.
    let (generation, count) = unsafe { ((*regions).generation, (*regions).count) };
    let mut copy = Copy {
        tgid: cur.tgid,
        tid: cur.tid,
        generation,
        addr: 0,
        len: 0,
        region: 0,
        chunks: 0,
        failed: 0,
        dropped: 0,
    };
    for i in 0..snap::MAX_REGIONS {
        if i as u32 >= count {
            break;
        }
        // SAFETY: as above; `i` is below the array's length.
        let (addr, len) = unsafe { ((*regions).regions[i].addr, (*regions).regions[i].len) };
        if len == 0 {
            continue;
        }
        copy.addr = addr;
        copy.len = len;
        copy.region = i as u32;
        let pages = ((addr & (PAGE - 1)) + len).div_ceil(PAGE);
        // SAFETY: bpf_loop calls `copy_page` (a static BPF subprogram) with a pointer to `copy`,
        // which lives on this stack frame for the whole call.
        unsafe {
            bpf_loop(
                pages as u32,
                copy_page as *mut c_void,
                addr_of_mut!(copy).cast(),
                0,
            )
        };
    }
    let _ = SNAP_REGIONS.remove(&cur.tgid);
    if let Some(mut entry) = SNAPSHOTS.reserve::<SnapEndRecord>(0) {
        entry.write(SnapEndRecord {
            hdr: header(kind::SNAP_END, copy.tgid, copy.tid),
            generation,
            regions: count,
            chunks: copy.chunks,
            failed: copy.failed,
            dropped: copy.dropped,
            hook: snap::HOOK_SCHED_PROCESS_EXIT,
            _pad: 0,
        });
        entry.submit(0);
    }
    0
}

/// One page of the current region: chunk `index` covers the bytes of the region in the
/// index-th page it touches.
#[inline(never)]
extern "C" fn copy_page(index: u32, ctx: *mut c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer given above: a live `Copy` on the caller's stack.
    let c = unsafe { &mut *ctx.cast::<Copy>() };
    let page_start = (c.addr & !(PAGE - 1)) + u64::from(index) * PAGE;
    let start = if page_start < c.addr {
        c.addr
    } else {
        page_start
    };
    let end = c.addr + c.len;
    if start >= end {
        return 1;
    }
    let len = (page_start + PAGE).min(end) - start;
    if len == 0 || len > PAGE {
        return 1;
    }
    let Some(mut entry) = SNAPSHOTS.reserve::<SnapChunkRecord>(0) else {
        c.dropped += 1;
        return 0;
    };
    let rec = entry.as_mut_ptr();
    // SAFETY: `rec` is a reserved ring-buffer slot of size_of::<SnapChunkRecord>(); fields are
    // written through raw pointers; the helper writes at most `len` <= CHUNK_BYTES bytes into
    // `data` and zero-fills it when the user read fails.
    let error = unsafe {
        addr_of_mut!((*rec).hdr).write(header(kind::SNAP_CHUNK, c.tgid, c.tid));
        addr_of_mut!((*rec).generation).write(c.generation);
        addr_of_mut!((*rec).offset).write(start - c.addr);
        addr_of_mut!((*rec).region).write(c.region);
        addr_of_mut!((*rec).len).write(len as u32);
        addr_of_mut!((*rec)._pad).write(0);
        let ret = bpf_probe_read_user(
            addr_of_mut!((*rec).data).cast(),
            len as u32,
            start as *const c_void,
        );
        addr_of_mut!((*rec).error).write(ret as i32);
        ret
    };
    c.chunks += 1;
    if error != 0 {
        c.failed += 1;
    }
    entry.submit(0);
    0
}
