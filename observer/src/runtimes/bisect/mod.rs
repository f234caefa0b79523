//! OCaml bisect_ppx: found by `Bisect_common.write_runtime_data`, which runs OCaml code (no
//! uretprobe: its end is the return of the `caml_ml_flush` it ends with) on the OCaml thread;
//! its dumps are `.coverage` files under `BISECT_FILE` (`coverage.rs`).
use super::{DumpThread, Observed, Runtime};
use crate::{
    collect::{
        CollectError, Extracted, FinishedDump, FormatInfo, LocatedBy, MAX_COVERAGE_FILE,
        SourceInfo, expect_written, whole_file,
    },
    discover::hooks::{
        Hook,
        HookMatch::{Exact, Prefix},
        Role, hook,
    },
    target::files::{self as read, Expect, TargetDir},
};

pub mod coverage;

use coverage::BisectSource;

static HOOKS: &[Hook] = &[
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
];

pub static OBSERVED: Observed = Observed {
    name: "bisect",
    product: "bisect_ppx",
    extension: "coverage",
    is_coverage: true,
    hooks: HOOKS,
    found_without_symbols: |elf| elf.bisect_runtime_text,
    no_dump_function: None,
    // OCaml code: OCaml's GC walks the stack by return addresses and would crash on a hijacked one.
    dump_returns_probeable: false,
    dump_thread: DumpThread::Ocaml,
    check_snapshot: |_| None,
    extractor: Some(|done, root, sources| extract(done, root, sources.bisect.as_mut())),
};

fn extract(
    done: &FinishedDump,
    root: &TargetDir,
    mut source: Option<&mut BisectSource>,
) -> Result<Vec<Extracted>, CollectError> {
    let cwd = done.dump.cwd.as_deref();
    let mut out = Vec::new();
    for f in done.dump.files.iter().filter(|f| f.bytes > 0) {
        // The dump writes into a file its caller opened: no path from the kernel, only the inode.
        let path = match (&f.path, f.ino, source.as_deref()) {
            (Some(p), _, _) => p.clone(),
            (None, Some(ino), Some(src)) => match src.path_of(root, cwd, ino) {
                Some(p) => p,
                None => {
                    return Err(CollectError::Fallback(format!(
                        "the dump wrote inode {ino}, which is not a {}*.coverage file",
                        src.prefix
                    )));
                }
            },
            _ => continue,
        };
        let data = whole_file(
            root,
            cwd,
            &path,
            expect_written(f.dev, f.ino),
            MAX_COVERAGE_FILE,
        )?;
        if let (Some(src), Some(ino)) = (source.as_deref_mut(), f.ino) {
            src.mark_taken(ino);
        }
        out.push(checked_bisect(data, &path, f.ino, f.dev, LocatedBy::Kernel));
    }
    if !out.is_empty() {
        return Ok(out);
    }
    let Some(src) = source else {
        return Err(CollectError::NothingWritten { ret: done.ret });
    };
    // Outside a file-tracking window: the new coverage file under BISECT_FILE.
    let Some(path) = src.untaken(root, cwd).into_iter().last() else {
        return Err(CollectError::Fallback(format!(
            "no new {}*.coverage file appeared",
            src.prefix
        )));
    };
    let file = read::open_in_target(root, cwd, &path, Expect::Writable)?;
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().map_err(|source| read::ReadError::Open {
        path: path.clone(),
        source,
    })?;
    if meta.len() > MAX_COVERAGE_FILE {
        return Err(CollectError::Fallback(format!(
            "{path} is larger than a coverage file can be: refused unread"
        )));
    }
    let data = read::read_range(&file, &path, 0, meta.len())?;
    src.mark_taken(meta.ino());
    Ok(vec![checked_bisect(
        data,
        &path,
        Some(meta.ino()),
        Some(meta.dev()),
        LocatedBy::Environment,
    )])
}

fn checked_bisect(
    data: Vec<u8>,
    path: &str,
    ino: Option<u64>,
    dev: Option<u64>,
    located_by: LocatedBy,
) -> Extracted {
    let invalid_reason = coverage::parse(&data).err().map(|e| e.to_string());
    Extracted {
        data,
        parts: Vec::new(),
        source: SourceInfo {
            path: path.to_owned(),
            offset: 0,
            inode: ino,
            dev,
            located_by: Some(located_by),
        },
        format: FormatInfo {
            name: "bisect-coverage".into(),
            version: 4,
        },
        invalid_reason,
    }
}
