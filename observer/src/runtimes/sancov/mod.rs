//! SanitizerCoverage: found by `__sanitizer_cov_dump`, or by its `__sancov_*` sections; covobs
//! reads its counters straight out of memory (`memory.rs`), not what its dumps write.
use super::{DumpThread, Observed, Runtime, STRIPPED, Sources, not_collected};
use crate::{
    collect::{CollectError, Extracted, FinishedDump},
    discover::{
        ElfInfo,
        hooks::{Hook, HookMatch::Exact, Role, hook},
    },
    target::files::TargetDir,
};

pub mod memory;

static HOOKS: &[Hook] = &[
    hook(Runtime::Sancov, Role::Dump, Exact("__sanitizer_cov_dump")),
    hook(
        Runtime::Sancov,
        Role::Dump,
        Exact("__sanitizer_dump_coverage"),
    ),
];

pub struct Sancov;

impl Observed for Sancov {
    fn name(&self) -> &'static str {
        "sancov"
    }

    fn product(&self) -> &'static str {
        "SanitizerCoverage"
    }

    fn extension(&self) -> &'static str {
        "sancov"
    }

    fn is_coverage(&self) -> bool {
        true
    }

    fn hooks(&self) -> &'static [Hook] {
        HOOKS
    }

    fn present_without_symbols(&self, elf: &ElfInfo) -> bool {
        elf.sections
            .iter()
            .any(|s| s.name == "__sancov_cntrs" || s.name == "__sancov_guards")
    }

    fn without_dump_function(&self, _symtab: bool) -> &'static str {
        STRIPPED
    }

    fn dump_returns_probeable(&self) -> bool {
        true
    }

    fn dump_thread(&self) -> DumpThread {
        DumpThread::NotOcaml
    }

    /// What a snapshot makes of it is built by covobs (`memory.rs`): nothing to check.
    fn snapshot_invalid(&self, _bytes: &[u8]) -> Option<String> {
        None
    }

    /// Its files name no module and hold PCs only: snapshots read the counters instead.
    fn extract(
        &self,
        _done: &FinishedDump,
        _root: &TargetDir,
        _sources: &mut Sources,
    ) -> Result<Vec<Extracted>, CollectError> {
        not_collected(Runtime::Sancov)
    }
}
