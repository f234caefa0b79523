//! Reading a session directory (docs/output.md): session.json when present, and every artifact's
//! metadata file `<pid>-<comm>/<seq>-<runtime>.json`. The directory is not trusted
//! (docs/security.md): everything is opened through [`SessionDir`] (beneath it, through no link,
//! sizes checked first), both kinds of JSON are checked against their typed schema, and an
//! artifact whose metadata or bytes are bad is left out with the reason, never the session.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use sha2::{Digest, Sha256};

use super::{
    ReportError,
    error::{Excluded, Warning},
    session_dir::{EntryKind, SessionDir, SessionFileError},
};

/// The most of session.json covobs reads (a long session with many targets is a few MB).
pub const MAX_SESSION_JSON_BYTES: u64 = 16 << 20;
/// The most of one metadata file (a gcov artifact lists its parts: hundreds of paths).
pub const MAX_METADATA_BYTES: u64 = 4 << 20;
/// The most of one artifact (all parts of a gcov one) covobs reads into memory.
pub const MAX_ARTIFACT_BYTES: u64 = 1 << 30;
/// The largest module copy handed to llvm-cov.
pub const MAX_MODULE_BYTES: u64 = 4 << 30;

/// session.json (docs/output.md): the writer's own type.
pub use covobs_layout::session::SessionInfo;

/// session.json of the session, `None` when there is none yet.
pub fn read_info(dir: &SessionDir) -> Result<Option<SessionInfo>, String> {
    match dir.read(Path::new("session.json"), None, MAX_SESSION_JSON_BYTES) {
        Ok(bytes) => SessionInfo::parse(&bytes).map(Some),
        Err(SessionFileError::Missing) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// The metadata of one artifact (docs/output.md, "Artifact metadata"): the writer's own type.
pub use covobs_layout::artifact::{
    ArtifactMeta, FormatInfo, LAYOUT, MergedBase as MergedMeta, MergedPart, ModuleMeta, PartMeta,
    Runtime, is_inside,
};
pub use covobs_layout::json::parse_json;

/// One artifact: its metadata and where it lives.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub meta: ArtifactMeta,
    /// The metadata file.
    pub meta_path: PathBuf,
    /// The artifact bytes (file, or directory for multi-file gcov dumps), for messages: it is
    /// read through [`SessionDir`] from `rel`.
    pub data_path: PathBuf,
    /// The artifact, relative to the session directory (for messages and the summary).
    pub rel: String,
    dir: Arc<SessionDir>,
}

/// A session directory, read.
#[derive(Clone, Debug)]
pub struct Session {
    pub dir: PathBuf,
    pub info: SessionInfo,
    /// In collection order (seq).
    pub artifacts: Vec<Artifact>,
    /// Artifacts whose metadata file could not be read or is not valid, with the reason.
    pub unreadable: Vec<Excluded>,
    /// What else in the directory was not read (a process directory that is a link).
    pub warnings: Vec<Warning>,
}

/// `<pid>-<comm>`: a decimal pid, a dash, anything.
pub fn is_process_dir(name: &str) -> bool {
    name.split_once('-')
        .is_some_and(|(pid, _)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// `<seq>-<runtime>.json`: at least one digit, a dash, a runtime name.
pub fn is_metadata_name(name: &str) -> bool {
    name.strip_suffix(".json")
        .and_then(|stem| stem.split_once('-'))
        .is_some_and(|(seq, rt)| {
            !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) && !rt.is_empty()
        })
}

fn read_err(path: &Path) -> impl FnOnce(SessionFileError) -> ReportError + '_ {
    move |e| ReportError::Read {
        path: path.to_path_buf(),
        source: match e {
            SessionFileError::Io(e) => e,
            e => std::io::Error::other(e.to_string()),
        },
    }
}

impl Session {
    /// Read a session directory. Fails (as bad input) when it is missing, is not a session, or
    /// its session.json is not what docs/output.md says; an artifact whose metadata is bad is
    /// left out ([`Session::unreadable`]).
    pub fn open(dir: &Path) -> Result<Self, ReportError> {
        if !dir.is_dir() {
            return Err(ReportError::NoSuchDir(dir.to_path_buf()));
        }
        let sdir = SessionDir::open(dir).map_err(|source| ReportError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        Self::read(&Arc::new(sdir))
    }

    /// [`Session::open`] of a directory held already.
    pub fn read(sdir: &Arc<SessionDir>) -> Result<Self, ReportError> {
        let dir = sdir.path();
        let info = read_info(sdir).map_err(|message| ReportError::BadMetadata {
            path: dir.join("session.json"),
            message,
        })?;
        let mut artifacts = Vec::new();
        let mut unreadable = Vec::new();
        let mut warnings = Vec::new();
        let mut metadata_files = 0usize;
        for (name, kind) in sdir.entries(None).map_err(read_err(dir))? {
            let name = name.to_string_lossy().into_owned();
            if !is_process_dir(&name) {
                continue;
            }
            match kind {
                EntryKind::Dir => {}
                EntryKind::Link => {
                    warnings.push(Warning {
                        module: None,
                        message: format!(
                            "{name} is a symbolic link, not a process directory: covobs report follows no link in a session directory, so what it leads to is not in the report"
                        ),
                    });
                    continue;
                }
                _ => continue,
            }
            let entries = match sdir.entries(Some(Path::new(&name))) {
                Ok(e) => e,
                Err(e) => {
                    warnings.push(Warning {
                        module: None,
                        message: format!(
                            "{name} cannot be listed, so its artifacts are not in the report: {e}"
                        ),
                    });
                    continue;
                }
            };
            for (fname, _) in entries {
                let fname = fname.to_string_lossy().into_owned();
                if !is_metadata_name(&fname) {
                    continue;
                }
                metadata_files += 1;
                match read_artifact(sdir, &name, &fname) {
                    Ok(a) => artifacts.push(a),
                    Err(e) => unreadable.push(e),
                }
            }
        }
        if info.is_none() && metadata_files == 0 {
            return Err(ReportError::NotASession(dir.to_path_buf()));
        }
        artifacts.sort_by(|a, b| (a.meta.seq, &a.rel).cmp(&(b.meta.seq, &b.rel)));
        unreadable.sort_by(|a, b| (a.seq, &a.file).cmp(&(b.seq, &b.file)));
        Ok(Self {
            dir: dir.to_path_buf(),
            info: info.unwrap_or_default(),
            artifacts,
            unreadable,
            warnings,
        })
    }
}

/// Read one metadata file `<session>/<pdir>/<name>` (`<seq>-<runtime>.json`). `Err` is the
/// artifact left out, with what its names tell (seq, runtime, pid) and the reason.
pub fn read_artifact(dir: &Arc<SessionDir>, pdir: &str, name: &str) -> Result<Artifact, Excluded> {
    let rel_meta = format!("{pdir}/{name}");
    let meta_path = dir.path().join(&rel_meta);
    let meta = dir
        .read(Path::new(&rel_meta), None, MAX_METADATA_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|bytes| ArtifactMeta::parse(&bytes));
    let meta = match meta {
        Ok(m) => m,
        Err(why) => {
            let (seq, runtime) = name
                .strip_suffix(".json")
                .and_then(|stem| stem.split_once('-'))
                .unwrap_or(("", name));
            return Err(Excluded {
                seq: seq.parse().unwrap_or(0),
                pid: pdir
                    .split_once('-')
                    .and_then(|(pid, _)| pid.parse().ok())
                    .unwrap_or(0),
                runtime: runtime.to_string(),
                file: rel_meta,
                reason: format!("its metadata file cannot be used: {why}"),
            });
        }
    };
    let rel = format!("{pdir}/{}", meta.file);
    Ok(Artifact {
        data_path: dir.path().join(&rel),
        meta,
        meta_path,
        rel,
        dir: dir.clone(),
    })
}

fn checksum_matches(sum: &str, got: &[u8]) -> Result<(), String> {
    let Some(hex) = sum.strip_prefix("sha256:") else {
        return Err("its metadata records an unknown kind of checksum".into());
    };
    let got: String = got.iter().map(|b| format!("{b:02x}")).collect();
    if got.eq_ignore_ascii_case(hex) {
        Ok(())
    } else {
        // Neither digest is repeated: the bytes are not what the collector wrote, that is all.
        Err("checksum mismatch: the bytes on disk are not those its metadata records".into())
    }
}

impl Artifact {
    /// Re-check what the collector recorded: still marked valid, the file is there (a regular
    /// file of the session, not a link) with the recorded size - checked before reading - and
    /// checksum. `Err` carries the reason to exclude it.
    pub fn check_recorded(&self) -> Result<Vec<u8>, String> {
        if !self.meta.valid {
            return Err("the collector marked it invalid (see its lost event)".into());
        }
        let bytes =
            self.dir
                .read(Path::new(&self.rel), self.meta.bytes, MAX_ARTIFACT_BYTES)
                .map_err(|e| match e {
                    e @ (SessionFileError::SizeMismatch { .. }
                    | SessionFileError::TooLarge { .. }) => e.to_string(),
                    e => format!("{}: {e}", self.rel),
                })?;
        if let Some(sum) = &self.meta.checksum {
            checksum_matches(sum, &Sha256::digest(&bytes))?;
        }
        Ok(bytes)
    }

    /// The files of a directory artifact, re-checked like [`Artifact::check_recorded`]: each
    /// named part is a plain file inside the artifact directory with its recorded size, and the
    /// checksum covers them all in order. Returns (path in the target, bytes) per part.
    pub fn check_recorded_parts(&self) -> Result<Vec<(String, Vec<u8>)>, String> {
        if !self.meta.valid {
            return Err("the collector marked it invalid (see its lost event)".into());
        }
        if self.meta.parts.is_empty() {
            return Err("a directory artifact whose metadata lists no parts".into());
        }
        let mut out = Vec::new();
        let mut hasher = Sha256::new();
        let mut total = 0u64;
        for part in &self.meta.parts {
            let name = Path::new(&part.file);
            let mut comps = name.components();
            if !matches!(
                (comps.next(), comps.next()),
                (Some(std::path::Component::Normal(_)), None)
            ) {
                return Err(format!(
                    "part {:?} is not a file name in the artifact directory",
                    part.file
                ));
            }
            let rel = format!("{}/{}", self.rel, part.file);
            // The parts together are one artifact: what is left of its allowance.
            let cap = MAX_ARTIFACT_BYTES.saturating_sub(total);
            let bytes = self
                .dir
                .read(Path::new(&rel), Some(part.bytes), cap)
                .map_err(|e| format!("{rel}: {e}"))?;
            total += part.bytes;
            hasher.update(&bytes);
            out.push((part.path.clone(), bytes));
        }
        if let Some(n) = self.meta.bytes
            && n != total
        {
            return Err(format!(
                "its parts add up to {total} bytes, {n} recorded in its metadata"
            ));
        }
        if let Some(sum) = &self.meta.checksum {
            checksum_matches(sum, &hasher.finalize())?;
        }
        Ok(out)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn names() {
        assert!(is_process_dir("1234-protocol-runner"));
        assert!(is_process_dir("1-a-b"));
        assert!(!is_process_dir("modules"));
        assert!(!is_process_dir("report"));
        assert!(!is_process_dir("-x"));
        assert!(is_metadata_name("000007-llvm.json"));
        assert!(!is_metadata_name("000007-llvm.profraw"));
        assert!(!is_metadata_name("x-llvm.json"));
        assert!(!is_metadata_name("000007-.json"));
    }

    #[test]
    fn sha256() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn session(dir: &Path) -> Arc<SessionDir> {
        Arc::new(SessionDir::open(dir).expect("open"))
    }

    #[test]
    fn metadata_must_not_escape_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("1-x");
        fs::create_dir(&p).expect("mkdir");
        let meta = p.join("000001-llvm.json");
        let s = session(dir.path());
        for bad in ["../../etc/passwd", "/etc/passwd", "", "a/../b"] {
            fs::write(
                &meta,
                serde_json::json!({"seq": 1, "runtime": "llvm", "pid": 1, "valid": true, "file": bad})
                    .to_string(),
            )
            .expect("write");
            let e = read_artifact(&s, "1-x", "000001-llvm.json").expect_err(bad);
            assert!(e.reason.contains("field `file`"), "{}", e.reason);
            assert_eq!((e.seq, e.pid, e.runtime.as_str()), (1, 1, "llvm"));
            assert_eq!(e.file, "1-x/000001-llvm.json");
        }
        fs::write(&meta, "{not json").expect("write");
        let e = read_artifact(&s, "1-x", "000001-llvm.json").expect_err("bad json");
        assert!(e.reason.contains("not valid JSON"), "{}", e.reason);
    }

    #[test]
    fn metadata_of_the_wrong_types_names_the_field_and_quotes_nothing() {
        let ok = serde_json::json!({"seq": 7, "runtime": "llvm", "pid": 9, "valid": true,
            "file": "000007-llvm.profraw", "bytes": 10, "source": {"path": "/x", "inode": 1},
            "module": {"build_id": "ab", "copy": "modules/ab/p"},
            "parts": [{"file": "a.gcda", "path": "/t/a.gcda", "bytes": 3}]});
        let m = ArtifactMeta::parse(ok.to_string().as_bytes()).expect("valid");
        assert_eq!((m.seq, m.pid, m.bytes), (7, 9, Some(10)));
        for (field, value, says) in [
            (
                "seq",
                serde_json::json!("SECRET-7"),
                "field `seq`: a string where u64 is expected",
            ),
            (
                "pid",
                serde_json::json!(-1),
                "field `pid`: a value out of range",
            ),
            (
                "valid",
                serde_json::json!("SECRET"),
                "field `valid`: a string where a boolean",
            ),
            (
                "bytes",
                serde_json::json!([1]),
                "field `bytes`: an array where",
            ),
            (
                "module",
                serde_json::json!("SECRET"),
                "field `module`: a string where",
            ),
            (
                "parts",
                serde_json::json!([{"file": 1}]),
                "field `parts[0].file`: an integer",
            ),
            ("runtime", serde_json::json!(5), "field `runtime`"),
            ("trigger", serde_json::json!(["SECRET"]), "field `trigger`"),
            ("layout", serde_json::json!(LAYOUT + 1), "of a newer covobs"),
        ] {
            let mut v = ok.clone();
            v[field] = value;
            let e = ArtifactMeta::parse(v.to_string().as_bytes()).expect_err(field);
            assert!(e.contains(says), "{field}: {e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
        let mut v = ok.clone();
        v.as_object_mut().expect("object").remove("valid");
        assert_eq!(
            ArtifactMeta::parse(v.to_string().as_bytes()).expect_err("missing"),
            "missing field `valid`"
        );
        assert_eq!(
            ArtifactMeta::parse(b"").expect_err("empty"),
            "empty: no JSON at all"
        );
        assert_eq!(
            ArtifactMeta::parse(b"[1]").expect_err("array"),
            "not a JSON object"
        );
        let text = ok.to_string();
        let e = ArtifactMeta::parse(&text.as_bytes()[..text.len() / 2]).expect_err("cut");
        assert!(e.contains("truncated"), "{e}");
        let mut v = ok.clone();
        v["runtime"] = serde_json::json!("minicov");
        let m = ArtifactMeta::parse(v.to_string().as_bytes()).expect("a runtime of a newer covobs");
        assert_eq!(m.runtime, Runtime::Unknown("minicov".into()));
    }
}
