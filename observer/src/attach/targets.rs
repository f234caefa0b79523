//! What the session knows about each attached process beyond the tracker's view: its runtimes and
//! their probes, its root directory (kept open for exit-time dumps), and the dumps covobs asked
//! it for and still waits for.
use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::{
    collect::{HookRef, TargetDir},
    discover::{Mapped, Role, Runtime},
    runtimes::llvm::path as llvm_path,
};

/// A signal covobs sent and the dumps it expects from it.
#[derive(Debug)]
pub struct Pending {
    pub tid: u32,
    pub runtimes: Vec<Runtime>,
    pub sent_ns: u64,
    pub deadline_ns: u64,
    /// Dumps of these runtimes already started for this signal.
    pub started: Vec<Runtime>,
    /// `covobs dump` requests to answer when this completes.
    pub requests: Vec<u64>,
}

pub struct TargetState {
    pub pid: u32,
    pub comm: String,
    /// `<pid>-<comm>`: the artifact directory.
    pub dir: String,
    pub root: Option<Arc<TargetDir>>,
    /// Why the root could not be opened (covobs' own failure says so).
    pub root_error: Option<String>,
    pub modules: Vec<Mapped>,
    /// Runtimes with a probed dump function (the ones a signal can make dump).
    pub dumpable: Vec<Runtime>,
    pub llvm_profile: Option<llvm_path::Expanded>,
    /// The target's collector: finished dumps go there, in order (it owns the profile cursor).
    pub collector: Option<tokio::sync::mpsc::UnboundedSender<super::collector::CollectJob>>,
    pub pending: Vec<Pending>,
    /// Dumps seen per runtime (for summaries and tests).
    pub dumps: HashMap<Runtime, u64>,
    /// When covobs began to look at the process (boot ns): an exec the kernel reported from
    /// before then made the image covobs adopted, not a new one.
    pub adopted_ns: u64,
}

impl TargetState {
    pub fn new(pid: u32, comm: &str) -> Self {
        let adopted_ns = crate::sys::clock::boot_ns();
        let root = match TargetDir::open(pid as i32, "root") {
            Ok(d) => Ok(Arc::new(d)),
            Err(e) if crate::target::files::is_own_errno(&e) => {
                Err(format!("covobs' own failure: {e}"))
            }
            Err(e) => Err(e.to_string()),
        };
        Self {
            pid,
            comm: comm.to_owned(),
            dir: format!("{pid}-{}", sanitize(comm)),
            root: root.as_ref().ok().cloned(),
            root_error: root.err(),
            modules: Vec::new(),
            dumpable: Vec::new(),
            llvm_profile: None,
            collector: None,
            pending: Vec::new(),
            dumps: HashMap::new(),
            adopted_ns,
        }
    }

    /// Match a dump that just started to a signal covobs sent for that runtime. The thread is not
    /// compared: a target may dump on another thread than the one its handler ran on (a flag
    /// polled by a worker loop).
    pub fn claim(&mut self, runtime: Runtime, now_ns: u64) -> bool {
        let found = self.pending.iter_mut().find(|p| {
            p.runtimes.contains(&runtime) && !p.started.contains(&runtime) && p.sent_ns <= now_ns
        });
        match found {
            Some(p) => {
                p.started.push(runtime);
                true
            }
            None => false,
        }
    }

    /// A signal already sent for `runtime` whose dump has not started: another signal now would
    /// coalesce with it in the kernel (standard signals do not queue), so the new trigger joins it.
    pub fn unanswered(&mut self, runtime: Runtime) -> Option<&mut Pending> {
        self.pending
            .iter_mut()
            .find(|p| p.runtimes.contains(&runtime) && !p.started.contains(&runtime))
    }

    /// A dump of `runtime` finished: the `covobs dump` requests it answers. Pending signals
    /// with nothing left to wait for are removed.
    pub fn complete(&mut self, runtime: Runtime) -> Vec<u64> {
        let mut requests = Vec::new();
        for p in self.pending.iter_mut() {
            if p.started.contains(&runtime) {
                p.runtimes.retain(|r| *r != runtime);
                p.started.retain(|r| *r != runtime);
                requests.extend(p.requests.iter().copied());
                break;
            }
        }
        self.pending.retain(|p| !p.runtimes.is_empty());
        requests.sort_unstable();
        requests.dedup();
        requests
    }

    /// Signals whose dumps did not come in time.
    pub fn expired(&mut self, now_ns: u64) -> Vec<Pending> {
        let (expired, keep): (Vec<_>, Vec<_>) = self
            .pending
            .drain(..)
            .partition(|p| p.deadline_ns <= now_ns);
        self.pending = keep;
        expired
    }
}

/// Hooks registered for uprobes; the cookie of a hook is its index + 1.
#[derive(Default)]
pub struct HookTable {
    hooks: Vec<Arc<HookRef>>,
    by_place: HashMap<(crate::discover::FileId, u64), u64>,
}

impl HookTable {
    /// The cookie for a dump hook of a module, registering it on first use. Returns (cookie, new).
    pub fn register(
        &mut self,
        mapped: &Mapped,
        runtime: Runtime,
        function: &str,
        file_offset: u64,
    ) -> (u64, bool) {
        let key = (mapped.module.file, file_offset);
        if let Some(c) = self.by_place.get(&key) {
            return (*c, false);
        }
        self.hooks.push(Arc::new(HookRef {
            module: mapped.module.clone(),
            runtime,
            function: function.to_owned(),
        }));
        let mut cookie = self.hooks.len() as u64;
        if !runtime.dump_returns_probeable() {
            cookie |= covobs_common::COOKIE_ENDS_AT_MARKER;
        }
        self.by_place.insert(key, cookie);
        (cookie, true)
    }

    pub fn get(&self, cookie: u64) -> Option<Arc<HookRef>> {
        let idx = usize::try_from(cookie & !covobs_common::COOKIE_ENDS_AT_MARKER)
            .ok()?
            .checked_sub(1)?;
        self.hooks.get(idx).cloned()
    }
}

/// Dump hooks of a mapped module: (runtime, function, file offset).
pub fn dump_hooks(mapped: &Mapped) -> Vec<(Runtime, String, u64)> {
    mapped
        .module
        .elf
        .hooks
        .iter()
        .filter(|h| h.hook.role == Role::Dump)
        .map(|h| (h.hook.runtime, h.symbol.clone(), h.file_offset))
        .collect()
}

/// A name safe as a directory name component.
pub fn sanitize(comm: &str) -> String {
    let s: String = comm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

pub fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("protocol-runner"), "protocol-runner");
        assert_eq!(sanitize("a/b c"), "a_b_c");
        assert_eq!(sanitize(".."), "_..");
    }

    #[test]
    fn pending_signals_are_claimed_completed_and_expire() {
        let mut t = TargetState::new(1, "x");
        t.pending.push(Pending {
            tid: 1,
            runtimes: vec![Runtime::Llvm, Runtime::Bisect],
            sent_ns: 10,
            deadline_ns: 100,
            started: vec![],
            requests: vec![],
        });
        assert!(!t.claim(Runtime::Gcov, 20));
        assert!(t.claim(Runtime::Llvm, 20));
        assert!(
            !t.claim(Runtime::Llvm, 21),
            "one dump per signal and runtime"
        );
        assert!(t.complete(Runtime::Llvm).is_empty(), "bisect still pending");
        assert_eq!(t.expired(100).len(), 1);
        assert!(t.pending.is_empty());
    }
}
