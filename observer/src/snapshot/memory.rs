//! Reading another process's memory with `process_vm_readv`: several ranges in one system call,
//! so the counters of a module are copied in one pass through the kernel, timed.
use std::io::IoSliceMut;

use nix::{
    sys::uio::{RemoteIoVec, process_vm_readv},
    unistd::Pid,
};

use crate::sys::clock;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("reading the memory of process {pid}: {source}")]
    Read { pid: i32, source: nix::Error },
    #[error(
        "reading the memory of process {pid}: got {got} of {want} bytes (a range is no longer mapped)"
    )]
    Short { pid: i32, got: usize, want: usize },
    /// A memory image or a guest's RAM does not hold a range the snapshot needs.
    #[error("{holder} does not hold the {len} bytes at {addr:#x}{hint}")]
    NotHeld {
        holder: String,
        addr: u64,
        len: u64,
        hint: &'static str,
    },
}

/// A range of the target's address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    pub addr: u64,
    pub len: u64,
}

impl Range {
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(self.len)
    }
}

/// When a read started and ended (CLOCK_BOOTTIME ns) and how much it moved.
pub use crate::layout::artifact::ReadTiming;

/// Copy each `ranges[i]` of process `pid` into `bufs[i]` (of the same length), in one
/// process_vm_readv. Fails unless every byte was read.
pub fn read_ranges(
    pid: i32,
    ranges: &[Range],
    bufs: &mut [&mut [u8]],
) -> Result<ReadTiming, MemoryError> {
    let remote: Vec<RemoteIoVec> = ranges
        .iter()
        .map(|r| RemoteIoVec {
            base: r.addr as usize,
            len: r.len as usize,
        })
        .collect();
    let want: usize = remote.iter().map(|r| r.len).sum();
    let mut local: Vec<IoSliceMut<'_>> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
    let start_ns = clock::boot_ns();
    let got = process_vm_readv(Pid::from_raw(pid), &mut local, &remote)
        .map_err(|source| MemoryError::Read { pid, source })?;
    let end_ns = clock::boot_ns();
    if got != want {
        return Err(MemoryError::Short { pid, got, want });
    }
    Ok(ReadTiming {
        start_ns,
        end_ns,
        bytes: got as u64,
        syscalls: 1,
    })
}

/// A zeroed buffer whose pages are already mapped: the kernel then spends a read's window copying,
/// not faulting in the destination (a fresh 8 MiB buffer is 2048 page faults, which made the copy
/// of a million counters several times slower and its window that much wider).
pub fn buffer(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    for i in (0..len).step_by(4096) {
        // SAFETY: `i` < len: a byte inside the buffer. A volatile write, so that it is not
        // optimised out as a store of the zero already there.
        unsafe { std::ptr::write_volatile(buf.as_mut_ptr().add(i), 0) };
    }
    buf
}

/// Read one range into a new buffer.
pub fn read_vec(pid: i32, range: Range) -> Result<(Vec<u8>, ReadTiming), MemoryError> {
    let mut buf = buffer(range.len as usize);
    let timing = read_ranges(pid, &[range], &mut [&mut buf[..]])?;
    Ok((buf, timing))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_memory_in_one_call() {
        let a: Vec<u8> = (0..=255u8).collect();
        let b = [7u8; 10];
        let ranges = [
            Range {
                addr: a.as_ptr() as u64,
                len: a.len() as u64,
            },
            Range {
                addr: b.as_ptr() as u64,
                len: b.len() as u64,
            },
        ];
        let mut x = vec![0u8; a.len()];
        let mut y = vec![0u8; b.len()];
        let pid = std::process::id() as i32;
        let t = read_ranges(pid, &ranges, &mut [&mut x[..], &mut y[..]]).expect("read");
        assert_eq!(x, a);
        assert_eq!(y, b);
        assert_eq!(t.bytes, 266);
        assert!(t.end_ns >= t.start_ns);
    }

    #[test]
    fn buffers_are_zeroed() {
        let b = buffer(3 * 4096 + 5);
        assert_eq!(b.len(), 3 * 4096 + 5);
        assert!(b.iter().all(|x| *x == 0));
    }

    #[test]
    fn an_unmapped_range_is_an_error() {
        let pid = std::process::id() as i32;
        let r = read_vec(pid, Range { addr: 8, len: 16 });
        assert!(r.is_err());
    }
}
