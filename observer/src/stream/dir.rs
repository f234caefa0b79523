//! The output directory sink (docs/output.md): events.jsonl, each artifact and its metadata, and
//! copies of the instrumented modules. Files are created, never overwritten, with the session's
//! modes; artifacts are fsync'ed (file and directory) before they are reported durable.
//!
//! The output failing (the disk full, the directory removed, an I/O error) is a fault of covobs,
//! raised at once through [`OutputHealth`]: the session stops; artifacts not written are lost
//! with the fault as their reason, and nothing half-written stays behind. A small reserve file,
//! released at the first "no space", leaves room for the last events and session.json.
use std::{
    fs::File,
    io::Write,
    os::fd::{AsFd, BorrowedFd},
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

use super::{Item, Sink, StreamError, modes::OutputModes, session_dir::SessionDir};
use crate::{collect::Artifact, sys::clock};

/// Room kept for the end of a session on a disk that fills up.
const RESERVE: &str = ".covobs-reserve";
const RESERVE_BYTES: i64 = 512 << 10;
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
        })
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

    fn write_artifact(&mut self, artifact: &Artifact) -> Result<u64, String> {
        if let Some(f) = self.health.fault() {
            return Err(format!("{f} (covobs stopped writing)"));
        }
        let result = self.dir.check().and_then(|()| {
            let (dir, _) = self.dir.subdir(&artifact.dir)?;
            let mut created = Vec::new();
            let written = write_artifact_files(&self.dir, dir.as_fd(), artifact, &mut created);
            if written.is_err() {
                // Nothing half-written stays: the report would refuse it.
                for c in created.iter().rev() {
                    match c {
                        Created::File(name) => SessionDir::remove_file(dir.as_fd(), name),
                        Created::Dir(name, files) => {
                            if let Ok(sub) = openat(
                                dir.as_fd(),
                                name.as_str(),
                                OFlag::O_RDONLY
                                    | OFlag::O_DIRECTORY
                                    | OFlag::O_NOFOLLOW
                                    | OFlag::O_CLOEXEC,
                                Mode::empty(),
                            ) {
                                for f in files {
                                    SessionDir::remove_file(sub.as_fd(), f);
                                }
                            }
                            SessionDir::remove_dir(dir.as_fd(), name);
                        }
                    }
                }
            }
            written
        });
        match result {
            Ok(()) => Ok(clock::boot_ns()),
            Err(e) if is_fault(&e) || self.dir.check().is_err() => Err(self.fault(&e)),
            Err(e) => Err(format!(
                "covobs' output directory {}: {e}",
                self.dir.path().display()
            )),
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
            let mut from = source;
            if let Err(e) = std::io::copy(&mut from, &mut to) {
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
    created: &mut Vec<Created>,
) -> std::io::Result<()> {
    let file = artifact.meta.file.as_str();
    if artifact.parts.is_empty() {
        session.write_new(dir, file, &artifact.data, true)?;
        created.push(Created::File(file.to_owned()));
    } else {
        // A dump that wrote several files: a directory of them.
        let (sub, fresh) = session.subdir(&format!("{}/{file}", artifact.dir))?;
        if !fresh {
            return Err(std::io::Error::from(Errno::EEXIST));
        }
        created.push(Created::Dir(file.to_owned(), Vec::new()));
        for (name, data) in &artifact.parts {
            session.write_new(sub.as_fd(), name, data, true)?;
            if let Some(Created::Dir(_, files)) = created.last_mut() {
                files.push(name.clone());
            }
        }
        fsync(&sub)?;
    }
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    for (ext, data) in &artifact.extra {
        let name = format!("{stem}.{ext}");
        session.write_new(dir, &name, data, true)?;
        created.push(Created::File(name));
    }
    let meta_name = format!("{stem}.json");
    let meta = serde_json::to_vec_pretty(&artifact.meta)?;
    session.write_new(dir, &meta_name, &meta, true)?;
    created.push(Created::File(meta_name));
    // The new names must survive a crash too.
    fsync(dir)?;
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

impl Sink for DirSink {
    fn name(&self) -> &'static str {
        "output directory"
    }

    fn accept(&mut self, item: &mut Item) -> Result<(), StreamError> {
        match item {
            Item::Event(event) => self.write_event(event),
            Item::Artifact { artifact, durable } => {
                let reply = self.write_artifact(artifact);
                if let Some(tx) = durable.take() {
                    let _ = tx.send(reply);
                }
                Ok(())
            }
            Item::Module { copy, source } => self.copy_module(copy, source),
        }
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.release_reserve();
        if let Some(events) = &self.events
            && let Err(e) = events.sync_all()
        {
            self.fault(&e);
        }
        Ok(())
    }
}
