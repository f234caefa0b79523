//! Collect what each dump produced: the kernel tells which files the dumping thread opened and
//! wrote between dump_start and dump_end, with their inode and the file position after each
//! write; the collector reads exactly those bytes, as the target sees the file, validates them,
//! and makes an artifact. A dump that cannot be collected becomes a `lost` event with the reason.
use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use sha2::Digest;

use crate::discover::{Module, Runtime};

/// The format readers the report uses, until it imports them from the layout crate.
pub use crate::runtimes::{bisect::coverage as bisect, gcov::gcda as gcov};

pub use crate::layout::artifact::{
    ArtifactMeta, FormatInfo, LocatedBy, MergedBase, MergedPart, ModuleMeta, PartMeta, SourceInfo,
    Trigger,
};
pub use crate::runtimes::Sources;
pub use crate::target::files::TargetDir;
use crate::target::files::{self as read, Expect, Identity};

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

/// Read and validate what a finished dump wrote, as its runtime does. Blocking (file I/O): run
/// it off the loop.
pub fn extract(
    done: &FinishedDump,
    root: &TargetDir,
    sources: &mut Sources,
) -> Result<Vec<Extracted>, CollectError> {
    let runtime = done.dump.hook.runtime.observed();
    runtime.extract(done, root, sources)
}

/// Move past what finished LLVM dumps wrote without reading it (dumps covobs passes over when
/// it has fallen behind a target), oldest first; returns how many it passed. Where the kernel
/// saw the writes, the cursor moves past them; where it did not, past the next profile in the
/// file the environment names (its header and value records read, never its counters). It stops
/// at a dump it cannot pass without making a later collection wrong: another runtime, a merge
/// pool (its next dump's merged base is this one's content), or one whose place is unsure.
pub fn pass_over(dumps: &[&FinishedDump], root: &TargetDir, sources: &mut Sources) -> usize {
    let Some(cursor) = sources.llvm.as_mut() else {
        return 0;
    };
    if cursor.expanded.merge_pool {
        return 0;
    }
    // The environment's file, opened once for the dumps it locates.
    let mut named: Option<(std::fs::File, String)> = None;
    for (n, done) in dumps.iter().enumerate() {
        if done.dump.hook.runtime != Runtime::Llvm || done.dump.dir_error.is_some() {
            return n;
        }
        let written: Vec<_> = done.dump.files.iter().filter(|f| f.bytes > 0).collect();
        if !written.is_empty() {
            if !written
                .iter()
                .all(|f| f.path.is_some() && f.start.is_some())
            {
                return n;
            }
            for f in written {
                if let Some(path) = &f.path {
                    cursor.observed(path, f.ino, f.end);
                }
            }
            continue;
        }
        if cursor
            .placed_after(done.dump.start_ns, done.end_ns)
            .is_err()
        {
            return n;
        }
        if named.is_none() {
            let dump_root = done.dump.root.as_deref().unwrap_or(root);
            match cursor.open(dump_root, done.dump.cwd.as_deref()) {
                Ok(opened) => named = Some(opened),
                Err(_) => return n,
            }
        }
        let Some((file, path)) = named.as_ref() else {
            return n;
        };
        if cursor.skip(file, path).is_err() {
            return n;
        }
    }
    dumps.len()
}

/// What a dump's output file must be: the one the kernel saw written when it told its device
/// and inode, otherwise a file the target may write.
pub(crate) fn expect_written(dev: Option<u64>, ino: Option<u64>) -> Expect {
    Identity::of(dev, ino).map_or(Expect::Writable, Expect::Written)
}

/// A whole file the dump (re)wrote (or, with `Expect::Readable`, notes it reads), of at most
/// `limit` bytes.
pub(crate) fn whole_file(
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
pub(crate) const MAX_COVERAGE_FILE: u64 = 1 << 30;
pub(crate) const MAX_NOTES_FILE: u64 = 256 << 20;

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
