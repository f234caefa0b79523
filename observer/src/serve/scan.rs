//! Finding what is new in a session directory, by polling: only process directories whose
//! modification time changed are listed again, and only metadata files not read before are read,
//! so a day-long session with many artifacts costs a few `stat`s a second. Nothing is written.
use std::{
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use crate::report::{
    ReportError,
    session::{Artifact, SessionInfo, is_metadata_name, is_process_dir, read_artifact},
    session_dir::SessionDir,
};

/// A metadata file that does not parse is retried this many polls (it may be half written)
/// before it is reported and left alone.
const RETRIES: u32 = 3;

/// A directory last modified this long ago is not listed again until its time changes.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// What one poll found.
#[derive(Debug, Default)]
pub struct Found {
    /// Artifacts not seen before, in seq order.
    pub new: Vec<Artifact>,
    /// session.json appeared or changed.
    pub info_changed: bool,
    /// Metadata files given up on, with why.
    pub unreadable: Vec<String>,
}

pub struct Scanner {
    dir: PathBuf,
    /// Process directory name -> its modification time when it was last listed whole.
    listed: HashMap<String, SystemTime>,
    /// Metadata files read (or given up on).
    seen: HashSet<PathBuf>,
    failures: HashMap<PathBuf, u32>,
    info_stamp: Option<(SystemTime, u64)>,
    pub info: SessionInfo,
    /// session.json was read: the writer has finished.
    has_info: bool,
    /// The session directory, held open: every file in it is read through it (no links).
    sdir: Option<Arc<SessionDir>>,
    /// The process directories seen: (pid, comm), the targets before session.json names them.
    pub processes: std::collections::BTreeSet<(i64, String)>,
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `dir` looks like a session directory, finished or being written: session.json,
/// events.jsonl (an attach or run writes it first), or a process directory.
pub fn is_session_dir(dir: &Path) -> Result<bool, ReportError> {
    if !dir.is_dir() {
        return Err(ReportError::NoSuchDir(dir.to_path_buf()));
    }
    if dir.join("session.json").is_file() || dir.join("events.jsonl").is_file() {
        return Ok(true);
    }
    for entry in fs::read_dir(dir).map_err(read_err(dir))? {
        let entry = entry.map_err(read_err(dir))?;
        if is_process_dir(&entry.file_name().to_string_lossy())
            && entry.file_type().map_err(read_err(dir))?.is_dir()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Scanner {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            listed: HashMap::new(),
            seen: HashSet::new(),
            failures: HashMap::new(),
            info_stamp: None,
            info: SessionInfo::default(),
            has_info: false,
            sdir: None,
            processes: Default::default(),
        }
    }

    /// Whether the session has ended (its writer wrote session.json last).
    pub fn finished(&self) -> bool {
        self.has_info
    }

    /// Look once.
    pub fn scan(&mut self) -> Result<Found, ReportError> {
        let mut found = Found {
            info_changed: self.read_info()?,
            ..Found::default()
        };
        let dir = self.dir.clone();
        for entry in fs::read_dir(&dir).map_err(read_err(&dir))? {
            let entry = entry.map_err(read_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_process_dir(&name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            if let Some((pid, comm)) = name.split_once('-')
                && let Ok(pid) = pid.parse::<i64>()
            {
                self.processes.insert((pid, comm.to_string()));
            }
            let mtime = meta.modified().map_err(read_err(&entry.path()))?;
            if self.listed.get(&name) == Some(&mtime) {
                continue;
            }
            // Directory times are coarse (a clock tick): a file created in the same tick as
            // this listing would leave the time unchanged, so a recent time is not trusted.
            let settled = SystemTime::now()
                .duration_since(mtime)
                .is_ok_and(|age| age >= SETTLED);
            if self.list_process_dir(&name, &entry.path(), &mut found)? && settled {
                self.listed.insert(name, mtime);
            }
        }
        found
            .new
            .sort_by(|a, b| (a.meta.seq, &a.rel).cmp(&(b.meta.seq, &b.rel)));
        Ok(found)
    }

    /// Read the new metadata files of one process directory; false when one should be tried
    /// again at the next poll.
    fn list_process_dir(
        &mut self,
        name: &str,
        pdir: &Path,
        found: &mut Found,
    ) -> Result<bool, ReportError> {
        let mut complete = true;
        for f in fs::read_dir(pdir).map_err(read_err(pdir))? {
            let f = f.map_err(read_err(pdir))?;
            let path = f.path();
            if !is_metadata_name(&f.file_name().to_string_lossy()) || self.seen.contains(&path) {
                continue;
            }
            let sdir = self.session_dir()?;
            let file_name = f.file_name().to_string_lossy().into_owned();
            match read_artifact(&sdir, name, &file_name) {
                Ok(a) => {
                    self.seen.insert(path);
                    found.new.push(a);
                }
                Err(e) => {
                    let tries = self.failures.entry(path.clone()).or_default();
                    *tries += 1;
                    if *tries >= RETRIES {
                        found.unreadable.push(e.to_string());
                        self.seen.insert(path);
                    } else {
                        complete = false;
                    }
                }
            }
        }
        Ok(complete)
    }

    /// The session directory, opened once and held.
    fn session_dir(&mut self) -> Result<Arc<SessionDir>, ReportError> {
        if let Some(d) = &self.sdir {
            return Ok(d.clone());
        }
        let d = Arc::new(
            SessionDir::open(&self.dir).map_err(|source| ReportError::Read {
                path: self.dir.clone(),
                source,
            })?,
        );
        self.sdir = Some(d.clone());
        Ok(d)
    }

    /// Re-read session.json when it changed; true when it did.
    fn read_info(&mut self) -> Result<bool, ReportError> {
        let path = self.dir.join("session.json");
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(read_err(&path)(e)),
        };
        let stamp = (meta.modified().map_err(read_err(&path))?, meta.len());
        if self.info_stamp == Some(stamp) {
            return Ok(false);
        }
        // Read like every file of the session: beneath it, through no link, bounded.
        let sdir = self.session_dir()?;
        // Half written (or replaced meanwhile): try again at the next poll.
        let Ok(Some(info)) = crate::report::session::read_info(&sdir) else {
            return Ok(false);
        };
        self.info = info;
        self.has_info = true;
        self.info_stamp = Some(stamp);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seq: u64) -> String {
        format!(
            r#"{{"seq":{seq},"runtime":"llvm","pid":7,"valid":true,"file":"{seq:06}-llvm.profraw"}}"#
        )
    }

    #[test]
    fn finds_each_artifact_once_in_seq_order_and_waits_for_half_written_ones() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        assert!(!is_session_dir(dir).expect("dir"));
        fs::write(dir.join("events.jsonl"), "").expect("events");
        assert!(is_session_dir(dir).expect("dir"));
        assert!(is_session_dir(&dir.join("nope")).is_err());

        let mut s = Scanner::new(dir);
        assert!(s.scan().expect("scan").new.is_empty());
        let p = dir.join("7-target");
        fs::create_dir(&p).expect("mkdir");
        fs::write(p.join("000002-llvm.json"), meta(2)).expect("write");
        fs::write(p.join("000001-llvm.json"), meta(1)).expect("write");
        // Half written: not yet.
        fs::write(p.join("000003-llvm.json"), "{\"seq\":3,").expect("write");
        fs::write(p.join("000001-llvm.profraw"), "not metadata").expect("write");
        let f = s.scan().expect("scan");
        let seqs: Vec<u64> = f.new.iter().map(|a| a.meta.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(
            s.processes.iter().cloned().collect::<Vec<_>>(),
            vec![(7, "target".to_string())]
        );
        assert!(f.unreadable.is_empty());
        // Finished writing: found at the next poll, and only it.
        fs::write(p.join("000003-llvm.json"), meta(3)).expect("write");
        let f = s.scan().expect("scan");
        let seqs: Vec<u64> = f.new.iter().map(|a| a.meta.seq).collect();
        assert_eq!(seqs, vec![3]);
        assert!(s.scan().expect("scan").new.is_empty());
        assert!(!s.finished());

        // Corrupt for good: given up on after a few polls, with the reason.
        fs::write(p.join("000004-llvm.json"), "garbage").expect("write");
        let mut unreadable = Vec::new();
        for _ in 0..RETRIES {
            unreadable.extend(s.scan().expect("scan").unreadable);
        }
        assert_eq!(unreadable.len(), 1, "{unreadable:?}");
        assert!(unreadable[0].contains("000004-llvm.json"), "{unreadable:?}");

        fs::write(
            dir.join("session.json"),
            r#"{"command":["covobs","attach"]}"#,
        )
        .expect("json");
        let f = s.scan().expect("scan");
        assert!(f.info_changed);
        assert!(s.finished());
        assert_eq!(s.info.command().as_deref(), Some("covobs attach"));
        assert!(!s.scan().expect("scan").info_changed);
    }
}
