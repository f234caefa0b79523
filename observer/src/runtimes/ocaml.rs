//! The OCaml runtime: not coverage, but bisect_ppx's dumps run on the thread that runs it; hits
//! on its steady-state functions tell which thread that is.
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
    hook(Runtime::Ocaml, Role::OcamlRuntime, Exact("caml_call_gc")),
    hook(
        Runtime::Ocaml,
        Role::OcamlRuntime,
        Exact("caml_garbage_collection"),
    ),
    hook(
        Runtime::Ocaml,
        Role::OcamlRuntime,
        Exact("caml_alloc_small_dispatch"),
    ),
    hook(
        Runtime::Ocaml,
        Role::OcamlRuntime,
        Exact("caml_check_urgent_gc"),
    ),
    hook(
        Runtime::Ocaml,
        Role::OcamlRuntime,
        Exact("caml_leave_blocking_section"),
    ),
];

pub struct Ocaml;

impl Observed for Ocaml {
    fn name(&self) -> &'static str {
        "ocaml"
    }

    fn product(&self) -> &'static str {
        "the OCaml runtime"
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

    fn present_without_symbols(&self, elf: &ElfInfo) -> bool {
        elf.ocaml_runtime_text
    }

    fn without_dump_function(&self, _symtab: bool) -> &'static str {
        STRIPPED
    }

    /// OCaml's GC walks the stack by return addresses and would crash on a hijacked one.
    fn dump_returns_probeable(&self) -> bool {
        false
    }

    fn dump_thread(&self) -> DumpThread {
        DumpThread::Never
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
        not_collected(Runtime::Ocaml)
    }
}
