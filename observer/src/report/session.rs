//! Reading a session directory (docs/output.md): session.json when present, and every artifact's
//! metadata file `<pid>-<comm>/<seq>-<runtime>.json`.
use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::ReportError;

/// The parts of session.json the report shows. Everything is optional: the report does not
/// depend on it.
#[derive(Clone, Debug, Default)]
pub struct SessionInfo {
    pub raw: Option<serde_json::Value>,
}

impl SessionInfo {
    fn str_field(&self, key: &str) -> Option<String> {
        self.raw.as_ref()?.get(key)?.as_str().map(str::to_string)
    }

    pub fn covobs_version(&self) -> Option<String> {
        self.str_field("covobs_version")
    }

    pub fn kernel(&self) -> Option<String> {
        self.str_field("kernel")
    }

    pub fn command(&self) -> Option<String> {
        let c = self.raw.as_ref()?.get("command")?.as_array()?;
        Some(
            c.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        )
    }

    /// (pid, comm, exe) of each target.
    pub fn targets(&self) -> Vec<(i64, String, String)> {
        let Some(t) = self
            .raw
            .as_ref()
            .and_then(|r| r.get("targets"))
            .and_then(|t| t.as_array())
        else {
            return Vec::new();
        };
        t.iter()
            .map(|t| {
                (
                    t.get("pid").and_then(|p| p.as_i64()).unwrap_or(-1),
                    t.get("comm")
                        .and_then(|c| c.as_str())
                        .unwrap_or("")
                        .to_string(),
                    t.get("exe")
                        .and_then(|c| c.as_str())
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect()
    }

    /// The working directory a target had when covobs adopted it (`targets[].cwd`).
    pub fn cwd_of(&self, pid: u32) -> Option<String> {
        self.raw
            .as_ref()?
            .get("targets")?
            .as_array()?
            .iter()
            .find(|t| t.get("pid").and_then(|p| p.as_u64()) == Some(u64::from(pid)))?
            .get("cwd")?
            .as_str()
            .map(str::to_string)
    }

    /// Session start and end as Unix nanoseconds, when known.
    pub fn span_unix_ns(&self) -> Option<(u64, u64)> {
        let r = self.raw.as_ref()?;
        Some((
            r.get("started_unix_ns")?.as_u64()?,
            r.get("ended_unix_ns")?.as_u64()?,
        ))
    }
}

/// The metadata of one artifact (docs/output.md, "Artifact metadata").
#[derive(Clone, Debug, Deserialize)]
pub struct ArtifactMeta {
    pub seq: u64,
    pub runtime: String,
    pub pid: u32,
    #[serde(default)]
    pub tid: Option<u32>,
    #[serde(default)]
    pub comm: Option<String>,
    #[serde(default)]
    pub trigger: Option<String>,
    #[serde(default)]
    pub start_ns: Option<u64>,
    #[serde(default)]
    pub end_ns: Option<u64>,
    #[serde(default)]
    pub collected_ns: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub checksum: Option<String>,
    pub valid: bool,
    pub file: String,
    #[serde(default)]
    pub format: Option<FormatMeta>,
    #[serde(default)]
    pub module: Option<ModuleMeta>,
    /// A directory artifact's files (gcov: the .gcda files of one dump and their .gcno notes).
    #[serde(default)]
    pub parts: Vec<PartMeta>,
    /// When the process started (CLOCK_BOOTTIME ns): with the pid, the process instance.
    #[serde(default)]
    pub process_start_ns: Option<u64>,
    /// What the runtime merged into its counters right before writing this dump.
    #[serde(default)]
    pub merged: Option<MergedMeta>,
}

/// The earlier content a dump merged (docs/output.md, "Exact counts"): the artifact `seq` of
/// the same file, or a copy kept beside this artifact (`file`, relative to its directory).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct MergedMeta {
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub checksum: Option<String>,
}

/// One file of a directory artifact.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PartMeta {
    /// Its name inside the artifact directory.
    pub file: String,
    /// Where it was in the target.
    pub path: String,
    pub bytes: u64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct FormatMeta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub version: Option<u64>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct ModuleMeta {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub build_id: Option<String>,
    /// Relative to the session directory: `modules/<build-id>/<file name>`.
    #[serde(default)]
    pub copy: Option<String>,
    #[serde(default)]
    pub producer: Option<String>,
    #[serde(default)]
    pub llvm_major: Option<u32>,
}

/// One artifact: its metadata and where it lives.
#[derive(Clone, Debug)]
pub struct Artifact {
    pub meta: ArtifactMeta,
    /// The metadata file.
    pub meta_path: PathBuf,
    /// The artifact bytes (file, or directory for multi-file gcov dumps).
    pub data_path: PathBuf,
    /// The artifact, relative to the session directory (for messages and the summary).
    pub rel: String,
}

/// A session directory, read.
#[derive(Clone, Debug)]
pub struct Session {
    pub dir: PathBuf,
    pub info: SessionInfo,
    /// In collection order (seq).
    pub artifacts: Vec<Artifact>,
}

/// `<pid>-<comm>`: a decimal pid, a dash, anything.
fn is_process_dir(name: &str) -> bool {
    name.split_once('-')
        .is_some_and(|(pid, _)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
}

/// `<seq>-<runtime>.json`: at least one digit, a dash, a runtime name.
fn is_metadata_name(name: &str) -> bool {
    name.strip_suffix(".json")
        .and_then(|stem| stem.split_once('-'))
        .is_some_and(|(seq, rt)| {
            !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) && !rt.is_empty()
        })
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> ReportError + '_ {
    move |source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    }
}

impl Session {
    /// Read a session directory. Fails (as bad input) when it is missing, is not a session, or
    /// holds corrupt JSON.
    pub fn open(dir: &Path) -> Result<Self, ReportError> {
        if !dir.is_dir() {
            return Err(ReportError::NoSuchDir(dir.to_path_buf()));
        }
        let session_json = dir.join("session.json");
        let info = match fs::read(&session_json) {
            Ok(bytes) => SessionInfo {
                raw: Some(serde_json::from_slice(&bytes).map_err(|source| {
                    ReportError::BadJson {
                        path: session_json.clone(),
                        source,
                    }
                })?),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SessionInfo::default(),
            Err(e) => return Err(read_err(&session_json)(e)),
        };
        let mut artifacts = Vec::new();
        let mut process_dirs = 0usize;
        for entry in fs::read_dir(dir).map_err(read_err(dir))? {
            let entry = entry.map_err(read_err(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_process_dir(&name) || !entry.file_type().map_err(read_err(dir))?.is_dir() {
                continue;
            }
            let pdir = entry.path();
            for f in fs::read_dir(&pdir).map_err(read_err(&pdir))? {
                let f = f.map_err(read_err(&pdir))?;
                let fname = f.file_name().to_string_lossy().into_owned();
                if !is_metadata_name(&fname) {
                    continue;
                }
                process_dirs += 1;
                artifacts.push(read_artifact(dir, &name, &f.path())?);
            }
        }
        if info.raw.is_none() && process_dirs == 0 {
            return Err(ReportError::NotASession(dir.to_path_buf()));
        }
        artifacts.sort_by(|a, b| (a.meta.seq, &a.rel).cmp(&(b.meta.seq, &b.rel)));
        Ok(Self {
            dir: dir.to_path_buf(),
            info,
            artifacts,
        })
    }
}

/// Read one metadata file `<session>/<pdir>/<seq>-<runtime>.json`.
pub fn read_artifact(
    session: &Path,
    pdir: &str,
    meta_path: &Path,
) -> Result<Artifact, ReportError> {
    let bytes = fs::read(meta_path).map_err(read_err(meta_path))?;
    let meta: ArtifactMeta =
        serde_json::from_slice(&bytes).map_err(|source| ReportError::BadJson {
            path: meta_path.to_path_buf(),
            source,
        })?;
    let bad = |message: String| ReportError::BadMetadata {
        path: meta_path.to_path_buf(),
        message,
    };
    // The artifact must stay inside its process directory: no absolute paths, no `..`.
    let file = Path::new(&meta.file);
    if meta.file.is_empty()
        || file.is_absolute()
        || file
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(bad(format!(
            "\"file\" must name a file in its directory, not {:?}",
            meta.file
        )));
    }
    let data_path = session.join(pdir).join(file);
    let rel = format!("{pdir}/{}", meta.file);
    Ok(Artifact {
        meta,
        meta_path: meta_path.to_path_buf(),
        data_path,
        rel,
    })
}

impl Artifact {
    /// Re-check what the collector recorded: still marked valid, the file is there with the
    /// recorded size and checksum. `Err` carries the reason to exclude it.
    pub fn check_recorded(&self) -> Result<Vec<u8>, String> {
        if !self.meta.valid {
            return Err("the collector marked it invalid (see its lost event)".into());
        }
        let mut f = fs::File::open(&self.data_path)
            .map_err(|e| format!("cannot open {}: {e}", self.data_path.display()))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {}: {e}", self.data_path.display()))?;
        if let Some(n) = self.meta.bytes
            && n != bytes.len() as u64
        {
            return Err(format!(
                "{} bytes on disk, {n} recorded in its metadata",
                bytes.len()
            ));
        }
        if let Some(sum) = &self.meta.checksum {
            let Some(hex) = sum.strip_prefix("sha256:") else {
                return Err(format!("unknown checksum kind {sum:?}"));
            };
            let got = sha256_hex(&bytes);
            if !got.eq_ignore_ascii_case(hex) {
                return Err(format!(
                    "checksum mismatch: the file has sha256:{got}, its metadata says {sum}"
                ));
            }
        }
        Ok(bytes)
    }
}

impl Artifact {
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
            let p = self.data_path.join(name);
            let meta = fs::symlink_metadata(&p)
                .map_err(|e| format!("cannot open {}: {e}", p.display()))?;
            if !meta.is_file() {
                return Err(format!("{} is not a regular file", p.display()));
            }
            let bytes = fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            if bytes.len() as u64 != part.bytes {
                return Err(format!(
                    "{}: {} bytes on disk, {} recorded in its metadata",
                    p.display(),
                    bytes.len(),
                    part.bytes
                ));
            }
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
            let Some(hex) = sum.strip_prefix("sha256:") else {
                return Err(format!("unknown checksum kind {sum:?}"));
            };
            let got: String = hasher
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if !got.eq_ignore_ascii_case(hex) {
                return Err(format!(
                    "checksum mismatch: its parts have sha256:{got}, its metadata says {sum}"
                ));
            }
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

    #[test]
    fn metadata_must_not_escape_its_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("1-x");
        fs::create_dir(&p).expect("mkdir");
        let meta = p.join("000001-llvm.json");
        for bad in ["../../etc/passwd", "/etc/passwd", ""] {
            fs::write(
                &meta,
                serde_json::json!({"seq": 1, "runtime": "llvm", "pid": 1, "valid": true, "file": bad})
                    .to_string(),
            )
            .expect("write");
            let e = read_artifact(dir.path(), "1-x", &meta).expect_err(bad);
            assert!(e.is_bad_input(), "{e}");
        }
        fs::write(&meta, "{not json").expect("write");
        assert!(matches!(
            read_artifact(dir.path(), "1-x", &meta),
            Err(ReportError::BadJson { .. })
        ));
    }
}
