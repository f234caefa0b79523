//! LLVM source-based coverage of one module (executable or shared library): a running indexed
//! profile that every new raw profile is merged into (`llvm-profdata merge -sparse`), and exports
//! of its coverage (`llvm-cov export -summary-only` for the figures, `-format=lcov` for lines).
//!
//! Merging each artifact on its own into the running profile is also its final validation: a
//! corrupt raw profile fails its own merge (and is left out with llvm-profdata's reason) instead
//! of failing the merge of everything.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
};

use super::{
    ReportError,
    engine::{
        Engine,
        profile::{self, ArtifactCounters, ModuleProfile},
        summary::Summarizer,
    },
    lcov,
    llvm_tools::Toolset,
    model::{Counts, Coverage, Totals},
    session_dir::Pinned,
    tally::{Instance, Pushed, Tally},
};

/// A file that is deleted when the last reference goes.
#[derive(Debug)]
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A raw profile for llvm-profdata: covobs' own copy of the bytes it checked (in its work
/// directory, never a path of the session a tool would resolve again), and the artifact's name
/// for messages.
#[derive(Debug)]
pub struct Input {
    pub file: TempFile,
    pub shown: PathBuf,
}

/// One module's exact counts (see [`super::tally`]): its profile layout, the counts, and a raw
/// profile of it to write the counts into for llvm-profdata.
#[derive(Debug)]
pub struct Exact {
    pub profile: Arc<ModuleProfile>,
    pub tally: Tally,
    template: Vec<u8>,
    template_at: ArtifactCounters,
}

/// One module's coverage: its exact counts ([`Exact`]) evaluated by covobs' engine against the
/// module's mapping ([`Engine`]), or - for a mapping the engine does not read - written as one
/// raw profile and exported by llvm-cov; for raw profiles covobs does not read, the running merge
/// of its raw profiles by llvm-profdata (counts then add up over dumps).
pub struct LlvmModule {
    /// llvm-profdata and llvm-cov of the module's LLVM, when this machine has them.
    pub tools: Option<Toolset>,
    /// The LLVM major that built the module, when known (the engine reproduces its llvm-cov).
    pub major: Option<u32>,
    /// The module's mapping, once opened; `engine_note` says why not when it could not be.
    pub engine: Option<Arc<Engine>>,
    pub engine_note: Option<String>,
    /// The binary the mapping is read from (the session's copy, as covobs opened it).
    pub binary: Pinned,
    work: PathBuf,
    current: Option<Arc<TempFile>>,
    pub exact: Option<Exact>,
    /// Why the module's counts are not exact (its raw profiles are merged as they are).
    pub inexact: Option<String>,
    /// Raw profile version of the first artifact: all the others must have it too.
    raw_version: Option<u64>,
    /// Merges done (names the profiles, and tells an export's freshness).
    pub merged: u64,
    /// Artifacts (seq, raw profile) whose merge waits for the next one: they repeat counters
    /// merged already, so the coverage does not need them before the end.
    pending: Vec<(u64, Input)>,
    /// The engine's per-point figures, kept from point to point.
    summarizer: Option<Summarizer>,
}

/// Deferred artifacts that failed their merge after all: (seq, reason).
pub type LateFailures = Vec<(u64, String)>;

impl LlvmModule {
    pub fn new(tools: Option<Toolset>, major: Option<u32>, binary: Pinned, work: PathBuf) -> Self {
        Self {
            tools,
            major,
            engine: None,
            engine_note: None,
            binary,
            work,
            current: None,
            raw_version: None,
            merged: 0,
            pending: Vec::new(),
            exact: None,
            inexact: None,
            summarizer: None,
        }
    }

    /// Take in one raw profile as the next state of `instance` (`merged`: the raw profile the
    /// runtime merged into its counters before writing it). `Err` is the reason to leave it
    /// out; `Ok(None)` means the engine does not read this profile's version: merge it with
    /// [`LlvmModule::add`].
    pub fn add_state(
        &mut self,
        instance: Instance,
        bytes: &[u8],
        merged: Option<&[u8]>,
    ) -> Result<Option<Pushed>, String> {
        if self.inexact.is_some() {
            return Ok(None);
        }
        if self.exact.is_none() {
            let version = match profile::readable_version(bytes) {
                Ok(v) => v,
                Err(why) => {
                    self.inexact = Some(why);
                    return Ok(None);
                }
            };
            let elf = std::fs::read(&self.binary.path)
                .map_err(|e| format!("reading {}: {e}", self.binary.shown.display()))?;
            let profile = match ModuleProfile::from_elf(&elf, version) {
                Ok(p) => p,
                Err(why) => {
                    self.inexact = Some(why);
                    return Ok(None);
                }
            };
            let at = profile.read(bytes)?;
            let tally = Tally::new(profile.num_counters, profile.num_bitmap_bytes);
            match self.major.map(|m| Engine::open(&elf, m)) {
                Some(Ok(e)) => self.engine = Some(Arc::new(e)),
                Some(Err(why)) => self.engine_note = Some(why),
                None if self.engine_note.is_some() => {}
                None => self.engine_note = Some("the LLVM that built it is not known".into()),
            }
            if self.engine.is_none() && self.tools.is_none() {
                return Err(self.engine_note.clone().unwrap_or_default());
            }
            self.exact = Some(Exact {
                profile: Arc::new(profile),
                tally,
                template: bytes.to_vec(),
                template_at: ArtifactCounters {
                    counters: Vec::new(),
                    ..at
                },
            });
        }
        let Some(exact) = self.exact.as_mut() else {
            return Ok(None);
        };
        let state = exact.profile.read_view(bytes)?;
        let base = match merged {
            Some(m) => Some(
                exact
                    .profile
                    .read_view(m)
                    .map_err(|e| format!("the profile it merged: {e}"))?,
            ),
            None => None,
        };
        Ok(Some(exact.tally.push(
            instance,
            &state.counters,
            state.bits,
            base.as_ref().map(|b| &*b.counters),
        )))
    }

    /// Whether covobs' engine computes this module's coverage (no llvm-cov).
    pub fn native(&self) -> bool {
        self.engine.is_some() && self.exact.is_some()
    }

    /// What computes the module's coverage, for the summary.
    pub fn describe(&self) -> String {
        match (&self.engine, &self.tools) {
            (Some(e), _) if self.exact.is_some() => format!(
                "covobs engine (llvm-cov {} semantics, coverage mapping version {})",
                e.flavor.llvm_major,
                e.mapping.version + 1
            ),
            (_, Some(t)) => t.describe(),
            _ => "none".into(),
        }
    }

    /// The exact counts are new: with the engine, nothing to do until an export; otherwise write
    /// them as one raw profile and make it the profile llvm-cov reads.
    pub fn materialize(&mut self) -> Result<(), String> {
        if self.native() {
            self.merged += 1;
            return Ok(());
        }
        let Some(exact) = &self.exact else {
            return Ok(());
        };
        let raw = profile::with_counters(
            &exact.template,
            &exact.template_at,
            exact.tally.counters(),
            &exact.tally.bits(),
        );
        let path = self
            .work
            .join(format!("exact-{:06}.profraw", self.merged + 1));
        let file = TempFile(path);
        std::fs::write(&file.0, &raw).map_err(|e| format!("{}: {e}", file.0.display()))?;
        let input = Input {
            shown: PathBuf::from("the exact counts"),
            file,
        };
        // Only this profile: it holds the whole module's counts.
        self.current = None;
        self.merge(&[&input])
    }

    /// Add one raw profile (already header-checked). With `defer`, only note it for the next
    /// merge. Otherwise merge it (and what waits) into the running profile now; `Err` is the
    /// reason to leave it out, the running profile is then without it. Deferred artifacts that
    /// turn out bad are returned with their reasons either way.
    pub fn add(
        &mut self,
        profraw: Input,
        seq: u64,
        raw_version: u64,
        defer: bool,
    ) -> (Result<(), String>, LateFailures) {
        if let Some(v) = self.raw_version
            && v != raw_version
        {
            let why = format!(
                "raw profile version {raw_version}, but this module's earlier profiles are version {v}"
            );
            return (Err(why), Vec::new());
        }
        if defer && self.current.is_some() {
            self.pending.push((seq, profraw));
            return (Ok(()), Vec::new());
        }
        let pending = std::mem::take(&mut self.pending);
        let mut inputs: Vec<&Input> = pending.iter().map(|(_, p)| p).collect();
        inputs.push(&profraw);
        if self.merge(&inputs).is_ok() {
            self.raw_version = Some(raw_version);
            return (Ok(()), Vec::new());
        }
        // Something in the batch is bad: one at a time, to know what.
        let late = self.merge_each(pending);
        let result = self.merge(&[&profraw]);
        if result.is_ok() {
            self.raw_version = Some(raw_version);
        }
        (result, late)
    }

    /// Merge whatever waits. Returns the deferred artifacts that turned out bad.
    pub fn flush(&mut self) -> LateFailures {
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Vec::new();
        }
        let inputs: Vec<&Input> = pending.iter().map(|(_, p)| p).collect();
        if self.merge(&inputs).is_ok() {
            return Vec::new();
        }
        self.merge_each(pending)
    }

    fn merge_each(&mut self, items: Vec<(u64, Input)>) -> LateFailures {
        items
            .into_iter()
            .filter_map(|(seq, p)| self.merge(&[&p]).err().map(|why| (seq, why)))
            .collect()
    }

    /// One `llvm-profdata merge` of the running profile and `inputs` into a new running profile.
    fn merge(&mut self, inputs: &[&Input]) -> Result<(), String> {
        let Some(tools) = self.tools.clone() else {
            return Err(self
                .engine_note
                .clone()
                .unwrap_or_else(|| "no llvm-profdata for it".into()));
        };
        let out = self.work.join(format!("{:06}.profdata", self.merged + 1));
        let mut cmd = Command::new(&tools.profdata);
        // Fail on any bad input: with more than one input, a permissive mode would merge the
        // others and drop the bad one with only a warning.
        cmd.arg("merge")
            .arg("-sparse")
            .arg("--failure-mode=any")
            .arg("-o")
            .arg(&out);
        if let Some(cur) = &self.current {
            cmd.arg(&cur.0);
        }
        cmd.args(inputs.iter().map(|i| &i.file.0));
        // The output exists (possibly partial) from the moment the tool opens it.
        let out_file = TempFile(out);
        run(cmd, &tools.profdata).map_err(|e| {
            // Named as the user knows them.
            let e = inputs.iter().fold(e, |e, i| {
                e.replace(&*i.file.0.to_string_lossy(), &i.shown.to_string_lossy())
            });
            format!(
                "llvm-profdata {} rejects it: {}",
                tools.version,
                e.trim_end()
            )
        })?;
        self.current = Some(Arc::new(out_file));
        self.merged += 1;
        Ok(())
    }

    /// The export of a timeline point: without `detail`, the engine's figures are computed
    /// right here (only the functions whose counters changed since the last point are computed
    /// again); otherwise as [`LlvmModule::export`].
    pub fn export_point(&mut self, detail: bool) -> Option<Export> {
        if detail || !self.native() {
            return self.export(detail);
        }
        let (Some(engine), Some(exact)) = (&self.engine, &mut self.exact) else {
            return self.export(detail);
        };
        let s = self
            .summarizer
            .get_or_insert_with(|| Summarizer::new(&engine.mapping, &exact.profile, engine.flavor));
        // Only the functions whose counters changed since the last point are looked at.
        let files = s.summary_changed(
            &engine.mapping,
            exact.tally.counters(),
            exact.tally.changed_blocks(),
        );
        exact.tally.clear_changed();
        Some(Export::Ready(Snapshot {
            files,
            detail: None,
        }))
    }

    /// An export of the current state, to run anywhere (it holds its own reference to the
    /// profile it reads). `None` before the first merge.
    pub fn export(&self, detail: bool) -> Option<Export> {
        if let (Some(engine), Some(exact)) = (&self.engine, &self.exact) {
            return Some(Export::Native {
                engine: engine.clone(),
                profile: exact.profile.clone(),
                counters: exact.tally.counters().to_vec(),
                detail,
            });
        }
        Some(Export::Tools {
            cov: self.tools.as_ref()?.cov.clone(),
            binary: self.binary.clone(),
            profdata: self.current.clone()?,
            detail,
        })
    }
}

/// A module's coverage at one point of the timeline: computed by the engine, or one
/// `llvm-cov export` (two, with `detail`).
pub enum Export {
    Native {
        engine: Arc<Engine>,
        profile: Arc<ModuleProfile>,
        counters: Vec<u64>,
        detail: bool,
    },
    Tools {
        cov: PathBuf,
        binary: Pinned,
        profdata: Arc<TempFile>,
        detail: bool,
    },
    /// Computed already.
    Ready(Snapshot),
}

/// A module's coverage at one point: per-file figures, and line-level detail when asked for.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub files: BTreeMap<String, Totals>,
    pub detail: Option<Coverage>,
}

impl Export {
    pub fn run(self) -> Result<Snapshot, String> {
        let (cov, binary, profdata, detail) = match self {
            Export::Ready(s) => return Ok(s),
            Export::Native {
                engine,
                profile,
                counters,
                detail,
            } => {
                let c = engine.coverage(&profile, &counters);
                if !detail {
                    return Ok(Snapshot {
                        files: c.summary(),
                        detail: None,
                    });
                }
                // The detail built directly, or read back from the LCOV text when a name would
                // not come through it unchanged.
                let (detail, files) = match c.detail_with_summary() {
                    Some(both) => both,
                    None => {
                        let (text, files) = c.lcov_with_summary();
                        let detail =
                            lcov::parse(&text, "covobs' engine").map_err(|e| e.to_string())?;
                        (detail, files)
                    }
                };
                return Ok(Snapshot {
                    files,
                    detail: Some(detail),
                });
            }
            Export::Tools {
                cov,
                binary,
                profdata,
                detail,
            } => (cov, binary, profdata, detail),
        };
        let profile = format!("-instr-profile={}", profdata.0.display());
        let mut cmd = Command::new(&cov);
        cmd.arg("export")
            .arg("-summary-only")
            .arg(&profile)
            .arg(&binary.path);
        let failed = |e: String| format!("llvm-cov export: {}", binary.unproc(e.trim_end()));
        let json = run(cmd, &cov).map_err(failed)?;
        let files = parse_summary(&json)?;
        let detail = if detail {
            let mut cmd = Command::new(&cov);
            cmd.arg("export")
                .arg("-format=lcov")
                .arg(&profile)
                .arg(&binary.path);
            let text = run(cmd, &cov).map_err(failed)?;
            Some(lcov::parse(&text, "llvm-cov export -format=lcov").map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(Snapshot { files, detail })
    }
}

/// Run a tool; stdout on success, the tool's complaint (stderr, else stdout) otherwise.
fn run(mut cmd: Command, tool: &Path) -> Result<String, String> {
    let out = cmd
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            ReportError::Spawn {
                tool: tool.to_path_buf(),
                source: e,
            }
            .to_string()
        })?;
    if out.status.success() {
        return String::from_utf8(out.stdout).map_err(|_| "output is not UTF-8".to_string());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let msg = if stderr.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        stderr.into_owned()
    };
    // One line: the tool's messages (at most three), without the blank ones.
    let line = msg
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(3)
        .collect::<Vec<_>>()
        .join("; ");
    let line = if line.is_empty() {
        "failed without a message".to_string()
    } else {
        line
    };
    Err(format!("{line} ({})", out.status))
}

/// Per-file figures from `llvm-cov export -summary-only` (JSON, version 2.x).
pub fn parse_summary(json: &str) -> Result<BTreeMap<String, Totals>, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("llvm-cov summary is not JSON: {e}"))?;
    let mut files = BTreeMap::new();
    let data = v
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or("llvm-cov summary without \"data\"")?;
    for d in data {
        let Some(fs) = d.get("files").and_then(|f| f.as_array()) else {
            continue;
        };
        for f in fs {
            let name = f
                .get("filename")
                .and_then(|n| n.as_str())
                .ok_or("llvm-cov summary: a file without a name")?;
            let s = f
                .get("summary")
                .ok_or("llvm-cov summary: a file without a summary")?;
            let counts = |k: &str| -> Counts {
                let c = s.get(k);
                let n = |f: &str| {
                    c.and_then(|c| c.get(f))
                        .and_then(|x| x.as_u64())
                        .unwrap_or(0)
                };
                Counts::new(n("covered"), n("count"))
            };
            files.insert(
                name.to_string(),
                Totals {
                    lines: counts("lines"),
                    functions: counts("functions"),
                    branches: counts("branches"),
                    regions: Some(counts("regions")),
                    points: None,
                },
            );
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_json() {
        let json = r#"{"data":[{"files":[{"filename":"/tmp/rep/t.c","summary":{
            "branches":{"count":14,"covered":9,"notcovered":5,"percent":64.2},
            "functions":{"count":3,"covered":3,"percent":100},
            "instantiations":{"count":3,"covered":3,"percent":100},
            "lines":{"count":17,"covered":17,"percent":100},
            "regions":{"count":21,"covered":17,"notcovered":4,"percent":80.9}}}],
            "totals":{}}],"type":"llvm.coverage.json.export","version":"2.0.1"}"#;
        let files = parse_summary(json).expect("parse");
        let t = files["/tmp/rep/t.c"];
        assert_eq!(t.lines, Counts::new(17, 17));
        assert_eq!(t.functions, Counts::new(3, 3));
        assert_eq!(t.branches, Counts::new(9, 14));
        assert_eq!(t.regions, Some(Counts::new(17, 21)));
        assert!(parse_summary("{}").is_err());
        assert!(parse_summary("not json").is_err());
    }
}
