//! The output directory sink (docs/output.md): events.jsonl, each artifact and its metadata, and
//! copies of the instrumented modules. Files are created, never overwritten, with the session's
//! modes. Artifacts are committed in groups: those that arrive together are all written, then
//! every file's fsync is issued at once (from several threads, so the filesystem serves them with
//! shared journal commits and device flushes), then each directory's, and only then is each
//! artifact reported durable. A group is what was queued when the sink got
//! to it, at most [`GROUP_COMMIT`] artifacts, so the files held open for it stay bounded whatever
//! the backlog.
//!
//! The output failing (the disk full, the directory removed, an I/O error) is a fault of covobs,
//! raised at once through [`OutputHealth`]: the session stops; artifacts not written are lost
//! with the fault as their reason, and nothing half-written stays behind. A small reserve file,
//! released at the first "no space", leaves room for the last events and session.json.
use std::{
    fs::File,
    io::Write,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::fs::FileExt as _,
    },
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, openat},
    sys::stat::Mode,
    unistd::fsync,
};
use tokio::sync::watch;

use super::{Durable, Item, PrimarySink, StreamError, modes::OutputModes, session_dir::SessionDir};
use crate::{collect::Artifact, sys::clock};

/// Room kept for the end of a session on a disk that fills up.
const RESERVE: &str = ".covobs-reserve";
const RESERVE_BYTES: i64 = 512 << 10;
/// The most artifacts one commit syncs together: it bounds the files held open while a batch
/// waits for its sync.
const GROUP_COMMIT: usize = 64;
/// Threads that fsync a group's files together.
const SYNC_THREADS: usize = 16;
/// Module copies are read in chunks of this size.
const COPY_CHUNK: usize = 1 << 20;
/// How often a stream of events checks that the directory is still there.
const CHECK_EVERY: Duration = Duration::from_millis(100);

/// Whether the output directory still works; shared by the sink and the attach loop.
#[derive(Clone)]
pub struct OutputHealth {
    dir: Arc<SessionDir>,
    fault: Arc<watch::Sender<Option<String>>>,
    /// Events that could not be written to events.jsonl after a fault.
    unwritten_events: Arc<AtomicU64>,
}

impl OutputHealth {
    fn new(dir: Arc<SessionDir>) -> Self {
        Self {
            dir,
            fault: Arc::new(watch::Sender::new(None)),
            unwritten_events: Arc::default(),
        }
    }

    pub fn dir(&self) -> &Arc<SessionDir> {
        &self.dir
    }

    /// The fault, once there is one: "covobs' output directory DIR: WHAT".
    pub fn fault(&self) -> Option<String> {
        self.fault.borrow().clone()
    }

    /// Told when the fault is raised.
    pub fn subscribe(&self) -> watch::Receiver<Option<String>> {
        self.fault.subscribe()
    }

    /// Look whether the directory was removed (also while nothing is written).
    pub fn check(&self) -> Option<String> {
        if let Err(e) = self.dir.check() {
            self.raise(&e);
        }
        self.fault()
    }

    pub fn unwritten_events(&self) -> u64 {
        self.unwritten_events.load(Ordering::Relaxed)
    }

    /// Record the fault (the first one stays). Returns its text.
    fn raise(&self, e: &std::io::Error) -> String {
        let text = format!(
            "covobs' output directory {}: {e}",
            self.dir.path().display()
        );
        self.fault.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            *f = Some(text.clone());
            true
        });
        self.fault().unwrap_or(text)
    }
}

/// An error that means the directory can no longer take the session (as opposed to one item
/// failing, e.g. on too many open files).
fn is_fault(e: &std::io::Error) -> bool {
    let fatal = [
        Errno::ENOSPC,
        Errno::EDQUOT,
        Errno::EROFS,
        Errno::EIO,
        Errno::ENOENT,
        Errno::ESTALE,
        Errno::ENOTDIR,
        Errno::EFBIG,
        Errno::ENODEV,
        Errno::ENXIO,
    ];
    e.raw_os_error()
        .is_some_and(|n| fatal.iter().any(|f| *f as i32 == n))
}

fn is_space(e: &std::io::Error) -> bool {
    e.raw_os_error()
        .is_some_and(|n| n == Errno::ENOSPC as i32 || n == Errno::EDQUOT as i32)
}

pub struct DirSink {
    dir: Arc<SessionDir>,
    health: OutputHealth,
    /// None once events can no longer be written.
    events: Option<File>,
    /// Bytes of whole lines in events.jsonl: a failed write is cut back to it.
    events_len: u64,
    line: Vec<u8>,
    reserve: bool,
    last_check: Instant,
    /// The most artifacts a commit waits for (1: each synced on its own).
    group_commit: usize,
    /// Artifacts written since the last commit, and the directories they are in.
    pending: Vec<Pending>,
    dirs: Vec<BatchDir>,
}

fn sink_err(source: std::io::Error) -> StreamError {
    StreamError::Io {
        sink: "output directory",
        source,
    }
}

impl DirSink {
    /// Use `root` as the session directory; it must be new or empty.
    pub fn create(root: &Path, modes: OutputModes) -> Result<Self, StreamError> {
        // System errors get the directory's name (covobs' own messages have it already).
        let named = |e: std::io::Error| match e.raw_os_error() {
            Some(_) => sink_err(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", root.display()),
            )),
            None => sink_err(e),
        };
        let dir = Arc::new(SessionDir::create(root, modes).map_err(named)?);
        let events = dir.create_file(dir.fd(), "events.jsonl").map_err(named)?;
        let reserve = make_reserve(&dir);
        Ok(Self {
            health: OutputHealth::new(dir.clone()),
            dir,
            events: Some(events),
            events_len: 0,
            line: Vec::new(),
            reserve,
            last_check: Instant::now(),
            group_commit: GROUP_COMMIT,
            pending: Vec::new(),
            dirs: Vec::new(),
        })
    }

    /// At most `max` artifacts a commit (1: no group commit, each artifact synced on its own).
    pub fn with_group_commit(mut self, max: usize) -> Self {
        self.group_commit = max.max(1);
        self
    }

    /// The handle the attach loop watches.
    pub fn health(&self) -> OutputHealth {
        self.health.clone()
    }

    /// A fault: recorded once, and the reserve given back when it is about space.
    fn fault(&mut self, e: &std::io::Error) -> String {
        if is_space(e) {
            self.release_reserve();
        }
        let removed = self.dir.check().is_err();
        if removed {
            // Nothing written from now on would be found: stop writing events too.
            self.events = None;
            let gone =
                std::io::Error::new(std::io::ErrorKind::NotFound, "the directory was removed");
            return self.health.raise(&gone);
        }
        self.health.raise(e)
    }

    fn release_reserve(&mut self) {
        if std::mem::take(&mut self.reserve) {
            SessionDir::remove_file(self.dir.fd(), RESERVE);
        }
    }

    fn write_event(&mut self, event: &crate::events::Event) -> Result<(), StreamError> {
        if self.last_check.elapsed() >= CHECK_EVERY {
            self.last_check = Instant::now();
            if let Err(e) = self.dir.check() {
                self.fault(&e);
            }
        }
        let Some(events) = self.events.as_mut() else {
            self.health.unwritten_events.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        self.line.clear();
        serde_json::to_writer(&mut self.line, event).map_err(|e| sink_err(e.into()))?;
        self.line.push(b'\n');
        match events.write_all(&self.line) {
            Ok(()) => {
                self.events_len += self.line.len() as u64;
                Ok(())
            }
            Err(e) => {
                // No half line: the file ends after the last whole event.
                let _ = events.set_len(self.events_len);
                self.events = None;
                self.health.unwritten_events.fetch_add(1, Ordering::Relaxed);
                self.fault(&e);
                Ok(())
            }
        }
    }

    /// Write an artifact's files (not yet synced) and keep it for the batch's commit.
    fn stage_artifact(&mut self, artifact: &Artifact, durable: Option<Durable>) {
        if let Some(f) = self.health.fault() {
            answer(durable, Err(format!("{f} (covobs stopped writing)")));
            return;
        }
        let session = self.dir.clone();
        let staged = session.check().and_then(|()| {
            let at = self.batch_dir(&artifact.dir)?;
            let dir = self.dirs[at].fd.as_fd();
            let mut staged = Staged::default();
            match write_artifact_files(&session, dir, artifact, &mut staged) {
                Ok(()) => Ok((at, staged)),
                Err(e) => {
                    // Nothing half-written stays: the report would refuse it.
                    staged.remove(dir);
                    Err(e)
                }
            }
        });
        match staged {
            Ok((dir, staged)) => {
                self.pending.push(Pending {
                    dir,
                    staged,
                    durable,
                });
                if self.pending.len() >= self.group_commit {
                    self.commit_pending();
                }
            }
            Err(e) => {
                let why = self.failed(&e);
                answer(durable, Err(why));
            }
        }
    }

    /// The batch's handle on the artifact directory `rel` (opened, or created, once a batch).
    fn batch_dir(&mut self, rel: &str) -> std::io::Result<usize> {
        if let Some(i) = self.dirs.iter().position(|d| d.rel == rel) {
            return Ok(i);
        }
        let (fd, created) = self.dir.subdir(rel)?;
        self.dirs.push(BatchDir {
            rel: rel.to_owned(),
            fd,
            created,
        });
        Ok(self.dirs.len() - 1)
    }

    /// The group commit: every file of the batch synced, then every directory once (the
    /// session's too when an artifact directory is new); each artifact answered durable after
    /// the syncs it depends on, or removed and answered with what failed.
    fn commit_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        let dirs = std::mem::take(&mut self.dirs);
        if pending.is_empty() {
            return;
        }
        let (files, synced, root): (Vec<std::io::Result<()>>, Vec<Result<(), Errno>>, _) =
            if pending.len() == 1 {
                // Alone: its own files and directories, nothing else of the filesystem.
                let files = pending.iter().map(|p| p.staged.sync()).collect();
                let synced = dirs.iter().map(|d| fsync(&d.fd)).collect();
                let root = if dirs.iter().any(|d| d.created) {
                    fsync(self.dir.fd())
                } else {
                    Ok(())
                };
                (files, synced, root)
            } else {
                // A group: every file's fsync at once, from several threads; the filesystem
                // serves fsyncs that wait together with one journal commit and one device flush
                // (its own group commit), where one after the other each would flush.
                let files = in_parallel(&pending, |p| p.staged.sync());
                let synced = in_parallel(&dirs, |d| fsync(&d.fd));
                let root = if dirs.iter().any(|d| d.created) {
                    fsync(self.dir.fd())
                } else {
                    Ok(())
                };
                (files, synced, root)
            };
        let at = clock::boot_ns();
        for (p, file) in pending.into_iter().zip(files) {
            let result = file.and_then(|()| synced[p.dir].and(root).map_err(std::io::Error::from));
            match result {
                Ok(()) => answer(p.durable, Ok(at)),
                Err(e) => {
                    p.staged.remove(dirs[p.dir].fd.as_fd());
                    let why = self.failed(&e);
                    answer(p.durable, Err(why));
                }
            }
        }
    }

    /// What an artifact's failure says; a fault of the directory is raised.
    fn failed(&mut self, e: &std::io::Error) -> String {
        if is_fault(e) || self.dir.check().is_err() {
            self.fault(e)
        } else {
            format!(
                "covobs' output directory {}: {e}",
                self.dir.path().display()
            )
        }
    }

    fn copy_module(&mut self, copy: &str, source: &File) -> Result<(), StreamError> {
        if self.health.fault().is_some() {
            return Ok(());
        }
        let (parent, name) = copy.rsplit_once('/').unwrap_or(("", copy));
        let copied = self.dir.subdir(parent).and_then(|(dir, _)| {
            let mut to = match self.dir.create_file(dir.as_fd(), name) {
                Ok(f) => f,
                // Copied already (another process of the same module).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) => return Err(e),
            };
            if let Err(e) = copy_at(source, &mut to) {
                drop(to);
                SessionDir::remove_file(dir.as_fd(), name);
                return Err(e);
            }
            Ok(())
        });
        match copied {
            Ok(()) => Ok(()),
            Err(e) if is_fault(&e) => {
                self.fault(&e);
                Ok(())
            }
            Err(e) => {
                // One module without its copy: the report falls back on the recorded path.
                tracing::warn!("no copy of {copy} in the session: {e}");
                Ok(())
            }
        }
    }
}

/// `f` on every element, from up to [`SYNC_THREADS`] threads at once; results in order.
fn in_parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let chunk = items.len().div_ceil(SYNC_THREADS).max(1);
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                std::thread::Builder::new()
                    .name("covobs-fsync".into())
                    .spawn_scoped(scope, move || part.iter().map(f).collect::<Vec<R>>())
            })
            .collect();
        let mut out = Vec::with_capacity(items.len());
        for (h, part) in handles.into_iter().zip(items.chunks(chunk)) {
            match h {
                Ok(h) => match h.join() {
                    Ok(r) => out.extend(r),
                    // A panic in a sync: that part is run again here (and panics here).
                    Err(_) => out.extend(part.iter().map(f)),
                },
                // No thread to be had: this part on this one.
                Err(_) => out.extend(part.iter().map(f)),
            }
        }
        out
    })
}

fn answer(durable: Option<Durable>, result: Result<u64, String>) {
    if let Some(tx) = durable {
        // The sender may have stopped waiting (covobs is stopping): nothing to tell.
        let _ = tx.send(result);
    }
}

/// Copy `from` whole with positioned reads: the file is shared, its offset is nobody's.
fn copy_at(from: &File, to: &mut File) -> std::io::Result<()> {
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut offset = 0u64;
    loop {
        let n = match from.read_at(&mut buf, offset) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
        offset += n as u64;
    }
}

/// An artifact directory (<pid>-<comm>) the batch wrote into.
struct BatchDir {
    rel: String,
    fd: OwnedFd,
    /// Created by this batch: the session directory is synced too.
    created: bool,
}

/// An artifact written and waiting for its batch's commit.
struct Pending {
    /// Index in the batch's directories.
    dir: usize,
    staged: Staged,
    durable: Option<Durable>,
}

/// What writing one artifact created: names to remove if it fails, and what to sync.
#[derive(Default)]
struct Staged {
    created: Vec<Created>,
    /// Written, not yet synced (open until the commit: a bounded number per batch).
    files: Vec<File>,
    /// Directories of a directory artifact.
    subdirs: Vec<OwnedFd>,
}

impl Staged {
    fn sync(&self) -> std::io::Result<()> {
        for f in &self.files {
            f.sync_all()?;
        }
        for d in &self.subdirs {
            fsync(d)?;
        }
        Ok(())
    }

    /// Remove what was created, newest first.
    fn remove(&self, dir: BorrowedFd<'_>) {
        for c in self.created.iter().rev() {
            match c {
                Created::File(name) => SessionDir::remove_file(dir, name),
                Created::Dir(name, files) => {
                    if let Ok(sub) = openat(
                        dir,
                        name.as_str(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    ) {
                        for f in files {
                            SessionDir::remove_file(sub.as_fd(), f);
                        }
                    }
                    SessionDir::remove_dir(dir, name);
                }
            }
        }
    }
}

/// A name an artifact's write created (removed again if the write fails).
enum Created {
    File(String),
    /// A directory artifact and the files in it.
    Dir(String, Vec<String>),
}

fn write_artifact_files(
    session: &SessionDir,
    dir: BorrowedFd<'_>,
    artifact: &Artifact,
    staged: &mut Staged,
) -> std::io::Result<()> {
    let file = artifact.meta.file.as_str();
    if artifact.parts.is_empty() {
        let f = session.write_unsynced(dir, file, &artifact.data)?;
        staged.created.push(Created::File(file.to_owned()));
        staged.files.push(f);
    } else {
        // A dump that wrote several files: a directory of them.
        let (sub, fresh) = session.subdir(&format!("{}/{file}", artifact.dir))?;
        if !fresh {
            return Err(std::io::Error::from(Errno::EEXIST));
        }
        staged
            .created
            .push(Created::Dir(file.to_owned(), Vec::new()));
        for (name, data) in &artifact.parts {
            let f = session.write_unsynced(sub.as_fd(), name, data)?;
            if let Some(Created::Dir(_, files)) = staged.created.last_mut() {
                files.push(name.clone());
            }
            staged.files.push(f);
        }
        staged.subdirs.push(sub);
    }
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    for (ext, data) in &artifact.extra {
        let name = format!("{stem}.{ext}");
        let f = session.write_unsynced(dir, &name, data)?;
        staged.created.push(Created::File(name));
        staged.files.push(f);
    }
    let meta_name = format!("{stem}.json");
    let meta = serde_json::to_vec_pretty(&artifact.meta)?;
    let f = session.write_unsynced(dir, &meta_name, &meta)?;
    staged.created.push(Created::File(meta_name));
    staged.files.push(f);
    Ok(())
}

/// Keep some room (best effort: a filesystem without fallocate has no reserve).
fn make_reserve(dir: &SessionDir) -> bool {
    let Ok(f) = dir.create_file(dir.fd(), RESERVE) else {
        return false;
    };
    if nix::fcntl::posix_fallocate(&f, 0, RESERVE_BYTES).is_err() {
        drop(f);
        SessionDir::remove_file(dir.fd(), RESERVE);
        return false;
    }
    true
}

impl PrimarySink for DirSink {
    fn name(&self) -> &'static str {
        "output directory"
    }

    fn accept(&mut self, item: &Item, durable: Option<Durable>) -> Result<(), StreamError> {
        match item {
            Item::Event(event) => self.write_event(event),
            Item::Artifact(artifact) => {
                self.stage_artifact(artifact, durable);
                Ok(())
            }
            Item::Module(m) => self.copy_module(&m.copy, &m.source),
        }
    }

    fn commit(&mut self) -> Result<(), StreamError> {
        self.commit_pending();
        Ok(())
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.commit_pending();
        self.release_reserve();
        if let Some(events) = &self.events
            && let Err(e) = events.sync_all()
        {
            self.fault(&e);
        }
        Ok(())
    }
}
