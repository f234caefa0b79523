//! Where a snapshot's bytes come from. The profile builders ([`super::llvm`], [`super::sancov`])
//! only ask for ranges of the target's address space; a [`MemorySource`] answers them from a live
//! process (`process_vm_readv`), from a memory image on disk (an ELF core file or a raw RAM dump,
//! [`super::image`]) or from a QEMU guest's RAM inside the QEMU process ([`super::qemu`]).
use super::memory::{self, MemoryError, Range, ReadTiming};

/// Something that holds a copy (or the original) of a target's memory, addressed as the target
/// addresses it (virtual addresses of a process, guest-physical addresses of a VM).
pub trait MemorySource {
    /// Copy each `ranges[i]` into `bufs[i]` (of the same length). Fails unless every byte was
    /// read; what is read in one call is read as close together in time as the source allows.
    fn read_ranges(
        &self,
        ranges: &[Range],
        bufs: &mut [&mut [u8]],
    ) -> Result<ReadTiming, MemoryError>;

    /// How the bytes are read, for the snapshot's metadata (`process_vm_readv`, `core-file`,
    /// `raw-image`, `qemu-guest-ram`).
    fn method(&self) -> &'static str;

    /// Whether the memory can change while it is read (a running process or guest).
    fn live(&self) -> bool;

    /// Read one range into a new buffer.
    fn read_vec(&self, range: Range) -> Result<(Vec<u8>, ReadTiming), MemoryError> {
        let mut buf = memory::buffer(range.len as usize);
        let timing = self.read_ranges(&[range], &mut [&mut buf[..]])?;
        Ok((buf, timing))
    }
}

/// A live process on this machine: its own memory, through `process_vm_readv`.
#[derive(Clone, Copy, Debug)]
pub struct LiveProcess(pub i32);

impl MemorySource for LiveProcess {
    fn read_ranges(
        &self,
        ranges: &[Range],
        bufs: &mut [&mut [u8]],
    ) -> Result<ReadTiming, MemoryError> {
        memory::read_ranges(self.0, ranges, bufs)
    }

    fn method(&self) -> &'static str {
        "process_vm_readv"
    }

    fn live(&self) -> bool {
        true
    }
}
