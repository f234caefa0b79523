//! The profile file an LLVM runtime writes, from the target's environment (`LLVM_PROFILE_FILE`,
//! else the compiler's default), with compiler-rt's pattern expansion. Used where the kernel did
//! not show which file a dump wrote, and to tell users where their target writes.
use std::{fs, os::fd::AsRawFd};

use super::raw as llvm_raw;
use crate::target::environ::Environ;
use crate::target::files::{self as read, Expect};

/// An expanded profile path: literal text with `*` where compiler-rt inserts a value covobs
/// cannot recompute (the %m merge-pool signature).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expanded {
    pub pattern: String,
    /// `%m` was present: the runtime merges into this file instead of appending.
    pub merge_pool: bool,
    /// `%c` was present: continuous mode (the file is mmap'ed, not written by dumps).
    pub continuous: bool,
}

/// Expand like compiler-rt's parseFilenamePattern: %p pid, %h hostname, %t $TMPDIR, %Nm / %m the
/// merge pool, %c continuous mode, %b the binary id, %% a percent sign.
pub fn expand(
    pattern: &str,
    pid: u32,
    hostname: &str,
    tmpdir: Option<&str>,
    build_id: Option<&str>,
) -> Expanded {
    let mut out = String::new();
    let mut merge_pool = false;
    let mut continuous = false;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Optional pool size digits before 'm'.
        let mut digits = String::new();
        while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
            digits.push(d);
            chars.next();
        }
        match chars.next() {
            Some('p') => out.push_str(&pid.to_string()),
            Some('h') => out.push_str(hostname),
            Some('t') => out.push_str(tmpdir.unwrap_or("")),
            Some('m') => {
                merge_pool = true;
                out.push('*');
            }
            Some('c') => continuous = true,
            Some('b') => out.push_str(build_id.unwrap_or("*")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push_str(&digits);
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    Expanded {
        pattern: out,
        merge_pool,
        continuous,
    }
}

/// The profile file pattern of process `pid` for the LLVM runtime of `module`.
pub fn for_module(pid: u32, module: &crate::discover::Module) -> Expanded {
    let rustc = module.producers.iter().any(|p| p.contains("rustc"));
    for_process(pid, rustc, module.build_id.as_deref())
}

/// The profile file pattern of process `pid` (in covobs' PID namespace): LLVM_PROFILE_FILE from
/// /proc/PID/environ, else the
/// default of the producing compiler (rustc: `default_%m_%p.profraw`, clang: `default.profraw`).
pub fn for_process(pid: u32, rustc: bool, build_id: Option<&str>) -> Expanded {
    let env = Environ::of(pid);
    let pattern = env
        .var("LLVM_PROFILE_FILE")
        .filter(|p| !p.is_empty())
        .unwrap_or(if rustc {
            "default_%m_%p.profraw"
        } else {
            "default.profraw"
        });
    // %p and %h are what the target itself sees: its id in its own PID namespace (a process in
    // a container is often 1 there) and its UTS namespace's host name.
    let own_pid = crate::target::pidns::own_pid(pid).unwrap_or(pid);
    let hostname = crate::target::pidns::hostname_of(pid).unwrap_or_default();
    expand(pattern, own_pid, &hostname, env.var("TMPDIR"), build_id)
}

/// Where the next dump of a target will land in the profile file its environment names: covobs
/// keeps a cursor per target. Appended dumps (a plain file name) are taken one profile at a time
/// from the cursor; a merge-pool file (`%m`) is rewritten whole by each dump and taken whole.
/// Exact as long as only this target writes the file; when the kernel saw a dump's writes, the
/// cursor follows them, so the two ways of collecting agree.
#[derive(Clone, Debug)]
pub struct ProfileCursor {
    pub expanded: Expanded,
    /// The resolved file (inside the target's root) and its inode, once known.
    pub path: Option<String>,
    pub ino: Option<u64>,
    /// Byte offset of the first profile not yet collected.
    pub offset: u64,
    /// CLOCK_BOOTTIME ns right after `offset` was taken from the file's size: a dump that started
    /// earlier wrote before `offset` (or across it), not after it. 0 when the file holds only
    /// dumps covobs sees (a process it launched, or saw exec).
    pub since_ns: u64,
    /// `offset` may be inside a profile (a dump covobs did not see was writing when the size was
    /// taken, or a dump that straddled it was given up): the next take looks for the next
    /// profile's header instead of trusting `offset`.
    pub resync: bool,
}

impl ProfileCursor {
    /// Start after whatever the file holds now: those dumps happened before covobs reported the
    /// process's dumps (the caller released them first).
    pub fn new(expanded: Expanded, root: &read::TargetDir, cwd: Option<&read::TargetDir>) -> Self {
        let mut c = Self {
            expanded,
            path: None,
            ino: None,
            offset: 0,
            since_ns: 0,
            resync: true,
        };
        if let Ok(path) = resolve_glob(&c.expanded, root, cwd)
            && let Ok(f) = read::open_in_target(root, cwd, &path, Expect::Writable)
            && let Ok(meta) = f.metadata()
        {
            use std::os::unix::fs::MetadataExt;
            c.ino = Some(meta.ino());
            c.offset = meta.len();
            c.path = Some(path);
        }
        // After the size was taken: a dump that started later writes after `offset`.
        c.since_ns = crate::sys::clock::boot_ns();
        c
    }

    /// Start at the beginning of the file: for a process covobs launched, whose runtime created
    /// the file at its start, every profile in it is from this run.
    pub fn from_start(expanded: Expanded) -> Self {
        Self {
            expanded,
            path: None,
            ino: None,
            offset: 0,
            since_ns: 0,
            resync: false,
        }
    }

    /// Whether the profile of a dump that started at `start_ns` can be after `offset`. A dump that
    /// started before the cursor was placed wrote before it (covobs saw the dump while it was
    /// still attaching, the file's size already counted it), or across it: the reason it is not
    /// collected, and the cursor no longer trusted to be at a profile's start.
    pub fn placed_after(&mut self, start_ns: u64, end_ns: u64) -> Result<(), String> {
        if start_ns >= self.since_ns {
            return Ok(());
        }
        if end_ns >= self.since_ns {
            self.resync = true;
        }
        Err(format!(
            "the dump started before covobs had placed its cursor in {} (it was still attaching to the process): its profile is in what the file held then, which covobs does not collect",
            self.path.as_deref().unwrap_or(&self.expanded.pattern)
        ))
    }

    /// The kernel saw a dump write `[start, end)` of inode `ino`.
    pub fn observed(&mut self, path: &str, ino: Option<u64>, end: u64) {
        if self.ino.is_some() && ino.is_some() && self.ino != ino {
            // Another file than the one we followed (rotated, or set_filename): follow it.
            self.offset = end;
        } else {
            self.offset = self.offset.max(end);
        }
        self.path = Some(path.to_owned());
        if ino.is_some() {
            self.ino = ino;
        }
    }

    /// Take the profile the latest dump wrote: (bytes, path, offset).
    pub fn take(
        &mut self,
        root: &read::TargetDir,
        cwd: Option<&read::TargetDir>,
    ) -> Result<(Vec<u8>, String, u64), String> {
        let (file, path) = self.open(root, cwd)?;
        let (start, end) = self.next_profile(&file, &path)?;
        let data = read::read_range(&file, &path, start, end - start).map_err(|e| e.said())?;
        llvm_raw::parse(&data, true).map_err(|e| format!("{path} at byte {start}: {e}"))?;
        self.offset = end;
        self.resync = false;
        Ok((data, path, start))
    }

    /// Move past the next profile unread (a dump covobs passes over): a few small reads of its
    /// header and value records, however large the profile. `file` is from [`Self::open`].
    pub fn skip(&mut self, file: &fs::File, path: &str) -> Result<(), String> {
        let (_, end) = self.next_profile(file, path)?;
        self.offset = end;
        self.resync = false;
        Ok(())
    }

    /// The file the environment names, opened as the target; the cursor follows it (back to its
    /// start when it is a new file).
    pub fn open(
        &mut self,
        root: &read::TargetDir,
        cwd: Option<&read::TargetDir>,
    ) -> Result<(fs::File, String), String> {
        use std::os::unix::fs::MetadataExt;
        let path = match resolve_glob(&self.expanded, root, cwd) {
            Ok(p) => p,
            Err(e) => self.path.clone().ok_or(e)?,
        };
        let file =
            read::open_in_target(root, cwd, &path, Expect::Writable).map_err(|e| e.said())?;
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if self.ino.is_some_and(|ino| ino != meta.ino()) || meta.len() < self.offset {
            // A new file (the target truncated or replaced it): its dumps start at 0.
            self.offset = 0;
        }
        self.ino = Some(meta.ino());
        self.path = Some(path.clone());
        Ok((file, path))
    }

    /// Where the next profile starts and ends in `file`.
    fn next_profile(&self, file: &fs::File, path: &str) -> Result<(u64, u64), String> {
        let size = file.metadata().map_err(|e| e.to_string())?.len();
        let start = if self.expanded.merge_pool {
            0
        } else if self.resync {
            next_header(file, path, self.offset, size)?
        } else {
            self.offset
        };
        Ok((start, profile_end(file, path, start, size)?))
    }
}

impl ProfileCursor {
    /// What a merge-pool file (`%m`) holds now: the profile its runtime will merge into its
    /// counters before the next write. Opened like any file of the target (as the target, a
    /// regular file it may write); `None` when there is none, it is not the file followed so
    /// far, or it holds no whole profile.
    pub fn pool_content(&self, root: &read::TargetDir) -> Option<Vec<u8>> {
        use std::os::unix::fs::MetadataExt;
        if !self.expanded.merge_pool {
            return None;
        }
        let path = self.path.as_deref()?;
        let file = read::open_in_target(root, None, path, Expect::Writable).ok()?;
        let meta = file.metadata().ok()?;
        if self.ino.is_some_and(|ino| ino != meta.ino()) {
            return None;
        }
        let end = profile_end(&file, path, 0, meta.len()).ok()?;
        read::read_range(&file, path, 0, end).ok()
    }
}

/// The first profile header at or after `from` (8-byte aligned, as profiles are): `from` itself
/// when a profile starts there, else the rest of a profile written while covobs placed its cursor
/// is skipped. Reads at most one profile's worth of bytes.
fn next_header(file: &fs::File, path: &str, from: u64, size: u64) -> Result<u64, String> {
    const CHUNK: u64 = 64 << 10;
    if from >= size {
        return Ok(from);
    }
    let mut at = from.next_multiple_of(8);
    let limit = size.min(from.saturating_add(MAX_PROFILE));
    while at < limit {
        let chunk =
            read::read_range(file, path, at, (limit - at).min(CHUNK)).map_err(|e| e.said())?;
        for (i, word) in chunk.as_chunks::<8>().0.iter().enumerate() {
            if u64::from_le_bytes(*word) == llvm_raw::MAGIC_64 {
                return Ok(at + 8 * i as u64);
            }
        }
        let whole = chunk.len() as u64 / 8 * 8;
        if whole == 0 {
            break;
        }
        at += whole;
    }
    Err(format!(
        "{path} holds no profile header after byte {from} (the cursor covobs placed there fell inside a profile)"
    ))
}

/// Where the profile that starts at `start` ends, from its header and the sizes of its
/// value-profile records: a few small reads, however large the file has grown (a target that
/// appends every dump to one file).
fn profile_end(file: &fs::File, path: &str, start: u64, size: u64) -> Result<u64, String> {
    if size <= start {
        return Err(format!(
            "{path} holds no profile after the last one covobs took"
        ));
    }
    let read = |at: u64, len: u64| read::read_range(file, path, at, len).map_err(|e| e.said());
    let head = read(start, (size - start).min(llvm_raw::MAX_HEADER_BYTES as u64))?;
    let header = llvm_raw::header(&head).map_err(|e| format!("{path} at byte {start}: {e}"))?;
    let mut end = start
        .checked_add(header.fixed_size)
        .filter(|end| *end <= size)
        .ok_or_else(|| format!("{path} at byte {start}: the profile is cut short"))?;
    // Value-profile records up to the next profile's magic or the end of the file.
    while end < size {
        let word = read(end, (size - end).min(8))?;
        let magic = word
            .get(..8)
            .map(|w| u64::from_le_bytes(w.try_into().unwrap_or([0; 8])));
        if magic == Some(llvm_raw::MAGIC_64) {
            break;
        }
        let record = word
            .get(..4)
            .map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap_or([0; 4]))))
            .filter(|n| *n >= 8 && n % 8 == 0 && end + n <= size)
            .ok_or_else(|| format!("{path} at byte {end}: malformed value profile data"))?;
        end += record;
    }
    if end - start > MAX_PROFILE {
        return Err(format!(
            "{path} at byte {start}: a profile larger than {MAX_PROFILE} bytes is not read"
        ));
    }
    Ok(end)
}

/// Far above any real raw profile, far below covobs' memory.
const MAX_PROFILE: u64 = 1 << 30;

fn resolve_glob(
    expanded: &Expanded,
    root: &read::TargetDir,
    cwd: Option<&read::TargetDir>,
) -> Result<String, String> {
    if !expanded.pattern.contains('*') {
        return Ok(expanded.pattern.clone());
    }
    let (dir, name) = match expanded.pattern.rsplit_once('/') {
        Some((d, n)) => (if d.is_empty() { "/" } else { d }, n),
        None => (".", expanded.pattern.as_str()),
    };
    let dir_file = read::open_in_target(root, cwd, dir, Expect::Directory).map_err(|e| e.said())?;
    let listing = fs::read_dir(format!("/proc/self/fd/{}", dir_file.as_raw_fd()))
        .map_err(|e| format!("listing {dir}: {e}"))?;
    let mut best: Option<(std::time::SystemTime, String)> = None;
    for entry in listing.flatten() {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if !glob_match(name, &file_name) {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _)| modified > *t) {
            best = Some((modified, file_name));
        }
    }
    let (_, file_name) = best.ok_or_else(|| format!("no file matches {}", expanded.pattern))?;
    Ok(if dir == "." {
        file_name
    } else {
        format!("{}/{file_name}", dir.trim_end_matches('/'))
    })
}

/// `*` matches any run of characters; everything else literally.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let mut rest = name;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_compiler_rt_patterns() {
        let e = expand("/tmp/%h-%p-%4m.profraw", 42, "box", None, None);
        assert_eq!(e.pattern, "/tmp/box-42-*.profraw");
        assert!(e.merge_pool && !e.continuous);
        let e = expand(
            "%t/x%c-%%-%b.profraw",
            1,
            "h",
            Some("/var/tmp"),
            Some("ab12"),
        );
        assert_eq!(e.pattern, "/var/tmp/x-%-ab12.profraw");
        assert!(e.continuous);
        assert_eq!(
            expand("default_%m_%p.profraw", 7, "h", None, None).pattern,
            "default_*_7.profraw"
        );
    }

    /// A version-8 profile of one function with two counters valued `n`: profiles of one
    /// binary all have this size, so only the counters tell them apart.
    fn profile(n: u8) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [llvm_raw::MAGIC_64, 8, 0, 1, 0, 2, 0, 5, 0, 0, 1] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(&[0u8; 48]);
        b.extend_from_slice(&[n; 16]);
        b.extend_from_slice(b"main\0\0\0\0");
        b
    }

    /// A file the target appends its dumps to, with profiles 1..=n, and covobs' view of it.
    fn appended(tag: &str, n: u8) -> (std::path::PathBuf, read::TargetDir) {
        let dir = std::env::temp_dir().join(format!("covobs-cursor-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let data: Vec<u8> = (1..=n).flat_map(profile).collect();
        fs::write(dir.join("p.profraw"), data).unwrap();
        let me = read::Creds::of(std::process::id() as i32).unwrap();
        let cwd = read::TargetDir::open_path(&dir, Some(me)).unwrap();
        (dir, cwd)
    }

    fn append(dir: &std::path::Path, n: u8) {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(dir.join("p.profraw"))
            .unwrap();
        f.write_all(&profile(n)).unwrap();
    }

    fn plain() -> Expanded {
        expand("p.profraw", 1, "h", None, None)
    }

    #[test]
    fn takes_each_appended_profile_once_in_order() {
        let (dir, cwd) = appended("order", 2);
        let root =
            read::TargetDir::open_path(std::path::Path::new("/"), cwd.creds().cloned()).unwrap();
        let mut c = ProfileCursor::new(plain(), &root, Some(&cwd));
        let size = profile(1).len() as u64;
        assert_eq!(c.offset, 2 * size, "what was there before is not taken");
        append(&dir, 3);
        append(&dir, 4);
        assert!(c.placed_after(c.since_ns, c.since_ns).is_ok());
        assert_eq!(c.take(&root, Some(&cwd)).unwrap().0, profile(3));
        assert_eq!(c.take(&root, Some(&cwd)).unwrap().0, profile(4));
        let e = c.take(&root, Some(&cwd)).unwrap_err();
        assert!(e.contains("holds no profile after the last one"), "{e}");
        // A dump that started before the cursor was placed is not taken for a later one.
        let e = c.placed_after(c.since_ns - 1, c.since_ns - 1).unwrap_err();
        assert!(e.contains("before covobs had placed its cursor"), "{e}");
        assert!(!c.resync);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_cursor_placed_inside_a_profile_skips_to_the_next_one() {
        let (dir, cwd) = appended("resync", 1);
        let root =
            read::TargetDir::open_path(std::path::Path::new("/"), cwd.creds().cloned()).unwrap();
        // The size was taken while a dump covobs did not see was writing: half of profile 2.
        let half = profile(2)[..40].to_vec();
        {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(dir.join("p.profraw"))
                .unwrap();
            f.write_all(&half).unwrap();
        }
        let mut c = ProfileCursor::new(plain(), &root, Some(&cwd));
        assert!(c.resync);
        {
            use std::io::Write;
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(dir.join("p.profraw"))
                .unwrap();
            f.write_all(&profile(2)[40..]).unwrap();
        }
        append(&dir, 3);
        let (data, _, at) = c.take(&root, Some(&cwd)).unwrap();
        assert_eq!(data, profile(3));
        assert_eq!(at, 2 * profile(1).len() as u64);
        assert!(!c.resync);
        // A dump that straddled the placement makes the cursor look again.
        assert!(c.placed_after(c.since_ns - 1, c.since_ns + 1).is_err());
        assert!(c.resync);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn globs() {
        assert!(glob_match("default_*_7.profraw", "default_123_0_7.profraw"));
        assert!(!glob_match(
            "default_*_7.profraw",
            "default_123_0_8.profraw"
        ));
        assert!(glob_match("a", "a"));
        assert!(glob_match("*", "anything"));
    }
}
