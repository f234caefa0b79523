//! The one way covobs opens a file on a target's behalf (dumps of every runtime, gcov notes,
//! debug files): as the target would, and only what the target itself could have written.
//!
//! - Inside the target's root (/proc/PID/root), symlinks resolved within that root only
//!   (openat2 RESOLVE_IN_ROOT, no magic links); relative paths from its cwd, never above it.
//! - With the target's filesystem credentials (fsuid, fsgid, groups), on a short-lived thread of
//!   its own: the kernel checks every path component and the file against the target's rights,
//!   not covobs' root. A file the target could not read is never opened.
//! - Output of a dump must be the very file the kernel saw the dump write (device and inode), or,
//!   where the kernel did not see the write, a regular file the target may write.
//!
//! A refused file is described by nothing but its name as the target gave it: errors carry no
//! byte, size or inode of what was found, so a `lost` reason cannot leak a file covobs refused.
use std::{
    ffi::CString,
    fs::File,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::fs::{FileExt, MetadataExt},
    },
    path::Path,
};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("opening {path} as the target: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is not the file the dump wrote (replaced, or a link swapped in): refused unread"
    )]
    Replaced { path: String },
    #[error("{path} is not a regular file: refused unread")]
    NotRegular { path: String },
    #[error("{path} is not a file the target may write: refused unread")]
    NotWritable { path: String },
    #[error(
        "the target's credentials are unknown (it exited before covobs saw it): {path} refused unread"
    )]
    NoCredentials { path: String },
    #[error("reading {len} bytes at {offset} of {path}: {source}")]
    Read {
        path: String,
        offset: u64,
        len: u64,
        source: std::io::Error,
    },
    #[error("{path} has {size} bytes, fewer than the {end} the dump wrote (truncated?)")]
    Shrunk { path: String, size: u64, end: u64 },
    #[error("covobs could not start a thread to open {path} as the target: {source}")]
    Thread {
        path: String,
        source: std::io::Error,
    },
}

impl ReadError {
    /// The failure is covobs' own (no thread, no descriptor), not something the target did.
    pub fn is_covobs_failure(&self) -> bool {
        let own = |e: &std::io::Error| {
            matches!(
                e.raw_os_error(),
                Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)
            )
        };
        match self {
            Self::Thread { .. } => true,
            Self::Open { source, .. } | Self::Read { source, .. } => own(source),
            _ => false,
        }
    }
}

impl ReadError {
    /// The error as a `lost` reason: a failure of covobs' own says so.
    pub fn said(&self) -> String {
        if self.is_covobs_failure() {
            format!("covobs' own failure: {self}")
        } else {
            self.to_string()
        }
    }
}

/// The credentials the kernel checks a target's file accesses against: its filesystem uid and
/// gid and its supplementary groups, as ids of covobs' user namespace (/proc/PID/status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
}

impl Creds {
    pub fn of(pid: i32) -> std::io::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        Self::parse_status(&status)
            .ok_or_else(|| std::io::Error::other(format!("/proc/{pid}/status has no Uid/Gid")))
    }

    /// `Uid:` and `Gid:` list real, effective, saved and filesystem ids; the fourth is the one
    /// the kernel's permission checks use.
    fn parse_status(status: &str) -> Option<Self> {
        let ids = |key: &str| -> Option<Vec<u32>> {
            let line = status.lines().find_map(|l| l.strip_prefix(key))?;
            line.split_whitespace().map(|v| v.parse().ok()).collect()
        };
        Some(Self {
            fsuid: *ids("Uid:")?.get(3)?,
            fsgid: *ids("Gid:")?.get(3)?,
            groups: ids("Groups:").unwrap_or_default(),
        })
    }

    /// Run `f` on a new thread that holds these credentials for filesystem access. setfsuid,
    /// setfsgid and setgroups as raw system calls change only the calling thread (libc's
    /// setgroups would change every thread of covobs); moving fsuid away from 0 also drops the
    /// thread's capabilities that override file permissions. The thread ends with `f`, and its
    /// credentials with it.
    fn run_as<T: Send>(
        &self,
        path: &str,
        f: impl FnOnce() -> Result<T, ReadError> + Send,
    ) -> Result<T, ReadError> {
        std::thread::scope(|s| {
            let worker = std::thread::Builder::new()
                .name("covobs-as-target".into())
                .spawn_scoped(s, || {
                    self.assume().map_err(|source| ReadError::Thread {
                        path: path.to_owned(),
                        source,
                    })?;
                    f()
                })
                .map_err(|source| ReadError::Thread {
                    path: path.to_owned(),
                    source,
                })?;
            worker.join().unwrap_or_else(|_| {
                Err(ReadError::Thread {
                    path: path.to_owned(),
                    source: std::io::Error::other("the opening thread panicked"),
                })
            })
        })
    }

    fn assume(&self) -> std::io::Result<()> {
        // SAFETY: setgroups reads `groups.len()` gid_t values from a live slice.
        let r = unsafe {
            libc::syscall(
                libc::SYS_setgroups,
                self.groups.len(),
                self.groups.as_ptr() as *const libc::gid_t,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // setfsgid/setfsuid return the previous id and never fail visibly: set, then ask again
        // (an id of -1 changes nothing) to check the kernel took it.
        // SAFETY: plain system calls on this thread's credentials.
        let taken = unsafe {
            libc::syscall(libc::SYS_setfsgid, self.fsgid);
            let gid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
            libc::syscall(libc::SYS_setfsuid, self.fsuid);
            let uid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
            gid == self.fsgid && uid == self.fsuid
        };
        if !taken {
            return Err(std::io::Error::other(
                "the kernel refused the target's filesystem ids",
            ));
        }
        Ok(())
    }
}

/// A directory of the target (its root or cwd), held open so it stays usable after the target
/// exits (an exit-time dump is read after the process is gone), with the target's credentials
/// of that moment.
#[derive(Debug)]
pub struct TargetDir {
    fd: OwnedFd,
    creds: Option<Creds>,
}

impl TargetDir {
    /// /proc/PID/root or /proc/PID/cwd, opened through the magic link, and the process's
    /// credentials read right after.
    pub fn open(pid: i32, which: &str) -> std::io::Result<Self> {
        let mut dir = Self::open_path(Path::new(&format!("/proc/{pid}/{which}")), None)?;
        dir.creds = Some(Creds::of(pid)?);
        Ok(dir)
    }

    /// A directory opened by path, with the credentials files inside it are opened with (none:
    /// nothing inside it can be opened on a target's behalf).
    pub fn open_path(path: &Path, creds: Option<Creds>) -> std::io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("path with NUL"))?;
        // SAFETY: `path` is a valid NUL-terminated string; open returns a new fd or -1.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd, creds })
    }

    pub fn creds(&self) -> Option<&Creds> {
        self.creds.as_ref()
    }

    /// What makes two handles the same place for opening files: the directory (device, inode),
    /// the mount it was reached through (so another mount namespace's view differs) and the
    /// credentials used inside it.
    pub fn identity(&self) -> std::io::Result<DirIdentity> {
        // SAFETY: statx fills the zeroed struct we pass; AT_EMPTY_PATH with "" targets the fd.
        let mut st: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: a valid fd, a NUL-terminated empty path and a live statx buffer.
        let r = unsafe {
            libc::statx(
                self.fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH,
                libc::STATX_INO | libc::STATX_MNT_ID,
                &mut st,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(DirIdentity {
            dev: (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor),
            ino: st.stx_ino,
            mnt_id: st.stx_mnt_id,
            creds: self.creds.clone(),
        })
    }
}

/// See [`TargetDir::identity`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirIdentity {
    dev: u64,
    ino: u64,
    mnt_id: u64,
    creds: Option<Creds>,
}

/// An error of covobs' own (no descriptor, no memory, no thread), not of the target.
pub fn is_own_errno(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN)
    )
}

/// What the kernel saw a dump write: userspace st_dev and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

impl Identity {
    /// Both halves, or nothing: an inode number alone can be matched by a file the target makes
    /// on a filesystem of its own (a tmpfs in its mount namespace).
    pub fn of(dev: Option<u64>, ino: Option<u64>) -> Option<Self> {
        Some(Self {
            dev: dev?,
            ino: ino?,
        })
    }
}

/// What a file opened on the target's behalf must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// The file a dump wrote, as the kernel saw it.
    Written(Identity),
    /// A dump's output located without the kernel (through the environment): a regular file
    /// the target may write.
    Writable,
    /// Something the target reads (compiler notes, debug files): a regular file it may read.
    Readable,
    /// A directory the target may list.
    Directory,
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;
const AT_EACCESS: i32 = 0x200;
const AT_EMPTY_PATH: i32 = 0x1000;

/// Open `path` read-only as the target would: absolute paths inside `root`, relative ones from
/// `cwd` without climbing above it (`..` out of the cwd is refused rather than guessed), with the
/// target's credentials (those `root` was opened with), and check it is what `expect` says.
pub fn open_in_target(
    root: &TargetDir,
    cwd: Option<&TargetDir>,
    path: &str,
    expect: Expect,
) -> Result<File, ReadError> {
    let Some(creds) = root.creds.as_ref() else {
        return Err(ReadError::NoCredentials {
            path: path.to_owned(),
        });
    };
    let open_err = |source| ReadError::Open {
        path: path.to_owned(),
        source,
    };
    let (dir, rel, resolve) = match (path.strip_prefix('/'), cwd) {
        (Some(rel), _) => (root, rel, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS),
        (None, Some(cwd)) => (cwd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS),
        (None, None) => (root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS),
    };
    let rel = if rel.is_empty() { "." } else { rel };
    let c = CString::new(rel).map_err(|_| open_err(std::io::Error::other("path with NUL")))?;
    let directory = if expect == Expect::Directory {
        libc::O_DIRECTORY
    } else {
        0
    };
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK | directory)
            as u64,
        mode: 0,
        resolve,
    };
    let dir_fd = dir.fd.as_raw_fd();
    creds.run_as(path, || {
        // SAFETY: openat2 reads `how` (a valid open_how of the size passed) and the
        // NUL-terminated path; it returns a new fd or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir_fd,
                c.as_ptr(),
                &how as *const OpenHow,
                size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(open_err(std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd that nothing else owns.
        let file = unsafe { File::from_raw_fd(fd as i32) };
        check(&file, path, expect)?;
        Ok(file)
    })
}

/// Identity and kind of an opened file, before a byte of it is read. Runs with the target's
/// credentials (the writability check asks the kernel as the target).
fn check(file: &File, path: &str, expect: Expect) -> Result<(), ReadError> {
    let meta = file.metadata().map_err(|source| ReadError::Open {
        path: path.to_owned(),
        source,
    })?;
    let regular = meta.is_file();
    match expect {
        Expect::Directory => {
            return if meta.is_dir() {
                Ok(())
            } else {
                Err(ReadError::NotRegular {
                    path: path.to_owned(),
                })
            };
        }
        _ if !regular => {
            return Err(ReadError::NotRegular {
                path: path.to_owned(),
            });
        }
        Expect::Written(id) if (meta.dev(), meta.ino()) != (id.dev, id.ino) => {
            return Err(ReadError::Replaced {
                path: path.to_owned(),
            });
        }
        Expect::Writable => {
            let empty = c"";
            // SAFETY: faccessat2 on a descriptor we own, with an empty NUL-terminated path.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_faccessat2,
                    file.as_raw_fd(),
                    empty.as_ptr(),
                    libc::W_OK,
                    AT_EACCESS | AT_EMPTY_PATH,
                )
            };
            if r != 0 {
                return Err(ReadError::NotWritable {
                    path: path.to_owned(),
                });
            }
        }
        _ => {}
    }
    Ok(())
}

/// Read bytes `[offset, offset+len)` of a file opened by [`open_in_target`] (which checked what
/// it is), after checking it is still long enough.
pub fn read_range(file: &File, path: &str, offset: u64, len: u64) -> Result<Vec<u8>, ReadError> {
    let size = file
        .metadata()
        .map(|m| m.len())
        .map_err(|source| ReadError::Read {
            path: path.to_owned(),
            offset,
            len,
            source,
        })?;
    let end = offset.saturating_add(len);
    if size < end {
        return Err(ReadError::Shrunk {
            path: path.to_owned(),
            size,
            end,
        });
    }
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize)
        .map_err(|_| ReadError::Read {
            path: path.to_owned(),
            offset,
            len,
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
    buf.resize(len as usize, 0);
    file.read_exact_at(&mut buf, offset)
        .map_err(|source| ReadError::Read {
            path: path.to_owned(),
            offset,
            len,
            source,
        })?;
    Ok(buf)
}

/// The kernel's `dev_t` (major << 20 | minor) as userspace's `st_dev`.
pub fn kernel_dev_to_user(dev: u32) -> u64 {
    libc::makedev(dev >> 20, dev & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Creds {
        Creds::of(std::process::id() as i32).unwrap()
    }

    #[test]
    fn stays_inside_the_root() {
        let base = std::env::temp_dir().join(format!("covobs-read-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root/data")).unwrap();
        std::fs::write(base.join("root/data/p.profraw"), b"inside").unwrap();
        std::fs::write(base.join("secret"), b"outside").unwrap();
        // Symlinks that point out of the root, absolutely and relatively.
        std::os::unix::fs::symlink(base.join("secret"), base.join("root/data/abs")).unwrap();
        std::os::unix::fs::symlink("../../secret", base.join("root/data/rel")).unwrap();
        let root = TargetDir::open_path(&base.join("root"), Some(me())).unwrap();
        let cwd = TargetDir::open_path(&base.join("root/data"), Some(me())).unwrap();
        let any = Expect::Readable;

        let f = open_in_target(&root, Some(&cwd), "/data/p.profraw", any).unwrap();
        assert_eq!(read_range(&f, "p", 0, 6).unwrap(), b"inside");
        let f = open_in_target(&root, Some(&cwd), "p.profraw", any).unwrap();
        assert_eq!(read_range(&f, "p", 1, 2).unwrap(), b"ns");
        // The absolute link resolves inside the root, where there is no such file.
        assert!(open_in_target(&root, Some(&cwd), "/data/abs", any).is_err());
        assert!(open_in_target(&root, Some(&cwd), "/data/rel", any).is_err());
        assert!(open_in_target(&root, Some(&cwd), "../../secret", any).is_err());
        // Identity: the device counts as much as the inode.
        let meta = std::fs::metadata(base.join("root/data/p.profraw")).unwrap();
        let written = |dev, ino| Expect::Written(Identity { dev, ino });
        assert!(
            open_in_target(
                &root,
                None,
                "/data/p.profraw",
                written(meta.dev(), meta.ino())
            )
            .is_ok()
        );
        for wrong in [
            written(meta.dev(), meta.ino() + 1),
            written(meta.dev() + 1, meta.ino()),
        ] {
            assert!(matches!(
                open_in_target(&root, None, "/data/p.profraw", wrong),
                Err(ReadError::Replaced { .. })
            ));
        }
        // Not a regular file, and a directory where one is expected.
        assert!(matches!(
            open_in_target(&root, None, "/data", any),
            Err(ReadError::NotRegular { .. })
        ));
        assert!(open_in_target(&root, None, "/data", Expect::Directory).is_ok());
        // Length check.
        let f = open_in_target(&root, Some(&cwd), "/data/p.profraw", any).unwrap();
        assert!(matches!(
            read_range(&f, "p", 4, 9),
            Err(ReadError::Shrunk { .. })
        ));
        // Without credentials, nothing is opened.
        let blind = TargetDir::open_path(&base.join("root"), None).unwrap();
        assert!(matches!(
            open_in_target(&blind, None, "/data/p.profraw", any),
            Err(ReadError::NoCredentials { .. })
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }

    /// covobs runs as root; a target running as nobody must not get root's reach through it.
    #[test]
    fn opens_with_the_targets_rights_not_covobs() {
        assert_eq!(
            // SAFETY: geteuid has no preconditions.
            unsafe { libc::geteuid() },
            0,
            "this test checks that root covobs drops to the target's rights: run it as root"
        );
        let base = std::env::temp_dir().join(format!("covobs-creds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let secret = base.join("secret");
        std::fs::write(&secret, b"root only").unwrap();
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let readable = base.join("readable");
        std::fs::write(&readable, b"everyone").unwrap();
        std::fs::set_permissions(
            &readable,
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let nobody = Creds {
            fsuid: 65534,
            fsgid: 65534,
            groups: vec![],
        };
        let root = TargetDir::open_path(&base, Some(nobody)).unwrap();
        assert!(matches!(
            open_in_target(&root, None, "secret", Expect::Readable),
            Err(ReadError::Open { .. })
        ));
        // Readable but not writable by nobody: fine as notes, refused as a dump's output.
        assert!(open_in_target(&root, None, "readable", Expect::Readable).is_ok());
        assert!(matches!(
            open_in_target(&root, None, "readable", Expect::Writable),
            Err(ReadError::NotWritable { .. })
        ));
        // The calling thread kept root's rights.
        assert!(std::fs::read(&secret).is_ok());
        // As root, the same files open.
        let as_root = TargetDir::open_path(&base, Some(me())).unwrap();
        assert!(open_in_target(&as_root, None, "secret", Expect::Writable).is_ok());
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn reads_filesystem_ids_from_status() {
        let status =
            "Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nGroups:\t4 24 \n";
        assert_eq!(
            Creds::parse_status(status),
            Some(Creds {
                fsuid: 1003,
                fsgid: 53,
                groups: vec![4, 24]
            })
        );
        assert_eq!(
            Creds::parse_status("Uid:\t1\nGid:\t2\t2\t2\t2\n"),
            None,
            "a short Uid line is not guessed"
        );
    }

    #[test]
    fn converts_kernel_devices() {
        assert_eq!(kernel_dev_to_user((8 << 20) | 1), libc::makedev(8, 1));
    }
}
