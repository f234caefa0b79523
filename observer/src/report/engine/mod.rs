//! The native LLVM coverage engine: counters read from raw profiles and snapshots against the
//! module they belong to ([`profile`]).
pub mod profile;
