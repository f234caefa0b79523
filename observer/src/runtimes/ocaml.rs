//! The OCaml runtime: not coverage, but bisect_ppx's dumps run on the thread that runs it; hits
//! on its steady-state functions tell which thread that is.
use super::{DumpThread, Observed, Runtime};
use crate::discover::hooks::{Hook, HookMatch::Exact, Role, hook};

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

pub static OBSERVED: Observed = Observed {
    name: "ocaml",
    product: "the OCaml runtime",
    extension: "none",
    is_coverage: false,
    hooks: HOOKS,
    found_without_symbols: |elf| elf.ocaml_runtime_text,
    no_dump_function: None,
    // OCaml's GC walks the stack by return addresses and would crash on a hijacked one.
    dump_returns_probeable: false,
    dump_thread: DumpThread::Never,
    check_snapshot: |_| None,
    extractor: None,
};
