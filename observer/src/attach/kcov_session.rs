//! The session's kcov side: calibration at start, records and exits in, `kcov` events out, and
//! captures into artifacts (attach and run; watch only reports the events).
use super::Purpose;
use super::session::Session;
use super::targets;
use crate::discover::Runtime;
use crate::probes::records::Record;
use std::sync::Arc;

impl Session {
    /// On a kernel with kcov: learn where covobs' own trap starts in kcov buffers. Records read
    /// meanwhile are returned, for the loop.
    pub fn start_kcov(&mut self, reader: &mut crate::probes::EventReader) -> Vec<Record> {
        let mut early = Vec::new();
        if self.kcov.active() && self.probes.kcov_config().valid != 0 {
            let started = std::time::Instant::now();
            match crate::runtimes::kcov::calibrate::calibrate(&mut self.probes, reader, &mut early)
            {
                Ok(a) => tracing::debug!("kcov anchors in {:?}: {a:?}", started.elapsed()),
                Err(e) => {
                    tracing::warn!("{e}: kcov counts at KCOV_DISABLE include covobs' own trap")
                }
            }
        }
        early
    }

    /// kcov events to the stream, captures to artifacts.
    pub(super) async fn kcov_out(&mut self, outputs: Vec<crate::runtimes::kcov::observer::Output>) {
        for o in outputs {
            self.tx.event(o.event).await;
            let Some(c) = o.capture else { continue };
            if self.opts.purpose == Purpose::Observe {
                continue;
            }
            let dir = self
                .targets
                .get(&c.pid)
                .map(|t| t.dir.clone())
                .unwrap_or_else(|| format!("{}-{}", c.pid, targets::sanitize(&c.comm)));
            self.collections.started(1);
            super::kcov::deliver(
                c,
                dir,
                self.collections.seq(),
                self.tx.clone(),
                self.collections.outcomes(),
            );
        }
    }

    /// The tick: look at live kcov buffers; probe the ioctl() of targets adopted too early.
    pub async fn kcov_tick(&mut self) {
        let mut events = Vec::new();
        for (pid, comm) in self.kcov.unprobed() {
            let mapped = self.discovery.scan(pid as i32).unwrap_or_default();
            let probe = self.launched != Some(pid);
            events.extend(
                self.kcov
                    .adopt(&mut self.probes, pid, &comm, &mapped, probe),
            );
        }
        for e in events {
            self.tx.event(e).await;
        }
        let samples = self.kcov.sample();
        self.kcov_out(samples).await;
    }

    /// covobs stops: the buffers still being traced, as they are.
    pub async fn kcov_finish(&mut self) {
        let last = self.kcov.finish();
        self.kcov_out(last).await;
    }

    /// Before a launched workload's exec: probe its executable's dump functions already (the
    /// uprobes are per file, so they fire in the process the exec makes; its libraries are
    /// probed when it is adopted after its exec).
    pub async fn prepare_exec(&mut self, pid: u32, program: &std::path::Path) {
        let Some(m) = self.discovery.scan_path(program) else {
            return;
        };
        // Its root now (the same after exec) and its profile file (its environment is covobs'
        // own): a workload that exits before covobs sees its exec is still collected.
        let llvm_profile = m
            .module
            .runtimes
            .contains(&Runtime::Llvm)
            .then(|| crate::runtimes::llvm::path::for_module(pid, &m.module));
        self.launched_prep = Some(super::session::LaunchedPrep {
            root: crate::target::files::TargetDir::open(pid as i32, "root")
                .ok()
                .map(Arc::new),
            program: m.clone(),
            llvm_profile,
        });
        for (runtime, function, offset) in targets::dump_hooks(&m) {
            if !runtime.dump_returns_probeable() {
                continue;
            }
            let (cookie, _) = self.hooks.register(&m, runtime, &function, offset);
            if let Err(e) = self.probes.attach_dump_probe(&m.open_path, offset, cookie) {
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
}
