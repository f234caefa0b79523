//! Collect what each dump produced: the kernel tells which files the dumping thread opened and
//! wrote between dump_start and dump_end, with their inode and the file position after each
//! write; the collector reads exactly those bytes, as the target sees the file, validates them,
//! and makes an artifact. A dump that cannot be collected becomes a `lost` event with the reason.
use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use sha2::Digest;

use crate::discover::{Module, Runtime};

pub mod bisect;
pub mod gcov;
pub mod llvm_path;
pub mod llvm_raw;
pub mod read;

pub use crate::layout::artifact::{
    ArtifactMeta, FormatInfo, LocatedBy, MergedBase, MergedPart, ModuleMeta, PartMeta, SourceInfo,
    Trigger,
};
pub use read::TargetDir;
use read::{Expect, Identity};

/// One file the dumping thread touched.
#[derive(Clone, Debug, Default)]
pub struct FileTrace {
    pub fd: i32,
    /// As passed to openat (may be relative to the cwd), when the open was seen.
    pub path: Option<String>,
    pub ino: Option<u64>,
    /// userspace st_dev.
    pub dev: Option<u64>,
    /// Lowest and highest byte offsets written; `None` start when positions are unknown.
    pub start: Option<u64>,
    pub end: u64,
    pub bytes: u64,
    pub failed_writes: u32,
}

/// A dump in progress on one thread.
#[derive(Debug)]
pub struct ActiveDump {
    pub pid: u32,
    pub tid: u32,
    pub hook: Arc<HookRef>,
    pub start_ns: u64,
    pub trigger: Trigger,
    pub cwd: Option<Arc<TargetDir>>,
    /// The target's root when the dump started: a target that changed its root since covobs
    /// attached (chroot, pivot_root in a new mount namespace) writes into the new one.
    pub root: Option<Arc<TargetDir>>,
    /// covobs could not open the dump's cwd or root for its own reasons (no descriptor left, no
    /// memory): what failed. The dump is then lost as covobs' failure, never read by a guess.
    pub dir_error: Option<String>,
    pub files: Vec<FileTrace>,
}

/// A finished dump, ready to be collected.
#[derive(Debug)]
pub struct FinishedDump {
    pub dump: ActiveDump,
    pub end_ns: u64,
    pub ret: i64,
}

/// What a uprobe cookie stands for: a hook of a module.
#[derive(Debug)]
pub struct HookRef {
    pub module: Arc<Module>,
    pub runtime: Runtime,
    pub function: String,
}

/// The dumps in progress, by thread. One owner: the session loop.
#[derive(Default)]
pub struct DumpTracker {
    active: HashMap<u32, ActiveDump>,
}

impl DumpTracker {
    /// A dump started on its thread; returns the one that thread was in if covobs never saw
    /// that one end (its end record was lost to a full ring buffer).
    pub fn start(&mut self, dump: ActiveDump) -> Option<ActiveDump> {
        self.active.insert(dump.tid, dump)
    }

    /// Every dump still running, taken out (covobs stops: their ends will not be seen).
    pub fn take_all(&mut self) -> Vec<ActiveDump> {
        self.active.drain().map(|(_, d)| d).collect()
    }

    pub fn is_active(&self, tid: u32) -> bool {
        self.active.contains_key(&tid)
    }

    pub fn file_open(
        &mut self,
        tid: u32,
        fd: i64,
        path: String,
        ino: Option<u64>,
        dev: Option<u64>,
    ) {
        let Some(d) = self.active.get_mut(&tid) else {
            return;
        };
        if fd < 0 {
            return;
        }
        let fd = fd as i32;
        // A reused descriptor number starts a new trace.
        d.files.push(FileTrace {
            fd,
            path: Some(path),
            ino,
            dev,
            ..Default::default()
        });
    }

    /// A write of `ret` bytes; `pos_after` is the file position after it (None if unknown);
    /// `explicit_offset` the pwrite offset.
    #[allow(clippy::too_many_arguments)]
    pub fn file_write(
        &mut self,
        tid: u32,
        fd: i32,
        ret: i64,
        pos_after: Option<i64>,
        explicit_offset: Option<i64>,
        ino: Option<u64>,
        dev: Option<u64>,
    ) {
        let Some(d) = self.active.get_mut(&tid) else {
            return;
        };
        let idx = match d.files.iter().rposition(|f| f.fd == fd) {
            Some(i) => i,
            None => {
                // Written through a descriptor opened before the dump started.
                d.files.push(FileTrace {
                    fd,
                    ino,
                    dev,
                    ..Default::default()
                });
                d.files.len() - 1
            }
        };
        let f = &mut d.files[idx];
        if ret < 0 {
            f.failed_writes += 1;
            return;
        }
        let n = ret as u64;
        let start = match (explicit_offset, pos_after) {
            (Some(off), _) if off >= 0 => Some(off as u64),
            (_, Some(pos)) if pos >= 0 => (pos as u64).checked_sub(n),
            _ => None,
        };
        if let Some(s) = start {
            f.start = Some(f.start.map_or(s, |cur| cur.min(s)));
            f.end = f.end.max(s + n);
        }
        f.bytes += n;
        if f.ino.is_none() {
            f.ino = ino;
            f.dev = dev;
        }
    }

    pub fn end(&mut self, tid: u32, end_ns: u64, ret: i64) -> Option<FinishedDump> {
        self.active
            .remove(&tid)
            .map(|dump| FinishedDump { dump, end_ns, ret })
    }

    /// Dumps whose thread exited without returning (killed in the middle of a dump).
    pub fn abandon_thread(&mut self, tid: u32) -> Option<ActiveDump> {
        self.active.remove(&tid)
    }
}

/// A module's metadata as the artifact records it.
impl From<&Module> for ModuleMeta {
    fn from(module: &Module) -> Self {
        Self {
            path: Some(module.path.trim_end_matches(" (deleted)").to_owned()),
            build_id: module.build_id.clone(),
            copy: module_copy_path(module),
            producer: module
                .producers
                .iter()
                .find(|p| p.contains("rustc") || p.contains("clang") || p.contains("GCC"))
                .cloned(),
            llvm_major: module.llvm_major,
        }
    }
}

/// Where the copy of a module goes in the output directory: modules/<build-id>/<file name>.
pub fn module_copy_path(module: &Module) -> Option<String> {
    let id = module
        .build_id
        .clone()
        .unwrap_or_else(|| format!("dev{:x}-ino{}", module.file.dev, module.file.ino));
    Some(format!("modules/{id}/{}", module.file_name()))
}

/// A collected artifact: metadata plus the bytes, in the directory `<pid>-<comm>`. With `parts`,
/// the artifact is a directory (named by `meta.file`) of those files.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub dir: String,
    pub meta: ArtifactMeta,
    pub data: Bytes,
    pub parts: Vec<(String, Bytes)>,
    /// Files that go beside the artifact, same stem, these extensions (a sancov counter map).
    pub extra: Vec<(&'static str, Bytes)>,
}

pub fn checksum(data: &[u8]) -> String {
    let digest = sha2::Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The bytes one dump produced in one file, validated. A dump that wrote several files of one
/// kind (gcov: one .gcda per object file) gives one `Extracted` with `parts` (name, bytes).
#[derive(Debug)]
pub struct Extracted {
    pub data: Vec<u8>,
    pub parts: Vec<(String, Vec<u8>)>,
    pub source: SourceInfo,
    pub format: FormatInfo,
    pub invalid_reason: Option<String>,
}

impl Extracted {
    pub fn len(&self) -> u64 {
        self.data.len() as u64 + self.parts.iter().map(|(_, d)| d.len() as u64).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where one target's runtimes put their dumps (owned by the target's collector).
#[derive(Debug, Default)]
pub struct Sources {
    pub llvm: Option<llvm_path::ProfileCursor>,
    pub bisect: Option<bisect::BisectSource>,
    /// gcov: the .gcda files of the target: (compiled-in path, relocated path).
    pub gcda: Vec<(String, String)>,
}

/// Read and validate what a finished dump wrote. Blocking (file I/O): run it off the loop.
pub fn extract(
    done: &FinishedDump,
    root: &TargetDir,
    sources: &mut Sources,
) -> Result<Vec<Extracted>, CollectError> {
    match done.dump.hook.runtime {
        Runtime::Llvm => extract_llvm(done, root, sources.llvm.as_mut()),
        Runtime::Bisect => extract_bisect(done, root, sources.bisect.as_mut()),
        Runtime::Gcov => extract_gcov(done, root, &sources.gcda),
        other => Err(CollectError::Fallback(format!(
            "collecting {} dumps is not supported",
            other.as_str()
        ))),
    }
}

/// What a dump's output file must be: the one the kernel saw written when it told its device
/// and inode, otherwise a file the target may write.
fn expect_written(dev: Option<u64>, ino: Option<u64>) -> Expect {
    Identity::of(dev, ino).map_or(Expect::Writable, Expect::Written)
}

/// A whole file the dump (re)wrote (or, with `Expect::Readable`, notes it reads), of at most
/// `limit` bytes.
fn whole_file(
    root: &TargetDir,
    cwd: Option<&TargetDir>,
    path: &str,
    expect: Expect,
    limit: u64,
) -> Result<Vec<u8>, CollectError> {
    let file = read::open_in_target(root, cwd, path, expect)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > limit {
        return Err(CollectError::Fallback(format!(
            "{path} is larger than the {limit} bytes such a file can hold: refused unread"
        )));
    }
    Ok(read::read_range(&file, path, 0, len)?)
}

/// Bounds on whole files read from a target: far above real dumps, far below covobs' memory.
const MAX_COVERAGE_FILE: u64 = 1 << 30;
const MAX_NOTES_FILE: u64 = 256 << 20;

fn extract_bisect(
    done: &FinishedDump,
    root: &TargetDir,
    mut source: Option<&mut bisect::BisectSource>,
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
    let invalid_reason = bisect::parse(&data).err().map(|e| e.to_string());
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

fn extract_gcov(
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
        if let Err(e) = gcov::parse(&data) {
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
        let gcno = gcov::gcno_of(compiled);
        match whole_file(root, cwd, &gcno, Expect::Readable, MAX_NOTES_FILE) {
            Ok(notes) => match gcov::parse_notes(&notes) {
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
    gcov::parse(&data).ok()?;
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

impl CollectError {
    /// covobs itself failed (descriptors, memory, threads), not the target.
    pub fn is_covobs_failure(&self) -> bool {
        matches!(self, Self::Read(e) if e.is_covobs_failure())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("the dump wrote no file covobs could see (returned {ret})")]
    NothingWritten { ret: i64 },
    #[error(transparent)]
    Read(#[from] read::ReadError),
    #[error("{0}")]
    Fallback(String),
}

/// Read and validate what a finished LLVM dump wrote. Blocking (file I/O): run it off the loop.
/// `cursor` follows the profile file the environment names: it locates the dump when the kernel
/// did not see its writes, and it is moved past what the kernel saw otherwise.
pub fn extract_llvm(
    done: &FinishedDump,
    root: &TargetDir,
    cursor: Option<&mut llvm_path::ProfileCursor>,
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
    match llvm_raw::parse(&data, true) {
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
