//! SanitizerCoverage in the report: `.sancov` files (64-bit magic, then module-relative PCs of
//! the covered edges) and, for snapshots, `<seq>-sancov.counters` (one AFL bucket per edge, in
//! counter order), symbolized with the module's DWARF (the same symbolizer as kernel PCs,
//! [`super::kernel_image`]).
//!
//! The edges are the module's PC table (`__sancov_pcs`, read from the binary: relocated
//! pointers, so the values are the relocations' addends), in counter order; a PC outside it (a
//! module built without `pc-table`, whose `.sancov` dumps list trace-pc-guard PCs) is appended.
//! Each artifact is a state of its process instance's edges under the count model (tally.rs):
//! the value of an edge is the lower end of its AFL bucket when the counters were collected, 1
//! when only the `.sancov` list was (the file carries no counts). A line's count is the highest of
//! its edges' (edges split lines; adding them would count a line once per block); a function's is
//! its entry edge's.
use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::Path,
};

use object::{Object, ObjectSection};

use super::{
    kernel_image::{KernelImage, Place},
    model::{Coverage, FileCoverage, Function},
    tally::{Instance, Tally},
};
use covobs_layout::formats::sancov::PC_FLAG_FUNC_ENTRY;

/// The lowest count of each AFL bucket (the bucket byte is one bit: 1, 2, 3, 4-7, 8-15, 16-31,
/// 32-127, 128+).
pub fn bucket_floor(bucket: u8) -> u64 {
    match bucket {
        0 => 0,
        1 => 1,
        2 => 2,
        4 => 3,
        8 => 4,
        16 => 8,
        32 => 16,
        64 => 32,
        // 128, or anything else that is non-zero: covered.
        128 => 128,
        _ => 1,
    }
}

/// One edge: its PC and where it is.
#[derive(Clone, Debug)]
struct Edge {
    place: Option<Place>,
    /// The entry edge of this function (name, where it starts).
    entry_of: Option<(String, Option<Place>)>,
}

/// The PC table of a module: (link-time PC, flags) per counter.
pub fn pc_table(data: &[u8]) -> Result<Vec<(u64, u64)>, String> {
    let obj = object::File::parse(data).map_err(|e| format!("not an ELF file: {e}"))?;
    let Some(sec) = obj.section_by_name("__sancov_pcs") else {
        return Ok(Vec::new());
    };
    let bytes = sec.data().map_err(|e| format!("__sancov_pcs: {e}"))?;
    let base = sec.address();
    // In a position-independent module the PCs are R_*_RELATIVE relocations: their addends.
    let mut addends = HashMap::new();
    if let Some(relocs) = obj.dynamic_relocations() {
        for (offset, r) in relocs {
            if offset >= base && offset < base + bytes.len() as u64 {
                let relative = matches!(
                    r.flags(),
                    object::RelocationFlags::Elf { r_type }
                        if r_type == object::elf::R_X86_64_RELATIVE
                            || r_type == object::elf::R_AARCH64_RELATIVE
                );
                if relative {
                    addends.insert(offset - base, r.addend() as u64);
                }
            }
        }
    }
    let words: Vec<u64> = bytes
        .as_chunks::<8>()
        .0
        .iter()
        .map(|w| u64::from_le_bytes(*w))
        .collect();
    Ok(words
        .as_chunks::<2>()
        .0
        .iter()
        .enumerate()
        .map(|(i, [pc, flags])| {
            let at = (i * 16) as u64;
            (addends.get(&at).copied().unwrap_or(*pc), *flags)
        })
        .collect())
}

/// The SanitizerCoverage of one module.
pub struct SancovUnit {
    image: KernelImage,
    edges: Vec<Edge>,
    /// Each edge's module-relative PC.
    pcs: Vec<u64>,
    by_pc: HashMap<u64, usize>,
    /// Edges from the PC table (the counters map has exactly these, in this order).
    table: usize,
    tally: Tally,
    pub steps: u64,
    /// PCs no line was found for.
    pub unresolved: u64,
}

impl SancovUnit {
    /// The module (its binary, with DWARF), its PC table symbolized.
    pub fn open(file: &File, shown: &Path) -> Result<Self, String> {
        let image = KernelImage::from_file(file, shown)?;
        let table = pc_table(image.data()).map_err(|e| format!("{}: {e}", shown.display()))?;
        let mut unit = Self {
            image,
            edges: Vec::new(),
            pcs: Vec::new(),
            by_pc: HashMap::new(),
            table: table.len(),
            tally: Tally::new(table.len(), 0),
            steps: 0,
            unresolved: 0,
        };
        unit.symbolize(&table)?;
        Ok(unit)
    }

    fn symbolize(&mut self, pcs: &[(u64, u64)]) -> Result<(), String> {
        let sym = self.image.symbolizer()?;
        for &(pc, flags) in pcs {
            // Symbolizer lookups take return addresses (they look at PC - 1); an edge's PC is
            // in its block itself.
            let place = sym.place(pc + 1);
            self.unresolved += u64::from(place.is_none());
            let entry_of = sym
                .function(pc + 1)
                .filter(|f| f.start == pc || flags & PC_FLAG_FUNC_ENTRY != 0)
                .map(|f| (f.name.to_owned(), sym.function_place(&f)));
            self.by_pc.insert(pc, self.edges.len());
            self.edges.push(Edge { place, entry_of });
            self.pcs.push(pc);
        }
        Ok(())
    }

    /// Take in one state of `instance`: the PCs of its `.sancov` file and, when collected, its
    /// counters map. `Err` is the reason to leave it out.
    pub fn add(
        &mut self,
        instance: Instance,
        pcs: &[u64],
        buckets: Option<&[u8]>,
    ) -> Result<(), String> {
        let state = self.state(pcs, buckets)?;
        self.tally.grow(self.edges.len());
        self.tally.push(instance, &state, &[], None);
        self.steps += 1;
        Ok(())
    }

    /// The edges' values in one state (every edge the module has so far, PCs it did not list
    /// before added): the PCs of its `.sancov` file and, when collected, its counters map.
    pub fn state(&mut self, pcs: &[u64], buckets: Option<&[u8]>) -> Result<Vec<u64>, String> {
        let new: Vec<(u64, u64)> = pcs
            .iter()
            .filter(|pc| !self.by_pc.contains_key(pc))
            .map(|&pc| (pc, 0))
            .collect();
        if !new.is_empty() {
            self.symbolize(&new)?;
        }
        let mut state = vec![0u64; self.edges.len()];
        match buckets {
            Some(b) if b.len() == self.table => {
                for (s, &b) in state.iter_mut().zip(b) {
                    *s = bucket_floor(b);
                }
            }
            Some(b) => {
                return Err(format!(
                    "its counters map has {} edges, the module's PC table {}",
                    b.len(),
                    self.table
                ));
            }
            None => {}
        }
        for pc in pcs {
            if let Some(&i) = self.by_pc.get(pc)
                && state[i] == 0
            {
                state[i] = 1;
            }
        }
        Ok(state)
    }

    /// Edges so far.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// The module-relative PC of edge `i` (0 past the end).
    pub fn pc(&self, i: usize) -> u64 {
        self.pcs.get(i).copied().unwrap_or(0)
    }

    pub fn resets(&self) -> u64 {
        self.tally.resets
    }

    /// The module's coverage now: every edge's line (a line at the highest count of its edges),
    /// every function with an entry edge.
    pub fn coverage(&self) -> Coverage {
        self.coverage_of(self.tally.counters())
    }

    /// The module's coverage with `counts` (one per edge; missing ones are 0).
    pub fn coverage_of(&self, counts: &[u64]) -> Coverage {
        let mut files: BTreeMap<&str, FileCoverage> = BTreeMap::new();
        for (e, &n) in self.edges.iter().zip(counts) {
            let Some(p) = &e.place else { continue };
            let f = files
                .entry(p.file.as_str())
                .or_insert_with(|| FileCoverage::new(p.file.clone()));
            let l = f.lines.entry(p.line).or_default();
            *l = (*l).max(n);
            if let Some((name, start)) = &e.entry_of {
                let line = start.as_ref().map_or(p.line, |s| s.line);
                if !f.functions.iter().any(|g| &g.name == name) {
                    f.functions.push(Function {
                        name: name.clone(),
                        line,
                        end_line: None,
                        hits: n,
                    });
                }
            }
        }
        let mut cov = Coverage::default();
        for (_, f) in files {
            cov.files.insert(f.path.clone(), f);
        }
        cov
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_floor_to_their_lowest_count() {
        use covobs_layout::formats::sancov::bucket;
        for n in 0..=255u8 {
            let f = bucket_floor(bucket(n));
            assert!(f <= u64::from(n), "{n}: {f}");
            assert_eq!(f == 0, n == 0);
        }
        assert_eq!(bucket_floor(bucket(10)), 8);
    }

    #[test]
    fn the_fixture_table_is_its_functions() {
        let exe =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fixtures/bin/sancov-target");
        let data = std::fs::read(&exe).expect("cargo xtask fixtures builds sancov-target");
        let t = pc_table(&data).expect("table");
        assert!(!t.is_empty());
        // Entries flagged as function entries are function addresses, all inside the module.
        assert!(t.iter().any(|(_, f)| f & PC_FLAG_FUNC_ENTRY != 0));
        assert!(
            t.iter()
                .all(|(pc, _)| *pc > 0 && *pc < data.len() as u64 * 16)
        );
    }
}
