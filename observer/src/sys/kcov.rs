//! The kcov device, as the kernel offers it: below every stage, because the eBPF programs are
//! configured with its identity (`probes/btf.rs`) and the kcov runtime opens it
//! (`runtimes/kcov`).
use std::os::unix::fs::MetadataExt as _;

/// kcov's device.
pub const DEVICE: &str = "/sys/kernel/debug/kcov";

/// /sys/kernel/debug/kcov as `stat` shows it (st_dev, st_ino), and its device in the kernel's
/// own encoding (major << 20 | minor), which the eBPF programs compare.
pub fn device_identity() -> Option<((u64, u64), u32)> {
    let meta = std::fs::metadata(DEVICE).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    Some(((dev, meta.ino()), (major << 20) | (minor & 0xf_ffff)))
}
