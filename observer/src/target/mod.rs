//! Find targets: processes by PID or by name, their threads, and their identity (PID + start time,
//! so a recycled PID is never mistaken for the process we chose).
use std::{
    fs,
    path::{Path, PathBuf},
};

use procfs::process::Process as ProcfsProcess;

pub mod cgroup;
pub mod environ;
pub mod files;
pub mod name;
pub mod pidns;

pub use cgroup::Cgroup;
pub use name::NamePattern;
pub use pidns::PidNs;

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("no such process: {0}")]
    NoSuchProcess(i32),
    #[error("process {0} is a kernel thread; covobs observes user processes")]
    KernelThread(i32),
    #[error("process {pid} exited or was replaced (its start time changed)")]
    Gone { pid: i32 },
    #[error("process {0} has exited (a zombie its parent has not reaped): nothing to observe")]
    Exited(i32),
    #[error("reading /proc/{pid}: {source}")]
    Proc { pid: i32, source: procfs::ProcError },
}

impl TargetError {
    /// Errors caused by what the user asked for, not by covobs or the system.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::NoSuchProcess(_) | Self::KernelThread(_) | Self::Exited(_)
        )
    }
}

/// What the user asked to observe.
#[derive(Clone, Debug)]
pub enum TargetSpec {
    Pid(i32),
    Name(NamePattern),
    /// Every process in a cgroup (or below it), now and later; with a name, only those with it.
    Cgroup {
        cgroup: Cgroup,
        name: Option<NamePattern>,
    },
}

impl TargetSpec {
    /// The name processes must have, if any.
    pub fn pattern(&self) -> Option<&NamePattern> {
        match self {
            Self::Name(p) => Some(p),
            Self::Cgroup { name, .. } => name.as_ref(),
            Self::Pid(_) => None,
        }
    }

    pub fn cgroup(&self) -> Option<&Cgroup> {
        match self {
            Self::Cgroup { cgroup, .. } => Some(cgroup),
            _ => None,
        }
    }
}

/// A running process, pinned by its start time.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Process {
    pub pid: i32,
    /// Start time in clock ticks after boot (field 22 of /proc/PID/stat): the identity check.
    pub start_time: u64,
    pub comm: String,
    pub exe: Option<PathBuf>,
}

/// A thread of a process, with its current name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Thread {
    pub tid: i32,
    pub name: String,
}

fn proc_error(pid: i32, source: procfs::ProcError) -> TargetError {
    match source {
        procfs::ProcError::NotFound(_) => TargetError::NoSuchProcess(pid),
        source => TargetError::Proc { pid, source },
    }
}

impl Process {
    /// The process with this PID now.
    pub fn get(pid: i32) -> Result<Self, TargetError> {
        if pid <= 0 {
            return Err(TargetError::NoSuchProcess(pid));
        }
        let proc = ProcfsProcess::new(pid).map_err(|e| proc_error(pid, e))?;
        let stat = proc.stat().map_err(|e| proc_error(pid, e))?;
        // Kernel threads have no memory map: PF_KTHREAD in the flags.
        if stat.flags & 0x0020_0000 != 0 {
            return Err(TargetError::KernelThread(pid));
        }
        if matches!(stat.state, 'Z' | 'X') {
            return Err(TargetError::Exited(pid));
        }
        Ok(Self {
            pid,
            start_time: stat.starttime,
            comm: stat.comm,
            exe: proc.exe().ok(),
        })
    }

    /// Whether the process with this PID is still the one we chose.
    pub fn is_alive(&self) -> bool {
        start_time_of(self.pid) == Some(self.start_time)
    }

    /// Fails unless the process is still the one we chose: the check right before a signal.
    pub fn ensure_same(&self) -> Result<(), TargetError> {
        if self.is_alive() {
            Ok(())
        } else {
            Err(TargetError::Gone { pid: self.pid })
        }
    }

    /// The process's threads and their names, as /proc shows them now.
    pub fn threads(&self) -> Vec<Thread> {
        threads_of(self.pid)
    }

    /// argv[0] of the process, if readable.
    pub fn argv0(&self) -> Option<String> {
        let cmdline = fs::read(format!("/proc/{}/cmdline", self.pid)).ok()?;
        let first = cmdline.split(|b| *b == 0).next()?;
        (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
    }
}

/// Start time (clock ticks after boot) of a task, or None when it does not exist.
pub fn start_time_of(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// When a process started, in CLOCK_BOOTTIME nanoseconds (clock-tick resolution), or None when
/// it does not exist. With the pid, it names one process instance (pids are reused).
pub fn start_boot_ns(pid: i32) -> Option<u64> {
    let ticks = start_time_of(pid)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|h| u64::try_from(h).ok())
        .filter(|&h| h > 0)?;
    ticks.checked_mul(1_000_000_000 / hz)
}

/// Threads of a process and their names; empty if it is gone.
pub fn threads_of(pid: i32) -> Vec<Thread> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut threads: Vec<Thread> = dir
        .filter_map(|e| {
            let tid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let name = fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).ok()?;
            Some(Thread {
                tid,
                name: name.trim_end_matches('\n').to_owned(),
            })
        })
        .collect();
    threads.sort_by_key(|t| t.tid);
    threads
}

/// Every user process whose name matches, now.
pub fn find_by_name(pattern: &NamePattern) -> Vec<Process> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    let mut found: Vec<Process> = all
        .filter_map(Result::ok)
        .filter(|p| p.pid() != me)
        .filter_map(|p| Process::get(p.pid()).ok())
        .filter(|p| pattern.matches(p))
        .collect();
    found.sort_by_key(|p| p.pid);
    found
}

/// Resolve a path as the target sees it, through its root (for processes in other mount
/// namespaces). The result is a path under /proc/PID/root.
pub fn path_in_root(pid: i32, path: &Path) -> PathBuf {
    let relative = path.strip_prefix("/").unwrap_or(path);
    PathBuf::from(format!("/proc/{pid}/root")).join(relative)
}

pub mod ocaml;
pub mod tracker;
pub use tracker::{TrackError, Tracked, Tracker};
