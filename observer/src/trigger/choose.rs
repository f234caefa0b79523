//! `--thread auto|main|ocaml|all|TID`: which threads of a target get the dump signal.
use std::str::FromStr;

use super::TriggerError;
use crate::runtimes::{DumpThread, Runtime};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadChoice {
    /// One signal per runtime, to the thread that runtime needs: the OCaml thread for bisect, a
    /// thread that does not run OCaml (the main thread unless it does) for the others.
    Auto,
    Main,
    Ocaml,
    All,
    Tid(i32),
}

impl FromStr for ThreadChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "main" => Ok(Self::Main),
            "ocaml" => Ok(Self::Ocaml),
            "all" => Ok(Self::All),
            n => n
                .parse::<i32>()
                .ok()
                .filter(|t| *t > 0)
                .map(Self::Tid)
                .ok_or_else(|| format!("{s:?} is not auto, main, ocaml, all or a thread id")),
        }
    }
}

/// A planned signal: the thread, and the runtimes it is meant to make dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub tid: i32,
    pub runtimes: Vec<Runtime>,
}

/// Decide which threads of `pid` get a signal for a dump of `runtimes`.
///
/// `threads`: the live tids; `ocaml_tid`: the thread running the OCaml runtime, if known.
pub fn choose_threads(
    choice: ThreadChoice,
    pid: i32,
    threads: &[i32],
    runtimes: &[Runtime],
    ocaml_tid: Option<i32>,
) -> Result<Vec<Target>, TriggerError> {
    let all_runtimes = runtimes.to_vec();
    let one = |tid: i32| {
        Ok(vec![Target {
            tid,
            runtimes: all_runtimes.clone(),
        }])
    };
    match choice {
        ThreadChoice::Main => one(pid),
        ThreadChoice::Tid(tid) => {
            if threads.contains(&tid) {
                one(tid)
            } else {
                Err(TriggerError::Choice(format!(
                    "thread {tid} is not a thread of process {pid}"
                )))
            }
        }
        ThreadChoice::All => Ok(threads
            .iter()
            .map(|&tid| Target {
                tid,
                runtimes: all_runtimes.clone(),
            })
            .collect()),
        ThreadChoice::Ocaml => match ocaml_tid {
            Some(tid) => one(tid),
            None => Err(TriggerError::Choice(format!(
                "process {pid} runs no OCaml runtime (or its thread is not known yet): --thread ocaml needs one"
            ))),
        },
        ThreadChoice::Auto => {
            let mut out: Vec<Target> = Vec::new();
            let mut add = |tid: i32, rt: Runtime| match out.iter_mut().find(|t| t.tid == tid) {
                Some(t) => t.runtimes.push(rt),
                None => out.push(Target {
                    tid,
                    runtimes: vec![rt],
                }),
            };
            // A thread for the non-OCaml runtimes: main, unless main is the OCaml thread.
            let other = if ocaml_tid == Some(pid) {
                threads.iter().copied().find(|t| Some(*t) != ocaml_tid)
            } else {
                Some(pid)
            };
            for &rt in runtimes {
                match rt.dump_thread() {
                    DumpThread::Ocaml => match ocaml_tid {
                        Some(tid) => add(tid, rt),
                        None => {
                            return Err(TriggerError::Choice(format!(
                                "process {pid} has {} but its OCaml thread is not known yet",
                                rt.observed().product
                            )));
                        }
                    },
                    DumpThread::Never => {}
                    DumpThread::NotOcaml => match other {
                        Some(tid) => add(tid, rt),
                        None => {
                            return Err(TriggerError::Choice(format!(
                                "process {pid} has no thread besides the OCaml one to dump {}",
                                rt.as_str()
                            )));
                        }
                    },
                }
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("auto".parse(), Ok(ThreadChoice::Auto));
        assert_eq!("1234".parse(), Ok(ThreadChoice::Tid(1234)));
        assert!("-3".parse::<ThreadChoice>().is_err());
        assert!("x".parse::<ThreadChoice>().is_err());
    }

    #[test]
    fn auto_splits_bisect_and_llvm() {
        let t = choose_threads(
            ThreadChoice::Auto,
            10,
            &[10, 11, 12],
            &[Runtime::Llvm, Runtime::Bisect, Runtime::Ocaml],
            Some(11),
        )
        .unwrap();
        assert_eq!(
            t,
            vec![
                Target {
                    tid: 10,
                    runtimes: vec![Runtime::Llvm]
                },
                Target {
                    tid: 11,
                    runtimes: vec![Runtime::Bisect]
                }
            ]
        );
    }

    #[test]
    fn auto_avoids_an_ocaml_main_thread_for_llvm() {
        let t = choose_threads(
            ThreadChoice::Auto,
            10,
            &[10, 11],
            &[Runtime::Llvm],
            Some(10),
        )
        .unwrap();
        assert_eq!(t[0].tid, 11);
    }

    #[test]
    fn ocaml_needs_an_ocaml_thread_and_tid_must_belong() {
        assert!(choose_threads(ThreadChoice::Ocaml, 10, &[10], &[Runtime::Llvm], None).is_err());
        assert!(choose_threads(ThreadChoice::Tid(99), 10, &[10], &[Runtime::Llvm], None).is_err());
        assert_eq!(
            choose_threads(ThreadChoice::All, 10, &[10, 11], &[Runtime::Llvm], None)
                .unwrap()
                .len(),
            2
        );
    }
}
