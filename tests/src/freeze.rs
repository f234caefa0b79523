//! Freeze a test target with ptrace so that nothing in it runs, read it from outside, and make
//! its main thread call one of its own functions (a coverage runtime's dump) at that very point:
//! what a debugger's `call` does. Tests use it to compare covobs' memory snapshot with the
//! runtime's own dump of the same counters.
use std::{thread, time::Duration};

/// A process whose every thread is in a ptrace stop. Dropping it detaches them all.
pub struct Frozen {
    pid: i32,
    tids: Vec<i32>,
}

fn threads(pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

fn ptrace(req: libc::c_uint, tid: i32, addr: u64, data: u64) -> i64 {
    // SAFETY: raw ptrace requests on a thread this process seized; addr/data are request
    // arguments (a user_regs_struct pointer for GETREGS/SETREGS, owned by the caller).
    unsafe {
        libc::ptrace(
            req,
            tid,
            addr as *mut libc::c_void,
            data as *mut libc::c_void,
        )
    }
}

/// Wait for a ptrace stop of `tid`; returns the raw status.
fn wait_stop(tid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waitpid on a traced thread with a valid status pointer.
    let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
    assert_eq!(
        r,
        tid,
        "waitpid({tid}): {}",
        std::io::Error::last_os_error()
    );
    assert!(
        libc::WIFSTOPPED(status),
        "thread {tid} did not stop: {status:#x}"
    );
    status
}

impl Frozen {
    /// Stop every thread of `pid` at a moment its main thread sits in a system call (so it holds
    /// no lock of the C library a call into the target could need). Retries for a few seconds.
    pub fn stop_quiescent(pid: i32) -> Self {
        for _ in 0..200 {
            let frozen = Self::stop(pid);
            if frozen.main_in_syscall() {
                return frozen;
            }
            drop(frozen);
            thread::sleep(Duration::from_millis(3));
        }
        panic!("the main thread of {pid} was never caught inside a system call");
    }

    fn stop(pid: i32) -> Self {
        let tids = threads(pid);
        assert!(!tids.is_empty(), "process {pid} has no threads");
        for &tid in &tids {
            assert_eq!(
                ptrace(libc::PTRACE_SEIZE, tid, 0, 0),
                0,
                "PTRACE_SEIZE {tid}: {}",
                std::io::Error::last_os_error()
            );
        }
        for &tid in &tids {
            assert_eq!(ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
        }
        for &tid in &tids {
            wait_stop(tid);
        }
        assert_eq!(
            threads(pid),
            tids,
            "the process started a thread while being frozen"
        );
        Self { pid, tids }
    }

    fn main_in_syscall(&self) -> bool {
        // "running" or -1 when it was stopped in user code; the syscall number otherwise.
        std::fs::read_to_string(format!("/proc/{}/task/{}/syscall", self.pid, self.pid))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<i64>().ok())
            .is_some_and(|nr| nr >= 0)
    }

    /// Make the main thread call `function(void) -> int` at `addr` and return its result. The
    /// other threads stay stopped; the main thread's registers are restored afterwards, so its
    /// interrupted system call resumes as if nothing happened.
    pub fn call(&self, addr: u64) -> i64 {
        let tid = self.pid;
        // SAFETY: user_regs_struct is plain integers; zero is a valid value.
        let mut saved: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        assert_eq!(
            ptrace(libc::PTRACE_GETREGS, tid, 0, &mut saved as *mut _ as u64),
            0
        );
        let mut regs = saved;
        // Below the red zone, 16-byte aligned, then a return address of 0: the function returns
        // into a fault, which stops the thread for us.
        let rsp = ((saved.rsp - 256) & !0xf) - 8;
        assert_eq!(ptrace(libc::PTRACE_POKEDATA, tid, rsp, 0), 0);
        regs.rsp = rsp;
        regs.rip = addr;
        regs.rax = 0;
        // No system call to restart on the way back to user mode.
        regs.orig_rax = u64::MAX;
        assert_eq!(
            ptrace(libc::PTRACE_SETREGS, tid, 0, &regs as *const _ as u64),
            0
        );
        assert_eq!(ptrace(libc::PTRACE_CONT, tid, 0, 0), 0);
        loop {
            let status = wait_stop(tid);
            let sig = libc::WSTOPSIG(status);
            if sig == libc::SIGSEGV {
                break;
            }
            // Anything else (a signal for the target): hold it back until the call returned.
            assert_eq!(ptrace(libc::PTRACE_CONT, tid, 0, 0), 0);
        }
        // SAFETY: as above.
        let mut after: libc::user_regs_struct = unsafe { std::mem::zeroed() };
        assert_eq!(
            ptrace(libc::PTRACE_GETREGS, tid, 0, &mut after as *mut _ as u64),
            0
        );
        assert_eq!(
            after.rip, 0,
            "the call did not return to the fake return address"
        );
        assert_eq!(
            ptrace(libc::PTRACE_SETREGS, tid, 0, &saved as *const _ as u64),
            0
        );
        after.rax as i64
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Detaching from a signal-delivery stop with data 0 drops the SIGSEGV of the call.
        for &tid in &self.tids {
            ptrace(libc::PTRACE_DETACH, tid, 0, 0);
        }
    }
}

/// The run-time address of a symbol of a process's executable: its address in the file (from
/// llvm-nm, local symbols included) plus the load bias.
pub fn symbol_address(pid: i32, exe: &std::path::Path, symbol: &str) -> u64 {
    let nm = crate::run_ok(
        std::process::Command::new("/usr/lib/llvm-14/bin/llvm-nm")
            .arg("--defined-only")
            .arg(exe),
    );
    let vaddr = nm
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?;
            let _kind = f.next()?;
            (f.next()? == symbol).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or_else(|| panic!("{symbol} is not in {}", exe.display()));
    vaddr + load_bias(pid, exe)
}

/// Where a PIE executable's first segment (link address 0, file offset 0) is mapped.
pub fn load_bias(pid: i32, exe: &std::path::Path) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let want = std::fs::canonicalize(exe).expect("canonical path");
    maps.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 6 && f[2] == "00000000" && std::path::Path::new(f[5]) == want)
                .then(|| u64::from_str_radix(f[0].split('-').next()?, 16).ok())?
        })
        .unwrap_or_else(|| panic!("{} is not mapped in {pid}", exe.display()))
}
