//! Records and map values shared by covobs' eBPF programs and its userspace.
//!
//! Every ring-buffer record starts with a [`Header`]; userspace reads the header, then the record
//! type that `Header::kind` names. All types are `#[repr(C)]` and plain data so both sides agree on
//! their layout byte for byte; `size_of` checks at the bottom pin the layouts.
#![no_std]

/// Length of a kernel task name (`TASK_COMM_LEN`), NUL padded.
pub const COMM_LEN: usize = 16;
/// Bytes of a path kept in a record (longer paths are cut and flagged).
pub const PATH_LEN: usize = 256;

/// Record kinds (`Header::kind`).
pub mod kind {
    pub const PROCESS_EXEC: u32 = 1;
    pub const PROCESS_FORK: u32 = 2;
    pub const PROCESS_EXIT: u32 = 3;
    pub const THREAD_START: u32 = 4;
    pub const THREAD_EXIT: u32 = 5;
    pub const THREAD_RENAME: u32 = 6;
    pub const SIGNAL_GENERATE: u32 = 7;
    pub const SIGNAL_DELIVER: u32 = 8;
    /// `covobs doctor`'s uprobe self-test fired (a bare `Header`).
    pub const SELFTEST: u32 = 9;
    /// A dump function was entered / returned (`DumpRecord`).
    pub const DUMP_START: u32 = 10;
    pub const DUMP_END: u32 = 11;
    /// The dumping thread opened / wrote a file during a dump (`FileOpenRecord`, `FileWriteRecord`).
    pub const FILE_OPEN: u32 = 12;
    pub const FILE_WRITE: u32 = 13;
    /// The OCaml probe sent a requested signal with bpf_send_signal_thread (`SignalSentRecord`).
    pub const BPF_SIGNAL_SENT: u32 = 14;
    /// A task moved between cgroups while a cgroup is selected (`TaskRecord`: header = the task;
    /// `flags` 1 = it entered the selection and the kernel watches it now, 0 = a watched process
    /// left it).
    pub const CGROUP_MOVE: u32 = 15;
    /// Part of a final snapshot: counter bytes copied in the kernel as a process exits
    /// (`SnapChunkRecord`, on the `SNAPSHOTS` ring buffer).
    pub const SNAP_CHUNK: u32 = 24;
    /// The end of a final snapshot (`SnapEndRecord`): every chunk of it was sent before.
    pub const SNAP_END: u32 = 25;
    /// A watched thread called one of kcov's ioctls (`KcovRecord`).
    pub const KCOV_IOCTL: u32 = 20;
    /// Part of the kcov buffer copied at a `KCOV_DISABLE` (`KcovChunkRecord`).
    pub const KCOV_CHUNK: u32 = 21;
    /// One past the largest kind: the size of the per-kind drop counters.
    pub const MAX: u32 = 32;
}

/// Linux kcov (`include/uapi/linux/kcov.h`).
pub mod kcov {
    /// `_IOR('c', 1, unsigned long)`: size the buffer (argument: entries, word 0 included).
    pub const INIT_TRACE: u32 = 0x8008_6301;
    /// `_IO('c', 100)`: start tracing this thread (argument: `TRACE_PC` or `TRACE_CMP`).
    pub const ENABLE: u32 = 0x6364;
    /// `_IO('c', 101)`: stop tracing this thread.
    pub const DISABLE: u32 = 0x6365;
    /// `_IOW('c', 102, struct kcov_remote_arg)` (24-byte header).
    pub const REMOTE_ENABLE: u32 = 0x4018_6366;
    pub const TRACE_PC: u64 = 0;
    pub const TRACE_CMP: u64 = 1;
    /// `enum kcov_mode` of the kernel's `struct kcov` (kernel/kcov.c).
    pub const MODE_DISABLED: u32 = 0;
    pub const MODE_INIT: u32 = 1;
    pub const MODE_TRACE_PC: u32 = 2;
    pub const MODE_TRACE_CMP: u32 = 3;
    /// Words of the buffer one `KcovChunkRecord` carries: one page, so a chunk never reaches
    /// past the end of the (page-rounded) buffer.
    pub const CHUNK_WORDS: usize = 512;
    /// Chunks copied at most per `KCOV_DISABLE` (the rest is read from covobs' own view).
    pub const MAX_CHUNKS: u32 = 64;
    /// How far back from the end of the buffer the programs look for the first PC of their
    /// own uprobe trap by default (see `KcovConfig::anchor_pc`).
    pub const ANCHOR_WINDOW: u32 = 512;
    /// The most they look back.
    pub const MAX_ANCHOR_WINDOW: u32 = 1 << 16;
}

/// `KcovRecord::flags`.
pub mod kcov_flags {
    /// The file behind the descriptor is kcov's (inode checked in the kernel).
    pub const IS_KCOV: u32 = 1;
    /// The first PC of covobs' own uprobe trap was found: `count` is exactly what the thread
    /// had recorded when it called ioctl().
    pub const EXACT: u32 = 2;
    /// Not every chunk fit in the ring buffer, or the buffer was larger than `MAX_CHUNKS`.
    pub const TRUNCATED: u32 = 4;
    /// The calibration thread of covobs itself made this call.
    pub const CALIBRATION: u32 = 8;
}

/// Flags of a watched tgid (`WATCHED_TGIDS` value).
pub mod watch {
    /// Children forked by this process are watched too.
    pub const FOLLOW_FORKS: u32 = 1;
    /// Added by the kernel because its name matched `WATCH_COMMS` at exec or rename.
    pub const BY_NAME: u32 = 2;
    /// In the selected cgroup: its children are watched too (they are in the cgroup as well).
    pub const CGROUP: u32 = 4;
    /// Its dumps are not reported yet: covobs started watching a running process and has not yet
    /// placed its cursors in the files the process appends its dumps to. Seen dumps and cursors
    /// then start at one point, so no dump is taken for another.
    pub const DUMPS_HELD: u32 = 8;
}

/// Bit of a dump uprobe's cookie: the dump function has no uretprobe (OCaml code); the return of
/// the runtime's end marker function ends it.
pub const COOKIE_ENDS_AT_MARKER: u64 = 1 << 63;
/// Slots of the `SELECT` array map: what makes the kernel start watching a process by itself.
pub mod select {
    /// Id of the selected cgroup v2 (0: no cgroup selection). Processes that exec, rename
    /// themselves or are moved inside it (or below it) are watched.
    pub const CGROUP: u32 = 0;
    /// 1: a process in the cgroup must also have a watched name (`--cgroup` with `--name`).
    pub const NAME_TOO: u32 = 1;
    pub const LEN: u32 = 2;
}

/// `ExecRecord::old_tid` when the exec'ing thread's former id cannot be told in covobs' PID
/// namespace (a non-leader thread exec'd; its old id went away with it).
pub const OLD_TID_UNKNOWN: u32 = u32::MAX;

/// `Header::_reserved` of a `PROCESS_FORK`: the kernel watches the child too.
pub const FORK_CHILD_WATCHED: u32 = 1;

/// `Header::_reserved` of a `DUMP_START`.
pub mod dump_flags {
    /// The process had called exit(): this is the runtime's exit-time dump.
    pub const EXITING: u32 = 1;
}

/// `Config::flags`.
pub mod config_flags {
    /// `sched_process_exit` has a `group_dead` field (kernels before 6.9 lack it).
    pub const EXIT_HAS_GROUP_DEAD: u32 = 1;
}

/// Final snapshots: the ranges of a process's memory (coverage counters) the kernel copies when
/// its last thread exits, while that memory still exists.
pub mod snap {
    /// Bytes of a `SnapChunkRecord`: one page, so one unreadable page never hides another.
    pub const CHUNK_BYTES: usize = 4096;
    /// Ranges per process.
    pub const MAX_REGIONS: usize = 16;
    /// `SnapEndRecord::hook`: where the copy was made.
    pub const HOOK_SCHED_PROCESS_EXIT: u32 = 1;
}

/// Slots of the `SELFTEST` array map used by `covobs doctor`.
pub mod selftest {
    /// Times the self-test uprobe fired.
    pub const HITS: u32 = 0;
    /// Signal the uprobe sends to the thread that hit it (0: none). Set by userspace.
    pub const SIGNAL: u32 = 1;
    /// Return value of bpf_send_signal_thread, plus 1000 (so 0 means "not called").
    pub const SIGNAL_RESULT: u32 = 2;
    /// Thread id that hit the uprobe.
    pub const TID: u32 = 3;
    pub const LEN: u32 = 4;
}

/// `clone(2)` flag that makes the new task a thread of the caller's group.
pub const CLONE_THREAD: u64 = 0x0001_0000;

/// Common start of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Header {
    pub kind: u32,
    pub _reserved: u32,
    /// `bpf_ktime_get_boot_ns()`: CLOCK_BOOTTIME, so userspace stamps its own events on the same clock.
    pub ts_ns: u64,
    /// Process (thread group) id of the task the record is about, in covobs' PID namespace.
    pub tgid: u32,
    /// Thread id of that task, in covobs' PID namespace.
    pub tid: u32,
}

/// Lifecycle of tasks: `PROCESS_FORK`, `PROCESS_EXIT`, `THREAD_START`, `THREAD_EXIT`, `THREAD_RENAME`.
///
/// - fork: header = parent task; `other_tgid`/`other_tid` = the child; `flags` = clone flags.
/// - thread_start: header = creating task; `other_tid` = the new thread; `comm` = its name at birth.
/// - thread_exit / process_exit: header = exiting task; `flags` = 1 when the whole group died.
/// - thread_rename: header = the renamed task; `comm` = old name, `comm2` = new name.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TaskRecord {
    pub hdr: Header,
    pub other_tgid: u32,
    pub other_tid: u32,
    pub flags: u64,
    pub comm: [u8; COMM_LEN],
    pub comm2: [u8; COMM_LEN],
}

/// `PROCESS_EXEC`: header = the task after exec.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecRecord {
    pub hdr: Header,
    /// The tid that called exec (a non-leader thread's exec takes over the leader's id).
    pub old_tid: u32,
    /// 1 when this exec made the kernel start watching the process (its name matched).
    pub newly_watched: u32,
    pub comm: [u8; COMM_LEN],
    pub filename: [u8; PATH_LEN],
}

/// `SIGNAL_GENERATE` (header = sender) and `SIGNAL_DELIVER` (header = receiving thread).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SignalRecord {
    pub hdr: Header,
    pub sig: i32,
    pub code: i32,
    pub errno: i32,
    /// generate: TRACE_SIGNAL_* result (0 delivered, 1 ignored, 2 already pending, ...).
    pub result: i32,
    /// generate: the thread the signal was queued to, and its group.
    pub target_tid: u32,
    pub target_tgid: u32,
    /// generate: 1 when the signal is process-directed.
    pub group: u32,
    pub _pad: u32,
    /// deliver: the handler that runs (0 = SIG_DFL, 1 = SIG_IGN) and its flags.
    pub sa_handler: u64,
    pub sa_flags: u64,
    /// generate: the sender's name.
    pub comm: [u8; COMM_LEN],
}

/// `DUMP_START` (header = dumping thread) and `DUMP_END`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DumpRecord {
    pub hdr: Header,
    /// The attach cookie: which module and which hook (set by userspace per uprobe).
    pub cookie: u64,
    /// end: the function's return value (rax).
    pub ret: i64,
    /// end: when the matching start happened (0 if the start was not seen).
    pub start_ns: u64,
}

/// Per-thread hits of the OCaml runtime probes (`OCAML_HITS` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OcamlHits {
    pub tgid: u32,
    pub _pad: u32,
    pub hits: u64,
    pub last_ns: u64,
}

/// `BPF_SIGNAL_SENT`: header = the thread that was signalled (it hit an OCaml runtime probe).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SignalSentRecord {
    pub hdr: Header,
    pub sig: u32,
    pub _pad: u32,
    /// bpf_send_signal_thread's return value.
    pub ret: i64,
    /// When userspace asked (CLOCK_BOOTTIME ns).
    pub requested_ns: u64,
}

/// A request for the OCaml probe to signal a thread (`SEND_SIGNAL` value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SignalRequest {
    pub sig: u32,
    pub _pad: u32,
    pub requested_ns: u64,
}

/// Where a file descriptor of the current task points, read from the kernel's own structures.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FileIdentity {
    /// The inode number and device (kernel `dev_t`: major << 20 | minor).
    pub ino: u64,
    pub dev: u32,
    /// 1 when the fields were read (kernel offsets known and reads succeeded).
    pub known: u32,
    /// The file position after the call.
    pub pos: i64,
}

/// `FILE_OPEN`: the dumping thread opened a file.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileOpenRecord {
    pub hdr: Header,
    pub dump_cookie: u64,
    /// The new descriptor, or -errno.
    pub ret: i64,
    pub flags: i32,
    /// AT_FDCWD (-100) or a directory descriptor the path is relative to.
    pub dfd: i32,
    pub file: FileIdentity,
    pub path: [u8; PATH_LEN],
}

/// `FILE_WRITE`: the dumping thread wrote to a file.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileWriteRecord {
    pub hdr: Header,
    pub dump_cookie: u64,
    pub fd: i32,
    /// 0 write, 1 pwrite64, 2 writev, 3 pwritev.
    pub call: u32,
    /// Bytes written, or -errno.
    pub ret: i64,
    /// pwrite: the explicit offset; otherwise -1.
    pub offset: i64,
    pub file: FileIdentity,
}

/// One range of a process's memory to copy at exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapRegion {
    pub addr: u64,
    pub len: u64,
}

/// `SNAP_REGIONS` value: what to copy when this process exits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SnapRegions {
    /// Set by userspace; comes back in the records, so a copy is matched to its registration.
    pub generation: u64,
    pub count: u32,
    pub _pad: u32,
    pub regions: [SnapRegion; snap::MAX_REGIONS],
}

/// `SNAP_CHUNK`: bytes `offset..offset + len` of region `region`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SnapChunkRecord {
    pub hdr: Header,
    pub generation: u64,
    pub offset: u64,
    pub region: u32,
    pub len: u32,
    /// bpf_probe_read_user's error (the page was not resident, or the memory was gone), else 0;
    /// the bytes are then zero.
    pub error: i32,
    pub _pad: u32,
    pub data: [u8; snap::CHUNK_BYTES],
}

/// `SNAP_END`: a final snapshot is complete.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SnapEndRecord {
    pub hdr: Header,
    pub generation: u64,
    pub regions: u32,
    pub chunks: u32,
    /// Chunks whose read failed (sent, zero-filled).
    pub failed: u32,
    /// Chunks that did not fit in the ring buffer (not sent).
    pub dropped: u32,
    /// `snap::HOOK_*`.
    pub hook: u32,
    pub _pad: u32,
}

/// Offsets of kernel structure fields (from BTF) that the programs follow to identify the file
/// behind a descriptor. All zero when BTF is unavailable (`FileIdentity::known` stays 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelOffsets {
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_pos: u32,
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
    /// 1 when the offsets above are valid.
    pub valid: u32,
    /// Bit offset of `task_struct.in_execve` (set while the task is inside exec), or u32::MAX
    /// when this kernel has no such field.
    pub task_in_execve_bit: u32,
    /// `task_struct.pid` (thread id) and `.tgid`, `k_sigaction.sa.sa_handler` / `.sa_flags`,
    /// `kernel_siginfo.si_errno` / `.si_code`: what the raw signal tracepoints read.
    pub task_pid: u32,
    pub task_tgid: u32,
    pub ka_sa_handler: u32,
    pub ka_sa_flags: u32,
    pub siginfo_errno: u32,
    pub siginfo_code: u32,
    /// 1 when the six offsets above are valid (raw signal tracepoints can be used).
    pub signals_valid: u32,
    pub _pad: u32,
}

/// Byte offsets of the tracepoint fields the programs read, taken by userspace from
/// `/sys/kernel/tracing/events/*/*/format` so the programs do not depend on one kernel's layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TracepointOffsets {
    pub exec_filename: u16,
    pub exec_pid: u16,
    pub exec_old_pid: u16,
    pub newtask_pid: u16,
    pub newtask_comm: u16,
    pub newtask_clone_flags: u16,
    pub rename_pid: u16,
    pub rename_oldcomm: u16,
    pub rename_newcomm: u16,
    pub exit_group_dead: u16,
    pub gen_sig: u16,
    pub gen_errno: u16,
    pub gen_code: u16,
    pub gen_pid: u16,
    pub gen_group: u16,
    pub gen_result: u16,
    pub del_sig: u16,
    pub del_errno: u16,
    pub del_code: u16,
    pub del_sa_handler: u16,
    pub del_sa_flags: u16,
    pub openat_dfd: u16,
    pub openat_filename: u16,
    pub openat_flags: u16,
    pub write_fd: u16,
    pub pwrite_pos: u16,
    pub sys_exit_ret: u16,
    pub _pad: u16,
}

/// `NsOffsets::flags`.
pub mod ns_flags {
    /// The PID-namespace offsets (and `task_comm`) are valid.
    pub const PID: u32 = 1;
    /// The cgroup offsets are valid.
    pub const CGROUP: u32 = 2;
}

/// Where covobs stands (its PID namespace) and the kernel structure offsets (from BTF) the
/// programs follow to give every id in that namespace and to tell a task's cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NsOffsets {
    /// Inode of covobs' PID namespace; 0 when covobs runs in the initial one, where the kernel's
    /// own ids are covobs' ids and nothing is translated.
    pub pidns_ino: u32,
    /// `ns_flags::*`.
    pub flags: u32,
    /// `task_struct.thread_pid`, `task_struct.signal`, `signal_struct.pids[PIDTYPE_TGID]`.
    pub task_thread_pid: u32,
    pub task_signal: u32,
    pub signal_tgid_pid: u32,
    /// `pid.level`, `pid.numbers`, the size of a `struct upid` and its `nr` / `ns` members.
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    /// `pid_namespace.ns.inum`.
    pub pidns_inum: u32,
    /// `task_struct.comm`.
    pub task_comm: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.level`, `cgroup.ancestors`,
    /// `cgroup.kn`, `kernfs_node.id` (the cgroup id).
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_level: u32,
    pub cgroup_ancestors: u32,
    pub cgroup_kn: u32,
    pub kn_id: u32,
}

/// A kcov ioctl of a watched thread (`KCOV_IOCTL`), seen by a uprobe on the C library's
/// `ioctl()` before the call, in the thread itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KcovRecord {
    pub hdr: Header,
    /// The kernel's `struct kcov` behind the descriptor: one identity per kcov file.
    pub kcov: u64,
    /// The chunks of this call carry the same id.
    pub event_id: u64,
    /// The ioctl's arguments.
    pub arg: u64,
    pub cmd: u32,
    pub fd: i32,
    /// `kcov_flags::*`.
    pub flags: u32,
    /// `struct kcov` `mode` at the call (`kcov::MODE_*`).
    pub mode: u32,
    /// `struct kcov` `size`: entries of the buffer, word 0 included.
    pub size: u64,
    /// Word 0 of the buffer as read by the program (it includes the trap's own PCs).
    pub raw_count: u64,
    /// Entries (PC mode) or records (CMP mode) the thread had when it called ioctl().
    pub count: u64,
    /// Words copied into chunks (word 0 included).
    pub words: u64,
    /// Chunks submitted.
    pub chunks: u32,
    /// `KCOV_REMOTE_ENABLE`: `trace_mode` and `area_size` of the `kcov_remote_arg`.
    pub remote_mode: u32,
    pub remote_area_size: u32,
    pub _pad: u32,
    pub remote_handles: u64,
    pub remote_common_handle: u64,
}

/// `KCOV_CHUNK`: words `[index * CHUNK_WORDS, index * CHUNK_WORDS + words)` of the buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KcovChunkRecord {
    pub hdr: Header,
    pub event_id: u64,
    pub index: u32,
    /// Meaningful words in `data`.
    pub words: u32,
    pub data: [u64; kcov::CHUNK_WORDS],
}

/// What the kcov program needs to know about this kernel, from userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KcovConfig {
    /// Offsets (BTF): `file.private_data`, `struct kcov` `mode`, `size`, `area`.
    pub file_private_data: u32,
    pub kcov_mode: u32,
    pub kcov_size: u32,
    pub kcov_area: u32,
    /// Identity of /sys/kernel/debug/kcov: inode and kernel `dev_t` (major << 20 | minor).
    pub ino: u64,
    pub dev: u32,
    /// 1 when the fields above are valid.
    pub valid: u32,
    /// The first PC (PC mode) / comparison ip (CMP mode) the kernel records for a thread that
    /// hits a uprobe: everything from its last occurrence on was recorded because covobs' own
    /// probe trapped, after the program read its count. 0: unknown (counts are then the raw
    /// word 0). Learned by calibration on a thread of covobs.
    pub anchor_pc: u64,
    pub anchor_cmp: u64,
    /// The thread of covobs whose kcov ioctls calibrate the anchors (0: none).
    pub calibration_tid: u32,
    /// Entries searched back for the anchor (0: `kcov::ANCHOR_WINDOW`); calibration sets it
    /// from the length of the trap it measured.
    pub anchor_window: u32,
}

/// The single value of the `CONFIG` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Config {
    /// covobs' own tgid: never watched, so its own threads cannot feed back into the stream.
    pub self_tgid: u32,
    /// `config_flags::*`.
    pub flags: u32,
    /// Signals reported (bit sig-1); 0 reports every signal. Filtered in the kernel, so a
    /// signal-heavy target costs covobs nothing for the signals it does not care about.
    pub signal_mask: u64,
    pub tp: TracepointOffsets,
    pub kernel: KernelOffsets,
    pub ns: NsOffsets,
    pub kcov: KcovConfig,
}

impl Config {
    /// Whether signal `sig` is reported.
    #[inline(always)]
    pub fn reports_signal(&self, sig: u64) -> bool {
        self.signal_mask == 0
            || ((1..=64).contains(&sig) && self.signal_mask & (1u64 << (sig - 1)) != 0)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` data with no padding-sensitive invariants; any bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OcamlHits {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SignalRequest {}
    // SAFETY: as above: `#[repr(C)]` integers only, explicit padding, any bit pattern is valid.
    unsafe impl aya::Pod for super::SnapRegions {}
}

const _: () = {
    assert!(core::mem::size_of::<Header>() == 24);
    assert!(core::mem::size_of::<TaskRecord>() == 72);
    assert!(core::mem::size_of::<ExecRecord>() == 304);
    assert!(core::mem::size_of::<SignalRecord>() == 88);
    assert!(core::mem::size_of::<TracepointOffsets>() == 56);
    assert!(core::mem::size_of::<DumpRecord>() == 48);
    assert!(core::mem::size_of::<FileOpenRecord>() == 328);
    assert!(core::mem::size_of::<FileWriteRecord>() == 80);
    assert!(core::mem::size_of::<SignalSentRecord>() == 48);
    assert!(core::mem::size_of::<NsOffsets>() == 72);
    assert!(core::mem::size_of::<SnapRegions>() == 16 + 16 * snap::MAX_REGIONS);
    assert!(core::mem::size_of::<SnapChunkRecord>() == 56 + snap::CHUNK_BYTES);
    assert!(core::mem::size_of::<SnapEndRecord>() == 56);
    assert!(core::mem::size_of::<KcovRecord>() == 128);
    assert!(core::mem::size_of::<KcovChunkRecord>() == 40 + 8 * kcov::CHUNK_WORDS);
    assert!(core::mem::size_of::<KcovConfig>() == 56);
};
