//! What a hook is: a function of a runtime that covobs recognises and probes. Each runtime
//! lists its own in `runtimes/<runtime>`; `crate::runtimes::hooks` is all of them.
use serde::Serialize;

pub use crate::runtimes::Runtime;

/// What calling the function does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Writes the counters out: probed with a uprobe + uretprobe (dump_start / dump_end).
    Dump,
    /// Zeroes the counters.
    Reset,
    /// Its return ends a dump whose own function cannot carry a uretprobe (bisect).
    DumpEnd,
    /// Steady-state OCaml runtime function: hits per thread tell which thread runs OCaml.
    OcamlRuntime,
    /// The process is exiting (libc `exit`).
    ProcessExit,
    /// libc `ioctl`: where kcov's ioctls are seen (KCOV_ENABLE, KCOV_DISABLE, ...).
    Ioctl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookMatch {
    Exact(&'static str),
    /// OCaml symbols carry a compiler stamp suffix (`camlFoo__bar_206`).
    Prefix(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Hook {
    pub runtime: Runtime,
    pub role: Role,
    pub matcher: HookMatch,
}

pub const fn hook(runtime: Runtime, role: Role, matcher: HookMatch) -> Hook {
    Hook {
        runtime,
        role,
        matcher,
    }
}
