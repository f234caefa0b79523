//! Tracepoint field offsets for the eBPF programs, read from this kernel's format files.
use std::path::Path;

use covobs_common::{Config, TracepointOffsets, config_flags};

use crate::sys::tracefs::{Format, TracefsError};

/// The tracepoints the lifecycle and signal programs attach to: (program, category, name).
pub const TRACEPOINTS: [(&str, &str, &str); 6] = [
    ("covobs_exec", "sched", "sched_process_exec"),
    ("covobs_newtask", "task", "task_newtask"),
    ("covobs_exit", "sched", "sched_process_exit"),
    ("covobs_rename", "task", "task_rename"),
    ("covobs_signal_generate", "signal", "signal_generate"),
    ("covobs_signal_deliver", "signal", "signal_deliver"),
];

/// Signals are frequent on some machines: where the kernel's BTF gives the offsets, these raw
/// tracepoints replace the last two above (no trace record is built for every signal of every
/// process): (program, tracepoint).
pub const RAW_SIGNAL_TRACEPOINTS: [(&str, &str); 2] = [
    ("covobs_raw_signal_generate", "signal_generate"),
    ("covobs_raw_signal_deliver", "signal_deliver"),
];

/// Where BTF gives the task offsets, these replace the two `task` tracepoints above: they hand
/// the task itself over (its ids in covobs' PID namespace, its name, its cgroup).
pub const RAW_TASK_TRACEPOINTS: [(&str, &str); 2] = [
    ("covobs_raw_newtask", "task_newtask"),
    ("covobs_raw_rename", "task_rename"),
];

/// Kernel functions followed with BPF trampolines (fexit): (program, function).
pub const FILE_TRAMPOLINES: [(&str, &str); 2] = [
    ("covobs_vfs_write", "vfs_write"),
    ("covobs_filp_open", "do_filp_open"),
];

/// The fallback where trampolines are unavailable: syscall tracepoints that show which files a
/// thread writes while it is inside a dump function. Enabling any syscall tracepoint sends every
/// system call of every task through the kernel's slow path: measured, it costs a syscall-heavy
/// process on this kind of machine a third of its throughput, so these are used only by attach,
/// and only when the trampolines cannot be.
pub const FILE_SYSCALL_TRACEPOINTS: [(&str, &str, &str); 9] = [
    ("covobs_openat_enter", "syscalls", "sys_enter_openat"),
    ("covobs_openat_exit", "syscalls", "sys_exit_openat"),
    ("covobs_write_enter", "syscalls", "sys_enter_write"),
    ("covobs_pwrite_enter", "syscalls", "sys_enter_pwrite64"),
    ("covobs_writev_enter", "syscalls", "sys_enter_writev"),
    ("covobs_pwritev_enter", "syscalls", "sys_enter_pwritev"),
    ("covobs_write_exit", "syscalls", "sys_exit_write"),
    ("covobs_write_exit", "syscalls", "sys_exit_pwrite64"),
    ("covobs_write_exit", "syscalls", "sys_exit_writev"),
];

/// The second pwritev exit shares the program; listed apart to keep the array above readable.
pub const FILE_SYSCALL_TRACEPOINTS_EXTRA: [(&str, &str, &str); 1] =
    [("covobs_write_exit", "syscalls", "sys_exit_pwritev")];

/// Offsets of the syscall tracepoint fields; None when syscall tracepoints are missing.
fn syscall_offsets(tracefs: &Path) -> Option<(u16, u16, u16, u16, u16, u16)> {
    let openat = Format::read(tracefs, "syscalls", "sys_enter_openat").ok()?;
    let write = Format::read(tracefs, "syscalls", "sys_enter_write").ok()?;
    let pwrite = Format::read(tracefs, "syscalls", "sys_enter_pwrite64").ok()?;
    let exit = Format::read(tracefs, "syscalls", "sys_exit_write").ok()?;
    Some((
        openat.offset("dfd").ok()?,
        openat.offset("filename").ok()?,
        openat.offset("flags").ok()?,
        write.offset("fd").ok()?,
        pwrite.offset("pos").ok()?,
        exit.offset("ret").ok()?,
    ))
}

/// Build the programs' configuration from the format files under `tracefs`.
pub fn config(tracefs: &Path, self_tgid: u32) -> Result<Config, TracefsError> {
    let exec = Format::read(tracefs, "sched", "sched_process_exec")?;
    let newtask = Format::read(tracefs, "task", "task_newtask")?;
    let exit = Format::read(tracefs, "sched", "sched_process_exit")?;
    let rename = Format::read(tracefs, "task", "task_rename")?;
    let generate = Format::read(tracefs, "signal", "signal_generate")?;
    let deliver = Format::read(tracefs, "signal", "signal_deliver")?;

    let mut flags = 0;
    let exit_group_dead = match exit.field("group_dead") {
        Some(f) => {
            flags |= config_flags::EXIT_HAS_GROUP_DEAD;
            f.offset
        }
        None => 0,
    };
    let (openat_dfd, openat_filename, openat_flags, write_fd, pwrite_pos, sys_exit_ret) =
        syscall_offsets(tracefs).unwrap_or_default();
    Ok(Config {
        self_tgid,
        flags,
        signal_mask: 0,
        kernel: Default::default(),
        ns: Default::default(),
        kcov: Default::default(),
        tp: TracepointOffsets {
            exec_filename: exec.offset("filename")?,
            exec_pid: exec.offset("pid")?,
            exec_old_pid: exec.offset("old_pid")?,
            newtask_pid: newtask.offset("pid")?,
            newtask_comm: newtask.offset("comm")?,
            newtask_clone_flags: newtask.offset("clone_flags")?,
            rename_pid: rename.offset("pid")?,
            rename_oldcomm: rename.offset("oldcomm")?,
            rename_newcomm: rename.offset("newcomm")?,
            exit_group_dead,
            gen_sig: generate.offset("sig")?,
            gen_errno: generate.offset("errno")?,
            gen_code: generate.offset("code")?,
            gen_pid: generate.offset("pid")?,
            gen_group: generate.offset("group")?,
            gen_result: generate.offset("result")?,
            del_sig: deliver.offset("sig")?,
            del_errno: deliver.offset("errno")?,
            del_code: deliver.offset("code")?,
            del_sa_handler: deliver.offset("sa_handler")?,
            del_sa_flags: deliver.offset("sa_flags")?,
            openat_dfd,
            openat_filename,
            openat_flags,
            write_fd,
            pwrite_pos,
            sys_exit_ret,
            _pad: 0,
        },
    })
}
