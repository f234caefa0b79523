//! Trigger dumps: choose the thread, check that the signal cannot kill the target, and send it so
//! that it reaches exactly the task we checked (a thread pidfd; tgkill after re-checking identity
//! where pidfds cannot name threads).
use std::{
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use nix::sys::signal::Signal;

pub mod choose;

pub use choose::{ThreadChoice, choose_threads};

#[derive(Debug, thiserror::Error)]
pub enum TriggerError {
    #[error(
        "process {pid} has no handler for {signal} (it would die of it): refusing; pass --force to send it anyway"
    )]
    NotHandled { pid: i32, signal: &'static str },
    #[error("process {pid} ignores {signal}: a dump cannot be triggered with it")]
    Ignored { pid: i32, signal: &'static str },
    #[error(
        "thread {tid} of process {pid} blocks {signal}: it would stay pending; choose another --thread"
    )]
    Blocked {
        pid: i32,
        tid: i32,
        signal: &'static str,
    },
    #[error("thread {tid} of process {pid} is gone or was replaced")]
    Gone { pid: i32, tid: i32 },
    #[error("sending {signal} to thread {tid} of process {pid}: {source}")]
    Send {
        pid: i32,
        tid: i32,
        signal: &'static str,
        source: std::io::Error,
    },
    #[error(
        "covobs' own failure {what} of thread {tid} of process {pid}: {source} (the target is not at fault)"
    )]
    Covobs {
        pid: i32,
        tid: i32,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Choice(String),
}

impl TriggerError {
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Send { .. } | Self::Covobs { .. })
    }
}

/// A /proc read that failed: the task is gone only when /proc says it does not exist; anything
/// else (no descriptor left, no memory) is covobs' own failure, never the target's.
fn gone_or_covobs(pid: i32, tid: i32, what: &'static str, e: std::io::Error) -> TriggerError {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => TriggerError::Gone { pid, tid },
        _ => TriggerError::Covobs {
            pid,
            tid,
            what,
            source: e,
        },
    }
}

/// The signal masks of /proc/PID/status (process-wide SigCgt/SigIgn; SigBlk per thread).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Masks {
    pub caught: u64,
    pub ignored: u64,
    pub blocked: u64,
}

impl Masks {
    /// Masks of thread `tid` of process `pid`.
    pub fn read(pid: i32, tid: i32) -> std::io::Result<Self> {
        let text = fs::read_to_string(format!("/proc/{pid}/task/{tid}/status"))?;
        Ok(Self::parse(&text))
    }

    pub fn parse(status: &str) -> Self {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0)
        };
        Self {
            caught: field("SigCgt:"),
            ignored: field("SigIgn:"),
            blocked: field("SigBlk:"),
        }
    }

    fn bit(sig: Signal) -> u64 {
        1u64 << (sig as i32 - 1)
    }

    pub fn handles(&self, sig: Signal) -> bool {
        self.caught & Self::bit(sig) != 0
    }
    pub fn ignores(&self, sig: Signal) -> bool {
        self.ignored & Self::bit(sig) != 0
    }
    pub fn blocks(&self, sig: Signal) -> bool {
        self.blocked & Self::bit(sig) != 0
    }
}

/// Check that `sig` sent to `tid` will run the target's handler. `force` allows a signal with the
/// default action (the user accepts it may kill the target).
pub fn check_safe(pid: i32, tid: i32, sig: Signal, force: bool) -> Result<(), TriggerError> {
    let masks = Masks::read(pid, tid)
        .map_err(|e| gone_or_covobs(pid, tid, "reading the signal masks", e))?;
    let signal = sig.as_str();
    if masks.ignores(sig) {
        return Err(TriggerError::Ignored { pid, signal });
    }
    if !masks.handles(sig) && !force {
        return Err(TriggerError::NotHandled { pid, signal });
    }
    if masks.blocks(sig) {
        // A thread running its handler for this very signal blocks it until the handler returns:
        // look again before calling the block persistent.
        for _ in 0..5 {
            std::thread::sleep(std::time::Duration::from_millis(2));
            let again = Masks::read(pid, tid)
                .map_err(|e| gone_or_covobs(pid, tid, "reading the signal masks", e))?;
            if !again.blocks(sig) {
                return Ok(());
            }
        }
        return Err(TriggerError::Blocked { pid, tid, signal });
    }
    Ok(())
}

/// A thread, pinned by its start time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadRef {
    pub pid: i32,
    pub tid: i32,
    pub start_time: u64,
}

impl ThreadRef {
    /// The thread as it is now: `Gone` only when /proc says it does not exist; a read that
    /// failed for covobs' own reasons (no descriptor, no memory) says so.
    pub fn get(pid: i32, tid: i32) -> Result<Self, TriggerError> {
        let start_time = read_start_time(pid, tid)
            .map_err(|e| gone_or_covobs(pid, tid, "reading the start time", e))?
            .ok_or_else(|| TriggerError::Covobs {
                pid,
                tid,
                what: "reading the start time",
                source: std::io::Error::other("/proc's stat line has no start time"),
            })?;
        Ok(Self {
            pid,
            tid,
            start_time,
        })
    }

    /// Still the thread that was checked (Ok(false): gone or replaced); an error is covobs' own.
    fn still_same(&self) -> Result<bool, TriggerError> {
        match read_start_time(self.pid, self.tid) {
            Ok(start) => Ok(start == Some(self.start_time)),
            Err(e) => match gone_or_covobs(self.pid, self.tid, "reading the start time", e) {
                TriggerError::Gone { .. } => Ok(false),
                other => Err(other),
            },
        }
    }
}

fn read_start_time(pid: i32, tid: i32) -> std::io::Result<Option<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))?;
    let start = stat
        .rfind(')')
        .and_then(|close| stat.get(close + 2..))
        .and_then(|rest| rest.split_whitespace().nth(19)?.parse().ok());
    Ok(start)
}

/// How a signal was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// pidfd_open(tid, PIDFD_THREAD) + pidfd_send_signal: cannot hit a recycled tid.
    ThreadPidfd,
    /// tgkill right after re-checking the thread's start time.
    Tgkill,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ThreadPidfd => "pidfd",
            Self::Tgkill => "tgkill",
        }
    }
}

const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// Send `sig` to exactly this thread.
pub fn send(thread: ThreadRef, sig: Signal) -> Result<Method, TriggerError> {
    let ThreadRef { pid, tid, .. } = thread;
    let gone = || TriggerError::Gone { pid, tid };
    let send_err = |source| TriggerError::Send {
        pid,
        tid,
        signal: sig.as_str(),
        source,
    };
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
    if fd >= 0 {
        // SAFETY: a non-negative return is a new pidfd that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The pidfd pins a task; the start time proves it is the one we checked.
        if !thread.still_same()? {
            return Err(gone());
        }
        // SAFETY: sends a signal through a valid pidfd; info is NULL (kernel fills SI_USER-like
        // info), flags 0 means "as the pidfd's type": thread-directed for a thread pidfd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd.as_raw_fd(),
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            return Ok(Method::ThreadPidfd);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Err(gone());
        }
        return Err(send_err(err));
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => return Err(gone()),
        // Out of descriptors or memory: covobs' failure, said as such (tgkill would work, but a
        // covobs that cannot open a pidfd is in trouble the user must hear about).
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM) => {
            return Err(TriggerError::Covobs {
                pid,
                tid,
                what: "opening a pidfd",
                source: err,
            });
        }
        _ => {}
    }
    // Kernels before 6.9 cannot open a thread pidfd: re-check identity, then tgkill.
    if !thread.still_same()? {
        return Err(gone());
    }
    // SAFETY: tgkill takes plain integers.
    let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig as i32) };
    if r == 0 {
        Ok(Method::Tgkill)
    } else {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            Err(gone())
        } else {
            Err(send_err(err))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_masks() {
        let status = "Name:\tx\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000000800\n";
        let m = Masks::parse(status);
        assert!(m.handles(Signal::SIGUSR2));
        assert!(!m.handles(Signal::SIGUSR1));
        assert!(m.ignores(Signal::SIGPIPE));
        assert!(!m.blocks(Signal::SIGUSR2));
    }

    #[test]
    fn refuses_a_signal_without_handler_and_sends_to_a_handled_one() {
        // This test process has no SIGUSR2 handler.
        let me = std::process::id() as i32;
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        assert!(matches!(
            check_safe(me, tid, Signal::SIGUSR2, false),
            Err(TriggerError::NotHandled { .. })
        ));
        assert!(check_safe(me, tid, Signal::SIGUSR2, true).is_ok());

        // A shell that handles SIGUSR2 (trap) by writing a file and exiting 0.
        let dir = std::env::temp_dir().join(format!("covobs-trigger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let got = dir.join("got");
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap 'echo usr2 > {}; exit 0' USR2; touch {}/ready; while :; do sleep 0.01; done",
                got.display(),
                dir.display()
            ))
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !dir.join("ready").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "the shell never started"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        check_safe(pid, pid, Signal::SIGUSR2, false).expect("the handled signal is allowed");
        let thread = ThreadRef::get(pid, pid).unwrap();
        send(thread, Signal::SIGUSR2).expect("sent");
        let status = child.wait().unwrap();
        assert!(status.success(), "the handler ran and exited 0: {status}");
        assert_eq!(std::fs::read_to_string(&got).unwrap(), "usr2\n");
        // The thread is gone now: neither checked nor signalled, and said so.
        assert!(matches!(
            check_safe(pid, pid, Signal::SIGUSR2, false),
            Err(TriggerError::Gone { .. })
        ));
        assert!(matches!(
            send(thread, Signal::SIGUSR2),
            Err(TriggerError::Gone { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
