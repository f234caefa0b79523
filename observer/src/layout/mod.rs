//! The session directory's layout (docs/output.md): the types of what covobs writes there, shared
//! by the writer (attach, the stream's sinks) and every reader (report, serve, fleet). Below all
//! the pipeline stages: it imports none of them.
pub mod artifact;
