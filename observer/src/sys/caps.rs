//! The capabilities covobs needs, read from /proc/self/status (CapEff).
use std::fs;

/// Capabilities that matter to covobs, with their bit numbers.
pub const CAP_KILL: u32 = 5;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The effective capability set of this process.
#[derive(Clone, Copy, Debug)]
pub struct Caps(u64);

impl Caps {
    pub fn current() -> std::io::Result<Self> {
        let status = fs::read_to_string("/proc/self/status")?;
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(str::trim)
            .ok_or_else(|| std::io::Error::other("no CapEff in /proc/self/status"))?;
        u64::from_str_radix(hex, 16)
            .map(Caps)
            .map_err(std::io::Error::other)
    }

    pub fn has(self, cap: u32) -> bool {
        self.0 & (1u64 << cap) != 0
    }

    /// Loading tracing programs needs CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN on its own.
    pub fn can_trace(self) -> bool {
        self.has(CAP_SYS_ADMIN) || (self.has(CAP_BPF) && self.has(CAP_PERFMON))
    }

    /// What is missing for covobs to observe and signal other users' processes.
    pub fn missing_for_observer(self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self.can_trace() {
            if !self.has(CAP_BPF) {
                missing.push("CAP_BPF");
            }
            if !self.has(CAP_PERFMON) {
                missing.push("CAP_PERFMON");
            }
        }
        if !self.has(CAP_SYS_PTRACE) {
            missing.push("CAP_SYS_PTRACE");
        }
        if !self.has(CAP_KILL) {
            missing.push("CAP_KILL");
        }
        missing
    }
}
