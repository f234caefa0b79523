//! The on-disk formats of artifacts that both the writer (which validates or produces them) and
//! the report (which reads them) need: one definition each.
pub mod bisect;
pub mod gcov;
pub mod kcov;
pub mod sancov;
