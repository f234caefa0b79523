//! The running kernel as kcov users need it: does it have kcov, what is its build id (so the
//! report finds the matching vmlinux), and which inode is /sys/kernel/debug/kcov.
use super::{DEVICE, KcovError};
pub use crate::sys::kcov::device_identity;

pub use covobs_layout::kernel::{KernelInfo, gnu_build_id};

/// Whether this kernel offers kcov to covobs: the device exists and opens.
pub fn available() -> Result<(), KcovError> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEVICE)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let debugfs = std::path::Path::new("/sys/kernel/debug");
            let why = if debugfs.join("tracing").exists() || is_debugfs_mounted() {
                "this kernel has no kcov (it was not built with CONFIG_KCOV=y)"
            } else {
                "debugfs is not mounted at /sys/kernel/debug (mount -t debugfs none /sys/kernel/debug), or the kernel has no kcov"
            };
            Err(KcovError::Unavailable(format!("no {DEVICE}: {why}")))
        }
        Err(e) => Err(KcovError::Unavailable(format!("opening {DEVICE}: {e}"))),
    }
}

fn is_debugfs_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("debugfs"))
        })
        .unwrap_or(false)
}
