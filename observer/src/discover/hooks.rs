//! The functions of coverage runtimes that covobs recognises and probes.
use serde::Serialize;

/// A coverage runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// LLVM source-based coverage (clang -fprofile-instr-generate, rustc -C instrument-coverage).
    Llvm,
    /// gcc --coverage / clang --coverage.
    Gcov,
    /// SanitizerCoverage.
    Sancov,
    /// OCaml bisect_ppx.
    Bisect,
    /// The OCaml runtime itself (not coverage: tells which thread runs OCaml).
    Ocaml,
    /// The C library (not coverage: its exit() tells which dumps are exit-time dumps, its
    /// ioctl() which threads use kcov).
    Libc,
    /// Linux kcov: kernel coverage of a thread (the `/sys/kernel/debug/kcov` buffer).
    Kcov,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llvm => "llvm",
            Self::Gcov => "gcov",
            Self::Sancov => "sancov",
            Self::Bisect => "bisect",
            Self::Ocaml => "ocaml",
            Self::Libc => "libc",
            Self::Kcov => "kcov",
        }
    }

    /// Its dump function is native code whose return address may be hijacked by a uretprobe.
    /// Not OCaml: OCaml's GC walks the stack by return addresses and would crash on one.
    pub fn dump_returns_probeable(self) -> bool {
        !matches!(self, Self::Bisect | Self::Ocaml)
    }

    /// A coverage runtime, not a helper covobs probes for context.
    pub fn is_coverage(self) -> bool {
        !matches!(self, Self::Ocaml | Self::Libc)
    }

    /// File extension of this runtime's artifacts (docs/output.md).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Llvm => "profraw",
            Self::Gcov => "gcda",
            Self::Sancov => "sancov",
            Self::Bisect => "coverage",
            Self::Kcov => "kcov",
            Self::Ocaml | Self::Libc => "none",
        }
    }
}

/// The runtime an artifact's metadata names. Only coverage runtimes make artifacts; a helper
/// (OCaml, libc) would be named as itself.
impl From<Runtime> for crate::layout::artifact::Runtime {
    fn from(r: Runtime) -> Self {
        use crate::layout::artifact::Runtime as Named;
        match r {
            Runtime::Llvm => Named::Llvm,
            Runtime::Gcov => Named::Gcov,
            Runtime::Sancov => Named::Sancov,
            Runtime::Bisect => Named::Bisect,
            Runtime::Kcov => Named::Kcov,
            Runtime::Ocaml | Runtime::Libc => Named::Unknown(r.as_str().to_owned()),
        }
    }
}

/// What calling the function does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Writes the counters out: probed with a uprobe + uretprobe (dump_start / dump_end).
    Dump,
    /// Zeroes the counters.
    Reset,
    /// Its return ends a dump whose own function cannot carry a uretprobe (bisect).
    DumpEnd,
    /// Steady-state OCaml runtime function: hits per thread tell which thread runs OCaml.
    OcamlRuntime,
    /// The process is exiting (libc `exit`).
    ProcessExit,
    /// libc `ioctl`: where kcov's ioctls are seen (KCOV_ENABLE, KCOV_DISABLE, ...).
    Ioctl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookMatch {
    Exact(&'static str),
    /// OCaml symbols carry a compiler stamp suffix (`camlFoo__bar_206`).
    Prefix(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Hook {
    pub runtime: Runtime,
    pub role: Role,
    pub matcher: HookMatch,
}

const fn hook(runtime: Runtime, role: Role, matcher: HookMatch) -> Hook {
    Hook {
        runtime,
        role,
        matcher,
    }
}

use HookMatch::{Exact, Prefix};

/// Every dump through the LLVM runtime ends in `__llvm_profile_write_file` (also
/// `__llvm_profile_dump` and the atexit writer call it), so probing it alone sees each dump once.
pub static HOOKS: &[Hook] = &[
    hook(
        Runtime::Llvm,
        Role::Dump,
        Exact("__llvm_profile_write_file"),
    ),
    hook(
        Runtime::Llvm,
        Role::Reset,
        Exact("__llvm_profile_reset_counters"),
    ),
    hook(Runtime::Gcov, Role::Dump, Exact("__gcov_dump")),
    // GCC's exit-time dump (a destructor) goes through here, not through __gcov_dump.
    hook(Runtime::Gcov, Role::Dump, Exact("__gcov_exit")),
    hook(Runtime::Gcov, Role::Reset, Exact("__gcov_reset")),
    hook(Runtime::Sancov, Role::Dump, Exact("__sanitizer_cov_dump")),
    hook(
        Runtime::Sancov,
        Role::Dump,
        Exact("__sanitizer_dump_coverage"),
    ),
    // Bisect.Runtime.dump_counters_exn and bisect's at_exit dump both write through this.
    hook(
        Runtime::Bisect,
        Role::Dump,
        Prefix("camlBisect_common__write_runtime_data_"),
    ),
    hook(
        Runtime::Bisect,
        Role::Reset,
        Prefix("camlBisect_common__reset_counters_"),
    ),
    // write_runtime_data ends by flushing its channel: the C function that does it.
    hook(Runtime::Bisect, Role::DumpEnd, Exact("caml_ml_flush")),
    hook(Runtime::Libc, Role::ProcessExit, Exact("exit")),
    hook(Runtime::Libc, Role::Ioctl, Exact("ioctl")),
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
