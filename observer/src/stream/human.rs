//! The live human view: one aligned line per event, local wall-clock time first.
use std::{collections::HashMap, io::Write};

use super::{Item, Kind, Sink, StreamError};
use crate::{
    events::{Body, Event},
    sys::clock,
};

pub struct HumanSink<W: Write + Send> {
    out: W,
    /// Show only what matters to coverage (attach): targets, runtimes, triggers, dumps,
    /// artifacts, losses, exec and exit; not every thread and signal.
    coverage_only: bool,
    /// Unix offset of the events' CLOCK_BOOTTIME stamps.
    offset_ns: i128,
    /// Process names, learned from the stream itself, to label lines.
    names: HashMap<u32, String>,
}

impl<W: Write + Send> HumanSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            coverage_only: false,
            offset_ns: clock::boot_to_unix_offset_ns(),
            names: HashMap::new(),
        }
    }

    /// The view of `covobs attach`.
    pub fn coverage_view(out: W) -> Self {
        Self {
            coverage_only: true,
            ..Self::new(out)
        }
    }

    fn label(&self, pid: u32) -> String {
        match self.names.get(&pid) {
            Some(name) => format!("{name}[{pid}]"),
            None => format!("[{pid}]"),
        }
    }
}

/// The event-specific part of a line.
pub fn describe(event: &Event) -> String {
    let tid = event.tid;
    match &event.body {
        Body::Target {
            comm,
            exe,
            reason,
            threads,
        } => {
            let list: Vec<String> = threads
                .iter()
                .map(|t| format!("{}:{}", t.tid, t.name))
                .collect();
            format!(
                "watching {comm} ({}), by {reason}; threads {}",
                exe.as_deref().unwrap_or("?"),
                list.join(" ")
            )
        }
        Body::ProcessExec { filename, comm, .. } => format!("exec {filename} as {comm}"),
        Body::ProcessFork {
            child_pid,
            followed,
            ..
        } => format!(
            "fork from tid {tid}: child {child_pid}{}",
            if *followed { " (watched)" } else { "" }
        ),
        Body::ProcessExit { comm } => format!("process {comm} exited (last thread {tid})"),
        Body::CgroupMove {
            comm,
            entered,
            cgroup,
        } => {
            if *entered {
                format!("{comm} moved into cgroup {cgroup}")
            } else {
                format!("{comm} moved out of cgroup {cgroup}: no longer a target")
            }
        }
        Body::ThreadStart { name, parent_tid } => {
            format!("thread {tid} started by {parent_tid} as {name:?}")
        }
        Body::ThreadExit { name } => format!("thread {tid} {name:?} exited"),
        Body::ThreadRename { old_name, name } => {
            format!("thread {tid} renamed {old_name:?} -> {name:?}")
        }
        Body::SignalGenerate {
            signal,
            sender_pid,
            sender_tid,
            sender_comm,
            group,
            result,
            ..
        } => format!(
            "{signal} from {sender_comm}[{sender_pid}/{sender_tid}] to {} {tid}: {result}",
            if *group {
                "process, queued on"
            } else {
                "thread"
            }
        ),
        Body::SignalDeliver {
            signal, handler, ..
        } => format!("{signal} delivered on thread {tid}, handler {handler}"),
        Body::Lost {
            reason,
            what,
            count,
        } => format!("LOST {count} {what}: {reason}"),
        Body::Label {
            label,
            artifacts,
            lost,
        } => format!(
            "label {label}: {} artifact(s){}",
            artifacts.len(),
            if lost.is_empty() {
                String::new()
            } else {
                format!(", {} lost", lost.len())
            }
        ),
        Body::RuntimeFound {
            runtime,
            module,
            symbols,
            functions,
            note,
            ..
        } => format!(
            "{} in {module} (symbols: {symbols}; probes {}){}",
            runtime.as_str(),
            if functions.is_empty() {
                "none".to_owned()
            } else {
                functions.join(", ")
            },
            note.as_deref()
                .map(|n| format!(" - {n}"))
                .unwrap_or_default()
        ),
        Body::OcamlThread {
            name,
            method,
            previous_tid,
            hits_per_sec,
        } => format!(
            "OCaml runs on thread {tid} {name:?} (by {method}{}){}",
            if *hits_per_sec > 0.0 {
                format!(", {hits_per_sec:.0} runtime hits/s")
            } else {
                String::new()
            },
            previous_tid
                .map(|p| format!("; before: thread {p}"))
                .unwrap_or_default()
        ),
        Body::Delivery {
            signal,
            intended_tid,
            ok,
            latency_ns,
        } => format!(
            "{signal} delivered on thread {tid}{} after {:.3} ms",
            if *ok {
                String::new()
            } else {
                format!(" INSTEAD OF thread {intended_tid}")
            },
            *latency_ns as f64 / 1e6
        ),
        Body::Trigger {
            signal,
            runtimes,
            method,
            ..
        } => {
            let rts: Vec<&str> = runtimes.iter().map(|r| r.as_str()).collect();
            format!(
                "sent {signal} to thread {tid} ({method}) to dump {}",
                rts.join("+")
            )
        }
        Body::DumpStart {
            runtime,
            function,
            trigger,
            ..
        } => format!(
            "{} dump starts on thread {tid} ({function}, {})",
            runtime.as_str(),
            trigger.as_str()
        ),
        Body::DumpEnd {
            runtime,
            ret,
            duration_ns,
            ..
        } => format!(
            "{} dump ended on thread {tid}: returned {ret} after {:.2} ms",
            runtime.as_str(),
            *duration_ns as f64 / 1e6
        ),
        Body::Artifact {
            seq,
            file,
            bytes,
            valid,
            source_path,
            ..
        } => format!(
            "#{seq} {file}: {bytes} bytes from {source_path}{}",
            if *valid { "" } else { " (INVALID)" }
        ),
        Body::Snapshot {
            runtime,
            module,
            trigger,
            counters,
            covered,
            new_covered,
            read_ns,
            ..
        } => format!(
            "{} {trigger:?} of {}: {covered}/{counters} counters covered, +{new_covered} new (read in {} us)",
            runtime.as_str(),
            module.rsplit('/').next().unwrap_or(module),
            read_ns / 1000
        ),
        Body::Kcov(k) => {
            let what = match k.mode {
                Some(crate::runtimes::kcov::Mode::Cmp) => "comparisons",
                _ => "PCs",
            };
            let mut s = match k.moment {
                "init" => format!("kcov buffer of {} words (fd {})", k.size, k.fd),
                "enable" | "remote_enable" => format!(
                    "kcov {} tracing {} on thread {tid} (fd {})",
                    k.moment.replace('_', " "),
                    what,
                    k.fd
                ),
                moment => format!(
                    "kcov {moment}: {} {what}{}, {} distinct, {} new",
                    k.entries,
                    if k.exact { " (exact)" } else { "" },
                    k.unique,
                    k.new
                ),
            };
            if let Some(n) = &k.note {
                s.push_str(&format!(" ({n})"));
            }
            s
        }
    }
}

impl<W: Write + Send> Sink for HumanSink<W> {
    fn name(&self) -> &'static str {
        "terminal"
    }

    fn takes(&self, kind: Kind) -> bool {
        kind == Kind::Event
    }

    fn accept(&mut self, item: &Item) -> Result<(), StreamError> {
        let Item::Event(event) = item else {
            return Ok(());
        };
        match &event.body {
            Body::Target { comm, .. } | Body::ProcessExec { comm, .. } => {
                self.names.insert(event.pid, comm.clone());
            }
            Body::ThreadRename { name, .. } if event.tid == event.pid => {
                self.names.insert(event.pid, name.clone());
            }
            _ => {}
        }
        if self.coverage_only
            && matches!(
                event.body,
                Body::ThreadStart { .. }
                    | Body::ThreadExit { .. }
                    | Body::ThreadRename { .. }
                    | Body::SignalGenerate { .. }
                    | Body::SignalDeliver { .. }
                    | Body::ProcessFork { .. }
            )
        {
            return Ok(());
        }
        let line = format!(
            "{}  {:<24} {:<16} {}",
            clock::wall_time_of(event.ts_ns, self.offset_ns),
            self.label(event.pid),
            event.name(),
            describe(event)
        );
        // Names and paths in it are the targets' own choice.
        let line = format!("{}\n", crate::terminal::printable(&line));
        if let Body::ProcessExit { .. } = &event.body {
            self.names.remove(&event.pid);
        }
        let io = |source| StreamError::Io {
            sink: "terminal",
            source,
        };
        self.out.write_all(line.as_bytes()).map_err(io)?;
        self.out.flush().map_err(io)
    }
}
