//! kcov users among the watched threads: a uprobe on the C library's `ioctl()`, attached per
//! watched process (only that process pays for it), sees KCOV_INIT_TRACE / KCOV_ENABLE /
//! KCOV_DISABLE / KCOV_REMOTE_ENABLE before the kernel runs them, in the calling thread.
//!
//! Why a per-process uprobe: kcov's ioctls come from the thread being traced, and the moment
//! that matters, KCOV_DISABLE, must be seen before the thread enters the syscall, while its
//! buffer still holds what the program itself saw. A syscall tracepoint would see every system
//! call of every task on the machine (the slow path for all of them); a trampoline on a kernel
//! function would record its own PCs in the buffer of every kcov user on the machine.
//!
//! What the thread had in its buffer when it called ioctl(): the uprobe's trap is itself traced
//! by kcov (the kernel records the PCs of the trap's handling before this program runs), so
//! word 0 has grown by then. Those PCs start with a known one (`KcovConfig::anchor_pc`, learned
//! by calibration on a covobs thread): the count the program saw is the index of the last
//! occurrence of that PC, minus one. At KCOV_DISABLE the buffer up to that count is copied
//! here, from the kernel's own mapping of it, into the ring buffer in page-sized chunks: the
//! thread cannot reset or reuse it before the copy is done.
use core::ptr::addr_of_mut;

use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_ktime_get_ns,
        generated::{
            bpf_get_current_task, bpf_loop, bpf_probe_read_kernel as probe_read_kernel_raw,
            bpf_probe_read_user as bpf_probe_read_user_raw,
        },
    },
    macros::uprobe,
    programs::ProbeContext,
};
use covobs_common::{Config, KcovChunkRecord, KcovRecord, kcov, kcov_flags, kind};

use crate::maps::{config, current, header, reserve, tgid_watched};

/// A kernel word, or 0 when it cannot be read. No branch on the helper's result: the helper
/// zeroes the destination on failure, and a program whose reads each fork two verifier states
/// (read / not read) is exponential to verify on older kernels.
#[inline(always)]
fn rd64(addr: u64) -> u64 {
    let mut v = 0u64;
    // SAFETY: the helper writes at most 8 bytes into `v` and fails cleanly on a bad address.
    unsafe { probe_read_kernel_raw((&mut v as *mut u64).cast(), 8, addr as *const c_void) };
    v
}

#[inline(always)]
fn rd32(addr: u64) -> u32 {
    let mut v = 0u32;
    // SAFETY: as in `rd64`.
    unsafe { probe_read_kernel_raw((&mut v as *mut u32).cast(), 4, addr as *const c_void) };
    v
}

/// A word of the caller's memory, or 0.
#[inline(always)]
fn rd_user<T: Default>(addr: u64) -> T {
    let mut v = T::default();
    // SAFETY: the helper writes at most size_of::<T>() bytes into `v`, failing cleanly.
    unsafe {
        bpf_probe_read_user_raw(
            (&mut v as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const c_void,
        )
    };
    v
}

/// current->files->fdt->fd[fd]: the `struct file *` behind a descriptor of this thread (0
/// when there is none).
#[inline(always)]
fn file_of(cfg: &Config, fd: i32) -> u64 {
    let k = &cfg.kernel;
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files = rd64(task + u64::from(k.task_files));
    let fdt = rd64(files + u64::from(k.files_fdt));
    let max_fds = rd32(fdt + u64::from(k.fdt_max_fds));
    let fds = rd64(fdt + u64::from(k.fdt_fd));
    let index = if fd >= 0 && (fd as u32) < max_fds {
        fd as u64
    } else {
        // Out of the table: a read that fails (no file).
        u64::MAX / 16
    };
    rd64(fds.wrapping_add(index * 8))
}

/// Whether `file` is /sys/kernel/debug/kcov (its inode and device).
#[inline(always)]
fn is_kcov(cfg: &Config, file: u64) -> bool {
    let k = &cfg.kernel;
    let inode = rd64(file + u64::from(k.file_f_inode));
    let ino = rd64(inode + u64::from(k.inode_i_ino));
    let sb = rd64(inode + u64::from(k.inode_i_sb));
    let dev = rd32(sb + u64::from(k.sb_s_dev));
    file != 0 && ino == cfg.kcov.ino && dev == cfg.kcov.dev
}

/// State of the backward search for the anchor (a `bpf_loop` callback's context).
#[repr(C)]
struct Scan {
    area: u64,
    last: u64,
    stride: u64,
    offset: u64,
    anchor: u64,
    found: u64,
}

/// One step back: entry `last - back`. Loops run through `bpf_loop`, whose callback the
/// verifier checks once, not once per iteration.
#[inline(never)]
extern "C" fn scan_step(back: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Scan` on the caller's stack that bpf_loop passes back.
    let s = unsafe { &mut *ctx.cast::<Scan>() };
    if back >= s.last {
        return 1;
    }
    let i = s.last - back;
    if rd64(s.area + ((i - 1) * s.stride + s.offset) * 8) == s.anchor {
        s.found = i;
        return 1;
    }
    0
}

/// The last index `i` in `[1, last]` (at most `window` back) whose word at `area[(i - 1) *
/// stride + offset]` is `anchor`.
#[inline(always)]
fn find_anchor(
    area: u64,
    last: u64,
    stride: u64,
    offset: u64,
    anchor: u64,
    window: u32,
) -> Option<u64> {
    if anchor == 0 {
        return None;
    }
    let window = match window {
        0 => kcov::ANCHOR_WINDOW,
        w if w > kcov::MAX_ANCHOR_WINDOW => kcov::MAX_ANCHOR_WINDOW,
        w => w,
    };
    let mut scan = Scan {
        area,
        last,
        stride,
        offset,
        anchor,
        found: 0,
    };
    // SAFETY: bpf_loop calls `scan_step` at most `window` times with a pointer to `scan`,
    // which outlives the call.
    unsafe {
        bpf_loop(
            window,
            scan_step as *mut c_void,
            (&mut scan as *mut Scan).cast(),
            0,
        )
    };
    (scan.found != 0).then_some(scan.found)
}

/// State of the chunk copy (a `bpf_loop` callback's context).
#[repr(C)]
struct Copy {
    area: u64,
    words: u64,
    event_id: u64,
    tgid: u32,
    tid: u32,
    copied: u64,
    chunks: u32,
    failed: u32,
}

/// Copy chunk `index` of the buffer into the ring buffer.
#[inline(never)]
extern "C" fn copy_step(index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `Copy` on the caller's stack that bpf_loop passes back.
    let c = unsafe { &mut *ctx.cast::<Copy>() };
    let chunk = kcov::CHUNK_WORDS as u64;
    let start = index * chunk;
    if start >= c.words {
        return 1;
    }
    let Some(mut entry) = reserve::<KcovChunkRecord>(kind::KCOV_CHUNK) else {
        c.failed = 1;
        return 1;
    };
    let left = c.words - start;
    let n = if left < chunk { left } else { chunk };
    let dst = entry.as_mut_ptr();
    // SAFETY: `dst` is a reserved ring-buffer slot of the record's size; fields are written
    // through raw pointers. The copy reads one whole page of the buffer (chunks are
    // page-aligned and the buffer is page-rounded), with the helper, which fails cleanly.
    let ok = unsafe {
        addr_of_mut!((*dst).hdr).write(header(kind::KCOV_CHUNK, c.tgid, c.tid));
        addr_of_mut!((*dst).event_id).write(c.event_id);
        addr_of_mut!((*dst).index).write(index as u32);
        addr_of_mut!((*dst).words).write(n as u32);
        probe_read_kernel_raw(
            addr_of_mut!((*dst).data).cast::<c_void>(),
            (kcov::CHUNK_WORDS * 8) as u32,
            (c.area + start * 8) as *const c_void,
        ) == 0
    };
    if !ok {
        entry.discard(0);
        c.failed = 1;
        return 1;
    }
    entry.submit(0);
    c.copied = start + n;
    c.chunks = index as u32 + 1;
    0
}

#[uprobe]
pub fn covobs_kcov_ioctl(ctx: ProbeContext) -> u32 {
    let _ = on_ioctl(&ctx);
    0
}

/// The same program as an uprobe_multi link (Linux 6.6+): closing one waits for no lock shared
/// with every other perf probe, so covobs' links close together (`probes::release`).
#[uprobe(multi)]
pub fn covobs_kcov_ioctl_multi(ctx: ProbeContext) -> u32 {
    let _ = on_ioctl(&ctx);
    0
}

fn on_ioctl(ctx: &ProbeContext) -> Option<()> {
    let cmd = ctx.arg::<u64>(1)? as u32;
    if cmd != kcov::INIT_TRACE
        && cmd != kcov::ENABLE
        && cmd != kcov::DISABLE
        && cmd != kcov::REMOTE_ENABLE
    {
        return None;
    }
    let cfg = config()?;
    let cur = current(cfg)?;
    let calibrating = cfg.kcov.calibration_tid != 0 && cur.tid == cfg.kcov.calibration_tid;
    if !calibrating && tgid_watched(cur.tgid).is_none() {
        return None;
    }
    let fd = ctx.arg::<u64>(0)? as i32;
    let arg = ctx.arg::<u64>(2)?;
    let mut rec = KcovRecord {
        hdr: header(kind::KCOV_IOCTL, cur.tgid, cur.tid),
        arg,
        cmd,
        fd,
        // SAFETY: helper without arguments.
        event_id: unsafe { bpf_ktime_get_ns() },
        ..Default::default()
    };
    if calibrating {
        rec.flags |= kcov_flags::CALIBRATION;
    }
    if cmd == kcov::REMOTE_ENABLE {
        // struct kcov_remote_arg { u32 trace_mode; u32 area_size; u64 num_handles;
        // u64 common_handle; u64 handles[]; }
        rec.remote_mode = rd_user::<u32>(arg);
        rec.remote_area_size = rd_user::<u32>(arg + 4);
        rec.remote_handles = rd_user::<u64>(arg + 8);
        rec.remote_common_handle = rd_user::<u64>(arg + 16);
    }
    let k = &cfg.kcov;
    let mut area = 0;
    if k.valid != 0 && cfg.kernel.valid != 0 {
        let file = file_of(cfg, fd);
        if !is_kcov(cfg, file) {
            // Not kcov's file: another driver's ioctl with the same number.
            return None;
        }
        rec.flags |= kcov_flags::IS_KCOV;
        let obj = rd64(file + u64::from(k.file_private_data));
        rec.kcov = obj;
        rec.mode = rd32(obj + u64::from(k.kcov_mode));
        rec.size = u64::from(rd32(obj + u64::from(k.kcov_size)));
        area = rd64(obj + u64::from(k.kcov_area));
        rec.raw_count = rd64(area);
        rec.count = rec.raw_count;
    }
    if cmd == kcov::DISABLE && area != 0 {
        copy_buffer(&mut rec, area, cfg);
    }
    let mut entry = reserve::<KcovRecord>(kind::KCOV_IOCTL)?;
    entry.write(rec);
    entry.submit(0);
    Some(())
}

/// Find the count the program saw, then copy the buffer up to it into chunks.
#[inline(always)]
fn copy_buffer(rec: &mut KcovRecord, area: u64, cfg: &Config) {
    let (stride, anchor) = match rec.mode {
        kcov::MODE_TRACE_PC => (1, cfg.kcov.anchor_pc),
        kcov::MODE_TRACE_CMP => (4, cfg.kcov.anchor_cmp),
        _ => return,
    };
    // Entries (records) that fit: the buffer holds `size` words, word 0 being the count.
    let capacity = rec.size.saturating_sub(1) / stride;
    let last = if rec.raw_count < capacity {
        rec.raw_count
    } else {
        capacity
    };
    // The ip of a comparison record is its 4th word.
    let offset = if stride == 4 { 4 } else { 1 };
    if let Some(i) = find_anchor(area, last, stride, offset, anchor, cfg.kcov.anchor_window) {
        rec.count = i - 1;
        rec.flags |= kcov_flags::EXACT;
    } else {
        rec.count = last;
    }
    let words = 1 + rec.count * stride;
    let mut copy = Copy {
        area,
        words,
        event_id: rec.event_id,
        tgid: rec.hdr.tgid,
        tid: rec.hdr.tid,
        copied: 0,
        chunks: 0,
        failed: 0,
    };
    // SAFETY: bpf_loop calls `copy_step` at most MAX_CHUNKS times with a pointer to `copy`,
    // which outlives the call.
    unsafe {
        bpf_loop(
            kcov::MAX_CHUNKS,
            copy_step as *mut c_void,
            (&mut copy as *mut Copy).cast(),
            0,
        )
    };
    rec.words = copy.copied;
    rec.chunks = copy.chunks;
    if copy.copied < words {
        rec.flags |= kcov_flags::TRUNCATED;
    }
}
