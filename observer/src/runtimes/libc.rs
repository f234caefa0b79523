//! The C library: not coverage, but its `exit()` tells which dumps are exit-time dumps and its
//! `ioctl()` which threads use kcov.
use super::{DumpThread, Observed, Runtime};
use crate::discover::hooks::{Hook, HookMatch::Exact, Role, hook};

static HOOKS: &[Hook] = &[
    hook(Runtime::Libc, Role::ProcessExit, Exact("exit")),
    hook(Runtime::Libc, Role::Ioctl, Exact("ioctl")),
];

pub static OBSERVED: Observed = Observed {
    name: "libc",
    product: "the C library",
    extension: "none",
    is_coverage: false,
    hooks: HOOKS,
    found_without_symbols: |_| false,
    no_dump_function: None,
    dump_returns_probeable: true,
    dump_thread: DumpThread::NotOcaml,
    check_snapshot: |_| None,
    extractor: None,
};
