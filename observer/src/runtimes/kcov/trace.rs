//! A kcov buffer as words: the `.kcov` artifact's format, defined in the session layout
//! (`covobs_layout::formats::kcov`), which the report reads too.
pub use covobs_layout::formats::kcov::{CmpRecord, Mode, Trace, TraceError};
