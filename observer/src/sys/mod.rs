//! Thin, owned wrappers over the Linux interfaces covobs needs (clocks, capabilities, tracefs).
pub mod bpf;
pub mod caps;
pub mod clock;
pub mod kcov;
pub mod shutdown;
pub mod tracefs;
