//! A process's environment as the kernel keeps it (`/proc/PID/environ`: what it was started
//! with). The runtimes read where they write from it (LLVM_PROFILE_FILE, GCOV_PREFIX,
//! BISECT_FILE), so covobs reads the same variables to find their output.
use std::fs;

/// The `NAME=value` entries of one process's environment, NUL-separated as the kernel gives them.
#[derive(Clone, Debug, Default)]
pub struct Environ(Vec<u8>);

impl Environ {
    /// Process `pid`'s environment (in covobs' PID namespace); empty when it cannot be read (the
    /// process is gone, or not ours to read): every variable is then unset.
    pub fn of(pid: u32) -> Self {
        Self(fs::read(format!("/proc/{pid}/environ")).unwrap_or_default())
    }

    /// An environment held as `/proc/PID/environ` holds it.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The value of the first entry named `name`; entries that are not UTF-8 are passed over.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.0
            .split(|b| *b == 0)
            .filter_map(|kv| std::str::from_utf8(kv).ok())
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_entry_of_that_exact_name() {
        let env = Environ::from_bytes(
            b"GCOV_PREFIX_STRIP=2\0GCOV_PREFIX=/out\0\xff\xfe=x\0GCOV_PREFIX=/later\0EMPTY=\0"
                .to_vec(),
        );
        assert_eq!(env.var("GCOV_PREFIX"), Some("/out"));
        assert_eq!(env.var("GCOV_PREFIX_STRIP"), Some("2"));
        assert_eq!(env.var("EMPTY"), Some(""));
        assert_eq!(env.var("GCOV"), None);
        assert_eq!(env.var("MISSING"), None);
    }

    #[test]
    fn an_unreadable_process_has_no_variables() {
        assert_eq!(Environ::of(u32::MAX).var("PATH"), None);
        assert_eq!(Environ::default().var("PATH"), None);
    }

    #[test]
    fn reads_a_live_process() {
        // Its own: the environment it was started with, which nothing in the tests changes.
        let own = Environ::of(std::process::id());
        let path = std::env::var("PATH").expect("cargo runs tests with a PATH");
        assert_eq!(own.var("PATH"), Some(path.as_str()));
    }
}
