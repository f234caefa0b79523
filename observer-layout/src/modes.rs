//! Who may read what covobs writes (docs/security.md, "Session directory modes"): directories
//! 0700 and files 0600, owned by root, unless `--output-group` shares them with one group (0750,
//! 0640, that group). Modes are set on the descriptor after creation, so the umask changes
//! nothing.
use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use nix::{
    sys::stat::{Mode, fchmod},
    unistd::{Gid, fchown},
};

#[derive(Debug, thiserror::Error)]
pub enum ModesError {
    #[error("--output-group {0:?}: no such group")]
    NoSuchGroup(String),
    #[error("--output-group {0:?}: {1}")]
    Lookup(String, nix::Error),
    #[error("{}: {source}", path.display())]
    Apply {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The modes (and group) of everything a session writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OutputModes {
    /// Shared with this group (read and traverse), or with nobody.
    pub group: Option<u32>,
}

impl OutputModes {
    /// `--output-group`: a group name, or a numeric gid.
    pub fn with_group(group: Option<&str>) -> Result<Self, ModesError> {
        let Some(g) = group else {
            return Ok(Self::default());
        };
        let gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => nix::unistd::Group::from_name(g)
                .map_err(|e| ModesError::Lookup(g.to_owned(), e))?
                .ok_or_else(|| ModesError::NoSuchGroup(g.to_owned()))?
                .gid
                .as_raw(),
        };
        Ok(Self { group: Some(gid) })
    }

    pub fn dir_mode(&self) -> u32 {
        if self.group.is_some() { 0o750 } else { 0o700 }
    }

    pub fn file_mode(&self) -> u32 {
        if self.group.is_some() { 0o640 } else { 0o600 }
    }

    /// Give an open file or directory its group and exact mode. The group first: changing it
    /// may clear mode bits.
    pub fn apply(&self, fd: impl AsFd, dir: bool) -> std::io::Result<()> {
        if let Some(gid) = self.group {
            fchown(fd.as_fd(), None, Some(Gid::from_raw(gid)))?;
        }
        let mode = if dir {
            self.dir_mode()
        } else {
            self.file_mode()
        };
        fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))?;
        Ok(())
    }

    /// Apply the modes to a tree covobs just wrote in a private place (the report's staging
    /// directory, where other tools wrote too): directories and plain files; links are left
    /// as they are and not followed.
    pub fn apply_tree(&self, root: &Path) -> Result<(), ModesError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ModesError::Apply { path, source }
        };
        let meta = std::fs::symlink_metadata(root).map_err(err(root))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let is_dir = meta.is_dir();
        if is_dir || meta.is_file() {
            use std::os::unix::fs::OpenOptionsExt as _;
            let f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(root)
                .map_err(err(root))?;
            self.apply(&f, is_dir).map_err(err(root))?;
        }
        if is_dir {
            for entry in std::fs::read_dir(root).map_err(err(root))? {
                self.apply_tree(&entry.map_err(err(root))?.path())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use super::*;

    #[test]
    fn groups_by_name_or_number_and_unknown_ones_refused() {
        assert_eq!(OutputModes::with_group(None).unwrap().group, None);
        assert_eq!(OutputModes::with_group(Some("0")).unwrap().group, Some(0));
        assert_eq!(
            OutputModes::with_group(Some("root")).unwrap().group,
            Some(0)
        );
        let e = OutputModes::with_group(Some("no-such-group-covobs")).unwrap_err();
        assert!(e.to_string().contains("no such group"), "{e}");
    }

    #[test]
    fn a_tree_gets_exact_modes_whatever_it_had() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("r");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(root.join("sub/f"), "x").expect("write");
        std::fs::set_permissions(root.join("sub/f"), std::fs::Permissions::from_mode(0o666))
            .expect("chmod");
        std::os::unix::fs::symlink("/etc/hostname", root.join("link")).expect("symlink");
        let private = OutputModes::default();
        private.apply_tree(&root).expect("apply");
        let mode = |p: &str| std::fs::metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode(""), 0o700);
        assert_eq!(mode("sub"), 0o700);
        assert_eq!(mode("sub/f"), 0o600);
        // The link's target is untouched.
        let etc = std::fs::metadata("/etc/hostname").unwrap().mode() & 0o7777;
        assert_ne!(etc, 0o600);
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        let shared = OutputModes { group: Some(gid) };
        shared.apply_tree(&root).expect("apply");
        assert_eq!(mode("sub"), 0o750);
        assert_eq!(mode("sub/f"), 0o640);
        assert_eq!(std::fs::metadata(root.join("sub/f")).unwrap().gid(), gid);
    }
}
