//! The session directory's layout (docs/output.md): the types of what covobs writes there and the
//! formats of the files it holds, shared by the writer (attach, the stream's sinks) and every
//! reader (report, serve, fleet). It imports no stage of the pipeline and nothing of eBPF, so a
//! reporting-only machine builds it without aya.
pub mod artifact;
pub mod formats;
pub mod json;
pub mod kernel;
pub mod modes;
pub mod session;
