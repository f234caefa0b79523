//! Selection by container: a cgroup v2 directory, and every process in it or below it. The
//! kernel matches new processes by the cgroup's id (the directory's inode), so nothing started in
//! the cgroup later is missed.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo)")]
    NoHierarchy,
    #[error("no such cgroup: {given} (cgroup v2 is mounted at {mount})")]
    NotFound { given: String, mount: String },
    #[error("{0} is not a cgroup v2 directory")]
    NotCgroup2(String),
    #[error("reading cgroup {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

impl CgroupError {
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Read { .. })
    }
}

/// A cgroup v2 directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The directory, in covobs' filesystem view.
    pub dir: PathBuf,
    /// Its path inside the hierarchy, as /proc/PID/cgroup shows it (`/` is the root).
    pub path: String,
    /// The cgroup id the kernel gives (`bpf_get_current_cgroup_id`): the directory's inode.
    pub id: u64,
}

impl Cgroup {
    /// `given` is a directory of a cgroup v2 mount (`/sys/fs/cgroup/kubepods/pod1`) or a path
    /// inside the hierarchy (`/kubepods/pod1`, as /proc/PID/cgroup shows it).
    pub fn resolve(given: &str) -> Result<Self, CgroupError> {
        let mounts = cgroup2_mounts()?;
        let direct = Path::new(given);
        // A directory of any cgroup2 mount (a host hierarchy mounted into a container, too), else
        // a path inside the hierarchy of the first mount.
        let (dir, mount) = match mounts.iter().filter(|m| direct.starts_with(m)).max() {
            Some(mount) => (direct.to_path_buf(), mount.clone()),
            None => (
                mounts[0].join(given.trim_start_matches('/')),
                mounts[0].clone(),
            ),
        };
        let meta = fs::metadata(&dir).map_err(|_| CgroupError::NotFound {
            given: given.to_owned(),
            mount: mount.display().to_string(),
        })?;
        if !meta.is_dir() || !is_cgroup2(&dir) {
            return Err(CgroupError::NotCgroup2(dir.display().to_string()));
        }
        let inside = dir.strip_prefix(&mount).unwrap_or(Path::new(""));
        Ok(Self {
            path: format!("/{}", inside.display()),
            id: meta.ino(),
            dir,
        })
    }

    /// Every process in this cgroup or below it now (ids in covobs' PID namespace; processes
    /// it cannot see are left out).
    pub fn processes(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        let mut dirs = vec![self.dir.clone()];
        let mut first = true;
        while let Some(dir) = dirs.pop() {
            let procs = dir.join("cgroup.procs");
            match fs::read_to_string(&procs) {
                Ok(text) => pids.extend(
                    text.lines()
                        .filter_map(|l| l.trim().parse::<i32>().ok())
                        .filter(|p| *p > 0),
                ),
                // A child cgroup removed while we walk: nothing in it any more.
                Err(e) if !first && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Read {
                        path: procs.display().to_string(),
                        source,
                    });
                }
            }
            first = false;
            if let Ok(entries) = fs::read_dir(&dir) {
                dirs.extend(
                    entries
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Where cgroup v2 hierarchies are mounted, in mount order: /sys/fs/cgroup on unified systems,
/// /sys/fs/cgroup/unified on hybrid ones, plus any other mount of one.
fn cgroup2_mounts() -> Result<Vec<PathBuf>, CgroupError> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(|_| CgroupError::NoHierarchy)?;
    let mounts = mounts_of(&info);
    if mounts.is_empty() {
        return Err(CgroupError::NoHierarchy);
    }
    Ok(mounts)
}

fn mounts_of(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|l| {
            // id parent maj:min root mount-point options... - fstype source super-options
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_v2_mount_unified_or_hybrid() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                      32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mounts_of(hybrid),
            vec![PathBuf::from("/sys/fs/cgroup/unified")]
        );
        let unified = "30 23 0:26 / /sys/fs/cgroup rw shared:4 - cgroup2 cgroup2 rw\n\
                       90 23 0:26 / /host/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            mounts_of(unified),
            vec![
                PathBuf::from("/sys/fs/cgroup"),
                PathBuf::from("/host/cgroup")
            ]
        );
        assert!(mounts_of("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n").is_empty());
    }

    #[test]
    fn resolves_the_root_and_refuses_what_is_not_there() {
        let root = Cgroup::resolve("/").expect("this machine has a cgroup v2 hierarchy");
        assert_eq!(root.path, "/");
        let me = std::process::id() as i32;
        assert!(root.processes().unwrap().contains(&me));
        assert_eq!(
            Cgroup::resolve(&root.dir.display().to_string()).unwrap(),
            root
        );
        assert!(matches!(
            Cgroup::resolve("/covobs-no-such-cgroup"),
            Err(CgroupError::NotFound { .. })
        ));
        // Out of the hierarchy through `..`: a directory, but not a cgroup.
        assert!(matches!(
            Cgroup::resolve("/../../../../../../etc"),
            Err(CgroupError::NotCgroup2(_))
        ));
    }
}
