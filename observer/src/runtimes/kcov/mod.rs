//! Kernel coverage (Linux kcov) of the observed processes.
//!
//! - Targets that use kcov themselves (a fuzzer's executor, the program of the kernel's kcov
//!   documentation) are seen through a uprobe on their C library's `ioctl()`
//!   (observer-ebpf/src/kcov.rs, which also says why a uprobe): KCOV_INIT_TRACE, KCOV_ENABLE,
//!   KCOV_REMOTE_ENABLE and KCOV_DISABLE of watched threads. At KCOV_DISABLE the eBPF program
//!   copies the buffer as the thread had it when it called ioctl(), exactly ([`calibrate`]
//!   learns where covobs' own trap starts in it).
//! - Threads that keep kcov enabled (and reset word 0 themselves, which no probe can see) are
//!   followed through a view of their buffer ([`buffer::TargetView`]): sampled while they run,
//!   read in full when they exit (the kernel stops tracing a task early in do_exit).
//! - `covobs run --kernel` traces a workload it launches with its own buffer
//!   ([`buffer::OwnedBuffer`]).
//!
//! [`observer::KcovObserver`] turns all of it into `kcov` events (PCs deduplicated per
//! process) and captures that `attach`/`run` write as `<seq>-kcov.kcov` artifacts.
pub mod buffer;
pub mod calibrate;
pub mod kernel;
pub mod observer;
pub mod trace;

pub use observer::{Capture, KcovEvent, KcovObserver};
pub use trace::{CmpRecord, Mode, Trace};

use super::{DumpThread, Observed};

/// kcov is a kernel device, not a library: a process is seen using it through its C library's
/// `ioctl()` (`super::libc`), and its traces are taken by `KcovObserver`.
pub static OBSERVED: Observed = Observed {
    name: "kcov",
    product: "kcov",
    extension: "kcov",
    is_coverage: true,
    hooks: &[],
    found_without_symbols: |_| false,
    no_dump_function: None,
    dump_returns_probeable: true,
    dump_thread: DumpThread::NotOcaml,
    check_snapshot: |_| None,
    // Its traces are taken by `KcovObserver`, not dumped.
    extractor: None,
};

pub use crate::sys::kcov::DEVICE;

#[derive(Debug, thiserror::Error)]
pub enum KcovError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("a kcov buffer of {0} entries cannot be mapped")]
    Size(u64),
    #[error("descriptor {fd} of process {pid} is not kcov's any more")]
    NotKcov { pid: i32, fd: i32 },
    #[error("kcov calibration: {0}")]
    Calibration(String),
}
