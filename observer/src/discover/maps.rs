//! The file-backed mappings of a process (/proc/PID/maps), grouped by file.
use std::{fs, path::PathBuf};

/// Identity of a mapped file: device and inode as /proc/PID/maps shows them.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct FileId {
    /// `major:minor` packed as userspace's `st_dev` (`makedev`).
    pub dev: u64,
    pub ino: u64,
}

/// One line of /proc/PID/maps that maps a file.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub perms: String,
    pub offset: u64,
    pub file: FileId,
    /// The path as the target sees it (in its own mount namespace); may end in " (deleted)".
    pub path: String,
}

impl Mapping {
    pub fn executable(&self) -> bool {
        self.perms.as_bytes().get(2) == Some(&b'x')
    }

    /// `/proc/PID/map_files/START-END`: opens the mapped file itself, whatever mount namespace the
    /// target is in and even if it was deleted or replaced on disk.
    pub fn map_file(&self, pid: i32) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            self.start, self.end
        ))
    }
}

/// `makedev(major, minor)` as glibc encodes it into `st_dev`.
pub fn makedev(major: u64, minor: u64) -> u64 {
    ((major & 0xffff_f000) << 32)
        | ((major & 0xfff) << 8)
        | ((minor & 0xffff_ff00) << 12)
        | (minor & 0xff)
}

/// Parse /proc/PID/maps, keeping file-backed mappings only.
pub fn read(pid: i32) -> std::io::Result<Vec<Mapping>> {
    Ok(parse(&fs::read_to_string(format!("/proc/{pid}/maps"))?))
}

pub fn parse(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Mapping> {
    // 55d0c8a00000-55d0c8a2a000 r-xp 00002000 fd:01 1311 /usr/bin/x
    let mut fields = line.splitn(6, char::is_whitespace);
    let range = fields.next()?;
    let perms = fields.next()?;
    let offset = fields.next()?;
    let dev = fields.next()?;
    let ino: u64 = fields.next()?.parse().ok()?;
    let path = fields.next().map(str::trim_start).unwrap_or("");
    if ino == 0 || !path.starts_with('/') {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let (major, minor) = dev.split_once(':')?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        perms: perms.to_owned(),
        offset: u64::from_str_radix(offset, 16).ok()?,
        file: FileId {
            dev: makedev(
                u64::from_str_radix(major, 16).ok()?,
                u64::from_str_radix(minor, 16).ok()?,
            ),
            ino,
        },
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_mappings_and_skips_the_rest() {
        let text = "\
55d0c8a00000-55d0c8a2a000 r-xp 00002000 fd:01 1311                       /usr/bin/my prog
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]
7f0000000000-7f0000001000 r--p 00000000 00:00 0
7f0000002000-7f0000003000 r--s 00000000 00:0e 17 /sys/kernel/debug/kcov
";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].start, 0x55d0c8a00000);
        assert_eq!(m[0].offset, 0x2000);
        assert_eq!(m[0].path, "/usr/bin/my prog");
        assert_eq!(
            m[0].file,
            FileId {
                dev: makedev(0xfd, 1),
                ino: 1311
            }
        );
        assert!(m[0].executable());
        assert_eq!(m[1].path, "/sys/kernel/debug/kcov");
        assert!(!m[1].executable());
    }

    #[test]
    fn makedev_matches_libc() {
        assert_eq!(makedev(8, 1), libc::makedev(8, 1));
        assert_eq!(makedev(259, 300), libc::makedev(259, 300));
    }
}
