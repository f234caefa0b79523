//! Is the bpf(2) syscall there and allowed? Distinguishes a kernel without BPF (ENOSYS) from a
//! caller without privileges (EPERM) before anything is loaded.
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum BpfUnavailable {
    #[error("this kernel has no bpf() system call (built without CONFIG_BPF_SYSCALL)")]
    NoSyscall,
    #[error("bpf() is not permitted: run covobs as root (it needs CAP_BPF and CAP_PERFMON)")]
    NotPermitted,
    #[error("bpf() failed unexpectedly: {0}")]
    Other(io::Error),
}

/// Probe bpf(2) with a BPF_MAP_CREATE of an all-zero attribute: a kernel with BPF answers EINVAL
/// (map type 0 does not exist), one without answers ENOSYS, a refusal is EPERM.
pub fn probe() -> Result<(), BpfUnavailable> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    let attr = [0u8; 128];
    // SAFETY: bpf(BPF_MAP_CREATE, attr, size) only reads `size` bytes from `attr`, which is a
    // valid, initialised buffer of that size; an invalid map type creates nothing.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    if ret >= 0 {
        // Cannot happen with map type 0, but never leak a descriptor.
        // SAFETY: a non-negative return of BPF_MAP_CREATE is a new fd that we own.
        unsafe { libc::close(ret as libc::c_int) };
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::E2BIG) => Ok(()),
        Some(libc::ENOSYS) => Err(BpfUnavailable::NoSyscall),
        Some(libc::EPERM) | Some(libc::EACCES) => Err(BpfUnavailable::NotPermitted),
        _ => Err(BpfUnavailable::Other(err)),
    }
}
