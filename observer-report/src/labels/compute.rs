//! What each label gained (docs/labels.md): per process instance the artifacts are successive
//! states of the same counters ([`Tally`]: resets and merged content accounted for); a label
//! gets, per instance whose state closes it, that instance's exact counts at that state minus
//! its counts at the state that closed its previous label (zero for its first: what it gained
//! since it started). Instances add up. States no label closes (a self dump, the detach-time
//! dump) only move the instance along: their gains go to the next label that closes.
//!
//! The same for every runtime: each module's reader ([`Source`], one per [`Runtime`]) turns an
//! artifact into a state of its instance's counters.
use std::collections::{BTreeMap, HashMap};

use super::{
    events::Label,
    runtime::Runtime,
    source::{Ctx, Source},
};
use crate::{
    ReportOptions,
    session::Session,
    session_dir::SessionDir,
    tally::{Instance, Tally},
};

/// Counter index -> hits gained.
pub type Hits = BTreeMap<u64, u64>;

/// One module (by runtime and build id) and what each label gained in it.
pub struct LabelModule {
    pub runtime: Runtime,
    pub build_id: Option<String>,
    /// Its file name, for messages.
    pub name: String,
    pub source: Source,
    /// Label index -> counters gained (only those that gained something).
    pub gained: BTreeMap<usize, Hits>,
}

/// A session's labels and what each gained.
pub struct Attribution {
    pub labels: Vec<Label>,
    pub modules: Vec<LabelModule>,
    /// What is not attributed, and why (a runtime labels do not know, an unreadable module).
    pub notes: Vec<String>,
    /// Per label, the other labels closed by one of the same states (a request that joined a
    /// dump asked for another): the gains of a shared state go to the first of them.
    pub shares: Vec<Vec<usize>>,
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
    opts: &ReportOptions,
) -> Attribution {
    // Each artifact closes the first label (in closing order) that names it.
    let mut closes: HashMap<&str, usize> = HashMap::new();
    let mut closing: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, l) in labels.iter().enumerate() {
        for a in &l.artifacts {
            closes.entry(a.as_str()).or_insert(i);
            let c = closing.entry(a.as_str()).or_default();
            if !c.contains(&i) {
                c.push(i);
            }
        }
    }
    let mut shares: Vec<Vec<usize>> = vec![Vec::new(); labels.len()];
    for c in closing.values().filter(|c| c.len() > 1) {
        for &i in c {
            for &j in c.iter().filter(|&&j| j != i) {
                if !shares[i].contains(&j) {
                    shares[i].push(j);
                }
            }
        }
    }
    for s in &mut shares {
        s.sort_unstable();
    }
    let mut notes: Vec<String> = Vec::new();
    let mut note = |n: String| {
        if !notes.contains(&n) {
            notes.push(n);
        }
    };
    let mut ctx = Ctx {
        dir,
        session,
        opts,
        tools: None,
        earlier: HashMap::new(),
    };
    let mut modules: Vec<LabelModule> = Vec::new();
    let mut by_key: HashMap<String, Result<usize, ()>> = HashMap::new();
    let mut states: HashMap<(usize, Instance), InstanceState> = HashMap::new();
    for a in &session.artifacts {
        let label = closes.get(a.rel.as_str()).copied();
        let Some(runtime) = Runtime::of(a.meta.runtime.as_str()) else {
            if let Some(l) = label {
                note(format!(
                    "{} artifacts are not attributed to labels: covobs does not read them (label {} is closed by one)",
                    a.meta.runtime, labels[l].name
                ));
            }
            continue;
        };
        let meta = a.meta.module.clone().unwrap_or_default();
        let id = meta
            .build_id
            .clone()
            .or_else(|| meta.copy.clone())
            .or_else(|| meta.path.clone())
            .unwrap_or_default();
        let key = format!("{}:{id}", runtime.name());
        let m = match by_key.get(&key) {
            Some(Ok(m)) => *m,
            Some(Err(())) => continue,
            None => match Source::open(runtime, &mut ctx, a) {
                Ok(source) => {
                    let name = meta
                        .path
                        .as_deref()
                        .or(meta.copy.as_deref())
                        .and_then(|p| p.rsplit('/').next())
                        .filter(|n| !n.is_empty())
                        .unwrap_or(match runtime {
                            Runtime::Kcov => "vmlinux",
                            Runtime::Llvm | Runtime::Gcov | Runtime::Bisect | Runtime::Sancov => {
                                "(unknown module)"
                            }
                        })
                        .to_string();
                    modules.push(LabelModule {
                        runtime,
                        build_id: meta.build_id.clone(),
                        name,
                        source,
                        gained: BTreeMap::new(),
                    });
                    by_key.insert(key, Ok(modules.len() - 1));
                    modules.len() - 1
                }
                Err(why) => {
                    note(format!(
                        "{} module {id}: {why}; its artifacts are not attributed",
                        runtime.name()
                    ));
                    by_key.insert(key, Err(()));
                    continue;
                }
            },
        };
        let module = &mut modules[m];
        let state = match module.source.state(&mut ctx, a) {
            Ok(s) => s,
            Err(why) => {
                note(format!("{}: {why}", a.rel));
                continue;
            }
        };
        ctx.earlier.insert(a.meta.seq, a);
        let instance = Instance {
            pid: a.meta.pid,
            start: a.meta.process_start_ns,
        };
        let len = module.source.len();
        let bits = module.source.bits_len();
        let s = states
            .entry((m, instance))
            .or_insert_with(|| InstanceState {
                tally: Tally::new(len, bits),
                at_label: vec![0; len],
            });
        // A module whose counters grew (new PCs, a .gcda or OCaml file first seen): they were 0.
        s.tally.grow(len);
        if s.at_label.len() < len {
            s.at_label.resize(len, 0);
        }
        s.tally.push(
            instance,
            &state.counters,
            &state.bits,
            state.merged.as_deref(),
        );
        let Some(label) = label else { continue };
        let now = s.tally.counters();
        let gained = module.gained.entry(label).or_default();
        for (i, (&n, &was)) in now.iter().zip(&s.at_label).enumerate() {
            let g = n.saturating_sub(was);
            if g > 0 {
                let e = gained.entry(i as u64).or_default();
                *e = e.saturating_add(g);
            }
        }
        s.at_label[..now.len()].copy_from_slice(now);
    }
    Attribution {
        labels,
        modules,
        notes,
        shares,
    }
}
