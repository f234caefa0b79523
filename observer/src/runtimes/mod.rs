//! The coverage runtimes covobs observes, one module each, owning everything about observing
//! that runtime: the functions it is found by and probed at, how a module that carries it
//! without them is recognised, where its dumps land and how they are extracted and validated,
//! how it is read from memory where it can be, and which thread a signal must reach.
//!
//! The stages stay generic (`discover/elf.rs` reads symbols, `target/files.rs` opens files as
//! the target, `snapshot/memory.rs` reads memory, `trigger/` sends signals) and ask the runtime
//! through [`Runtime::observed`], each module's `OBSERVED`. The matches over the runtimes here
//! are exhaustive, without a catch-all: a new variant does not compile without its module, and
//! its `OBSERVED` does not compile without every field.
use serde::Serialize;

use crate::{
    collect::{CollectError, Extracted, FinishedDump},
    discover::{ElfInfo, hooks::Hook},
    target::files::TargetDir,
};

pub mod bisect;
pub mod gcov;
pub mod kcov;
pub mod libc;
pub mod llvm;
pub mod ocaml;
pub mod sancov;

/// A runtime covobs recognises in a module.
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

/// Which thread a dump signal for a runtime must reach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DumpThread {
    /// The thread that runs OCaml: the dump runs OCaml code (bisect_ppx).
    Ocaml,
    /// A thread that does not run OCaml (the main thread unless it does).
    NotOcaml,
    /// None: a signal does not make it dump (the OCaml runtime itself).
    Never,
}

/// Reads and validates what a finished dump wrote. Blocking (file I/O): run it off the loop.
pub type Extract =
    fn(&FinishedDump, &TargetDir, &mut Sources) -> Result<Vec<Extracted>, CollectError>;

/// Everything the observing side needs from one runtime: one `static` per runtime module, a
/// struct literal that must name every field.
pub struct Observed {
    /// Its name in events, artifact file names and metadata (docs/output.md).
    pub name: &'static str,
    /// What its users call it, in messages.
    pub product: &'static str,
    /// File extension of its artifacts (docs/output.md).
    pub extension: &'static str,
    /// A coverage runtime, not a helper covobs probes for context.
    pub is_coverage: bool,
    /// The functions it is found by and probed at.
    pub hooks: &'static [Hook],
    /// Its data is in the module even though none of its dump functions is in the symbols.
    pub found_without_symbols: fn(&ElfInfo) -> bool,
    /// Why a module with its full symbol table but without its dump function cannot be dumped
    /// (None: said as for a stripped module).
    pub no_dump_function: Option<&'static str>,
    /// Its dump function is native code whose return address may be hijacked by a uretprobe.
    pub dump_returns_probeable: bool,
    /// The thread a dump signal must reach.
    pub dump_thread: DumpThread,
    /// Why a snapshot of it (the file its runtime would write, made from memory) is not valid.
    pub check_snapshot: fn(&[u8]) -> Option<String>,
    /// How its dumps are collected from the files they write (None: they are not).
    pub extractor: Option<Extract>,
}

impl Observed {
    /// Its data is in the module even though none of its dump functions is in the symbols.
    pub fn present_without_symbols(&self, elf: &ElfInfo) -> bool {
        (self.found_without_symbols)(elf)
    }

    /// Why a module that carries it without a dump function cannot be dumped; `symtab`: the
    /// module has its full symbol table (so the functions are absent, not stripped).
    pub fn without_dump_function(&self, symtab: bool) -> &'static str {
        match self.no_dump_function {
            Some(why) if symtab => why,
            _ => {
                "its coverage data is there but the dump functions are not in the symbols (stripped): dumps cannot be observed"
            }
        }
    }

    /// Why a snapshot of it is not valid.
    pub fn snapshot_invalid(&self, bytes: &[u8]) -> Option<String> {
        (self.check_snapshot)(bytes)
    }

    /// Read and validate what a finished dump wrote. Blocking (file I/O): run it off the loop.
    pub fn extract(
        &self,
        done: &FinishedDump,
        root: &TargetDir,
        sources: &mut Sources,
    ) -> Result<Vec<Extracted>, CollectError> {
        match self.extractor {
            Some(extract) => extract(done, root, sources),
            None => Err(CollectError::Fallback(format!(
                "collecting {} dumps is not supported",
                self.name
            ))),
        }
    }
}

impl Runtime {
    /// Every runtime, in the enum's order.
    pub const ALL: [Runtime; 7] = [
        Self::Llvm,
        Self::Gcov,
        Self::Sancov,
        Self::Bisect,
        Self::Ocaml,
        Self::Libc,
        Self::Kcov,
    ];

    /// The module that observes it.
    pub fn observed(self) -> &'static Observed {
        match self {
            Self::Llvm => &llvm::OBSERVED,
            Self::Gcov => &gcov::OBSERVED,
            Self::Sancov => &sancov::OBSERVED,
            Self::Bisect => &bisect::OBSERVED,
            Self::Ocaml => &ocaml::OBSERVED,
            Self::Libc => &libc::OBSERVED,
            Self::Kcov => &kcov::OBSERVED,
        }
    }

    pub fn as_str(self) -> &'static str {
        self.observed().name
    }

    /// See [`Observed::dump_returns_probeable`].
    pub fn dump_returns_probeable(self) -> bool {
        self.observed().dump_returns_probeable
    }

    /// See [`Observed::is_coverage`].
    pub fn is_coverage(self) -> bool {
        self.observed().is_coverage
    }

    /// See [`Observed::extension`].
    pub fn extension(self) -> &'static str {
        self.observed().extension
    }

    /// See [`Observed::dump_thread`].
    pub fn dump_thread(self) -> DumpThread {
        self.observed().dump_thread
    }
}

/// The functions of every runtime that covobs recognises and probes.
pub fn hooks() -> impl Iterator<Item = &'static Hook> {
    Runtime::ALL.into_iter().flat_map(|r| r.observed().hooks)
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

/// Where one target's runtimes put their dumps (owned by the target's collector).
#[derive(Debug, Default)]
pub struct Sources {
    pub llvm: Option<llvm::path::ProfileCursor>,
    pub bisect: Option<bisect::coverage::BisectSource>,
    /// gcov: the .gcda files of the target: (compiled-in path, relocated path).
    pub gcda: Vec<(String, String)>,
}

/// What a target's files held before its next dump, for the runtimes whose dumps add into what
/// the file holds (LLVM's merge pool, gcov's .gcda files): an artifact's metadata `merged` says
/// what that was. Owned by the target's collector, next to its `Sources`.
#[derive(Debug, Default)]
pub struct Merges {
    /// LLVM: what the merge-pool file held, when the profile file is one.
    pool: Option<llvm::pool::Pool>,
    gcda: gcov::before::GcdaBefore,
}

impl Merges {
    /// The files as they are when covobs starts watching the target. Blocking (file I/O).
    pub fn at_start(sources: &Sources, root: &TargetDir) -> Self {
        Self {
            pool: sources
                .llvm
                .as_ref()
                .and_then(|c| llvm::pool::Pool::now(c, root)),
            gcda: gcov::before::GcdaBefore::at_start(root, &sources.gcda),
        }
    }

    /// Why what a dump of `runtime` wrote is no new dump: found by the files' time alone, it is
    /// byte for byte what covobs collected last.
    pub fn nothing_new(&self, runtime: Runtime, x: &Extracted) -> Option<&'static str> {
        match runtime {
            Runtime::Gcov => (x.source.located_by
                == Some(crate::layout::artifact::LocatedBy::Environment)
                && self.gcda.unchanged(&x.parts))
            .then_some(
                "the gcov runtime wrote nothing new: GCC's runtime dumps once until __gcov_reset() is called",
            ),
            Runtime::Llvm
            | Runtime::Sancov
            | Runtime::Bisect
            | Runtime::Ocaml
            | Runtime::Libc
            | Runtime::Kcov => None,
        }
    }

    /// What valid dump `n` of `runtime`, which wrote `data` where `source` says (or `parts`,
    /// named as in the artifact directory: name, path in the target, bytes), merged onto, and the copy to keep beside it
    /// (`<seq>-<runtime>.merged`) when that was not an artifact of this process. `merge_pool`:
    /// the target's LLVM profile file is a merge pool.
    pub fn merged(
        &mut self,
        runtime: Runtime,
        n: u64,
        source: &crate::layout::artifact::SourceInfo,
        data: &[u8],
        parts: &[(String, String, bytes::Bytes)],
        merge_pool: bool,
    ) -> (
        Option<crate::layout::artifact::MergedBase>,
        Option<bytes::Bytes>,
    ) {
        match runtime {
            Runtime::Llvm if merge_pool => llvm::pool::merged(&mut self.pool, n, source, data),
            Runtime::Gcov => {
                let (base, copy) = self.gcda.merged(n, parts);
                (base, copy.map(bytes::Bytes::from))
            }
            Runtime::Llvm
            | Runtime::Sancov
            | Runtime::Bisect
            | Runtime::Ocaml
            | Runtime::Libc
            | Runtime::Kcov => (None, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_extensions_are_distinct() {
        let mut names: Vec<_> = Runtime::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Runtime::ALL.len());
        let mut exts: Vec<_> = Runtime::ALL
            .iter()
            .filter(|r| r.is_coverage())
            .map(|r| r.extension())
            .collect();
        exts.sort_unstable();
        exts.dedup();
        assert_eq!(exts.len(), 5);
    }

    #[test]
    fn each_runtime_owns_its_hooks() {
        for r in Runtime::ALL {
            assert!(r.observed().hooks.iter().all(|h| h.runtime == r), "{r:?}");
        }
        assert_eq!(hooks().count(), 17);
    }
}
