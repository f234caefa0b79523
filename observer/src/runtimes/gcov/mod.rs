//! gcov (gcc --coverage, clang --coverage): found by `__gcov_dump` and `__gcov_exit`; its
//! dumps merge into the `.gcda` files the binary names (moved by `GCOV_PREFIX`), read with the
//! `.gcno` notes the report needs (`gcda.rs`).
use super::{DumpThread, Observed, Runtime};
use crate::{
    collect::{
        CollectError, Extracted, FinishedDump, FormatInfo, LocatedBy, MAX_COVERAGE_FILE,
        MAX_NOTES_FILE, SourceInfo, expect_written, whole_file,
    },
    discover::hooks::{Hook, HookMatch::Exact, Role, hook},
    target::files::{self as read, Expect, TargetDir},
};

pub mod before;
pub mod gcda;

static HOOKS: &[Hook] = &[
    hook(Runtime::Gcov, Role::Dump, Exact("__gcov_dump")),
    // GCC's exit-time dump (a destructor) goes through here, not through __gcov_dump.
    hook(Runtime::Gcov, Role::Dump, Exact("__gcov_exit")),
    hook(Runtime::Gcov, Role::Reset, Exact("__gcov_reset")),
];

pub static OBSERVED: Observed = Observed {
    name: "gcov",
    product: "gcov",
    extension: "gcda",
    is_coverage: true,
    hooks: HOOKS,
    // Nothing tells gcov's counters apart without its functions.
    found_without_symbols: |_| false,
    no_dump_function: None,
    dump_returns_probeable: true,
    dump_thread: DumpThread::NotOcaml,
    check_snapshot: |_| None,
    extractor: Some(|done, root, sources| extract(done, root, &sources.gcda)),
};

fn extract(
    done: &FinishedDump,
    root: &TargetDir,
    gcda: &[(String, String)],
) -> Result<Vec<Extracted>, CollectError> {
    let cwd = done.dump.cwd.as_deref();
    let mut files: Vec<(String, Expect, LocatedBy)> = done
        .dump
        .files
        .iter()
        .filter(|f| f.bytes > 0)
        .filter_map(|f| {
            f.path
                .clone()
                .map(|p| (p, expect_written(f.dev, f.ino), LocatedBy::Kernel))
        })
        .collect();
    if files.is_empty() {
        // Outside a window: the .gcda files the binary names that changed during the dump.
        let since = done.dump.start_ns;
        for (_, p) in gcda {
            if modified_since(root, cwd, p, since)? {
                files.push((p.clone(), Expect::Writable, LocatedBy::Environment));
            }
        }
    }
    if files.is_empty() {
        return Err(CollectError::Fallback(format!(
            "the gcov runtime wrote nothing (returned {}): GCC's runtime dumps once until __gcov_reset() is called",
            done.ret
        )));
    }
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    let located_by = files[0].2;
    for (path, expect, _) in &files {
        let data = whole_file(root, cwd, path, *expect, MAX_COVERAGE_FILE)?;
        if let Err(e) = gcda::parse(&data) {
            problems.push(format!("{path}: {e}"));
        }
        parts.push((path.clone(), data));
        // The notes the report needs, from where the compiler left them (the compiled-in path,
        // not the one GCOV_PREFIX moved the data to); the same for every dump, but small.
        let compiled = gcda
            .iter()
            .find(|(_, relocated)| relocated == path)
            .map_or(path.as_str(), |(c, _)| c.as_str());
        // Notes are the compiler's output, which the target only reads: opened as the target,
        // and kept only if they are notes (a link to anything else the target may read is not
        // copied into the session).
        let gcno = gcda::gcno_of(compiled);
        match whole_file(root, cwd, &gcno, Expect::Readable, MAX_NOTES_FILE) {
            Ok(notes) => match gcda::parse_notes(&notes) {
                Ok(()) => parts.push((gcno, notes)),
                Err(e) => problems.push(format!(
                    "{gcno} (the notes the report needs) is not a .gcno file ({e}): not copied"
                )),
            },
            Err(e) => problems.push(format!("{gcno} (the notes the report needs): {e}")),
        }
    }
    Ok(vec![Extracted {
        data: Vec::new(),
        parts,
        source: SourceInfo {
            path: files[0].0.clone(),
            offset: 0,
            inode: None,
            dev: None,
            located_by: Some(located_by),
        },
        format: FormatInfo {
            name: "gcov-gcda".into(),
            version: 0,
        },
        invalid_reason: (!problems.is_empty()).then(|| problems.join("; ")),
    }])
}

/// What a .gcda file of the target holds now (None: absent, unreadable or not a .gcda): the
/// content libgcov merges at the target's next dump.
pub fn gcda_now(root: &TargetDir, path: &str) -> Option<Vec<u8>> {
    let data = whole_file(root, None, path, Expect::Writable, MAX_COVERAGE_FILE).ok()?;
    gcda::parse(&data).ok()?;
    Some(data)
}

/// Whether a file was changed after `since_boot_ns` (CLOCK_BOOTTIME).
fn modified_since(
    root: &TargetDir,
    cwd: Option<&TargetDir>,
    path: &str,
    since_boot_ns: u64,
) -> Result<bool, read::ReadError> {
    use std::os::unix::fs::MetadataExt;
    let f = match read::open_in_target(root, cwd, path, Expect::Writable) {
        Ok(f) => f,
        // covobs' own failure (descriptors, memory) is said as such, not as "nothing written".
        Err(e) if e.is_covobs_failure() => return Err(e),
        // Not there, or not a file the target may write: not this dump's output.
        Err(_) => return Ok(false),
    };
    let Ok(m) = f.metadata() else {
        return Ok(false);
    };
    let mtime_unix_ns = i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec());
    let since_unix_ns = i128::from(since_boot_ns) + crate::sys::clock::boot_to_unix_offset_ns();
    // Filesystem timestamps are coarse (jiffies): allow 20 ms.
    Ok(mtime_unix_ns + 20_000_000 >= since_unix_ns)
}
