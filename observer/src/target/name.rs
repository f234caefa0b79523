//! Matching processes by name the way users mean it (`pgrep -x`), despite the kernel keeping
//! only 15 bytes of a task's name.
use covobs_common::COMM_LEN;

use super::Process;

/// A process name to match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern {
    name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("process name is empty")]
    Empty,
    #[error(
        "process name {0:?} contains a '/' or a NUL byte; give the executable's name, not a path"
    )]
    Invalid(String),
}

impl NamePattern {
    pub fn new(name: &str) -> Result<Self, NameError> {
        if name.is_empty() {
            return Err(NameError::Empty);
        }
        if name.contains('/') || name.contains('\0') {
            return Err(NameError::Invalid(name.to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The name as the kernel stores it in `comm`: at most 15 bytes, NUL padded. This is the key
    /// the eBPF programs match new processes against.
    pub fn comm_key(&self) -> [u8; COMM_LEN] {
        let mut key = [0u8; COMM_LEN];
        let bytes = self.name.as_bytes();
        let n = bytes.len().min(COMM_LEN - 1);
        key[..n].copy_from_slice(&bytes[..n]);
        key
    }

    /// Whether the name is longer than the kernel keeps, so `comm` alone cannot decide.
    pub fn is_truncated(&self) -> bool {
        self.name.len() > COMM_LEN - 1
    }

    /// `comm` equal to the name (or to its 15-byte prefix, when the executable's or argv[0]'s
    /// base name is the full name).
    pub fn matches(&self, process: &Process) -> bool {
        self.matches_parts(
            &process.comm,
            process.exe.as_deref().and_then(|p| p.file_name()?.to_str()),
            process.argv0().as_deref(),
        )
    }

    pub fn matches_parts(&self, comm: &str, exe_name: Option<&str>, argv0: Option<&str>) -> bool {
        if !self.is_truncated() {
            return comm == self.name;
        }
        let prefix = &self.comm_key()[..COMM_LEN - 1];
        if comm.as_bytes() != prefix {
            return false;
        }
        let base = |s: &str| s.rsplit('/').next().map(str::to_owned);
        exe_name == Some(self.name.as_str()) || argv0.and_then(base).as_deref() == Some(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_match_comm_exactly() {
        let p = NamePattern::new("protocol-runner").unwrap();
        assert!(!p.is_truncated());
        assert!(p.matches_parts("protocol-runner", None, None));
        assert!(!p.matches_parts("protocol-runne", None, None));
        assert_eq!(&p.comm_key()[..15], b"protocol-runner");
        assert_eq!(p.comm_key()[15], 0);
    }

    #[test]
    fn long_names_need_the_executable_or_argv0() {
        let p = NamePattern::new("ffi-ocaml-executor-thread").unwrap();
        assert!(p.is_truncated());
        assert_eq!(&p.comm_key()[..15], b"ffi-ocaml-execu");
        assert!(!p.matches_parts("ffi-ocaml-execu", Some("other"), Some("/bin/other")));
        assert!(p.matches_parts("ffi-ocaml-execu", Some("ffi-ocaml-executor-thread"), None));
        assert!(p.matches_parts("ffi-ocaml-execu", None, Some("./ffi-ocaml-executor-thread")));
        assert!(!p.matches_parts("ffi-ocaml-exec", Some("ffi-ocaml-executor-thread"), None));
    }

    #[test]
    fn rejects_paths_and_empty() {
        assert!(NamePattern::new("").is_err());
        assert!(NamePattern::new("/usr/bin/x").is_err());
    }
}
