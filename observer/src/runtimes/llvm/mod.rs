//! LLVM source-based coverage (clang -fprofile-instr-generate, rustc -C instrument-coverage):
//! found by `__llvm_profile_write_file`, its dumps are raw profiles appended to the file
//! `LLVM_PROFILE_FILE` names (`path.rs`), validated by `raw.rs`; its counters can also be read
//! straight out of memory (`memory.rs`).
use super::{DumpThread, Observed, Runtime};
use crate::{
    collect::{
        CollectError, Extracted, FinishedDump, FormatInfo, LocatedBy, SourceInfo, expect_written,
    },
    discover::hooks::{Hook, HookMatch::Exact, Role, hook},
    target::files::{self as read, TargetDir},
};

pub mod memory;
pub mod path;
pub mod pool;
pub mod raw;

/// Every dump through the LLVM runtime ends in `__llvm_profile_write_file` (also
/// `__llvm_profile_dump` and the atexit writer call it), so probing it alone sees each dump once.
static HOOKS: &[Hook] = &[
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
];

pub static OBSERVED: Observed = Observed {
    name: "llvm",
    product: "LLVM source-based coverage",
    extension: "profraw",
    is_coverage: true,
    hooks: HOOKS,
    found_without_symbols: |elf| elf.sections.iter().any(|s| s.name == "__llvm_prf_cnts"),
    no_dump_function: Some(
        // Symbols, but no dump function: minicov, or -Z no-profiler-runtime.
        "its counters are there but it has no profile runtime that writes files (minicov or -Z no-profiler-runtime): nothing to signal; --mode snapshot reads its counters",
    ),
    dump_returns_probeable: true,
    dump_thread: DumpThread::NotOcaml,
    check_snapshot: |bytes| raw::parse(bytes, true).err().map(|e| e.to_string()),
    extractor: Some(|done, root, sources| extract(done, root, sources.llvm.as_mut())),
};

/// Read and validate what a finished LLVM dump wrote. Blocking (file I/O): run it off the loop.
/// `cursor` follows the profile file the environment names: it locates the dump when the kernel
/// did not see its writes, and it is moved past what the kernel saw otherwise.
fn extract(
    done: &FinishedDump,
    root: &TargetDir,
    cursor: Option<&mut path::ProfileCursor>,
) -> Result<Vec<Extracted>, CollectError> {
    let cwd = done.dump.cwd.as_deref();
    let mut out = Vec::new();
    let mut observed = Vec::new();
    for f in done.dump.files.iter().filter(|f| f.bytes > 0) {
        let Some(path) = f.path.clone() else {
            continue;
        };
        let file = read::open_in_target(root, cwd, &path, expect_written(f.dev, f.ino))?;
        let (offset, len, located_by) = match f.start {
            Some(start) => (start, f.end - start, LocatedBy::Kernel),
            None => {
                // Positions unknown (no BTF): the dump appended `bytes` at the end as of now.
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                (size.saturating_sub(f.bytes), f.bytes, LocatedBy::KernelSize)
            }
        };
        let data = read::read_range(&file, &path, offset, len)?;
        observed.push((path.clone(), f.ino, offset + len));
        out.push(validated(
            data,
            SourceInfo {
                path,
                offset,
                inode: f.ino,
                dev: f.dev,
                located_by: Some(located_by),
            },
        ));
    }
    if !out.is_empty() {
        if let Some(c) = cursor {
            for (path, ino, end) in observed {
                c.observed(&path, ino, end);
            }
        }
        return Ok(out);
    }
    // Nothing seen by the kernel (the dump came outside a file-tracking window, or wrote through
    // a mechanism the programs do not follow): take it from the file the environment names.
    if let Some(c) = cursor {
        c.placed_after(done.dump.start_ns, done.end_ns)
            .map_err(CollectError::Fallback)?;
        return c
            .take(root, cwd)
            .map(|(data, path, offset)| {
                vec![validated(
                    data,
                    SourceInfo {
                        path,
                        offset,
                        inode: None,
                        dev: None,
                        located_by: Some(LocatedBy::Environment),
                    },
                )]
            })
            .map_err(CollectError::Fallback);
    }
    Err(CollectError::NothingWritten { ret: done.ret })
}

fn validated(data: Vec<u8>, source: SourceInfo) -> Extracted {
    match raw::parse(&data, true) {
        Ok(p) => Extracted {
            data,
            parts: Vec::new(),
            source,
            format: FormatInfo {
                name: "llvm-raw-profile".into(),
                version: p.version,
            },
            invalid_reason: None,
        },
        Err(e) => Extracted {
            data,
            parts: Vec::new(),
            source,
            format: FormatInfo {
                name: "llvm-raw-profile".into(),
                version: 0,
            },
            invalid_reason: Some(e.to_string()),
        },
    }
}
