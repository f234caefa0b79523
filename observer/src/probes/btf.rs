//! Offsets of the kernel structure fields the eBPF programs follow (task -> files -> fd table ->
//! file -> inode), resolved from this kernel's BTF. aya-ebpf programs written in Rust have no
//! CO-RE relocations; resolving the offsets here and passing them in the config map gives the
//! same portability.
use btf_rs::{Btf, BtfType, Type};
use covobs_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("no kernel BTF (/sys/kernel/btf/vmlinux): {0}")]
    Unavailable(String),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

/// This kernel's BTF (parsed once: it is a few megabytes).
pub fn load() -> Result<Btf, BtfError> {
    Btf::from_file("/sys/kernel/btf/vmlinux").map_err(|e| BtfError::Unavailable(e.to_string()))
}

pub fn kernel_offsets() -> Result<KernelOffsets, BtfError> {
    kernel_offsets_in(&load()?)
}

pub fn kernel_offsets_in(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let off = |s: &str, m: &str| member_offset(btf, s, m);
    Ok(KernelOffsets {
        task_files: off("task_struct", "files")?,
        files_fdt: off("files_struct", "fdt")?,
        fdt_max_fds: off("fdtable", "max_fds")?,
        fdt_fd: off("fdtable", "fd")?,
        file_f_pos: off("file", "f_pos")?,
        file_f_inode: off("file", "f_inode")?,
        inode_i_ino: off("inode", "i_ino")?,
        inode_i_sb: off("inode", "i_sb")?,
        sb_s_dev: off("super_block", "s_dev")?,
        valid: 1,
        task_in_execve_bit: member_bit_offset(btf, "task_struct", "in_execve").unwrap_or(u32::MAX),
        ..signal_offsets(btf).unwrap_or_default()
    })
}

/// What the kcov program needs: the offsets that lead from a descriptor's `struct file` to its
/// kcov buffer, and the identity of /sys/kernel/debug/kcov. `valid` is 0 on a kernel without
/// kcov (or without `struct kcov` in its BTF): kcov ioctls are then not followed.
pub fn kcov_config() -> covobs_common::KcovConfig {
    let Some(((_, ino), dev)) = crate::sys::kcov::device_identity() else {
        return Default::default();
    };
    let resolved = Btf::from_file("/sys/kernel/btf/vmlinux")
        .map_err(|e| BtfError::Unavailable(e.to_string()))
        .and_then(|btf| {
            let off = |s: &str, m: &str| member_offset(&btf, s, m);
            Ok(covobs_common::KcovConfig {
                file_private_data: off("file", "private_data")?,
                kcov_mode: off("kcov", "mode")?,
                kcov_size: off("kcov", "size")?,
                kcov_area: off("kcov", "area")?,
                ino,
                dev,
                valid: 1,
                ..Default::default()
            })
        });
    resolved.unwrap_or_else(|e| {
        tracing::warn!("{e}: kcov users are not followed");
        Default::default()
    })
}

/// Offsets for the raw signal tracepoints; an error leaves them to the perf tracepoints.
fn signal_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let off = |s: &str, m: &str| member_offset(btf, s, m);
    let sa = off("k_sigaction", "sa")?;
    Ok(KernelOffsets {
        task_pid: off("task_struct", "pid")?,
        task_tgid: off("task_struct", "tgid")?,
        ka_sa_handler: sa + off("sigaction", "sa_handler")?,
        ka_sa_flags: sa + off("sigaction", "sa_flags")?,
        siginfo_errno: off("kernel_siginfo", "si_errno")?,
        siginfo_code: off("kernel_siginfo", "si_code")?,
        signals_valid: 1,
        ..Default::default()
    })
}

/// Bit offset of a (bitfield) member.
pub fn member_bit_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct(strukt.to_owned()))?;
    let s = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
    find_in(btf, s, member).ok_or_else(|| BtfError::NoMember {
        strukt: strukt.to_owned(),
        member: member.to_owned(),
    })
}

/// Byte offset of `member` in `struct strukt`, looking through anonymous structs and unions.
pub fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct(strukt.to_owned()))?;
    let s = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
    find_in(btf, s, member)
        .map(|bits| bits / 8)
        .ok_or_else(|| BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: member.to_owned(),
        })
}

/// Bit offset of a member, searching anonymous members recursively.
fn find_in(btf: &Btf, s: &btf_rs::Struct, member: &str) -> Option<u32> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == member {
            return Some(m.bit_offset());
        }
        if name.is_empty() {
            let inner = resolve_struct(btf, m)?;
            if let Some(off) = find_in(btf, &inner, member) {
                return Some(m.bit_offset() + off);
            }
        }
    }
    None
}

/// Size in bytes of a struct.
pub fn struct_size(btf: &Btf, strukt: &str) -> Result<u32, BtfError> {
    btf.resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct(strukt.to_owned()))?
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s.size() as u32),
            _ => None,
        })
        .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))
}

/// The struct or union type of an (anonymous) member, through typedefs and qualifiers.
fn resolve_struct(btf: &Btf, m: &dyn BtfType) -> Option<btf_rs::Struct> {
    let mut t = btf.resolve_chained_type(m).ok()?;
    for _ in 0..8 {
        match t {
            Type::Struct(s) | Type::Union(s) => return Some(s),
            Type::Typedef(ref x) => t = btf.resolve_chained_type(x).ok()?,
            Type::Const(ref x) | Type::Volatile(ref x) => t = btf.resolve_chained_type(x).ok()?,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_offsets_on_this_kernel() {
        if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
            panic!("this machine's kernel has BTF; the test needs it");
        }
        let k = kernel_offsets().unwrap();
        assert_eq!(k.valid, 1);
        assert!(k.task_files > 0 && k.file_f_pos > 0 && k.inode_i_sb > 0);
        assert_ne!(k.fdt_max_fds, k.fdt_fd);
        assert_eq!(k.signals_valid, 1);
        // The siginfo layout is ABI: si_signo, si_errno, si_code.
        assert_eq!((k.siginfo_errno, k.siginfo_code), (4, 8));
        assert_eq!(k.ka_sa_handler, 0);
    }
}
