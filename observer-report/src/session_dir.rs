//! The files of a session directory, which `covobs report` does not trust (docs/security.md,
//! "Untrusted session directories"): another user may have written it, or a full disk damaged it.
//!
//! - Every path is resolved beneath the directory's own descriptor and through no symbolic link:
//!   openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, or, on kernels
//!   without openat2, one openat with O_NOFOLLOW per component.
//! - Only regular files are opened for reading (a FIFO or a device is never opened: the first
//!   open is O_PATH, the second must find the same inode).
//! - A file's size is checked (fstat) against what its metadata records and against a cap before
//!   any byte is read, and no more than that size is ever read or allocated.
//! - Tools (llvm-cov) get `/proc/<covobs>/fd/<n>`: the file covobs opened, not a path they would
//!   resolve again.
use std::{
    ffi::OsString,
    fs::File,
    io,
    os::{
        fd::{AsFd, AsRawFd, OwnedFd},
        unix::{
            ffi::OsStringExt as _,
            fs::{FileExt as _, MetadataExt as _},
        },
    },
    path::{Component, Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2},
    sys::stat::{FileStat, Mode, SFlag, fstat, fstatat},
};

/// Why a file of the session directory is not read.
#[derive(Debug, thiserror::Error)]
pub enum SessionFileError {
    #[error("a symbolic link (covobs report follows no link in a session directory)")]
    Link,
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("not a directory")]
    NotDir,
    #[error("missing")]
    Missing,
    #[error("not a path inside the session directory")]
    Outside,
    #[error("{size} bytes on disk, {recorded} recorded in its metadata")]
    SizeMismatch { size: u64, recorded: u64 },
    #[error("{size} bytes: more than the {cap} bytes covobs report reads of such a file")]
    TooLarge { size: u64, cap: u64 },
    #[error("it changed while covobs read it")]
    Changed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<Errno> for SessionFileError {
    fn from(e: Errno) -> Self {
        match e {
            Errno::ELOOP => Self::Link,
            Errno::ENOENT => Self::Missing,
            Errno::ENOTDIR => Self::NotDir,
            Errno::EXDEV => Self::Outside,
            e => Self::Io(io::Error::from(e)),
        }
    }
}

/// What a directory entry is, seen without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum EntryKind {
    Dir,
    File,
    Link,
    Other,
}

/// A session directory, held by a descriptor: what it holds is opened relative to it.
#[derive(Debug)]
pub struct SessionDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Resolve component by component (kernels before 5.6 have no openat2; tests set it).
    walk: AtomicBool,
}

fn kind_of(st: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFLNK => "a symbolic link",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFCHR | SFlag::S_IFBLK => "a device",
        _ => "not a plain file",
    }
}

fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Only plain names: nothing absolute, no `.` or `..`, not empty.
fn plain(rel: &Path) -> Result<Vec<&std::ffi::OsStr>, SessionFileError> {
    let parts: Vec<_> = rel
        .components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(SessionFileError::Outside),
        })
        .collect::<Result<_, _>>()?;
    if parts.is_empty() {
        return Err(SessionFileError::Outside);
    }
    Ok(parts)
}

impl SessionDir {
    /// Open the directory the user named (links in that path are the user's own and followed).
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            walk: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolve as on a kernel without openat2 (component by component), for the tests of both
    /// ways.
    pub fn walk_components(&self) {
        self.walk.store(true, Ordering::Relaxed);
    }

    /// Resolve `rel` beneath the directory through no link and open it with `flags`.
    fn resolve(&self, rel: &Path, flags: OFlag) -> Result<OwnedFd, SessionFileError> {
        let parts = plain(rel)?;
        // openat2 refuses O_PATH with any flag but O_CLOEXEC, O_DIRECTORY and O_NOFOLLOW.
        let flags = if flags.contains(OFlag::O_PATH) {
            flags | OFlag::O_CLOEXEC
        } else {
            flags | OFlag::O_CLOEXEC | OFlag::O_NOCTTY
        };
        if !self.walk.load(Ordering::Relaxed) {
            let how = OpenHow::new().flags(flags).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
            // EAGAIN: a rename elsewhere raced the lookup; the kernel asks to try again.
            for _ in 0..8 {
                match openat2(&self.fd, rel, how) {
                    Err(Errno::EAGAIN) => continue,
                    Err(Errno::ENOSYS) => {
                        self.walk.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                    Ok(fd) => return Ok(fd),
                }
            }
            if !self.walk.load(Ordering::Relaxed) {
                return Err(SessionFileError::Changed);
            }
        }
        // One component at a time, none of them followed if it is a link.
        let mut cur = openat(
            &self.fd,
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let last = parts.len() - 1;
        for (i, name) in parts.iter().enumerate() {
            let link = |cur: &OwnedFd| {
                fstatat(cur, *name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| is(&st, SFlag::S_IFLNK))
            };
            let f = if i < last {
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
            } else {
                flags | OFlag::O_NOFOLLOW
            };
            let next = match openat(&cur, *name, f, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOTDIR | Errno::ELOOP) if link(&cur) => {
                    return Err(SessionFileError::Link);
                }
                Err(e) => return Err(e.into()),
            };
            // O_PATH | O_NOFOLLOW opens a link itself.
            if is(&fstat(&next)?, SFlag::S_IFLNK) {
                return Err(SessionFileError::Link);
            }
            cur = next;
        }
        Ok(cur)
    }

    /// Open a regular file of the session for reading.
    pub fn open_file(&self, rel: &Path) -> Result<File, SessionFileError> {
        let path_fd = self.resolve(rel, OFlag::O_PATH)?;
        let st = fstat(&path_fd)?;
        if !is(&st, SFlag::S_IFREG) {
            return Err(SessionFileError::NotRegular(kind_of(&st)));
        }
        // Only now for reading; the same inode, or something was swapped in between.
        let fd = self.resolve(rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
        let again = fstat(&fd)?;
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino) {
            return Err(SessionFileError::Changed);
        }
        Ok(File::from(fd))
    }

    /// What a path of the session is, without following it.
    pub fn kind(&self, rel: &Path) -> Result<EntryKind, SessionFileError> {
        let fd = match self.resolve(rel, OFlag::O_PATH) {
            Err(SessionFileError::Link) => return Ok(EntryKind::Link),
            r => r?,
        };
        let st = fstat(&fd)?;
        Ok(if is(&st, SFlag::S_IFDIR) {
            EntryKind::Dir
        } else if is(&st, SFlag::S_IFREG) {
            EntryKind::File
        } else {
            EntryKind::Other
        })
    }

    /// The entries of a directory of the session (`None`: the session directory itself), each
    /// with what it is (not followed).
    pub fn entries(
        &self,
        rel: Option<&Path>,
    ) -> Result<Vec<(OsString, EntryKind)>, SessionFileError> {
        let fd = match rel {
            Some(rel) => self.resolve(rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?,
            None => openat(
                &self.fd,
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?,
        };
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut names = Vec::new();
        for e in dir.iter() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let st = match fstatat(
                dir.as_fd(),
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(st) => st,
                // Removed meanwhile.
                Err(Errno::ENOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            let kind = if is(&st, SFlag::S_IFDIR) {
                EntryKind::Dir
            } else if is(&st, SFlag::S_IFREG) {
                EntryKind::File
            } else if is(&st, SFlag::S_IFLNK) {
                EntryKind::Link
            } else {
                EntryKind::Other
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// Open and read a regular file of the session of at most `cap` bytes, whose size must be
    /// `recorded` when given.
    pub fn read(
        &self,
        rel: &Path,
        recorded: Option<u64>,
        cap: u64,
    ) -> Result<Vec<u8>, SessionFileError> {
        read_bounded(&self.open_file(rel)?, recorded, cap)
    }
}

/// Read a whole file whose size (fstat) is checked first: `recorded` when given, at most `cap`.
/// Allocates that size and reads no byte past it.
pub fn read_bounded(
    file: &File,
    recorded: Option<u64>,
    cap: u64,
) -> Result<Vec<u8>, SessionFileError> {
    let size = file.metadata()?.len();
    if let Some(recorded) = recorded
        && recorded != size
    {
        return Err(SessionFileError::SizeMismatch { size, recorded });
    }
    if size > cap {
        return Err(SessionFileError::TooLarge { size, cap });
    }
    let len = usize::try_from(size).map_err(|_| SessionFileError::TooLarge { size, cap })?;
    let mut out = vec![0u8; len];
    // By offset: where the descriptor's position is does not matter.
    let mut have = 0;
    while have < len {
        match file.read_at(&mut out[have..], have as u64) {
            // Shorter than fstat said: truncated meanwhile.
            Ok(0) => return Err(SessionFileError::Changed),
            Ok(n) => have += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Longer than fstat said: grown meanwhile.
    let mut probe = [0u8; 1];
    loop {
        match file.read_at(&mut probe, size) {
            Ok(0) => return Ok(out),
            Ok(_) => return Err(SessionFileError::Changed),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// A file covobs opened, for a tool to read through `/proc/<covobs>/fd/<n>` (or, where that does
/// not lead to the same file, a copy in covobs' work directory).
#[derive(Clone, Debug)]
pub struct Pinned {
    /// What the tool is given.
    pub path: PathBuf,
    /// What messages name.
    pub shown: PathBuf,
    /// Keeps the descriptor open while a tool may read it.
    _file: Arc<File>,
}

impl Pinned {
    pub fn new(file: File, shown: &Path, work: &Path) -> Result<Self, String> {
        let st = file
            .metadata()
            .map_err(|e| format!("{}: {e}", shown.display()))?;
        let proc = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            file.as_raw_fd()
        ));
        let same =
            std::fs::metadata(&proc).is_ok_and(|m| (m.dev(), m.ino()) == (st.dev(), st.ino()));
        let path = if same {
            proc
        } else {
            // No /proc (a bare container): the tool reads a copy of what covobs opened.
            let name = shown.file_name().unwrap_or(std::ffi::OsStr::new("module"));
            let dir = tempfile::Builder::new()
                .prefix("module-")
                .tempdir_in(work)
                .map_err(|e| format!("{}: {e}", work.display()))?
                .keep();
            let copy = dir.join(name);
            let mut out = File::create(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
            io::copy(&mut &file, &mut out).map_err(|e| format!("{}: {e}", copy.display()))?;
            copy
        };
        Ok(Self {
            path,
            shown: shown.to_path_buf(),
            _file: Arc::new(file),
        })
    }

    /// A tool's message about the file, with the name the user knows.
    pub fn unproc(&self, message: &str) -> String {
        message.replace(&*self.path.to_string_lossy(), &self.shown.to_string_lossy())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn both(dir: &Path) -> [SessionDir; 2] {
        let a = SessionDir::open(dir).expect("open");
        let b = SessionDir::open(dir).expect("open");
        b.walk_components();
        [a, b]
    }

    #[test]
    fn opens_nothing_through_a_link_or_outside() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("secret");
        std::fs::write(&outside, "secret").expect("write");
        let s = tmp.path().join("s");
        std::fs::create_dir_all(s.join("d/e")).expect("mkdir");
        std::fs::write(s.join("d/e/f"), "inside").expect("write");
        symlink(&outside, s.join("abs")).expect("symlink");
        symlink("d/e/f", s.join("rel")).expect("symlink");
        symlink("d", s.join("dlink")).expect("symlink");
        symlink(tmp.path(), s.join("up")).expect("symlink");
        nix::unistd::mkfifo(&s.join("fifo"), Mode::from_bits_truncate(0o600)).expect("mkfifo");
        for d in both(&s) {
            assert_eq!(
                d.read(Path::new("d/e/f"), None, 100).expect("plain file"),
                b"inside"
            );
            for link in ["abs", "rel", "dlink/e/f", "up/secret"] {
                assert!(
                    matches!(
                        d.read(Path::new(link), None, 100),
                        Err(SessionFileError::Link)
                    ),
                    "{link}"
                );
            }
            for outside in ["../secret", "/etc/passwd", "", "d/../d/e/f", "./d/e/f"] {
                assert!(
                    matches!(
                        d.read(Path::new(outside), None, 100),
                        Err(SessionFileError::Outside)
                    ),
                    "{outside:?}"
                );
            }
            // A FIFO is never opened for reading (that would block).
            assert!(matches!(
                d.read(Path::new("fifo"), None, 100),
                Err(SessionFileError::NotRegular("a FIFO"))
            ));
            assert!(matches!(
                d.read(Path::new("d"), None, 100),
                Err(SessionFileError::NotRegular("a directory"))
            ));
            assert!(matches!(
                d.read(Path::new("nope"), None, 100),
                Err(SessionFileError::Missing)
            ));
            assert_eq!(d.kind(Path::new("abs")).expect("kind"), EntryKind::Link);
            assert_eq!(d.kind(Path::new("d/e")).expect("kind"), EntryKind::Dir);
            let mut e = d.entries(None).expect("entries");
            e.sort();
            assert_eq!(
                e,
                [
                    ("abs".into(), EntryKind::Link),
                    ("d".into(), EntryKind::Dir),
                    ("dlink".into(), EntryKind::Link),
                    ("fifo".into(), EntryKind::Other),
                    ("rel".into(), EntryKind::Link),
                    ("up".into(), EntryKind::Link),
                ]
            );
            assert!(matches!(
                d.entries(Some(Path::new("dlink"))),
                Err(SessionFileError::Link)
            ));
        }
    }

    #[test]
    fn sizes_are_checked_before_reading() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = File::create(tmp.path().join("big")).expect("create");
        f.set_len(1 << 40).expect("sparse 1 TiB");
        std::fs::write(tmp.path().join("small"), b"12345").expect("write");
        let d = SessionDir::open(tmp.path()).expect("open");
        assert!(matches!(
            d.read(Path::new("big"), Some(1 << 40), 1 << 20),
            Err(SessionFileError::TooLarge { size, cap: 1048576 }) if size == 1 << 40
        ));
        assert!(matches!(
            d.read(Path::new("big"), Some(10), u64::MAX),
            Err(SessionFileError::SizeMismatch { recorded: 10, .. })
        ));
        assert_eq!(
            d.read(Path::new("small"), Some(5), 5).expect("exact"),
            b"12345"
        );
        assert!(matches!(
            d.read(Path::new("small"), None, 4),
            Err(SessionFileError::TooLarge { size: 5, cap: 4 })
        ));
    }

    #[test]
    fn a_tool_reads_the_file_covobs_opened() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("m"), b"module bytes").expect("write");
        let d = SessionDir::open(tmp.path()).expect("open");
        let f = d.open_file(Path::new("m")).expect("open");
        let shown = tmp.path().join("m");
        let p = Pinned::new(f, &shown, tmp.path()).expect("pinned");
        assert!(p.path.starts_with("/proc/"), "{}", p.path.display());
        // Replacing the file by a link after it was opened changes nothing for the tool.
        std::fs::remove_file(&shown).expect("rm");
        symlink("/etc/hostname", &shown).expect("symlink");
        let out = std::process::Command::new("cat")
            .arg(&p.path)
            .output()
            .expect("cat");
        assert_eq!(out.stdout, b"module bytes");
        assert_eq!(
            p.unproc(&format!("error: {}: bad", p.path.display())),
            format!("error: {}: bad", shown.display())
        );
    }
}
