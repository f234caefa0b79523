//! What the programs need to give ids in covobs' PID namespace and to tell a task's cgroup: the
//! namespace's inode and kernel structure offsets from BTF (`covobs_common::NsOffsets`).
use btf_rs::Btf;
use covobs_common::{NsOffsets, ns_flags};

use super::btf::{BtfError, member_offset, struct_size};
use crate::target::PidNs;

/// `PIDTYPE_TGID` of `enum pid_type`: the slot of `signal_struct.pids` naming the thread group.
const PIDTYPE_TGID: u32 = 1;

/// The offsets this kernel's BTF gives; a group whose offsets are missing stays unflagged.
pub fn offsets(btf: &Btf, pidns: PidNs) -> NsOffsets {
    let mut ns = NsOffsets {
        pidns_ino: pidns.config_inode(),
        ..Default::default()
    };
    match pid_offsets(btf, &mut ns) {
        Ok(()) => ns.flags |= ns_flags::PID,
        Err(e) => tracing::debug!("{e}: task ids cannot be translated between PID namespaces"),
    }
    match cgroup_offsets(btf, &mut ns) {
        Ok(()) => ns.flags |= ns_flags::CGROUP,
        Err(e) => tracing::debug!("{e}: cgroup moves cannot be followed"),
    }
    ns
}

fn pid_offsets(btf: &Btf, ns: &mut NsOffsets) -> Result<(), BtfError> {
    let off = |s: &str, m: &str| member_offset(btf, s, m);
    ns.task_thread_pid = off("task_struct", "thread_pid")?;
    ns.task_signal = off("task_struct", "signal")?;
    ns.signal_tgid_pid = off("signal_struct", "pids")? + PIDTYPE_TGID * 8;
    ns.pid_level = off("pid", "level")?;
    ns.pid_numbers = off("pid", "numbers")?;
    ns.upid_size = struct_size(btf, "upid")?;
    ns.upid_nr = off("upid", "nr")?;
    ns.upid_ns = off("upid", "ns")?;
    ns.pidns_inum = off("pid_namespace", "ns")? + off("ns_common", "inum")?;
    ns.task_comm = off("task_struct", "comm")?;
    Ok(())
}

fn cgroup_offsets(btf: &Btf, ns: &mut NsOffsets) -> Result<(), BtfError> {
    let off = |s: &str, m: &str| member_offset(btf, s, m);
    ns.task_cgroups = off("task_struct", "cgroups")?;
    ns.css_set_dfl_cgrp = off("css_set", "dfl_cgrp")?;
    ns.cgroup_level = off("cgroup", "level")?;
    ns.cgroup_ancestors = off("cgroup", "ancestors")?;
    ns.cgroup_kn = off("cgroup", "kn")?;
    ns.kn_id = off("kernfs_node", "id")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_on_this_kernel() {
        let btf = super::super::btf::load().expect("this machine's kernel has BTF");
        let pidns = PidNs::own().unwrap();
        let ns = offsets(&btf, pidns);
        assert_eq!(ns.flags, ns_flags::PID | ns_flags::CGROUP);
        // struct upid { int nr; struct pid_namespace *ns; } is ABI-stable in practice.
        assert_eq!((ns.upid_size, ns.upid_nr, ns.upid_ns), (16, 0, 8));
        assert!(ns.pid_numbers > ns.pid_level);
        assert_ne!(ns.task_thread_pid, ns.task_signal);
        assert_eq!(
            ns.pidns_ino, 0,
            "the tests run in the initial PID namespace"
        );
    }
}
