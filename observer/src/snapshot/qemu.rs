//! A QEMU guest's RAM as a [`MemorySource`]. QEMU system emulation keeps the guest's RAM in its
//! own address space: for a plain `-m SIZE` guest one anonymous read-write mapping of that size
//! (a file mapping with `-object memory-backend-file`), whose byte N is guest-physical address N
//! for the low RAM (below the PCI hole). covobs takes the QEMU process's read-write mappings of
//! at least 1 MiB as candidate RAM blocks, largest first; the caller keeps the first one that
//! holds the payload (its build-id note and profile names where its ELF says they are loaded).
//! Reads are one `process_vm_readv` of the QEMU process: no guest cooperation, and the guest
//! keeps running unless `--pause` stopped it through QMP.
use super::{
    memory::{self, MemoryError, Range, ReadTiming},
    source::MemorySource,
};

pub const METHOD_RUNNING: &str = "qemu-guest-ram";
pub const METHOD_PAUSED: &str = "qemu-guest-ram-paused";

/// Smallest mapping taken for guest RAM.
const MIN_RAM: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("no process {pid}")]
    NoProcess { pid: i32 },
    #[error("process {pid} is not a QEMU system emulator (its executable is {exe})")]
    NotQemu { pid: i32, exe: String },
    #[error("reading the memory map of QEMU process {pid}: {source}")]
    Maps { pid: i32, source: std::io::Error },
}

/// One RAM block of a guest: guest-physical `gpa..gpa+len` is `hva..` in the QEMU process.
#[derive(Clone, Debug)]
pub struct GuestRam {
    pub pid: i32,
    pub gpa: u64,
    pub hva: u64,
    pub len: u64,
    /// What backs it in QEMU (an anonymous mapping, or the backend file).
    pub backing: String,
    /// The guest was stopped through QMP for this read.
    pub paused: bool,
    /// How the block was found: `qmp-gpa2hva` (QEMU said where a guest-physical address is) or
    /// `content` (the mapping where the payload's bytes are, taking byte 0 as guest-physical 0).
    pub located: &'static str,
}

impl GuestRam {
    fn host(&self, r: &Range) -> Option<Range> {
        let off = r.addr.checked_sub(self.gpa)?;
        (off.checked_add(r.len)? <= self.len).then(|| Range {
            addr: self.hva + off,
            len: r.len,
        })
    }
}

impl GuestRam {
    /// Where guest-physical range `r` is in the QEMU process.
    pub fn host_range(&self, r: &Range) -> Result<Range, MemoryError> {
        self.host(r).ok_or_else(|| MemoryError::NotHeld {
            holder: format!(
                "the guest RAM block of QEMU process {} ({:#x} bytes at guest-physical {:#x})",
                self.pid, self.len, self.gpa
            ),
            addr: r.addr,
            len: r.len,
            hint: " (the payload is loaded elsewhere, or this block is not the guest's RAM)",
        })
    }
}

impl MemorySource for GuestRam {
    fn read_ranges(
        &self,
        ranges: &[Range],
        bufs: &mut [&mut [u8]],
    ) -> Result<ReadTiming, MemoryError> {
        let mut host = Vec::with_capacity(ranges.len());
        for r in ranges {
            host.push(self.host_range(r)?);
        }
        memory::read_ranges(self.pid, &host, bufs)
    }

    fn method(&self) -> &'static str {
        if self.paused {
            METHOD_PAUSED
        } else {
            METHOD_RUNNING
        }
    }

    fn live(&self) -> bool {
        true
    }
}

/// The QEMU process's command line.
pub fn cmdline(pid: i32) -> Result<Vec<String>, QemuError> {
    let raw =
        std::fs::read(format!("/proc/{pid}/cmdline")).map_err(|_| QemuError::NoProcess { pid })?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// Check that `pid` is a QEMU system emulator and list its candidate RAM blocks, largest first.
pub fn candidates(pid: i32) -> Result<Vec<GuestRam>, QemuError> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|_| QemuError::NoProcess { pid })?
        .to_string_lossy()
        .into_owned();
    let name = exe
        .trim_end_matches(" (deleted)")
        .rsplit('/')
        .next()
        .unwrap_or("");
    if !name.starts_with("qemu-system-") {
        return Err(QemuError::NotQemu { pid, exe });
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| QemuError::Maps { pid, source })?;
    let mut out: Vec<GuestRam> = maps.lines().filter_map(|l| parse_line(pid, l)).collect();
    out.sort_by(|a, b| b.len.cmp(&a.len).then(a.hva.cmp(&b.hva)));
    Ok(out)
}

/// A read-write mapping of at least [`MIN_RAM`], as a RAM block starting at guest-physical 0.
fn parse_line(pid: i32, line: &str) -> Option<GuestRam> {
    let mut f = line.split_whitespace();
    let (start, end) = f.next()?.split_once('-')?;
    let perms = f.next()?;
    let path = f.nth(3).unwrap_or("").to_owned();
    let (start, end) = (
        u64::from_str_radix(start, 16).ok()?,
        u64::from_str_radix(end, 16).ok()?,
    );
    let len = end.checked_sub(start)?;
    // Guest RAM is never executable in QEMU (TCG's code buffer is: left out).
    if !perms.starts_with("rw-") || len < MIN_RAM || path.starts_with('[') {
        return None;
    }
    Some(GuestRam {
        pid,
        gpa: 0,
        hva: start,
        len,
        backing: if path.is_empty() {
            "anonymous memory".into()
        } else {
            path
        },
        paused: false,
        located: "content",
    })
}

/// The candidate block that holds host address `hva`, which QEMU says is guest-physical `gpa`.
pub fn locate(candidates: &[GuestRam], gpa: u64, hva: u64) -> Option<GuestRam> {
    let c = candidates
        .iter()
        .find(|c| hva >= c.hva && hva - c.hva < c.len)?;
    Some(GuestRam {
        gpa: gpa.checked_sub(hva - c.hva)?,
        located: "qmp-gpa2hva",
        ..c.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_candidates_from_maps_lines() {
        let ram = parse_line(7, "7f0000000000-7f0004000000 rw-p 00000000 00:00 0 ").unwrap();
        assert_eq!((ram.hva, ram.len, ram.gpa), (0x7f00_0000_0000, 64 << 20, 0));
        assert_eq!(ram.backing, "anonymous memory");
        let file = parse_line(
            7,
            "7f0000000000-7f0008000000 rw-s 00000000 00:1a 12 /dev/shm/guest.ram",
        )
        .unwrap();
        assert_eq!(file.backing, "/dev/shm/guest.ram");
        assert!(parse_line(7, "7f0000000000-7f0000001000 rw-p 00000000 00:00 0").is_none());
        assert!(parse_line(7, "7f0000000000-7f0004000000 r--p 00000000 00:00 0").is_none());
        assert!(parse_line(7, "7f0000000000-7f0040000000 rwxp 00000000 00:00 0").is_none());
        let high = locate(std::slice::from_ref(&ram), 0x1_0010_0000, 0x7f00_0010_0000).unwrap();
        assert_eq!((high.gpa, high.hva), (0x1_0000_0000, 0x7f00_0000_0000));
        assert!(locate(std::slice::from_ref(&ram), 0x10, 0x7f00_0010_0000).is_none());
        assert!(parse_line(7, "7f0000000000-7f0004000000 rw-p 00000000 00:00 0 [heap]").is_none());
        let r = ram.host(&Range {
            addr: 0x10_0000,
            len: 16,
        });
        assert_eq!(r.map(|r| r.addr), Some(0x7f00_0010_0000));
        assert!(
            ram.host(&Range {
                addr: (64 << 20) - 8,
                len: 16
            })
            .is_none()
        );
    }
}
