//! Open what a target wrote, as the target sees it: inside its root (/proc/PID/root), resolving
//! symlinks within that root only (openat2 RESOLVE_IN_ROOT, no magic links), and check that the
//! file opened is the very inode the kernel saw the dump write.
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
    #[error("opening {path} inside the target's root: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is now inode {found}, not the inode {expected} the dump wrote (replaced?)")]
    Replaced {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    #[error("reading {len} bytes at {offset} of {path}: {source}")]
    Read {
        path: String,
        offset: u64,
        len: u64,
        source: std::io::Error,
    },
    #[error("{path} has {size} bytes, fewer than the {end} the dump wrote (truncated?)")]
    Shrunk { path: String, size: u64, end: u64 },
}

/// A directory of the target (its root or cwd), held open so it stays usable after the target
/// exits (an exit-time dump is read after the process is gone).
#[derive(Debug)]
pub struct TargetDir(OwnedFd);

impl TargetDir {
    /// /proc/PID/root or /proc/PID/cwd, opened through the magic link.
    pub fn open(pid: i32, which: &str) -> std::io::Result<Self> {
        Self::open_path(Path::new(&format!("/proc/{pid}/{which}")))
    }

    pub fn open_path(path: &Path) -> std::io::Result<Self> {
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
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
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

/// Open `path` read-only as the target would: absolute paths inside `root`, relative ones from
/// `cwd` without climbing above it (`..` out of the cwd is refused rather than guessed).
pub fn open_in_target(
    root: &TargetDir,
    cwd: Option<&TargetDir>,
    path: &str,
) -> Result<File, ReadError> {
    let open_err = |source| ReadError::Open {
        path: path.to_owned(),
        source,
    };
    let (dir, rel, resolve) = match (path.strip_prefix('/'), cwd) {
        (Some(rel), _) => (root, rel, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS),
        (None, Some(cwd)) => (cwd, path, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS),
        (None, None) => (root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS),
    };
    let c = CString::new(rel).map_err(|_| open_err(std::io::Error::other("path with NUL")))?;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 reads `how` (a valid open_how of the size passed) and the NUL-terminated
    // path; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.0.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(open_err(std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { File::from_raw_fd(fd as i32) })
}

/// Read bytes `[offset, offset+len)` of a file the dump wrote, after checking it is a regular
/// file, the expected inode (when the kernel told us), and still long enough.
pub fn read_range(
    file: &File,
    path: &str,
    expected_ino: Option<u64>,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, ReadError> {
    let meta = file.metadata().map_err(|source| ReadError::Open {
        path: path.to_owned(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            path: path.to_owned(),
        });
    }
    if let Some(expected) = expected_ino
        && meta.ino() != expected
    {
        return Err(ReadError::Replaced {
            path: path.to_owned(),
            expected,
            found: meta.ino(),
        });
    }
    let end = offset.saturating_add(len);
    if meta.len() < end {
        return Err(ReadError::Shrunk {
            path: path.to_owned(),
            size: meta.len(),
            end,
        });
    }
    let mut buf = vec![0u8; len as usize];
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
    let major = u64::from(dev >> 20);
    let minor = u64::from(dev & 0xf_ffff);
    crate::discover::maps::makedev(major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let root = TargetDir::open_path(&base.join("root")).unwrap();
        let cwd = TargetDir::open_path(&base.join("root/data")).unwrap();

        let f = open_in_target(&root, Some(&cwd), "/data/p.profraw").unwrap();
        assert_eq!(read_range(&f, "p", None, 0, 6).unwrap(), b"inside");
        let f = open_in_target(&root, Some(&cwd), "p.profraw").unwrap();
        assert_eq!(read_range(&f, "p", None, 1, 2).unwrap(), b"ns");
        // The absolute link resolves inside the root, where there is no such file.
        assert!(open_in_target(&root, Some(&cwd), "/data/abs").is_err());
        assert!(open_in_target(&root, Some(&cwd), "/data/rel").is_err());
        assert!(open_in_target(&root, Some(&cwd), "../../secret").is_err());
        // Identity and length checks.
        let f = open_in_target(&root, Some(&cwd), "/data/p.profraw").unwrap();
        assert!(matches!(
            read_range(&f, "p", Some(1), 0, 1),
            Err(ReadError::Replaced { .. })
        ));
        assert!(matches!(
            read_range(&f, "p", None, 4, 9),
            Err(ReadError::Shrunk { .. })
        ));
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn converts_kernel_devices() {
        assert_eq!(kernel_dev_to_user((8 << 20) | 1), libc::makedev(8, 1));
    }
}
