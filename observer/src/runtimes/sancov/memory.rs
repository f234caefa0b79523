//! SanitizerCoverage from memory: targets built with
//! `-fsanitize-coverage=inline-8bit-counters,pc-table` keep one 8-bit counter per edge in
//! `__sancov_cntrs` and, in `__sancov_pcs`, one (PC, flags) pair per counter, in the same order.
//! A snapshot reads the counters; the PC table comes once from the module's file. It yields the
//! `.sancov` file the sanitizer runtime would write for the covered edges (64-bit magic, then
//! module-relative PCs, ascending) and an AFL-style bucketed map of the counters.
use std::sync::Arc;

use crate::snapshot::{
    SnapshotError,
    memory::{Range, ReadTiming},
    source::MemorySource,
};

pub use covobs_layout::formats::sancov::{MAGIC_64, PC_FLAG_FUNC_ENTRY, bucket, parse_sancov};

#[derive(Clone, Debug)]
pub struct SancovPlan {
    pub counters: Range,
    /// Module-relative PC of each counter's block (the run-time PC minus the load bias, which is
    /// what the sanitizer runtime writes), and its flags.
    pub pcs: Arc<[(u64, u64)]>,
}

/// The PC table of a module, checked against its counters. It is taken from the module's file
/// with its dynamic relocations applied, not from the process's memory: a process caught at its
/// exec has not run the dynamic loader yet, and its memory then holds link-time values or zeros
/// (depending on the linker) where relocated pointers will be. The link-time PC is what the
/// sanitizer runtime writes (run-time PC minus the load bias), so no bias is needed.
pub fn plan(
    file: &[u8],
    path: &std::path::Path,
    counters: Range,
    pcs_vaddr: u64,
    pcs_len: u64,
) -> Result<SancovPlan, SnapshotError> {
    if pcs_len != counters.len * 16 {
        return Err(SnapshotError::Unsupported(format!(
            "__sancov_pcs has {} bytes for {} counters (expected 16 bytes each: is it built with inline-8bit-counters,pc-table?)",
            pcs_len, counters.len
        )));
    }
    let table = link_time_table(file, path, pcs_vaddr, pcs_len)?;
    let words: Vec<u64> = table
        .as_chunks::<8>()
        .0
        .iter()
        .map(|w| u64::from_le_bytes(*w))
        .collect();
    let pcs: Vec<(u64, u64)> = words
        .as_chunks::<2>()
        .0
        .iter()
        .map(|[pc, flags]| (*pc, *flags))
        .collect();
    if pcs.iter().any(|(pc, _)| *pc == 0) {
        return Err(SnapshotError::Unsupported(
            "__sancov_pcs holds entries its file does not give (relocations covobs does not apply)"
                .into(),
        ));
    }
    Ok(SancovPlan {
        counters,
        pcs: pcs.into(),
    })
}

/// The bytes of `__sancov_pcs` as the loader leaves them for a module loaded at its link-time
/// address: the file's contents, with each relative relocation's explicit addend (RELA) written
/// in. Implicit addends (REL, RELR) are in the contents already.
fn link_time_table(
    file: &[u8],
    path: &std::path::Path,
    vaddr: u64,
    len: u64,
) -> Result<Vec<u8>, SnapshotError> {
    use object::{Object, ObjectSection, RelocationFlags};
    let elf = |source| SnapshotError::Elf {
        path: path.to_path_buf(),
        source,
    };
    let obj = object::File::parse(file).map_err(elf)?;
    let section = obj
        .section_by_name("__sancov_pcs")
        .filter(|s| s.address() == vaddr && s.size() == len)
        .ok_or_else(|| SnapshotError::Unsupported("__sancov_pcs is not in the file".into()))?;
    let mut table = section.data().map_err(elf)?.to_vec();
    if table.len() as u64 != len {
        return Err(SnapshotError::Unsupported(
            "__sancov_pcs has no contents in the file".into(),
        ));
    }
    for (at, r) in obj.dynamic_relocations().into_iter().flatten() {
        let relative = matches!(
            r.flags(),
            RelocationFlags::Elf { r_type }
                if r_type == object::elf::R_X86_64_RELATIVE
                    || r_type == object::elf::R_AARCH64_RELATIVE
        );
        let Some(off) = at.checked_sub(vaddr).filter(|o| o + 8 <= len) else {
            continue;
        };
        if relative && !r.has_implicit_addend() {
            let off = off as usize;
            table[off..off + 8].copy_from_slice(&(r.addend() as u64).to_le_bytes());
        }
    }
    Ok(table)
}

impl SancovPlan {
    pub fn read(&self, src: &dyn MemorySource) -> Result<(Vec<u8>, ReadTiming), SnapshotError> {
        Ok(src.read_vec(self.counters)?)
    }

    /// The `.sancov` bytes of the edges whose counter is not zero.
    pub fn sancov_file(&self, counters: &[u8]) -> Vec<u8> {
        let mut pcs: Vec<u64> = counters
            .iter()
            .zip(self.pcs.iter())
            .filter(|(c, _)| **c != 0)
            .map(|(_, (pc, _))| *pc)
            .collect();
        pcs.sort_unstable();
        pcs.dedup();
        let mut out = Vec::with_capacity(8 + pcs.len() * 8);
        out.extend_from_slice(&MAGIC_64.to_le_bytes());
        for pc in pcs {
            out.extend_from_slice(&pc.to_le_bytes());
        }
        out
    }
}

/// The counters, bucketed: one byte per edge, in counter order.
pub fn bucketed(counters: &[u8]) -> Vec<u8> {
    counters.iter().map(|c| bucket(*c)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sancov_lists_covered_edges_sorted() {
        let plan = SancovPlan {
            counters: Range { addr: 0, len: 4 },
            pcs: vec![(0x30, 1), (0x10, 0), (0x20, 1), (0x10, 0)].into(),
        };
        let bytes = plan.sancov_file(&[5, 1, 0, 3]);
        assert_eq!(parse_sancov(&bytes), Some(vec![0x10, 0x30]));
        assert_eq!(&bytes[..8], &MAGIC_64.to_le_bytes());
    }
}
