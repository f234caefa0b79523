//! The native LLVM coverage engine: a module's coverage mapping read once per build id
//! ([`mapping`]), its counters read from raw profiles and snapshots against the module's own
//! profile sections ([`profile`]), and llvm-cov's semantics over both ([`coverage`]): regions,
//! lines, functions, branches, the per-file figures of `llvm-cov export -summary-only` and the
//! LCOV of `llvm-cov export -format=lcov`, byte for byte.
//!
//! llvm-profdata and llvm-cov stay the oracle in the tests and the fallback for modules whose
//! mapping or raw profile version the engine does not read ([`Engine::open`] says why).
pub mod coverage;
pub mod mapping;
pub mod profile;
pub mod program;
pub mod summary;

use std::collections::BTreeMap;

use coverage::{Flavor, ModuleCoverage, ProfileCounts};
use mapping::Mapping;
use profile::ModuleProfile;

use crate::model::Totals;

/// One module's mapping, ready to be evaluated against counters.
pub struct Engine {
    pub mapping: Mapping,
    pub flavor: Flavor,
}

impl Engine {
    /// Read a module's mapping (`elf`: the file) for the llvm-cov of `llvm_major`.
    pub fn open(elf: &[u8], llvm_major: u32) -> Result<Self, String> {
        if !(11..=23).contains(&llvm_major) {
            return Err(format!(
                "LLVM {llvm_major}'s llvm-cov is not reproduced by covobs' engine"
            ));
        }
        Ok(Self {
            mapping: Mapping::from_elf(elf)?,
            flavor: Flavor { llvm_major },
        })
    }

    /// The module's coverage for these counters (laid out as `profile` says).
    pub fn coverage(&self, profile: &ModuleProfile, counters: &[u64]) -> ModuleCoverage {
        // `llvm-profdata merge -sparse`, which covobs' reports used, leaves all-zero functions
        // out; llvm-cov then reads them as zero, which is the same except for a function whose
        // name has another record under another hash.
        let counts = ProfileCounts::new(&profile.functions, counters, true);
        ModuleCoverage::new(
            coverage::function_records(&self.mapping, &counts),
            self.flavor,
        )
    }
}

impl ModuleCoverage {
    /// Per-file figures, as `llvm-cov export -summary-only` gives them.
    pub fn summary(&self) -> BTreeMap<String, Totals> {
        self.files()
            .into_iter()
            .map(|f| (f.to_string(), self.file_totals(&f)))
            .collect()
    }
}
