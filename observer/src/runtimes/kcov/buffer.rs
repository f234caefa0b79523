//! Mappings of kcov buffers in covobs: its own buffer for a workload it launches
//! (`OwnedBuffer`), and a view of a target's buffer through a duplicate of the target's kcov
//! descriptor (`TargetView`: pidfd_getfd + mmap of exactly the buffer's size). Both are live,
//! zero-copy views of what the kernel writes, and both stay readable after the traced thread
//! exits (covobs holds a reference to the kcov file).
use std::{
    fs::File,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::atomic::{Ordering, fence},
};

use covobs_common::kcov;

use super::{DEVICE, KcovError, trace::Mode, trace::Trace};

/// A shared mapping of a kcov buffer of `entries` words.
struct Mapping {
    ptr: *mut u64,
    entries: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value; the raw pointer is only read
// (and, for the owned buffer, word 0 written) with volatile accesses.
unsafe impl Send for Mapping {}

impl Mapping {
    fn new(fd: &OwnedFd, entries: usize, writable: bool) -> Result<Self, KcovError> {
        let len = entries
            .checked_mul(8)
            .ok_or(KcovError::Size(entries as u64))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: maps `len` bytes of the kcov file at offset 0, shared, at an address the kernel
        // picks; the result is checked before use and unmapped on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(KcovError::Io {
                what: "mapping the kcov buffer",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Self {
            ptr: ptr.cast(),
            entries,
        })
    }

    fn word(&self, i: usize) -> u64 {
        debug_assert!(i < self.entries);
        // SAFETY: `i` is within the mapping (callers bound it by `entries`); the kernel writes
        // these words concurrently, hence the volatile read of an aligned u64.
        unsafe { self.ptr.add(i).read_volatile() }
    }

    /// The buffer now: word 0 and the entries it counts (bounded by the buffer's size).
    fn snapshot(&self, mode: Mode) -> (u64, Trace) {
        let raw = self.word(0);
        // The kernel bumps word 0 before it writes the entry: read the count first.
        fence(Ordering::Acquire);
        let stride = mode.stride() as u64;
        let capacity = (self.entries as u64 - 1) / stride;
        let count = raw.min(capacity);
        let n = 1 + (count * stride) as usize;
        let words = (0..n).map(|i| self.word(i)).collect();
        (raw, Trace::new(mode, words, count))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the region mapped in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.entries * 8) };
    }
}

/// covobs' own kcov buffer, opened, sized and mapped before a workload is launched; the
/// workload's first thread enables it (KCOV_ENABLE must come from the traced task itself).
pub struct OwnedBuffer {
    fd: OwnedFd,
    map: Mapping,
    pub entries: usize,
}

impl OwnedBuffer {
    /// Open /sys/kernel/debug/kcov (close-on-exec: kcov stays enabled across exec without the
    /// descriptor), size it to `entries` words and map it.
    pub fn open(entries: usize) -> Result<Self, KcovError> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(DEVICE)
            .map_err(|source| KcovError::Unavailable(format!("opening {DEVICE}: {source}")))?;
        let fd = OwnedFd::from(file);
        // SAFETY: KCOV_INIT_TRACE takes the number of entries by value; no memory is passed.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), kcov::INIT_TRACE as _, entries) };
        if r != 0 {
            return Err(KcovError::Io {
                what: "KCOV_INIT_TRACE",
                source: std::io::Error::last_os_error(),
            });
        }
        let map = Mapping::new(&fd, entries, true)?;
        Ok(Self { fd, map, entries })
    }

    /// The descriptor a child enables before exec.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    pub fn snapshot(&self, mode: Mode) -> (u64, Trace) {
        self.map.snapshot(mode)
    }

    /// Set word 0 to 0, as a kcov user does before the code it wants traced.
    pub fn reset(&self) {
        // SAFETY: word 0 of a writable shared mapping of at least 2 words (INIT_TRACE refuses
        // smaller sizes); a volatile store, as the kernel reads it concurrently.
        unsafe { self.map.ptr.write_volatile(0) };
    }

    /// ioctl(KCOV_ENABLE, mode) or ioctl(KCOV_DISABLE) from the calling thread.
    pub fn enable(&self, mode: Mode) -> std::io::Result<()> {
        let arg = match mode {
            Mode::Pc => kcov::TRACE_PC,
            Mode::Cmp => kcov::TRACE_CMP,
        };
        // SAFETY: KCOV_ENABLE takes the trace mode by value; no memory is passed.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), kcov::ENABLE as _, arg) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn disable(&self) -> std::io::Result<()> {
        // SAFETY: KCOV_DISABLE takes no argument.
        let r = unsafe { libc::ioctl(self.fd.as_raw_fd(), kcov::DISABLE as _, 0) };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A view of a target's kcov buffer through a duplicate of its descriptor.
pub struct TargetView {
    _fd: OwnedFd,
    map: Mapping,
    pub entries: usize,
}

impl TargetView {
    /// Duplicate descriptor `fd` of process `pid` (pidfd_getfd: needs PTRACE_MODE_ATTACH, as
    /// root), check that it is kcov's, and map `entries` words of it. The kernel refuses any
    /// size but the buffer's own (EINVAL).
    pub fn open(pid: i32, fd: i32, entries: u64, kcov_file: (u64, u64)) -> Result<Self, KcovError> {
        let entries = usize::try_from(entries).map_err(|_| KcovError::Size(entries))?;
        if entries < 2 {
            return Err(KcovError::Size(entries as u64));
        }
        let dup = duplicate(pid, fd)?;
        let file = File::from(dup);
        let meta = file.metadata().map_err(|source| KcovError::Io {
            what: "checking the duplicated descriptor",
            source,
        })?;
        use std::os::unix::fs::MetadataExt as _;
        if (meta.dev(), meta.ino()) != kcov_file {
            return Err(KcovError::NotKcov { pid, fd });
        }
        let fd = OwnedFd::from(file);
        let map = Mapping::new(&fd, entries, false)?;
        Ok(Self {
            _fd: fd,
            map,
            entries,
        })
    }

    pub fn snapshot(&self, mode: Mode) -> (u64, Trace) {
        self.map.snapshot(mode)
    }

    /// Words `[from, to)` of the buffer (bounded by its size).
    pub fn words(&self, from: usize, to: usize) -> Vec<u64> {
        (from..to.min(self.entries))
            .map(|i| self.map.word(i))
            .collect()
    }
}

/// pidfd_open + pidfd_getfd: a descriptor of this process for the target's `fd`.
fn duplicate(pid: i32, fd: i32) -> Result<OwnedFd, KcovError> {
    let io = |what| move |source| KcovError::Io { what, source };
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(io("pidfd_open")(std::io::Error::last_os_error()));
    }
    // SAFETY: a non-negative return is a new pidfd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
    // SAFETY: pidfd_getfd takes a pidfd, a descriptor number of that process and flags (0); it
    // returns a new descriptor of ours (close-on-exec) or -1.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return Err(io("pidfd_getfd")(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup as i32) })
}
