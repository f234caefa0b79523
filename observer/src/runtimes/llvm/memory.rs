//! LLVM raw profiles from memory: the layout of one instrumented module in a process (its
//! `__llvm_prf_*` sections at their run-time addresses) and the raw profile its runtime's
//! `__llvm_profile_write_file` would write from the same counters, byte for byte.
//!
//! What the runtime writes (compiler-rt `lprofWriteDataImpl`, versions 8 to 11): a header of u64
//! words, the module's build-id notes, the data records, the counters, the MC/DC bitmap bytes and
//! the names, each padded to 8 bytes. The data records and names do not change while the process
//! runs (the records hold relocated pointers, so they are read from memory once; the names come
//! from the file); the counters and bitmap bytes are what a snapshot reads.
use std::sync::Arc;

use super::raw::MAGIC_64;
use crate::snapshot::{
    SnapshotError,
    memory::{self, Range, ReadTiming},
    source::MemorySource,
};

/// Variant flags in the high bits of the version word (compiler-rt InstrProfData.inc).
const VARIANT_MASK_DBG_CORRELATE: u64 = 1 << 59;
const VARIANT_MASK_BYTE_COVERAGE: u64 = 1 << 60;
const VARIANT_MASK_MEMPROF: u64 = 1 << 62;
const VARIANT_MASK_TEMPORAL_PROF: u64 = 1 << 63;

/// The raw profile versions this writer produces (LLVM 14 to 23).
pub const VERSIONS: std::ops::RangeInclusive<u64> = 8..=11;

/// One module's profile sections, resolved to the process's addresses.
#[derive(Clone, Debug)]
pub struct LlvmPlan {
    /// `__llvm_profile_raw_version`: format version and variant flags, as the header carries it.
    pub version_word: u64,
    pub data: Range,
    pub counters: Range,
    /// `__llvm_prf_bits` (MC/DC), empty when the module has none (its address is then 0, as the
    /// runtime's weak `__start___llvm_prf_bits` is).
    pub bitmap: Range,
    /// Run-time address of `__llvm_prf_names` (the header's NamesDelta).
    pub names_addr: u64,
    /// The names, from the file (read-only, identical in memory).
    pub names: Arc<[u8]>,
    /// The build-id notes as the runtime writes them (length, bytes, padding).
    pub binary_ids: Arc<[u8]>,
    /// The data records, read from the process once (relocated, then never written: no value
    /// profiling, which `plan` checks).
    pub data_bytes: Arc<[u8]>,
}

impl LlvmPlan {
    pub fn version(&self) -> u64 {
        self.version_word & 0xffff_ffff
    }

    pub fn counter_size(&self) -> u64 {
        if self.version_word & VARIANT_MASK_BYTE_COVERAGE != 0 {
            1
        } else {
            8
        }
    }

    /// Whether a counter's bytes mean "executed" (single-byte coverage counts down: 0 is covered).
    pub fn covered(&self, counter: &[u8]) -> bool {
        if self.counter_size() == 1 {
            counter.first() == Some(&0)
        } else {
            counter.iter().any(|b| *b != 0)
        }
    }

    /// The ranges a snapshot reads: counters, then the bitmap when there is one.
    pub fn live_ranges(&self) -> Vec<Range> {
        let mut v = vec![self.counters];
        if self.bitmap.len > 0 {
            v.push(self.bitmap);
        }
        v
    }

    /// Read the counters (and bitmap) in one read of the source.
    pub fn read(
        &self,
        src: &dyn MemorySource,
    ) -> Result<(Vec<u8>, Vec<u8>, ReadTiming), SnapshotError> {
        let mut counters = memory::buffer(self.counters.len as usize);
        let mut bitmap = memory::buffer(self.bitmap.len as usize);
        let timing = if self.bitmap.len > 0 {
            src.read_ranges(
                &[self.counters, self.bitmap],
                &mut [&mut counters[..], &mut bitmap[..]],
            )?
        } else {
            src.read_ranges(&[self.counters], &mut [&mut counters[..]])?
        };
        Ok((counters, bitmap, timing))
    }

    /// Check that every data record's counter pointer (relative to the record, raw profile v8+)
    /// lands inside the counters: data records read from memory that does not belong to this
    /// build fail it. Debug-info-correlated modules have no records to check.
    pub fn check_counter_pointers(&self) -> Result<(), String> {
        if self.version_word & VARIANT_MASK_DBG_CORRELATE != 0 {
            return Ok(());
        }
        let rec = data_record_size(self.version()) as usize;
        for (i, r) in self.data_bytes.chunks_exact(rec).enumerate() {
            let rel = i64::from_le_bytes(r[16..24].try_into().unwrap_or_default());
            let at = self
                .data
                .addr
                .wrapping_add((i * rec) as u64)
                .wrapping_add(rel as u64);
            if at < self.counters.addr || at >= self.counters.end() {
                return Err(format!(
                    "data record {i} points at {at:#x}, outside the counters ({:#x}..{:#x})",
                    self.counters.addr,
                    self.counters.end()
                ));
            }
        }
        Ok(())
    }

    /// The raw profile of these counters, as the runtime would write it.
    pub fn profile(&self, counters: &[u8], bitmap: &[u8]) -> Vec<u8> {
        write_profile(self, counters, bitmap)
    }
}

/// Size of one `__llvm_profile_data` record, by format version.
pub fn data_record_size(version: u64) -> u64 {
    match version {
        ..=8 => 48,
        9 | 10 => 64,
        _ => 72,
    }
}

/// Byte offset and count of the `NumValueSites` u16s in a data record: a non-zero one means the
/// function is value-profiled, and its value data would follow the names.
fn value_sites(version: u64) -> (usize, usize) {
    match version {
        ..=8 => (44, 2),
        9 | 10 => (52, 3),
        _ => (60, 3),
    }
}

fn pad8(n: u64) -> u64 {
    (8 - n % 8) % 8
}

/// Everything `plan` needs from the module, resolved by the caller: section ranges at run-time
/// addresses, the version word, the names and the binary ids.
pub struct Sections {
    pub version_word: u64,
    pub data: Range,
    pub counters: Range,
    pub bitmap: Option<Range>,
    pub names: Range,
    pub names_bytes: Arc<[u8]>,
    pub binary_ids: Arc<[u8]>,
    /// Value-profile sections that hold something (vtables, vtable names): not supported.
    pub unsupported_sections: Vec<String>,
}

/// Check what the module is and read its data records from the source.
pub fn plan(src: &dyn MemorySource, s: Sections) -> Result<LlvmPlan, SnapshotError> {
    let version = s.version_word & 0xffff_ffff;
    if !VERSIONS.contains(&version) {
        return Err(SnapshotError::Unsupported(format!(
            "raw profile version {version} (covobs writes versions {} to {})",
            VERSIONS.start(),
            VERSIONS.end()
        )));
    }
    for (mask, what) in [
        (VARIANT_MASK_MEMPROF, "memory profiling"),
        (VARIANT_MASK_TEMPORAL_PROF, "temporal profiling"),
    ] {
        if s.version_word & mask != 0 {
            return Err(SnapshotError::Unsupported(format!("{what} variant")));
        }
    }
    if let Some(first) = s.unsupported_sections.first() {
        return Err(SnapshotError::Unsupported(format!(
            "value profiling section {first}"
        )));
    }
    let rec = data_record_size(version);
    // The runtime's __llvm_profile_get_num_data rounds up; it then writes NumData records.
    let num_data = s.data.len.div_ceil(rec);
    let data = Range {
        addr: s.data.addr,
        len: num_data * rec,
    };
    let (data_bytes, _) = src.read_vec(data)?;
    let (vs_at, vs_n) = value_sites(version);
    for (i, r) in data_bytes.chunks_exact(rec as usize).enumerate() {
        let sites = r[vs_at..vs_at + 2 * vs_n]
            .as_chunks::<2>()
            .0
            .iter()
            .map(|c| u64::from(u16::from_le_bytes(*c)))
            .sum::<u64>();
        if sites > 0 {
            return Err(SnapshotError::Unsupported(format!(
                "value profiling (data record {i} has {sites} value sites): its value data lives in the runtime's heap"
            )));
        }
    }
    let csize = if s.version_word & VARIANT_MASK_BYTE_COVERAGE != 0 {
        1
    } else {
        8
    };
    let counters = Range {
        addr: s.counters.addr,
        len: s.counters.len.div_ceil(csize) * csize,
    };
    Ok(LlvmPlan {
        version_word: s.version_word,
        data,
        counters,
        bitmap: s.bitmap.unwrap_or(Range { addr: 0, len: 0 }),
        names_addr: s.names.addr,
        names: s.names_bytes,
        binary_ids: s.binary_ids,
        data_bytes: data_bytes.into(),
    })
}

/// Assemble the raw profile (see the module documentation for the layout).
fn write_profile(p: &LlvmPlan, counters: &[u8], bitmap: &[u8]) -> Vec<u8> {
    let version = p.version();
    let correlated = p.version_word & VARIANT_MASK_DBG_CORRELATE != 0;
    let rec = data_record_size(version);
    let num_data = if correlated { 0 } else { p.data.len / rec };
    let num_counters = counters.len() as u64 / p.counter_size();
    let bitmap_bytes = bitmap.len() as u64;
    let names_size = if correlated { 0 } else { p.names.len() as u64 };
    let data_begin = p.data.addr;
    let counters_delta = p.counters.addr.wrapping_sub(data_begin);
    let bitmap_delta = p.bitmap.addr.wrapping_sub(data_begin);
    let pad_counters = pad8(counters.len() as u64);
    let pad_bitmap = pad8(bitmap_bytes);
    let bids = p.binary_ids.len() as u64;

    let mut header: Vec<u64> = vec![MAGIC_64, p.version_word, bids, num_data, 0, num_counters];
    header.push(pad_counters);
    if version >= 9 {
        header.extend([bitmap_bytes, pad_bitmap]);
    }
    if version >= 11 {
        // Three words LLVM 22+ added after the bitmap padding; the file writer always passes an
        // empty range for them (measured: lprofWriteData hands lprofWriteDataImpl zeros).
        header.extend([0, 0, 0]);
    }
    header.extend([names_size, counters_delta]);
    if version >= 9 {
        header.push(bitmap_delta);
    }
    header.push(p.names_addr);
    if version >= 10 {
        // No vtable profiling in coverage builds (plan refuses modules that have it).
        header.extend([0, 0]);
    }
    // IPVK_Last: indirect calls and memop sizes, plus vtables from version 10.
    header.push(if version >= 10 { 2 } else { 1 });

    let mut out = Vec::with_capacity(
        header.len() * 8
            + (bids + p.data.len + counters.len() as u64 + 8 + bitmap_bytes + 8) as usize
            + p.names.len()
            + 8,
    );
    for w in header {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&p.binary_ids);
    if !correlated {
        out.extend_from_slice(&p.data_bytes);
    }
    out.extend_from_slice(counters);
    out.resize(out.len() + pad_counters as usize, 0);
    if version >= 9 {
        out.extend_from_slice(bitmap);
        out.resize(out.len() + pad_bitmap as usize, 0);
    }
    if !correlated {
        out.extend_from_slice(&p.names);
        out.resize(out.len() + pad8(names_size) as usize, 0);
    }
    out
}

/// Whether the module's profiling runtime is minicov (the no_std runtime: compiler-rt's writer
/// built for bare metal, which writes no build ids), by its Rust symbols.
pub fn uses_minicov(file: &[u8]) -> bool {
    use object::{Object as _, ObjectSymbol as _};
    object::File::parse(file).is_ok_and(|obj| {
        obj.symbols().any(|s| {
            s.name_bytes()
                .is_ok_and(|n| memchr::memmem::find(n, b"7minicov").is_some())
        })
    })
}

/// The build-id notes of an ELF file, serialized as compiler-rt's `__llvm_write_binary_ids` does:
/// for each NT_GNU_BUILD_ID note of each PT_NOTE segment, its length (u64), its bytes, zero
/// padding to 8.
pub fn binary_ids(file: &[u8]) -> Result<Vec<u8>, object::Error> {
    use object::{
        elf,
        read::elf::{FileHeader, ProgramHeader},
    };
    let header = elf::FileHeader64::<object::LittleEndian>::parse(file)?;
    let endian = header.endian()?;
    let mut out = Vec::new();
    for ph in header.program_headers(endian, file)? {
        if ph.p_type(endian) != elf::PT_NOTE {
            continue;
        }
        let Some(mut notes) = ph.notes(endian, file)? else {
            continue;
        };
        while let Some(note) = notes.next()? {
            if note.n_type(endian) == elf::NT_GNU_BUILD_ID
                && note.n_namesz(endian) == 4
                && note.name() == b"GNU"
            {
                let desc = note.desc();
                out.extend_from_slice(&(desc.len() as u64).to_le_bytes());
                out.extend_from_slice(desc);
                out.resize(out.len() + pad8(desc.len() as u64) as usize, 0);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::raw as llvm_raw;
    use super::*;

    fn plan_of(version_word: u64, data_records: usize, names: &[u8]) -> LlvmPlan {
        let rec = data_record_size(version_word & 0xffff_ffff) as usize;
        LlvmPlan {
            version_word,
            data: Range {
                addr: 0x1000,
                len: (rec * data_records) as u64,
            },
            counters: Range {
                addr: 0x800,
                len: 24,
            },
            bitmap: Range { addr: 0, len: 0 },
            names_addr: 0x5000,
            names: names.to_vec().into(),
            binary_ids: {
                let mut b = 20u64.to_le_bytes().to_vec();
                b.extend([0xab; 20]);
                b.extend([0; 4]);
                b.into()
            },
            data_bytes: vec![0u8; rec * data_records].into(),
        }
    }

    /// What covobs writes, the validator that checks the runtime's own dumps accepts, with the
    /// same section sizes, for every version it writes.
    #[test]
    fn profiles_of_every_version_validate() {
        for version in VERSIONS {
            let p = plan_of(version, 2, b"abcdefghijk");
            let counters = [1u8; 24];
            let bytes = p.profile(&counters, &[]);
            let parsed =
                llvm_raw::parse(&bytes, true).unwrap_or_else(|e| panic!("version {version}: {e}"));
            assert_eq!(parsed.version, version);
            assert_eq!(parsed.num_data, 2);
            assert_eq!(parsed.num_counters, 3);
            assert_eq!(parsed.names_size, 11);
            assert_eq!(parsed.total_size, bytes.len() as u64);
        }
    }

    #[test]
    fn header_deltas_are_relative_to_the_data() {
        let p = plan_of(8, 1, b"main");
        let bytes = p.profile(&[0u8; 24], &[]);
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        // v8: Magic Version BinaryIdsSize NumData PadBefore NumCounters PadAfter NamesSize
        // CountersDelta NamesDelta ValueKindLast
        assert_eq!(word(2), 32);
        assert_eq!(word(8), 0x800u64.wrapping_sub(0x1000));
        assert_eq!(word(9), 0x5000);
        assert_eq!(word(10), 1);
    }

    #[test]
    fn byte_coverage_counts_zero_as_covered() {
        let p = plan_of(VARIANT_MASK_BYTE_COVERAGE | 8, 1, b"f");
        assert_eq!(p.counter_size(), 1);
        assert!(p.covered(&[0]));
        assert!(!p.covered(&[0xff]));
        let q = plan_of(11, 1, b"f");
        assert!(q.covered(&5u64.to_le_bytes()));
        assert!(!q.covered(&0u64.to_le_bytes()));
    }

    #[test]
    fn binary_ids_of_this_test_binary() {
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let ids = binary_ids(&exe).unwrap();
        let id = crate::discover::elf::parse(&exe).unwrap().build_id.unwrap();
        assert_eq!(
            u64::from_le_bytes(ids[..8].try_into().unwrap()) as usize * 2,
            id.len()
        );
        assert_eq!(ids.len() % 8, 0);
    }
}
