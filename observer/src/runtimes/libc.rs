//! The C library: not coverage, but its `exit()` tells which dumps are exit-time dumps and its
//! `ioctl()` which threads use kcov.
use super::{DumpThread, Observed, Runtime, STRIPPED, Sources, not_collected};
use crate::{
    collect::{CollectError, Extracted, FinishedDump},
    discover::{
        ElfInfo,
        hooks::{Hook, HookMatch::Exact, Role, hook},
    },
    target::files::TargetDir,
};

static HOOKS: &[Hook] = &[
    hook(Runtime::Libc, Role::ProcessExit, Exact("exit")),
    hook(Runtime::Libc, Role::Ioctl, Exact("ioctl")),
];

pub struct Libc;

impl Observed for Libc {
    fn name(&self) -> &'static str {
        "libc"
    }

    fn product(&self) -> &'static str {
        "the C library"
    }

    fn extension(&self) -> &'static str {
        "none"
    }

    fn is_coverage(&self) -> bool {
        false
    }

    fn hooks(&self) -> &'static [Hook] {
        HOOKS
    }

    fn present_without_symbols(&self, _elf: &ElfInfo) -> bool {
        false
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

    /// Not read from memory.
    fn snapshot_invalid(&self, _bytes: &[u8]) -> Option<String> {
        None
    }

    fn extract(
        &self,
        _done: &FinishedDump,
        _root: &TargetDir,
        _sources: &mut Sources,
    ) -> Result<Vec<Extracted>, CollectError> {
        not_collected(Runtime::Libc)
    }
}
