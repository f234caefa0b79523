//! What each label gained (docs/labels.md): per process instance the artifacts are successive
//! states of the same counters ([`Tally`]: resets and merged content accounted for); a label
//! gets, per instance whose state closes it, that instance's exact counts at that state minus
//! its counts at the state that closed its previous label (zero for its first: what it gained
//! since it started). Instances add up. States no label closes (a self dump, the detach-time
//! dump) only move the instance along: their gains go to the next label that closes.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    sync::Arc,
};

use super::events::Label;
use crate::report::{
    engine::{
        Engine,
        coverage::{ModuleCoverage, ProfileCounts, function_records},
        mapping::Mapping,
        profile::ModuleProfile,
    },
    llvm_tools::{Need, Toolsets, read_elf_notes},
    session::{
        Artifact, MAX_ARTIFACT_BYTES, MAX_MODULE_BYTES, ModuleMeta, Session, is_inside, sha256_hex,
    },
    session_dir::SessionDir,
    tally::{Instance, Tally},
};

/// Counter index -> hits gained.
pub type Hits = BTreeMap<u32, u64>;

/// One module (LLVM, by build id) and what each label gained in it.
pub struct LabelModule {
    pub build_id: Option<String>,
    /// Its file name, for messages.
    pub name: String,
    pub profile: Arc<ModuleProfile>,
    /// The engine for its coverage; None when it cannot read the module's mapping (`note`).
    pub engine: Option<Arc<Engine>>,
    pub note: Option<String>,
    /// Label index -> counters gained (only those that gained something).
    pub gained: BTreeMap<usize, Hits>,
}

impl LabelModule {
    /// The label's gains as a counter vector of the module.
    pub fn dense(&self, label: usize) -> Vec<u64> {
        let mut v = vec![0; self.profile.num_counters];
        for (&i, &h) in self.gained.get(&label).into_iter().flatten() {
            if let Some(c) = v.get_mut(i as usize) {
                *c = h;
            }
        }
        v
    }

    /// The label's coverage of this module, by covobs' engine.
    pub fn coverage(&self, label: usize) -> Option<ModuleCoverage> {
        let engine = self.engine.as_ref()?;
        Some(engine.coverage(&self.profile, &self.dense(label)))
    }

    /// The label's coverage of only the functions whose counters it gained.
    pub fn reached_coverage(&self, label: usize) -> Option<ModuleCoverage> {
        let engine = self.engine.as_ref()?;
        let gained = self.gained.get(&label)?;
        // The functions (by name and hash) whose counter ranges hold a gained counter.
        let mut keys: HashSet<(u64, u64)> = HashSet::new();
        let mut idx: Vec<u32> = gained.keys().copied().collect();
        idx.sort_unstable();
        for f in &self.profile.functions {
            let (lo, hi) = (f.counters.start as u32, f.counters.end as u32);
            let first = idx.partition_point(|&i| i < lo);
            if idx.get(first).is_some_and(|&i| i < hi) {
                keys.insert((f.name_ref, f.func_hash));
            }
        }
        let mapping = Mapping {
            version: engine.mapping.version,
            functions: engine
                .mapping
                .functions
                .iter()
                .filter(|f| keys.contains(&(f.name_ref, f.func_hash)))
                .cloned()
                .collect(),
        };
        let dense = self.dense(label);
        let counts = ProfileCounts::new(&self.profile.functions, &dense, true);
        Some(ModuleCoverage::new(
            function_records(&mapping, &counts),
            engine.flavor,
        ))
    }
}

/// A session's labels and what each gained.
pub struct Attribution {
    pub labels: Vec<Label>,
    pub modules: Vec<LabelModule>,
    /// What is not attributed, and why (a runtime labels do not cover yet, an unreadable module).
    pub notes: Vec<String>,
}

impl Attribution {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.labels.iter().position(|l| l.name == name)
    }
}

struct InstanceState {
    tally: Tally,
    at_label: Vec<u64>,
}

/// Attribute the session's states to its labels.
pub fn attribute(
    session: &Session,
    dir: &SessionDir,
    labels: Vec<Label>,
    tool_dirs: &[std::path::PathBuf],
) -> Attribution {
    // Each artifact closes the first label (in closing order) that names it.
    let mut closes: HashMap<&str, usize> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        for a in &l.artifacts {
            closes.entry(a.as_str()).or_insert(i);
        }
    }
    let mut notes: Vec<String> = Vec::new();
    let mut note = |n: String| {
        if !notes.contains(&n) {
            notes.push(n);
        }
    };
    let mut modules: Vec<LabelModule> = Vec::new();
    let mut by_key: HashMap<String, Result<usize, ()>> = HashMap::new();
    let mut states: HashMap<(usize, Instance), InstanceState> = HashMap::new();
    let mut seq_rel: HashMap<u64, &Artifact> = HashMap::new();
    let mut tools: Option<Toolsets> = None;
    for a in &session.artifacts {
        let label = closes.get(a.rel.as_str()).copied();
        if a.meta.runtime != "llvm" {
            if let Some(l) = label {
                note(format!(
                    "{} artifacts are not attributed to labels yet (label {} is closed by one)",
                    a.meta.runtime, labels[l].name
                ));
            }
            continue;
        }
        let bytes = match a.check_recorded() {
            Ok(b) => b,
            Err(why) => {
                note(format!("{}: {why}", a.rel));
                continue;
            }
        };
        let meta = a.meta.module.clone().unwrap_or_default();
        let key = meta
            .build_id
            .clone()
            .or_else(|| meta.copy.clone())
            .or_else(|| meta.path.clone())
            .unwrap_or_default();
        let m = match by_key.get(&key) {
            Some(Ok(m)) => *m,
            Some(Err(())) => continue,
            None => match open_module(dir, &meta, &bytes, tool_dirs, &mut tools) {
                Ok(m) => {
                    modules.push(m);
                    by_key.insert(key, Ok(modules.len() - 1));
                    modules.len() - 1
                }
                Err(why) => {
                    note(format!(
                        "module {key}: {why}; its artifacts are not attributed"
                    ));
                    by_key.insert(key, Err(()));
                    continue;
                }
            },
        };
        let module = &mut modules[m];
        let state = match module.profile.read(&bytes) {
            Ok(s) => s,
            Err(why) => {
                note(format!("{}: {why}", a.rel));
                continue;
            }
        };
        let merged = match merged_base(dir, a, &seq_rel) {
            Ok(Some(b)) => match module.profile.read(&b) {
                Ok(s) => Some(s.counters),
                Err(why) => {
                    note(format!("{}: the profile it merged: {why}", a.rel));
                    continue;
                }
            },
            Ok(None) => None,
            Err(why) => {
                note(format!("{}: {why}", a.rel));
                continue;
            }
        };
        seq_rel.insert(a.meta.seq, a);
        let instance = Instance {
            pid: a.meta.pid,
            start: a.meta.process_start_ns,
        };
        let len = module.profile.num_counters;
        let bits = module.profile.num_bitmap_bytes;
        let s = states
            .entry((m, instance))
            .or_insert_with(|| InstanceState {
                tally: Tally::new(len, bits),
                at_label: vec![0; len],
            });
        s.tally
            .push(instance, &state.counters, &state.bits, merged.as_deref());
        let Some(label) = label else { continue };
        let now = s.tally.counters();
        let gained = module.gained.entry(label).or_default();
        for (i, (&n, &was)) in now.iter().zip(&s.at_label).enumerate() {
            let g = n.saturating_sub(was);
            if g > 0 {
                let e = gained.entry(i as u32).or_default();
                *e = e.saturating_add(g);
            }
        }
        s.at_label.copy_from_slice(now);
    }
    Attribution {
        labels,
        modules,
        notes,
    }
}

/// The module's profile layout (from the session's copy of it) and, when covobs' engine reads
/// its mapping, the engine.
fn open_module(
    dir: &SessionDir,
    meta: &ModuleMeta,
    first: &[u8],
    tool_dirs: &[std::path::PathBuf],
    tools: &mut Option<Toolsets>,
) -> Result<LabelModule, String> {
    let copy = meta.copy.as_deref().ok_or("no module copy was recorded")?;
    if !is_inside(copy) {
        return Err(format!(
            "module copy {copy:?} is not a path inside the session"
        ));
    }
    let elf = dir
        .read(Path::new(copy), None, MAX_MODULE_BYTES)
        .map_err(|e| format!("the module copy {copy}: {e}"))?;
    let version = crate::report::engine::profile::readable_version(first)?;
    let profile = ModuleProfile::from_elf(&elf, version)?;
    let name = meta
        .path
        .as_deref()
        .unwrap_or(copy)
        .rsplit('/')
        .next()
        .unwrap_or(copy)
        .to_string();
    let major = match meta.llvm_major {
        Some(m) => Some(m),
        None => {
            let file = dir
                .open_file(Path::new(copy))
                .map_err(|e| format!("the module copy {copy}: {e}"))?;
            let (comments, _) = read_elf_notes(&file, Path::new(copy)).unwrap_or_default();
            let tools = tools.get_or_insert_with(|| Toolsets::discover(tool_dirs));
            Need::resolve(None, meta.producer.as_deref(), &comments, tools).major
        }
    };
    let (engine, note) = match major.map(|m| Engine::open(&elf, m)) {
        Some(Ok(e)) => (Some(Arc::new(e)), None),
        Some(Err(why)) => (None, Some(why)),
        None => (
            None,
            Some("the LLVM that built it is not known".to_string()),
        ),
    };
    Ok(LabelModule {
        build_id: meta.build_id.clone(),
        name,
        profile: Arc::new(profile),
        engine,
        note,
        gained: BTreeMap::new(),
    })
}

/// The bytes `a` merged (metadata `merged`): an earlier artifact, or a copy beside it.
fn merged_base(
    dir: &SessionDir,
    a: &Artifact,
    earlier: &HashMap<u64, &Artifact>,
) -> Result<Option<Vec<u8>>, String> {
    let Some(m) = &a.meta.merged else {
        return Ok(None);
    };
    let bytes = match (m.seq, &m.file) {
        (Some(seq), _) => earlier
            .get(&seq)
            .ok_or_else(|| format!("it merged artifact {seq}, which was not read"))?
            .check_recorded()?,
        (None, Some(file)) => {
            if !is_inside(file) || file.contains('/') {
                return Err(format!("merged content {file:?} is not a file name"));
            }
            let rel = Path::new(&a.rel)
                .parent()
                .unwrap_or(Path::new(""))
                .join(file);
            dir.read(&rel, m.bytes, MAX_ARTIFACT_BYTES)
                .map_err(|e| format!("the content it merged, {}: {e}", rel.display()))?
        }
        (None, None) => return Ok(None),
    };
    if let Some(sum) = &m.checksum {
        let want = sum.strip_prefix("sha256:").unwrap_or(sum);
        if !sha256_hex(&bytes).eq_ignore_ascii_case(want) {
            return Err("the content it merged does not match its recorded checksum".into());
        }
    }
    Ok(Some(bytes))
}
