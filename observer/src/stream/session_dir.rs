//! The session directory, held open: everything in it is created relative to that descriptor,
//! one path component at a time without following links, with the session's modes. Removing the
//! directory under covobs shows (its link count drops to 0) instead of writes going nowhere.
use std::{
    fs::File,
    io::Write as _,
    os::fd::{AsFd, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
};

use nix::{
    errno::Errno,
    fcntl::{OFlag, openat},
    sys::stat::{Mode, fstat, mkdirat},
    unistd::{UnlinkatFlags, unlinkat},
};

use super::modes::OutputModes;

pub struct SessionDir {
    fd: OwnedFd,
    path: PathBuf,
    modes: OutputModes,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl SessionDir {
    /// Create `path` (and its missing parents, with the same modes), or take it when it exists
    /// and is empty.
    pub fn create(path: &Path, modes: OutputModes) -> std::io::Result<Self> {
        let mut missing = Vec::new();
        let mut p = path;
        while !p.as_os_str().is_empty() && !p.exists() {
            missing.push(p);
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        for dir in missing.iter().rev() {
            match std::fs::create_dir(dir) {
                Ok(()) => {
                    let f = File::open(dir)?;
                    modes.apply(&f, true)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            DIR_FLAGS.difference(OFlag::O_NOFOLLOW),
            Mode::empty(),
        )
        .map_err(io)?;
        if std::fs::read_dir(path)?.next().is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} is not empty: covobs never overwrites output; choose a new --out",
                    path.display()
                ),
            ));
        }
        // An existing empty directory keeps its owner; its mode becomes the session's.
        modes.apply(&fd, true)?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            modes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn modes(&self) -> OutputModes {
        self.modes
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether the directory is still there: removed (`rm -rf`), its link count is 0.
    pub fn check(&self) -> std::io::Result<()> {
        let st = fstat(&self.fd).map_err(io)?;
        if st.st_nlink == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the directory was removed",
            ));
        }
        Ok(())
    }

    /// The directory `rel` (components separated by '/'), created where missing. Returns it
    /// open, and whether its last component was created now.
    pub fn subdir(&self, rel: &str) -> std::io::Result<(OwnedFd, bool)> {
        let mut cur: Option<OwnedFd> = None;
        let mut created = false;
        for name in rel.split('/').filter(|c| !c.is_empty()) {
            if name == "." || name == ".." {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{rel}: not a path inside the session"),
                ));
            }
            let parent = cur.as_ref().map_or(self.fd.as_fd(), |f| f.as_fd());
            created = match mkdirat(
                parent,
                name,
                Mode::from_bits_truncate(self.modes.dir_mode()),
            ) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(e) => return Err(io(e)),
            };
            let next = openat(parent, name, DIR_FLAGS, Mode::empty()).map_err(io)?;
            if created {
                self.modes.apply(&next, true)?;
            }
            cur = Some(next);
        }
        match cur {
            Some(fd) => Ok((fd, created)),
            None => Ok((self.fd.try_clone()?, false)),
        }
    }

    /// Create the file `name` in `dir` (never an existing one, never through a link), with the
    /// session's modes.
    pub fn create_file(&self, dir: BorrowedFd<'_>, name: &str) -> std::io::Result<File> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(
            dir,
            name,
            flags,
            Mode::from_bits_truncate(self.modes.file_mode()),
        )
        .map_err(io)?;
        self.modes.apply(&fd, false)?;
        Ok(File::from(fd))
    }

    /// Create `name` in `dir` holding `data`, synced when `sync`; on any failure nothing is left
    /// of it (a full disk leaves no zero-byte or half file). Errors keep their errno.
    pub fn write_new(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        data: &[u8],
        sync: bool,
    ) -> std::io::Result<()> {
        let mut f = self.create_file(dir, name)?;
        let written = f
            .write_all(data)
            .and_then(|()| if sync { f.sync_all() } else { Ok(()) });
        if let Err(e) = written {
            drop(f);
            let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        Ok(())
    }

    /// Create `name` in `dir` holding `data`, not synced: the file is returned open for the caller
    /// to sync. On a failed write nothing is left of it.
    pub fn write_unsynced(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        data: &[u8],
    ) -> std::io::Result<File> {
        let mut f = self.create_file(dir, name)?;
        if let Err(e) = f.write_all(data) {
            drop(f);
            let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        Ok(f)
    }

    /// Remove the file `name` of `dir` (a cleanup: errors are of no use to the caller).
    pub fn remove_file(dir: BorrowedFd<'_>, name: &str) {
        let _ = unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }

    /// Remove the empty directory `name` of `dir` (a cleanup).
    pub fn remove_dir(dir: BorrowedFd<'_>, name: &str) {
        let _ = unlinkat(dir, name, UnlinkatFlags::RemoveDir);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt as _;

    use super::*;

    #[test]
    fn everything_is_created_with_the_modes_and_never_through_a_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("a/b/session");
        let d = SessionDir::create(&root, OutputModes::default()).expect("create");
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&tmp.path().join("a")), 0o700);
        assert_eq!(mode(&root), 0o700);
        let (sub, created) = d.subdir("1-x/parts").expect("subdir");
        assert!(created);
        d.write_new(sub.as_fd(), "f", b"data", true).expect("write");
        assert_eq!(mode(&root.join("1-x")), 0o700);
        assert_eq!(mode(&root.join("1-x/parts/f")), 0o600);
        // Never overwritten.
        assert!(d.write_new(sub.as_fd(), "f", b"other", false).is_err());
        assert_eq!(std::fs::read(root.join("1-x/parts/f")).unwrap(), b"data");
        // A link planted in the session is not followed.
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, root.join("2-y")).unwrap();
        assert!(d.subdir("2-y").is_err());
        assert!(d.subdir("../x").is_err());
        std::os::unix::fs::symlink(&elsewhere, root.join("link")).unwrap();
        assert!(d.write_new(d.fd(), "link", b"x", false).is_err());
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        // A directory that is not empty is refused.
        assert!(SessionDir::create(&root, OutputModes::default()).is_err());
        // Removed under covobs: seen.
        d.check().expect("there");
        std::fs::remove_dir_all(&root).unwrap();
        assert!(d.check().is_err());
        assert!(d.write_new(d.fd(), "events.jsonl", b"x", false).is_err());
    }
}
