//! covobs' own PID namespace. Every pid and tid covobs prints, stores or signals is in it: /proc,
//! pidfd_open, tgkill and perf_event_open all read ids there, and the eBPF programs translate the
//! kernel's ids into it (see observer-ebpf/src/ns.rs).
use std::{fs, os::unix::fs::MetadataExt};

/// Inode number of the initial PID namespace (`PROC_PID_INIT_INO`): fixed by the kernel.
const INIT_PIDNS_INO: u64 = 0xEFFF_FFFC;

#[derive(Debug, thiserror::Error)]
pub enum PidNsError {
    #[error("reading /proc/self/ns/pid: {0}")]
    Read(std::io::Error),
    #[error(
        "the /proc mounted here belongs to another PID namespace than covobs' own (/proc/self is {proc_self}, covobs is {pid}): mount a proc for this namespace (unshare --mount-proc, or the container runtime's /proc)"
    )]
    ForeignProc { proc_self: String, pid: u32 },
}

impl PidNsError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::ForeignProc { .. })
    }
}

/// The PID namespace covobs runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PidNs {
    /// Inode of the namespace (`/proc/self/ns/pid`).
    pub inode: u64,
    /// The initial namespace: the kernel's ids are covobs' ids.
    pub initial: bool,
    /// How deep it is (0: the initial one), once known (the eBPF side learns it).
    pub level: Option<u32>,
}

impl PidNs {
    /// covobs' namespace, after checking that /proc shows that namespace (ids read from a
    /// foreign /proc would name other processes).
    pub fn own() -> Result<Self, PidNsError> {
        let inode = fs::metadata("/proc/self/ns/pid")
            .map_err(PidNsError::Read)?
            .ino();
        let pid = std::process::id();
        let proc_self = fs::read_link("/proc/self")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        if proc_self != pid.to_string() {
            return Err(PidNsError::ForeignProc { proc_self, pid });
        }
        let initial = inode == INIT_PIDNS_INO;
        Ok(Self {
            inode,
            initial,
            level: initial.then_some(0),
        })
    }

    /// The inode as the eBPF programs compare it (`ns_common.inum` is 32 bits); 0 in the initial
    /// namespace, where nothing is translated.
    pub fn config_inode(&self) -> u32 {
        if self.initial { 0 } else { self.inode as u32 }
    }
}

/// The id a process has in its own, innermost PID namespace (what its getpid() returns, and so
/// what `%p` in its file names expands to): the last NSpid entry. Equal to `pid` when the process
/// shares covobs' namespace.
pub fn own_pid(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_nspid(&status)
}

fn parse_nspid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The host name a process sees (its UTS namespace): what `%h` in its file names expands to.
/// Read by a short-lived thread that joins that namespace (allowed per thread for UTS).
pub fn hostname_of(pid: u32) -> Option<String> {
    let ns = fs::File::open(format!("/proc/{pid}/ns/uts")).ok()?;
    let same = fs::metadata("/proc/self/ns/uts")
        .ok()
        .zip(ns.metadata().ok())
        .is_some_and(|(a, b)| a.ino() == b.ino() && a.dev() == b.dev());
    if same {
        return own_hostname();
    }
    std::thread::Builder::new()
        .name("covobs-uts".into())
        .spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWUTS).ok()?;
            own_hostname()
        })
        .ok()?
        .join()
        .ok()
        .flatten()
}

fn own_hostname() -> Option<String> {
    nix::unistd::gethostname().ok()?.into_string().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_innermost_id() {
        assert_eq!(parse_nspid("Name:\tx\nNSpid:\t4242\t7\t1\n"), Some(1));
        assert_eq!(parse_nspid("NSpid:\t12\n"), Some(12));
        assert_eq!(parse_nspid("Name:\tx\n"), None);
    }

    #[test]
    fn this_process_is_in_the_initial_namespace_with_its_own_proc() {
        let ns = PidNs::own().unwrap();
        assert!(ns.initial, "the tests run in the initial PID namespace");
        assert_eq!(ns.config_inode(), 0);
        assert_eq!(own_pid(std::process::id()), Some(std::process::id()));
        assert_eq!(hostname_of(std::process::id()), own_hostname());
    }
}
