//! A payload's own capture (a raw profile its runtime wrote, e.g. minicov's into a shared region),
//! checked against the ELF the user named before covobs takes it: its counters and bitmap are
//! cut out of it, covobs builds the profile of `--elf` from them exactly as it does from memory
//! (the data records, names and version word of a fixed-address ELF are the file's bytes), and
//! the capture must equal that profile byte for byte. So the capture's header (version, section
//! sizes, counter and names addresses), every data record (function name MD5, structural hash,
//! counter offset, function address) and the names are the ELF's. minicov writes no build id in
//! its captures; a runtime that does has it compared too (covobs writes the ELF's).
use object::{Object as _, ObjectSegment as _};

use super::{
    Kind, ModulePlan, Snapshot, SnapshotError,
    memory::{MemoryError, Range, ReadTiming},
    payload::ElfTarget,
    read_file,
    source::MemorySource,
};
use crate::runtimes::llvm::{memory as llvm, raw as llvm_raw};

/// The ELF's loadable bytes at their link addresses, with the counters and bitmap replaced by
/// those of a capture.
struct ElfWithCounters {
    what: String,
    pieces: Vec<(u64, Vec<u8>)>,
}

impl MemorySource for ElfWithCounters {
    fn read_ranges(
        &self,
        ranges: &[Range],
        bufs: &mut [&mut [u8]],
    ) -> Result<ReadTiming, MemoryError> {
        for (r, buf) in ranges.iter().zip(bufs.iter_mut()) {
            // The last piece that holds the whole range: the capture's, put after the file's.
            let held = self.pieces.iter().rev().find_map(|(addr, bytes)| {
                let off = r.addr.checked_sub(*addr)? as usize;
                bytes.get(off..off.checked_add(r.len as usize)?)
            });
            let Some(src) = held else {
                return Err(MemoryError::NotHeld {
                    holder: self.what.clone(),
                    addr: r.addr,
                    len: r.len,
                    hint: "",
                });
            };
            buf.copy_from_slice(src);
        }
        Ok(ReadTiming::default())
    }

    fn method(&self) -> &'static str {
        "capture"
    }

    fn live(&self) -> bool {
        false
    }
}

/// Words in the header of a raw profile, by version (8 to 11: what covobs writes).
fn header_words(version: u64) -> Option<usize> {
    Some(match version {
        8 => 11,
        9 => 14,
        10 => 16,
        11 => 19,
        _ => return None,
    })
}

/// The names of the header's words, by version, for saying which one differs.
fn header_word_name(version: u64, i: usize) -> &'static str {
    let mut names = vec![
        "Magic",
        "Version",
        "BinaryIdsSize",
        "NumData",
        "PaddingBeforeCounters",
        "NumCounters",
        "PaddingAfterCounters",
    ];
    if version >= 9 {
        names.extend(["NumBitmapBytes", "PaddingAfterBitmapBytes"]);
    }
    if version >= 11 {
        names.extend(["(LLVM 22 field)", "(LLVM 22 field)", "(LLVM 22 field)"]);
    }
    names.extend(["NamesSize", "CountersDelta"]);
    if version >= 9 {
        names.push("BitmapDelta");
    }
    names.push("NamesDelta");
    if version >= 10 {
        names.extend(["NumVTables", "VNamesSize"]);
    }
    names.push("ValueKindLast");
    names.get(i).copied().unwrap_or("?")
}

/// Check `capture` against `target` and build its snapshot (whose bytes are the capture's).
/// `what` names where the capture was, for errors.
pub fn snapshot(
    target: &ElfTarget,
    capture: &[u8],
    read: ReadTiming,
    method: &str,
    what: &str,
) -> Result<(ModulePlan, Snapshot), SnapshotError> {
    let mismatch = |why: String| {
        SnapshotError::Mismatch(format!(
            "{what} does not hold a capture of {}: {why}",
            target.path.display()
        ))
    };
    let raw = llvm_raw::parse(capture, true)
        .map_err(|e| mismatch(format!("not a complete raw profile ({e})")))?;
    let words = header_words(raw.version)
        .ok_or_else(|| mismatch(format!("raw profile version {}", raw.version)))?;
    let word = |i: usize| -> u64 {
        capture
            .get(i * 8..i * 8 + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    };
    let (binary_ids, pad_before, pad_after) = (word(2), word(4), word(6));
    let rec = llvm::data_record_size(raw.version);
    let counters_at = (words as u64 * 8)
        .checked_add(binary_ids)
        .and_then(|n| n.checked_add(raw.num_data.checked_mul(rec)?))
        .and_then(|n| n.checked_add(pad_before))
        .ok_or_else(|| mismatch("its header's sizes overflow".into()))?;
    let counters_len = raw.num_counters * raw.counter_size;
    let bitmap_at = counters_at + counters_len + pad_after;
    let slice = |at: u64, len: u64| {
        capture
            .get(at as usize..at.saturating_add(len) as usize)
            .ok_or_else(|| mismatch(format!("its sections end past its {} bytes", capture.len())))
    };
    let counters = slice(counters_at, counters_len)?.to_vec();
    let bitmap = slice(bitmap_at, raw.num_bitmap_bytes)?.to_vec();

    let section = |name: &str| {
        target
            .module
            .elf
            .sections
            .iter()
            .find(|s| s.name == name && s.size > 0)
            .map(|s| Range {
                addr: s.vaddr,
                len: s.size,
            })
    };
    let cnts = section("__llvm_prf_cnts").ok_or_else(|| {
        mismatch(
            "the ELF has no LLVM counters (__llvm_prf_cnts): a capture is an LLVM raw profile"
                .into(),
        )
    })?;
    if cnts.len.div_ceil(raw.counter_size) != raw.num_counters {
        return Err(mismatch(format!(
            "it has {} counters, the ELF {}",
            raw.num_counters,
            cnts.len.div_ceil(raw.counter_size)
        )));
    }
    let file = read_file(&target.path)?;
    let obj = object::File::parse(&*file).map_err(|source| SnapshotError::Elf {
        path: target.path.clone(),
        source,
    })?;
    let mut pieces: Vec<(u64, Vec<u8>)> = obj
        .segments()
        .filter_map(|seg| {
            let (off, len) = seg.file_range();
            let bytes = file.get(off as usize..(off + len) as usize)?;
            (len > 0).then(|| (seg.address(), bytes.to_vec()))
        })
        .collect();
    let mut counters_piece = counters.clone();
    counters_piece.resize(cnts.len as usize, 0);
    pieces.push((cnts.addr, counters_piece));
    if let Some(bits) = section("__llvm_prf_bits") {
        let mut b = bitmap.clone();
        b.resize(bits.len as usize, 0);
        pieces.push((bits.addr, b));
    }
    let view = ElfWithCounters {
        what: target.path.display().to_string(),
        pieces,
    };
    let plan = super::plan_module_at(&view, &target.module, &target.path, 0)?
        .into_iter()
        .find(|p| matches!(p.kind, Kind::Llvm(_)))
        .ok_or_else(|| mismatch("the ELF has no LLVM profile sections".into()))?;
    let Kind::Llvm(l) = &plan.kind else {
        return Err(mismatch("the ELF has no LLVM profile sections".into()));
    };
    let live = vec![
        slice(counters_at, l.counters.len)?.to_vec(),
        if l.bitmap.len > 0 { bitmap } else { Vec::new() },
    ];
    let snap = plan.build(live, read, method.to_string(), 0);
    if snap.bytes != capture {
        return Err(mismatch(describe_difference(
            &snap.bytes,
            capture,
            raw.version,
            words,
            counters_at,
        )));
    }
    Ok((plan, snap))
}

/// Where the capture differs from the profile of the ELF: a header field, the binary ids or data
/// records, or the names.
fn describe_difference(
    mine: &[u8],
    theirs: &[u8],
    version: u64,
    words: usize,
    counters_at: u64,
) -> String {
    let Some(at) = mine.iter().zip(theirs).position(|(a, b)| a != b) else {
        return format!(
            "it is {} bytes, the ELF's profile {}",
            theirs.len(),
            mine.len()
        );
    };
    if at < words * 8 {
        return format!(
            "its header's {} differs (another build, or a runtime of another LLVM version)",
            header_word_name(version, at / 8)
        );
    }
    if (at as u64) < counters_at {
        let rec = llvm::data_record_size(version) as usize;
        let bids = u64::from_le_bytes(theirs[16..24].try_into().unwrap_or_default()) as usize;
        return match (at - words * 8).checked_sub(bids) {
            Some(d) => format!(
                "its data record {} names another function, shape or address than the ELF's (another build)",
                d / rec
            ),
            None => "its build id differs".into(),
        };
    }
    "its names (__llvm_prf_names) differ (another build)".into()
}
