//! Which thread of a process runs OCaml. The kernel counts, per thread, hits of uprobes on
//! steady-state functions of the OCaml runtime; every tick this decides from the hits since the
//! last tick, and notices when OCaml moves to another thread (systhreads hand the runtime lock
//! over). Where the runtime's symbols are stripped, the thread is recognised by its name, as the
//! kernel keeps it (15 bytes).
use std::collections::{BTreeMap, HashMap};

use covobs_common::COMM_LEN;

/// How the OCaml thread of a process is found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// Hits of the runtime probes.
    Probes,
    /// The thread's name (already cut to the kernel's 15 bytes).
    Name(String),
}

impl Method {
    pub fn describe(&self) -> String {
        match self {
            Self::Probes => "runtime probes".to_owned(),
            Self::Name(n) => format!("thread name {n:?}"),
        }
    }
}

/// A change of a process's OCaml thread.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub pid: u32,
    pub tid: u32,
    pub previous: Option<u32>,
    /// Probe hits a second on that thread since the last tick (probes method).
    pub hits_per_sec: f64,
    pub method: Method,
}

struct PerProcess {
    method: Method,
    current: Option<u32>,
    /// Hits per thread at the previous tick.
    last: HashMap<u32, u64>,
    last_ns: u64,
}

/// The one owner of "which thread runs OCaml" for every watched process.
#[derive(Default)]
pub struct OcamlThreads {
    procs: BTreeMap<u32, PerProcess>,
}

/// The kernel's version of a thread name: at most 15 bytes.
pub fn comm_of(name: &str) -> String {
    let mut end = name.len().min(COMM_LEN - 1);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_owned()
}

impl OcamlThreads {
    /// Start deciding for `pid` (probes attached, or name known) at `now_ns`.
    pub fn track(&mut self, pid: u32, method: Method, now_ns: u64) {
        self.procs.insert(
            pid,
            PerProcess {
                method,
                current: None,
                last: HashMap::new(),
                last_ns: now_ns,
            },
        );
    }

    pub fn forget(&mut self, pid: u32) {
        self.procs.remove(&pid);
    }

    pub fn has_ocaml(&self, pid: u32) -> bool {
        self.procs.contains_key(&pid)
    }

    /// The thread running OCaml in `pid`, once known.
    pub fn tid(&self, pid: u32) -> Option<u32> {
        self.procs.get(&pid).and_then(|p| p.current)
    }

    pub fn method(&self, pid: u32) -> Option<&Method> {
        self.procs.get(&pid).map(|p| &p.method)
    }

    /// Decide from the kernel's hit counters (tid, tgid, hits) and the threads' names now.
    /// `threads(pid)` gives the live (tid, name) of a process.
    pub fn update(
        &mut self,
        now_ns: u64,
        hits: &[(u32, u32, u64)],
        threads: impl Fn(u32) -> Vec<(u32, String)>,
    ) -> Vec<Change> {
        let mut changes = Vec::new();
        for (&pid, p) in self.procs.iter_mut() {
            let live = threads(pid);
            let (chosen, rate) = match &p.method {
                Method::Probes => {
                    let secs = now_ns.saturating_sub(p.last_ns) as f64 / 1e9;
                    let mut best: Option<(u32, u64)> = None;
                    let mut current_delta = 0;
                    for &(tid, tgid, count) in hits {
                        if tgid != pid {
                            continue;
                        }
                        let before = p.last.insert(tid, count).unwrap_or(0);
                        let delta = count.saturating_sub(before);
                        if Some(tid) == p.current {
                            current_delta = delta;
                        }
                        if delta > 0 && best.is_none_or(|(_, d)| delta > d) {
                            best = Some((tid, delta));
                        }
                    }
                    p.last_ns = now_ns;
                    // Stay with the current thread while it still runs OCaml: threads that
                    // take the runtime lock in turn do not make the choice flap.
                    match (p.current, best) {
                        (Some(cur), _)
                            if current_delta > 0 && live.iter().any(|(t, _)| *t == cur) =>
                        {
                            (Some(cur), rate(current_delta, secs))
                        }
                        (_, Some((tid, delta))) => (Some(tid), rate(delta, secs)),
                        (cur, None) => (cur.filter(|c| live.iter().any(|(t, _)| t == c)), 0.0),
                    }
                }
                Method::Name(name) => (live.iter().find(|(_, n)| n == name).map(|(t, _)| *t), 0.0),
            };
            if chosen != p.current
                && let Some(tid) = chosen
            {
                changes.push(Change {
                    pid,
                    tid,
                    previous: p.current,
                    hits_per_sec: rate,
                    method: p.method.clone(),
                });
            }
            p.current = chosen;
        }
        changes
    }
}

fn rate(delta: u64, secs: f64) -> f64 {
    if secs > 0.0 { delta as f64 / secs } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threads(_: u32) -> Vec<(u32, String)> {
        vec![
            (10, "main".into()),
            (11, "ffi-ocaml-execu".into()),
            (12, "worker".into()),
        ]
    }

    #[test]
    fn the_thread_with_the_hits_is_the_ocaml_thread_and_changes_are_noticed() {
        let mut o = OcamlThreads::default();
        o.track(10, Method::Probes, 500_000_000);
        assert_eq!(o.tid(10), None);
        let c = o.update(1_000_000_000, &[(11, 10, 50), (10, 10, 0)], threads);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].tid, c[0].previous), (11, None));
        assert!(
            (c[0].hits_per_sec - 100.0).abs() < 1e-6,
            "50 hits in half a second"
        );
        assert_eq!(o.tid(10), Some(11));
        // Still running there: no change, even if another thread also ran a little.
        assert!(
            o.update(2_000_000_000, &[(11, 10, 90), (12, 10, 100)], threads)
                .is_empty()
        );
        // OCaml moved: 11 has no new hits, 12 has.
        let c = o.update(3_000_000_000, &[(11, 10, 90), (12, 10, 300)], threads);
        assert_eq!((c[0].tid, c[0].previous), (12, Some(11)));
        assert!((c[0].hits_per_sec - 200.0).abs() < 1e-6);
        // Hits of other processes are not ours.
        assert!(
            o.update(4_000_000_000, &[(99, 77, 1000)], threads)
                .is_empty()
        );
    }

    #[test]
    fn without_symbols_the_name_decides() {
        let mut o = OcamlThreads::default();
        o.track(10, Method::Name(comm_of("ffi-ocaml-executor-thread")), 0);
        let c = o.update(1, &[], threads);
        assert_eq!(c[0].tid, 11);
        assert_eq!(comm_of("ffi-ocaml-executor-thread"), "ffi-ocaml-execu");
    }
}
