//! Setting up a newly watched process: its runtimes, their probes, how to tell its OCaml thread,
//! copies of its instrumented modules, and its collector.
use super::Mode;
use super::Purpose;
use super::collector::target_collector;
use super::session::event;
use super::targets;
use super::targets::TargetState;
use super::{collector::CollectorSetup, session::Session};
use crate::collect;
use crate::collect::ModuleMeta;
use crate::collect::TargetDir;
use crate::discover::Role;
use crate::discover::Runtime;
use crate::events::Body;
use crate::runtimes::llvm::path as llvm_path;
use crate::sys::clock;
use crate::{
    discover::Mapped,
    runtimes::{bisect::coverage::BisectSource, gcov::gcda},
    target::ocaml::{Method, comm_of},
};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// OCaml runtime functions worth probing, best first: `caml_leave_blocking_section` runs when a
/// thread takes the runtime lock back (lock hand-over, a few hundred times a second at most for
/// a thread that waits on I/O); `caml_alloc_small_dispatch` once per minor collection (the
/// steady signal of a thread that computes without blocking). Functions called per allocation
/// or per poll (`caml_check_urgent_gc`, `caml_c_call`) are too hot: every hit costs a trap.
const OCAML_PROBES: [&str; 4] = [
    "caml_leave_blocking_section",
    "caml_alloc_small_dispatch",
    "caml_garbage_collection",
    "caml_call_gc",
];

/// At most this many OCaml runtime probes per process.
const OCAML_PROBES_MAX: usize = 2;

impl Session {
    /// Set up a newly watched process. Returns the runtimes a signal can make it dump.
    /// `fresh_image`: covobs saw the exec that started the program it runs now, so its runtime
    /// starts a plain profile file empty (compiler-rt truncates it at start): every profile in it
    /// is one covobs sees the dump of.
    pub async fn adopt(&mut self, pid: u32, comm: &str, fresh_image: bool) -> Vec<Runtime> {
        let mut state = TargetState::new(pid, comm);
        // The launched workload may be gone already (it ran to its end before covobs saw its
        // exec): what covobs prepared before the exec stands in for what /proc no longer shows.
        let prep = self
            .launched_prep
            .clone()
            .filter(|_| self.launched == Some(pid));
        if state.root.is_none() {
            state.root = prep.as_ref().and_then(|p| p.root.clone());
        }
        let mapped = match self.discovery.scan(pid as i32) {
            Ok(m) if m.is_empty() && prep.is_some() => {
                prep.iter().map(|p| p.program.clone()).collect()
            }
            Ok(m) => m,
            Err(_) if prep.is_some() => prep.iter().map(|p| p.program.clone()).collect(),
            Err(e) => {
                self.lost(pid, pid, "runtime discovery", e.to_string())
                    .await;
                Vec::new()
            }
        };
        for m in &mapped {
            for exit in m.module.hooks(Runtime::Libc, Role::ProcessExit) {
                if let Err(e) = self
                    .probes
                    .attach_exit_probe(&m.open_path, exit.file_offset, pid)
                {
                    tracing::warn!("exit-time dumps of {pid} will be reported as its own: {e}");
                }
            }
            self.probe_ocaml(pid, m).await;
            let stripped: Vec<Runtime> = m
                .module
                .without_symbols
                .iter()
                .copied()
                .filter(|r| r.is_coverage())
                .collect();
            for rt in stripped {
                let note = rt
                    .observed()
                    .without_dump_function(m.module.symbol_source == "symtab");
                self.runtime_found(pid, m, rt, Vec::new(), Some(note.into()))
                    .await;
            }
            let mut by_runtime: BTreeMap<Runtime, Vec<String>> = BTreeMap::new();
            // Dumps that cannot carry a uretprobe end where their runtime's end marker returns:
            // without that marker, they are not probed at all.
            let mut marked = false;
            for (runtime, function, offset) in targets::dump_hooks(m) {
                if !runtime.dump_returns_probeable() {
                    let Some(end) = m.module.hooks(runtime, Role::DumpEnd).next() else {
                        tracing::warn!(
                            "{}: no {} to end its {} dumps on; not probed",
                            m.module.path,
                            end_marker_name(runtime),
                            runtime.as_str()
                        );
                        continue;
                    };
                    if !marked {
                        if let Err(e) =
                            self.probes
                                .attach_dump_end_marker(&m.open_path, end.file_offset, pid)
                        {
                            tracing::warn!("{}: {e}", end.symbol);
                            continue;
                        }
                        marked = true;
                    }
                }
                let (cookie, _) = self.hooks.register(m, runtime, &function, offset);
                match self.probes.attach_dump_probe(&m.open_path, offset, cookie) {
                    Ok(()) => {
                        by_runtime.entry(runtime).or_default().push(function);
                        if !state.dumpable.contains(&runtime) {
                            state.dumpable.push(runtime);
                        }
                    }
                    Err(e) => {
                        self.lost(
                            pid,
                            pid,
                            "dump probe",
                            format!("{function} in {}: {e}", m.module.path),
                        )
                        .await;
                    }
                }
            }
            for (runtime, functions) in by_runtime {
                self.runtime_found(pid, m, runtime, functions, None).await;
            }
            if self.opts.purpose == Purpose::Collect
                && m.module.has_coverage()
                && let Some(copy) = collect::module_copy_path(&m.module)
            {
                self.tx.module(copy, m.open_path.clone()).await;
            }
        }
        if let Some(m) = mapped
            .iter()
            .find(|m| m.module.runtimes.contains(&Runtime::Llvm))
        {
            state.llvm_profile = Some(
                prep.as_ref()
                    .and_then(|p| p.llvm_profile.clone())
                    .unwrap_or_else(|| llvm_path::for_module(pid, &m.module)),
            );
        }
        let has = |rt: Runtime| mapped.iter().any(|m| m.module.runtimes.contains(&rt));
        let gcda: Vec<(String, String)> = mapped
            .iter()
            .filter(|m| m.module.runtimes.contains(&Runtime::Gcov))
            .flat_map(|m| gcda::paths_for_process(pid, &m.module.elf.gcda_paths))
            .collect();
        let probe_ioctl = self.launched != Some(pid);
        let kcov_events = self
            .kcov
            .adopt(&mut self.probes, pid, comm, &mapped, probe_ioctl);
        for e in kcov_events {
            self.tx.event(e).await;
        }
        state.modules = mapped.clone();
        // Its dumps are reported from now on; the cursors are placed after this point.
        if let Err(e) = self.tracker.release_dumps(&mut self.probes, pid) {
            self.lost(
                pid,
                pid,
                "dump probe",
                format!("reporting the dumps of process {pid}: covobs' own failure: {e}"),
            )
            .await;
        }
        if self.opts.purpose == Purpose::Collect
            && let Some(root) = state.root.clone()
        {
            let llvm = state
                .llvm_profile
                .clone()
                .map(|p| self.profile_cursor(pid, p, &root, fresh_image));
            let (jobs, rx) = mpsc::unbounded_channel();
            tokio::spawn(target_collector(
                rx,
                CollectorSetup {
                    root,
                    llvm,
                    bisect: has(Runtime::Bisect).then(|| BisectSource::for_process(pid)),
                    gcda: gcda.clone(),
                    dir: state.dir.clone(),
                    comm: state.comm.clone(),
                    process_start_ns: crate::target::start_boot_ns(pid as i32),
                },
                self.collections.seq(),
                self.tx.clone(),
                self.collections.outcomes(),
                self.collections.shared(),
            ));
            state.collector = Some(jobs);
        }
        let dumpable = state.dumpable.clone();
        let runtimes = state.modules.iter().flat_map(|m| {
            m.module
                .runtimes
                .iter()
                .map(move |r| crate::layout::session::RuntimeFound {
                    runtime: r.as_str().into(),
                    module: m.module.path.clone(),
                    build_id: m.module.build_id.clone(),
                    ..Default::default()
                })
        });
        self.history.push(crate::layout::session::Target {
            pid,
            // What the process calls itself in its own PID namespace (1 in many containers).
            pid_in_own_namespace: crate::target::pidns::own_pid(pid).into(),
            comm: Some(comm.to_string()),
            exe: self
                .tracker
                .get(pid)
                .and_then(|t| t.process.exe.as_ref())
                .map(|e| e.to_string_lossy().into_owned()),
            // Where relative names the target writes start from (bisect_ppx's sources, for the
            // report), as this mount namespace sees it.
            cwd: std::fs::read_link(format!("/proc/{pid}/cwd"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
                .into(),
            runtimes: Some(runtimes.collect()),
            llvm_profile_file: state
                .llvm_profile
                .as_ref()
                .map(|e| e.pattern.clone())
                .into(),
            gcda_files: Some(gcda.iter().map(|(_, r)| r.clone()).collect()),
            ..Default::default()
        });
        let snapshot_runtimes = self
            .snapshots
            .adopt(pid, comm, &state.dir, &state.modules)
            .await;
        self.count_snapshot_losses();
        self.targets.insert(pid, state);
        if self.opts.mode == Mode::Snapshot {
            return snapshot_runtimes;
        }
        dumpable
    }

    /// Where the target's next dump will land in its LLVM profile file: a running process's
    /// dumps go after what the file holds once its dumps are reported (`release_dumps` came
    /// first); a fresh image's runtime started the file empty.
    fn profile_cursor(
        &self,
        pid: u32,
        expanded: llvm_path::Expanded,
        root: &TargetDir,
        fresh_image: bool,
    ) -> llvm_path::ProfileCursor {
        if fresh_image || self.launched == Some(pid) {
            return llvm_path::ProfileCursor::from_start(expanded);
        }
        let cwd = TargetDir::open(pid as i32, "cwd").ok();
        llvm_path::ProfileCursor::new(expanded, root, cwd.as_ref())
    }

    async fn runtime_found(
        &mut self,
        pid: u32,
        m: &Mapped,
        runtime: Runtime,
        functions: Vec<String>,
        note: Option<String>,
    ) {
        self.tx
            .event(event(
                pid,
                pid,
                Body::RuntimeFound {
                    runtime,
                    module: m.module.path.clone(),
                    build_id: m.module.build_id.clone(),
                    symbols: m.module.symbol_source.to_owned(),
                    functions,
                    producer: ModuleMeta::from(&*m.module).producer,
                    note,
                },
            ))
            .await;
    }

    /// The OCaml runtime: probe its steady-state functions in this process (only the cheap
    /// entry points: a probe on a function called hundreds of times a second must not show in
    /// the target's throughput), or, stripped, fall back to the thread name.
    async fn probe_ocaml(&mut self, pid: u32, m: &Mapped) {
        let hooks: Vec<_> = m.module.hooks(Runtime::Ocaml, Role::OcamlRuntime).collect();
        if hooks.is_empty() {
            if m.module.without_symbols.contains(&Runtime::Ocaml) && !self.ocaml.has_ocaml(pid) {
                let name = comm_of(&self.opts.ocaml_thread_name);
                self.ocaml
                    .track(pid, Method::Name(name.clone()), clock::boot_ns());
                self.runtime_found(pid, m, Runtime::Ocaml, Vec::new(), Some(format!(
                    "stripped: no OCaml runtime symbols to probe; the OCaml thread is the one named {name:?} (--ocaml-thread-name)"
                )))
                .await;
                tracing::warn!(
                    "process {pid}: the OCaml runtime's symbols are stripped; finding its thread by the name {name:?}"
                );
            }
            return;
        }
        let mut probed = Vec::new();
        for wanted in OCAML_PROBES {
            let Some(h) = hooks.iter().find(|h| h.symbol == wanted) else {
                continue;
            };
            if !h.cheap_entry() {
                tracing::debug!(
                    "{wanted}: its first instruction would be single-stepped; not probed"
                );
                continue;
            }
            match self
                .probes
                .attach_ocaml_probe(&m.open_path, h.file_offset, pid)
            {
                Ok(()) => probed.push(wanted.to_owned()),
                Err(e) => tracing::warn!("probing {wanted} in {}: {e}", m.module.path),
            }
            if probed.len() == OCAML_PROBES_MAX {
                break;
            }
        }
        if probed.is_empty() {
            return;
        }
        self.ocaml.track(pid, Method::Probes, clock::boot_ns());
        self.runtime_found(pid, m, Runtime::Ocaml, probed, None)
            .await;
    }
}

/// The function whose return ends `runtime`'s dumps, as its hook table names it.
fn end_marker_name(runtime: Runtime) -> &'static str {
    runtime
        .observed()
        .hooks
        .iter()
        .find(|h| h.role == Role::DumpEnd)
        .map_or("end marker", |h| match h.matcher {
            crate::discover::hooks::HookMatch::Exact(n)
            | crate::discover::hooks::HookMatch::Prefix(n) => n,
        })
}
