//! Guest virtual addresses through the guest's own page tables: for payloads that run with paging
//! at addresses other than where they are loaded (a higher-half payload linked at
//! 0xffffffff80000000 and loaded at 2 MiB). x86-64 4-level paging: CR3 (asked of QEMU through QMP,
//! HMP `info registers`) points at the PML4; each level's entry is read from guest RAM; 1 GiB and
//! 2 MiB pages end the walk early. A range is translated page by page and read in one
//! `process_vm_readv` of the QEMU process (one piece per physically contiguous run).
use std::collections::HashMap;

use super::{
    memory::{self, MemoryError, Range, ReadTiming},
    qemu::GuestRam,
    source::MemorySource,
};

const PRESENT: u64 = 1;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// The registers a walk needs, from HMP `info registers`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl Registers {
    /// Parse `info registers` (`CR0=80000011 CR2=... CR3=0000000000201000 CR4=00000620`,
    /// `EFER=0000000000000500`).
    pub fn parse(text: &str) -> Option<Self> {
        let field = |name: &str| -> Option<u64> {
            text.split_whitespace().find_map(|w| {
                let v = w.strip_prefix(name)?.strip_prefix('=')?;
                u64::from_str_radix(v, 16).ok()
            })
        };
        Some(Self {
            cr0: field("CR0")?,
            cr3: field("CR3")?,
            cr4: field("CR4")?,
            efer: field("EFER")?,
        })
    }

    /// Why a 4-level walk does not apply, if it does not.
    pub fn unsupported(&self) -> Option<&'static str> {
        if self.cr0 & (1 << 31) == 0 {
            return Some("paging is off (CR0.PG clear): the payload runs at physical addresses");
        }
        if self.efer & (1 << 10) == 0 {
            return Some("the guest is not in long mode (EFER.LMA clear)");
        }
        if self.cr4 & (1 << 12) != 0 {
            return Some("the guest uses 5-level paging (CR4.LA57): covobs walks 4 levels");
        }
        None
    }
}

/// A guest's RAM addressed by the guest's virtual addresses, through the page tables at `cr3`.
#[derive(Clone, Debug)]
pub struct Paged {
    pub ram: GuestRam,
    pub cr3: u64,
}

impl Paged {
    /// The guest-physical address of `va` and how many bytes from it stay in the same page.
    fn translate(
        &self,
        va: u64,
        tables: &mut HashMap<u64, u64>,
    ) -> Result<(u64, u64), MemoryError> {
        let not_mapped = |why: &'static str| MemoryError::NotHeld {
            holder: format!(
                "the guest's page tables (CR3 {:#x}) in QEMU process {}",
                self.cr3, self.ram.pid
            ),
            addr: va,
            len: 1,
            hint: why,
        };
        let mut table = self.cr3 & ADDR_MASK;
        for (level, shift) in [(4, 39u32), (3, 30), (2, 21), (1, 12)] {
            let at = table + ((va >> shift) & 0x1ff) * 8;
            let entry = match tables.get(&at) {
                Some(e) => *e,
                None => {
                    let (b, _) = self.ram.read_vec(Range { addr: at, len: 8 })?;
                    let e = u64::from_le_bytes(b[..8].try_into().unwrap_or_default());
                    tables.insert(at, e);
                    e
                }
            };
            if entry & PRESENT == 0 {
                return Err(not_mapped(
                    " (not mapped: a page-table entry is not present)",
                ));
            }
            if level == 1 || (entry & HUGE != 0 && level <= 3) {
                let size = 1u64 << shift;
                let base = entry & ADDR_MASK & !(size - 1);
                let off = va & (size - 1);
                return Ok((base + off, size - off));
            }
            table = entry & ADDR_MASK;
        }
        Err(not_mapped(""))
    }

    /// The physical runs that hold `r`.
    fn physical(
        &self,
        r: &Range,
        tables: &mut HashMap<u64, u64>,
    ) -> Result<Vec<Range>, MemoryError> {
        let mut out: Vec<Range> = Vec::new();
        let mut done = 0;
        while done < r.len {
            let (pa, left) = self.translate(r.addr.wrapping_add(done), tables)?;
            let n = left.min(r.len - done);
            match out.last_mut() {
                Some(last) if last.end() == pa => last.len += n,
                _ => out.push(Range { addr: pa, len: n }),
            }
            done += n;
        }
        Ok(out)
    }
}

impl MemorySource for Paged {
    fn read_ranges(
        &self,
        ranges: &[Range],
        bufs: &mut [&mut [u8]],
    ) -> Result<ReadTiming, MemoryError> {
        let mut tables = HashMap::new();
        let mut runs = Vec::new();
        for r in ranges {
            runs.push(self.physical(r, &mut tables)?);
        }
        // Split each buffer along its physical runs, then read every piece in one call.
        let mut phys = Vec::new();
        let mut pieces: Vec<&mut [u8]> = Vec::new();
        for (buf, rs) in bufs.iter_mut().zip(&runs) {
            let mut rest: &mut [u8] = buf;
            for p in rs {
                let (head, tail) = rest.split_at_mut(p.len as usize);
                phys.push(*p);
                pieces.push(head);
                rest = tail;
            }
        }
        let mut host = Vec::with_capacity(phys.len());
        for p in &phys {
            host.push(self.ram.host_range(p)?);
        }
        memory::read_ranges(self.ram.pid, &host, &mut pieces)
    }

    fn method(&self) -> &'static str {
        self.ram.method()
    }

    fn live(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Page tables built in this process's memory, read as a guest's RAM: 1 GiB, 2 MiB and
    /// 4 KiB pages, a range that crosses into another physical page, an unmapped address.
    #[test]
    fn walks_four_levels_with_huge_pages() {
        let mut ram = vec![0u8; 0x9000];
        let mut put = |at: usize, v: u64| ram[at..at + 8].copy_from_slice(&v.to_le_bytes());
        let (pml4, pdpt_low, pdpt_high, pd, pt) =
            (0x1000u64, 0x2000u64, 0x3000u64, 0x4000u64, 0x8000u64);
        put(pml4 as usize, pdpt_low | 3);
        put(pml4 as usize + 511 * 8, pdpt_high | 3);
        put(pdpt_high as usize + 510 * 8, HUGE | 3); // 1 GiB page at physical 0
        put(pdpt_low as usize, pd | 3);
        put(pd as usize + 8, pt | 3);
        put(pd as usize + 2 * 8, HUGE | 3); // 2 MiB page at physical 0
        put(pt as usize + 3 * 8, 0x5000 | 3); // 4 KiB pages: 0x203000 -> 0x5000,
        put(pt as usize + 4 * 8, 0x7000 | 3); // 0x204000 -> 0x7000
        for (i, b) in ram[0x5000..0x8000].iter_mut().enumerate() {
            *b = i as u8;
        }
        let guest = Paged {
            ram: GuestRam {
                pid: std::process::id() as i32,
                gpa: 0,
                hva: ram.as_ptr() as u64,
                len: ram.len() as u64,
                backing: "test".into(),
                paused: false,
                located: "content",
            },
            cr3: pml4,
        };
        let at = |va: u64, len: u64| guest.read_vec(Range { addr: va, len }).map(|(b, _)| b);
        assert_eq!(
            at(0xffff_ffff_8000_5010, 4).unwrap(),
            [0x10, 0x11, 0x12, 0x13]
        );
        assert_eq!(at(0x40_5020, 2).unwrap(), [0x20, 0x21]);
        assert_eq!(at(0x20_3010, 2).unwrap(), [0x10, 0x11]);
        // 0x203ffe..0x204002: the end of physical 0x5000's page, then physical 0x7000.
        assert_eq!(at(0x20_3ffe, 4).unwrap(), [0xfe, 0xff, 0x00, 0x01]);
        assert!(at(0x60_0000, 8).is_err(), "PD entry 3 is not present");
        assert!(at(0x20_5000, 8).is_err(), "PT entry 5 is not present");
    }

    #[test]
    fn registers_from_info_registers() {
        let text = "RAX=0000000000000000 RBX=0000000000000000\r\nES =0010 ...\r\nCR0=80000013 CR2=0000000000000000 CR3=0000000000209000 CR4=00000620\r\nDR0=0 \r\nEFER=0000000000000d00\r\n";
        let r = Registers::parse(text).unwrap();
        assert_eq!(r.cr3, 0x209000);
        assert_eq!(r.unsupported(), None);
        let off = Registers { cr0: 0x11, ..r };
        assert!(off.unsupported().is_some());
        let la57 = Registers {
            cr4: r.cr4 | 1 << 12,
            ..r
        };
        assert!(la57.unsupported().unwrap().contains("5-level"));
        assert!(Registers::parse("RAX=0").is_none());
    }
}
