//! SanitizerCoverage: found by `__sanitizer_cov_dump`, or by its `__sancov_*` sections; covobs
//! reads its counters straight out of memory (`memory.rs`), not what its dumps write.
use super::{DumpThread, Observed, Runtime};
use crate::discover::hooks::{Hook, HookMatch::Exact, Role, hook};

pub mod memory;

static HOOKS: &[Hook] = &[
    hook(Runtime::Sancov, Role::Dump, Exact("__sanitizer_cov_dump")),
    hook(
        Runtime::Sancov,
        Role::Dump,
        Exact("__sanitizer_dump_coverage"),
    ),
];

pub static OBSERVED: Observed = Observed {
    name: "sancov",
    product: "SanitizerCoverage",
    extension: "sancov",
    is_coverage: true,
    hooks: HOOKS,
    found_without_symbols: |elf| {
        elf.sections
            .iter()
            .any(|s| s.name == "__sancov_cntrs" || s.name == "__sancov_guards")
    },
    no_dump_function: None,
    dump_returns_probeable: true,
    dump_thread: DumpThread::NotOcaml,
    // covobs builds what a snapshot makes of it (`memory.rs`): nothing to check.
    check_snapshot: |_| None,
    // Its files name no module and hold PCs only: snapshots read the counters instead.
    extractor: None,
};
