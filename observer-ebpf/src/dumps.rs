//! Dumps of coverage runtimes: a uprobe/uretprobe pair on each dump function (a cookie per module
//! and hook), and, while a thread is inside a dump, the files it opens and writes.
use core::ptr::addr_of_mut;

use aya_ebpf::{
    EbpfContext as _,
    cty::c_void,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_attach_cookie, bpf_get_current_task, bpf_probe_read_user_str},
    },
    macros::{map, tracepoint, uprobe, uretprobe},
    maps::HashMap,
    programs::{ProbeContext, RetProbeContext, TracePointContext},
};
use covobs_common::{
    Config, DumpRecord, FileIdentity, FileOpenRecord, FileWriteRecord, PATH_LEN, kind,
};

use crate::maps::{config, current, header, kernel_current, reserve, tgid_watched};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct DumpState {
    pub cookie: u64,
    pub start_ns: u64,
    /// The dump function has no uretprobe: `covobs_dump_end_marker` ends it.
    pub ends_at_marker: bool,
    pub _pad: [u8; 7],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingOpen {
    filename: u64,
    flags: i32,
    dfd: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingWrite {
    fd: i32,
    call: u32,
    offset: i64,
}

/// Threads inside a dump function now: kernel tid -> the dump. This map and the ones below are
/// keyed by the kernel's ids: they never leave the programs, and the syscall hooks that look
/// them up on every call pay no translation.
#[map]
static IN_DUMP: HashMap<u32, DumpState> = HashMap::with_max_entries(4096, 0);

/// Processes that called exit() (kernel tgid): their dumps from now on are the runtimes'
/// exit-time dumps.
#[map]
pub static EXITING: HashMap<u32, u8> = HashMap::with_max_entries(4096, 0);

/// openat arguments between syscall entry and exit, for threads inside a dump.
#[map]
static PENDING_OPEN: HashMap<u32, PendingOpen> = HashMap::with_max_entries(4096, 0);

/// write arguments between syscall entry and exit, for threads inside a dump.
#[map]
static PENDING_WRITE: HashMap<u32, PendingWrite> = HashMap::with_max_entries(4096, 0);

#[uprobe]
pub fn covobs_dump_enter(ctx: ProbeContext) -> u32 {
    dump_enter(&ctx)
}

/// The same program as an uprobe_multi link (Linux 6.6+): closing one waits for no lock shared
/// with every other perf probe, so covobs' links close together (`probes::release`).
#[uprobe(multi)]
pub fn covobs_dump_enter_multi(ctx: ProbeContext) -> u32 {
    dump_enter(&ctx)
}

#[inline(always)]
fn dump_enter(ctx: &ProbeContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(cur) = current(cfg) else { return 0 };
    match tgid_watched(cur.tgid) {
        Some(flags) if flags & covobs_common::watch::DUMPS_HELD == 0 => {}
        _ => return 0,
    }
    let kernel = kernel_current();
    // SAFETY: the helper reads the cookie of the link that fired; ctx is this program's context.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let mut hdr = header(kind::DUMP_START, cur.tgid, cur.tid);
    if EXITING.get_ptr(&kernel.tgid).is_some() {
        hdr._reserved = covobs_common::dump_flags::EXITING;
    }
    let _ = IN_DUMP.insert(
        &kernel.tid,
        &DumpState {
            cookie,
            start_ns: hdr.ts_ns,
            ends_at_marker: cookie & covobs_common::COOKIE_ENDS_AT_MARKER != 0,
            _pad: [0; 7],
        },
        0,
    );
    if let Some(mut entry) = reserve::<DumpRecord>(kind::DUMP_START) {
        entry.write(DumpRecord {
            hdr,
            cookie,
            ret: 0,
            start_ns: hdr.ts_ns,
        });
        entry.submit(0);
    }
    0
}

/// A uprobe on the C library's `exit()`, attached per watched process.
#[uprobe]
pub fn covobs_exit_call(_ctx: ProbeContext) -> u32 {
    exit_call()
}

/// The same program as an uprobe_multi link (Linux 6.6+): closing one waits for no lock shared
/// with every other perf probe, so covobs' links close together (`probes::release`).
#[uprobe(multi)]
pub fn covobs_exit_call_multi(_ctx: ProbeContext) -> u32 {
    exit_call()
}

#[inline(always)]
fn exit_call() -> u32 {
    let Some(cfg) = config() else { return 0 };
    if current(cfg).is_some_and(|cur| tgid_watched(cur.tgid).is_some()) {
        let _ = EXITING.insert(&kernel_current().tgid, &1, 0);
    }
    0
}

#[uretprobe]
pub fn covobs_dump_exit(ctx: RetProbeContext) -> u32 {
    dump_exit(&ctx)
}

/// The same program as an uprobe_multi link (Linux 6.6+): closing one waits for no lock shared
/// with every other perf probe, so covobs' links close together (`probes::release`).
#[uretprobe(multi)]
pub fn covobs_dump_exit_multi(ctx: RetProbeContext) -> u32 {
    dump_exit(&ctx)
}

#[inline(always)]
fn dump_exit(ctx: &RetProbeContext) -> u32 {
    let Some(cfg) = config() else { return 0 };
    let Some(cur) = current(cfg) else { return 0 };
    match tgid_watched(cur.tgid) {
        Some(flags) if flags & covobs_common::watch::DUMPS_HELD == 0 => {}
        _ => return 0,
    }
    let kernel_tid = kernel_current().tid;
    // SAFETY: as in covobs_dump_enter.
    let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    // SAFETY: the value is copied at once; entries are only removed by this thread's own exit.
    let start_ns = unsafe { IN_DUMP.get(&kernel_tid) }.map_or(0, |s| s.start_ns);
    let _ = IN_DUMP.remove(&kernel_tid);
    let ret: i64 = ctx.ret();
    if let Some(mut entry) = reserve::<DumpRecord>(kind::DUMP_END) {
        entry.write(DumpRecord {
            hdr: header(kind::DUMP_END, cur.tgid, cur.tid),
            cookie,
            ret,
            start_ns,
        });
        entry.submit(0);
    }
    0
}

/// The end of a dump that cannot carry a uretprobe: bisect's writer is OCaml code, and OCaml's
/// GC walks the stack by return addresses, so a hijacked one crashes the target. Its last act is
/// flushing the channel (`caml_ml_flush`, C in the OCaml runtime): a uretprobe on that C function
/// ends the dump of a thread that is in one, and does nothing otherwise.
#[uretprobe]
pub fn covobs_dump_end_marker(ctx: RetProbeContext) -> u32 {
    dump_end_marker(&ctx)
}

/// The same program as an uprobe_multi link (Linux 6.6+): closing one waits for no lock shared
/// with every other perf probe, so covobs' links close together (`probes::release`).
#[uretprobe(multi)]
pub fn covobs_dump_end_marker_multi(ctx: RetProbeContext) -> u32 {
    dump_end_marker(&ctx)
}

#[inline(always)]
fn dump_end_marker(ctx: &RetProbeContext) -> u32 {
    let kernel_tid = kernel_current().tid;
    // SAFETY: the value is copied at once.
    let Some(state) = (unsafe { IN_DUMP.get(&kernel_tid) }).copied() else {
        return 0;
    };
    if !state.ends_at_marker {
        return 0;
    }
    let _ = IN_DUMP.remove(&kernel_tid);
    let Some(cur) = config().and_then(current) else {
        return 0;
    };
    let ret: i64 = ctx.ret();
    if let Some(mut entry) = reserve::<DumpRecord>(kind::DUMP_END) {
        entry.write(DumpRecord {
            hdr: header(kind::DUMP_END, cur.tgid, cur.tid),
            cookie: state.cookie,
            ret,
            start_ns: state.start_ns,
        });
        entry.submit(0);
    }
    0
}

/// The dump thread `tid` (kernel id) is in.
#[inline(always)]
pub fn in_dump(tid: u32) -> Option<DumpState> {
    // SAFETY: copied out at once.
    unsafe { IN_DUMP.get(&tid) }.copied()
}

/// `syscalls:sys_enter_openat`.
#[tracepoint]
pub fn covobs_openat_enter(ctx: TracePointContext) -> u32 {
    let kernel = kernel_current();
    if in_dump(kernel.tid).is_none() {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    // SAFETY: offsets from the format file, helper-checked reads.
    let args = unsafe {
        (
            ctx.read_at::<u64>(usize::from(cfg.tp.openat_filename)),
            ctx.read_at::<i64>(usize::from(cfg.tp.openat_flags)),
            ctx.read_at::<i64>(usize::from(cfg.tp.openat_dfd)),
        )
    };
    if let (Ok(filename), Ok(flags), Ok(dfd)) = args {
        let _ = PENDING_OPEN.insert(
            &kernel.tid,
            &PendingOpen {
                filename,
                flags: flags as i32,
                dfd: dfd as i32,
            },
            0,
        );
    }
    0
}

/// `syscalls:sys_exit_openat`.
#[tracepoint]
pub fn covobs_openat_exit(ctx: TracePointContext) -> u32 {
    let kernel = kernel_current();
    // SAFETY: copied out at once.
    let Some(open) = (unsafe { PENDING_OPEN.get(&kernel.tid) }).copied() else {
        return 0;
    };
    let _ = PENDING_OPEN.remove(&kernel.tid);
    let (Some(cfg), Some(dump)) = (config(), in_dump(kernel.tid)) else {
        return 0;
    };
    let Some(cur) = current(cfg) else { return 0 };
    // SAFETY: offset from the format file, helper-checked read.
    let ret = unsafe { ctx.read_at::<i64>(usize::from(cfg.tp.sys_exit_ret)) }.unwrap_or(-1);
    let Some(mut entry) = reserve::<FileOpenRecord>(kind::FILE_OPEN) else {
        return 0;
    };
    let rec = entry.as_mut_ptr();
    let file = if ret >= 0 {
        identify(cfg, ret as u32)
    } else {
        FileIdentity::default()
    };
    // SAFETY: `rec` points to a reserved ring-buffer slot of the record's size; fields are written
    // through raw pointers, the path by the helper (bounded by PATH_LEN).
    unsafe {
        addr_of_mut!((*rec).hdr).write(header(kind::FILE_OPEN, cur.tgid, cur.tid));
        addr_of_mut!((*rec).dump_cookie).write(dump.cookie);
        addr_of_mut!((*rec).ret).write(ret);
        addr_of_mut!((*rec).flags).write(open.flags);
        addr_of_mut!((*rec).dfd).write(open.dfd);
        addr_of_mut!((*rec).file).write(file);
        let dst = addr_of_mut!((*rec).path).cast::<c_void>();
        if bpf_probe_read_user_str(dst, PATH_LEN as u32, open.filename as *const c_void) < 0 {
            addr_of_mut!((*rec).path).cast::<u8>().write(0);
        }
    }
    entry.submit(0);
    0
}

#[inline(always)]
fn write_enter(ctx: &TracePointContext, call: u32) -> u32 {
    let kernel = kernel_current();
    if in_dump(kernel.tid).is_none() {
        return 0;
    }
    let Some(cfg) = config() else { return 0 };
    // SAFETY: offsets from the format file, helper-checked reads.
    let fd = unsafe { ctx.read_at::<u64>(usize::from(cfg.tp.write_fd)) }.unwrap_or(u64::MAX);
    let offset = if call == 1 || call == 3 {
        // SAFETY: as above; pwrite64's `pos` and pwritev's `pos_l` share the 4th slot.
        unsafe { ctx.read_at::<i64>(usize::from(cfg.tp.pwrite_pos)) }.unwrap_or(-1)
    } else {
        -1
    };
    let _ = PENDING_WRITE.insert(
        &kernel.tid,
        &PendingWrite {
            fd: fd as i32,
            call,
            offset,
        },
        0,
    );
    0
}

#[tracepoint]
pub fn covobs_write_enter(ctx: TracePointContext) -> u32 {
    write_enter(&ctx, 0)
}

#[tracepoint]
pub fn covobs_pwrite_enter(ctx: TracePointContext) -> u32 {
    write_enter(&ctx, 1)
}

#[tracepoint]
pub fn covobs_writev_enter(ctx: TracePointContext) -> u32 {
    write_enter(&ctx, 2)
}

#[tracepoint]
pub fn covobs_pwritev_enter(ctx: TracePointContext) -> u32 {
    write_enter(&ctx, 3)
}

/// `syscalls:sys_exit_write` and friends: one program for all of them.
#[tracepoint]
pub fn covobs_write_exit(ctx: TracePointContext) -> u32 {
    let kernel = kernel_current();
    // SAFETY: copied out at once.
    let Some(w) = (unsafe { PENDING_WRITE.get(&kernel.tid) }).copied() else {
        return 0;
    };
    let _ = PENDING_WRITE.remove(&kernel.tid);
    let (Some(cfg), Some(dump)) = (config(), in_dump(kernel.tid)) else {
        return 0;
    };
    let Some(cur) = current(cfg) else { return 0 };
    // SAFETY: offset from the format file, helper-checked read.
    let ret = unsafe { ctx.read_at::<i64>(usize::from(cfg.tp.sys_exit_ret)) }.unwrap_or(-1);
    let file = if w.fd >= 0 {
        identify(cfg, w.fd as u32)
    } else {
        FileIdentity::default()
    };
    if let Some(mut entry) = reserve::<FileWriteRecord>(kind::FILE_WRITE) {
        entry.write(FileWriteRecord {
            hdr: header(kind::FILE_WRITE, cur.tgid, cur.tid),
            dump_cookie: dump.cookie,
            fd: w.fd,
            call: w.call,
            ret,
            offset: w.offset,
            file,
        });
        entry.submit(0);
    }
    0
}

/// Follow current->files->fdt->fd[fd] to the open file: its inode, device and position.
#[inline(always)]
fn identify(cfg: &Config, fd: u32) -> FileIdentity {
    let k = &cfg.kernel;
    if k.valid == 0 {
        return FileIdentity::default();
    }
    // SAFETY: every dereference goes through bpf_probe_read_kernel, which fails cleanly on a bad
    // address; offsets come from this kernel's BTF.
    let read = |addr: u64| unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok();
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let id = (|| {
        let files = read(task + u64::from(k.task_files))?;
        let fdt = read(files + u64::from(k.files_fdt))?;
        let max_fds = read(fdt + u64::from(k.fdt_max_fds))? as u32;
        if fd >= max_fds {
            return None;
        }
        let fds = read(fdt + u64::from(k.fdt_fd))?;
        let file = read(fds + u64::from(fd) * 8)?;
        if file == 0 {
            return None;
        }
        let pos = read(file + u64::from(k.file_f_pos))? as i64;
        let inode = read(file + u64::from(k.file_f_inode))?;
        let ino = read(inode + u64::from(k.inode_i_ino))?;
        let sb = read(inode + u64::from(k.inode_i_sb))?;
        let dev = read(sb + u64::from(k.sb_s_dev))? as u32;
        Some(FileIdentity {
            ino,
            dev,
            known: 1,
            pos,
        })
    })();
    id.unwrap_or_default()
}
