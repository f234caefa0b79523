//! Per module, the reader of its runtime's artifacts (one per runtime, [`Source`]): each
//! artifact becomes a state of its process instance's counters (for the count model in
//! [`super::compute`]), and a label's gains become that label's coverage of the module.
use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::Path,
};

use super::{
    bisect::BisectSource, compute::Hits, gcov::GcovSource, kcov::KcovSource, llvm::LlvmSource,
    runtime::Runtime, sancov::SancovSource,
};
use crate::{
    ReportOptions,
    llvm_tools::Toolsets,
    model::{Coverage, Totals},
    session::{Artifact, MAX_ARTIFACT_BYTES, ModuleMeta, Session, is_inside, sha256_hex},
    session_dir::SessionDir,
};

/// What the readers share while a session's artifacts go through.
pub struct Ctx<'a> {
    pub dir: &'a SessionDir,
    pub session: &'a Session,
    pub opts: &'a ReportOptions,
    pub tools: Option<Toolsets>,
    /// Artifacts read so far, by seq (a dump's `merged` may name one).
    pub earlier: HashMap<u64, &'a Artifact>,
}

impl Ctx<'_> {
    /// The session's copy of a module, opened (beneath the session, through no link).
    pub fn module_copy(&self, meta: &ModuleMeta) -> Result<(File, String), String> {
        let copy = meta.copy.as_deref().ok_or("no module copy was recorded")?;
        if !is_inside(copy) {
            return Err(format!(
                "module copy {copy:?} is not a path inside the session"
            ));
        }
        let f = self
            .dir
            .open_file(Path::new(copy))
            .map_err(|e| format!("the module copy {copy}: {e}"))?;
        Ok((f, copy.to_string()))
    }

    /// The bytes `a` merged before it was written (metadata `merged`): an earlier artifact,
    /// or a copy beside it.
    pub fn merged_base(&self, a: &Artifact) -> Result<Option<Vec<u8>>, String> {
        let Some(m) = &a.meta.merged else {
            return Ok(None);
        };
        let bytes = match (m.seq, &m.file) {
            (Some(seq), _) => self
                .earlier
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
                self.dir
                    .read(&rel, m.bytes, MAX_ARTIFACT_BYTES)
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
}

/// One state of a process instance's counters, as an artifact holds them.
#[derive(Debug, Default)]
pub struct State {
    pub counters: Vec<u64>,
    /// MC/DC bitmap bytes (LLVM).
    pub bits: Vec<u8>,
    /// What the runtime merged into its counters right before writing it.
    pub merged: Option<Vec<u64>>,
}

/// A label's coverage of one module.
#[derive(Debug, Default)]
pub struct Part {
    pub detail: Coverage,
    /// Per-file figures (as the runtime's report counts them).
    pub files: BTreeMap<String, Totals>,
    /// Code regions with a count (LLVM): file, start and end.
    pub regions: Vec<(String, u32, u32, u32, u32)>,
}

impl Part {
    /// A part whose figures are those of its line detail.
    pub fn of(detail: Coverage) -> Self {
        let files = detail
            .files
            .iter()
            .map(|(p, f)| (p.clone(), f.totals()))
            .collect();
        Self {
            detail,
            files,
            regions: Vec::new(),
        }
    }
}

/// The reader of one module's artifacts, per runtime.
pub enum Source {
    Llvm(Box<LlvmSource>),
    Gcov(Box<GcovSource>),
    Bisect(Box<BisectSource>),
    Sancov(Box<SancovSource>),
    Kcov(Box<KcovSource>),
}

impl Source {
    /// The reader of `a`'s module.
    pub fn open(runtime: Runtime, ctx: &mut Ctx<'_>, a: &Artifact) -> Result<Self, String> {
        Ok(match runtime {
            Runtime::Llvm => Self::Llvm(Box::new(LlvmSource::open(ctx, a)?)),
            Runtime::Gcov => Self::Gcov(Box::default()),
            Runtime::Bisect => Self::Bisect(Box::new(BisectSource::open(ctx, a))),
            Runtime::Sancov => Self::Sancov(Box::new(SancovSource::open(ctx, a)?)),
            Runtime::Kcov => Self::Kcov(Box::default()),
        })
    }

    /// The state `a` holds (the module's counters may grow: [`Source::len`] after it).
    pub fn state(&mut self, ctx: &mut Ctx<'_>, a: &Artifact) -> Result<State, String> {
        match self {
            Self::Llvm(s) => s.state(ctx, a),
            Self::Gcov(s) => s.state(ctx, a),
            Self::Bisect(s) => s.state(a),
            Self::Sancov(s) => s.state(ctx, a),
            Self::Kcov(s) => s.state(a),
        }
    }

    /// The module's counters (so far).
    pub fn len(&self) -> usize {
        match self {
            Self::Llvm(s) => s.profile.num_counters,
            Self::Gcov(s) => s.len(),
            Self::Bisect(s) => s.len(),
            Self::Sancov(s) => s.len(),
            Self::Kcov(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn bits_len(&self) -> usize {
        match self {
            Self::Llvm(s) => s.profile.num_bitmap_bytes,
            Self::Gcov(_) | Self::Bisect(_) | Self::Sancov(_) | Self::Kcov(_) => 0,
        }
    }

    /// The hit map key of counter `index` (itself, or its PC).
    pub fn key(&self, index: u64) -> u64 {
        match self {
            Self::Llvm(_) | Self::Gcov(_) | Self::Bisect(_) => index,
            Self::Sancov(s) => s.pc(index),
            Self::Kcov(s) => s.pc(index),
        }
    }

    /// Why the module's labels have no coverage (their hit maps are still written).
    pub fn note(&self) -> Option<String> {
        match self {
            Self::Llvm(s) => s.note.clone(),
            Self::Gcov(_) | Self::Bisect(_) | Self::Sancov(_) | Self::Kcov(_) => None,
        }
    }

    /// A label's coverage of the module from its gains. With `full`, every line of the module
    /// (as a report shows them); otherwise at least the lines the label reached. None: the
    /// module's coverage cannot be computed (its `note` says why).
    pub fn coverage(
        &self,
        ctx: &CoverageCtx<'_>,
        gained: &Hits,
        full: bool,
    ) -> Result<Option<Part>, String> {
        match self {
            Self::Llvm(s) => s.coverage(gained, full),
            Self::Gcov(s) => s.coverage(ctx, gained).map(Some),
            Self::Bisect(s) => Ok(Some(s.coverage(gained, full))),
            Self::Sancov(s) => Ok(Some(s.coverage(gained))),
            Self::Kcov(s) => s.coverage(ctx, gained).map(Some),
        }
    }
}

/// What computing a label's coverage needs besides the module.
pub struct CoverageCtx<'a> {
    pub opts: &'a ReportOptions,
}

/// The gains as a counter vector of `len` counters.
pub fn dense(gained: &Hits, len: usize) -> Vec<u64> {
    let mut v = vec![0; len];
    for (&i, &h) in gained {
        if let Some(c) = usize::try_from(i).ok().and_then(|i| v.get_mut(i)) {
            *c = h;
        }
    }
    v
}
