//! The workload of `covobs run`, launched by its session: fork, hold the child before exec until covobs watches
//! it (and has probed the executable), then let it enable kcov for itself (KCOV_ENABLE must
//! come from the traced task; kcov stays enabled across exec) and exec the command.
//!
//! The child runs between fork and exec in a process that has other threads (tokio): it only
//! makes async-signal-safe calls on memory prepared before the fork.
use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use crate::kcov::buffer::OwnedBuffer;

/// What the child reports on its status pipe when it cannot go on: a stage and an errno.
const STAGE_ENABLE: u8 = 1;
const STAGE_EXEC: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("{0}: {1}")]
    Io(&'static str, std::io::Error),
    #[error("an argument or environment variable contains a NUL byte")]
    Nul,
    #[error("the workload was started already")]
    Started,
    #[error("the workload could not enable kcov for itself: {0}")]
    Enable(std::io::Error),
    #[error("cannot run {0}: {1}")]
    Exec(String, std::io::Error),
}

/// The workload, ready to be forked.
pub struct Prepared {
    pub program: PathBuf,
    pub argv: Vec<String>,
    pub kernel: bool,
    pub kcov_entries: usize,
    /// covobs' kcov buffer, until the session takes it.
    pub buffer: Option<OwnedBuffer>,
}

impl Prepared {
    pub fn spawn(&mut self) -> Result<Launch, LaunchError> {
        let fd = self.buffer.as_ref().map(OwnedBuffer::raw_fd);
        Launch::spawn(&self.program, &self.argv, fd)
    }
}

/// A forked child waiting for `go`.
pub struct Launch {
    pub pid: u32,
    pub program: PathBuf,
    pub argv: Vec<String>,
    go: Option<OwnedFd>,
    status: Option<OwnedFd>,
    reaped: bool,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), LaunchError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(LaunchError::Io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cstring(b: &[u8]) -> Result<CString, LaunchError> {
    CString::new(b).map_err(|_| LaunchError::Nul)
}

impl Launch {
    /// Fork a child that will run `program` with `argv` (argv[0] included) once told to; with
    /// `kcov_fd`, it first enables kcov (PC tracing) on that descriptor.
    pub fn spawn(
        program: &Path,
        argv: &[String],
        kcov_fd: Option<i32>,
    ) -> Result<Self, LaunchError> {
        let path = cstring(program.as_os_str().as_bytes())?;
        let args: Vec<CString> = argv
            .iter()
            .map(|a| cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let env: Vec<CString> = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k.as_bytes().to_vec();
                kv.push(b'=');
                kv.extend_from_slice(v.as_bytes());
                cstring(&kv)
            })
            .collect::<Result<_, _>>()?;
        let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        arg_ptrs.push(std::ptr::null());
        let mut env_ptrs: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        env_ptrs.push(std::ptr::null());
        let (go_r, go_w) = pipe()?;
        let (status_r, status_w) = pipe()?;
        let kcov = kcov_fd.unwrap_or(-1);

        // SAFETY: fork duplicates this process; the child below only makes async-signal-safe
        // calls (read, ioctl, sigaction, sigprocmask, execve, write, _exit) on memory prepared
        // above, and never returns into Rust code.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(LaunchError::Io("fork", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: see above; every pointer refers to memory prepared before the fork.
            unsafe {
                child(
                    go_r.as_raw_fd(),
                    status_w.as_raw_fd(),
                    kcov,
                    &path,
                    &arg_ptrs,
                    &env_ptrs,
                )
            }
        }
        drop(go_r);
        drop(status_w);
        Ok(Self {
            pid: pid as u32,
            program: program.to_path_buf(),
            argv: argv.to_vec(),
            go: Some(go_w),
            status: Some(status_r),
            reaped: false,
        })
    }

    /// Let the child enable kcov and exec; fails when it could not.
    pub fn go(&mut self) -> Result<(), LaunchError> {
        let go = self.go.take().ok_or(LaunchError::Started)?;
        // SAFETY: writes one byte from a valid buffer to our pipe descriptor.
        let n = unsafe { libc::write(go.as_raw_fd(), b"g".as_ptr().cast(), 1) };
        if n != 1 {
            return Err(LaunchError::Io(
                "starting the workload",
                std::io::Error::last_os_error(),
            ));
        }
        drop(go);
        let status = self.status.take().ok_or(LaunchError::Started)?;
        let mut msg = [0u8; 5];
        let mut got = 0;
        while got < msg.len() {
            // SAFETY: reads into the unfilled part of a valid buffer.
            let n = unsafe {
                libc::read(
                    status.as_raw_fd(),
                    msg[got..].as_mut_ptr().cast(),
                    msg.len() - got,
                )
            };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        if got == 0 {
            // The pipe closed at exec: the command runs.
            return Ok(());
        }
        self.reap();
        let errno =
            std::io::Error::from_raw_os_error(i32::from_le_bytes([msg[1], msg[2], msg[3], msg[4]]));
        Err(match msg[0] {
            STAGE_ENABLE => LaunchError::Enable(errno),
            _ => LaunchError::Exec(self.program.display().to_string(), errno),
        })
    }

    /// Wait for the child to exit; its status as the shell shows it (128 + signal).
    pub fn wait(&mut self) -> Option<i32> {
        if self.reaped {
            return None;
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out-parameter.
        let r = unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
        self.reaped = true;
        if r != self.pid as i32 {
            return None;
        }
        if libc::WIFEXITED(status) {
            Some(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            Some(128 + libc::WTERMSIG(status))
        } else {
            None
        }
    }

    /// Kill a child that has not been told to go (a failure before the start) and reap it.
    pub fn reap(&mut self) {
        if self.reaped {
            return;
        }
        if self.go.is_some() {
            // SAFETY: signals our own child, which has not exec'd (it waits on the pipe).
            unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
        self.reaped = true;
    }
}

impl Drop for Launch {
    fn drop(&mut self) {
        // Never leave a held child behind; a running workload is left to run.
        if self.go.is_some() {
            self.reap();
        }
    }
}

/// The child's side. Never returns.
///
/// # Safety
/// Called in the child right after fork; the pointers are valid NUL-terminated strings and
/// NULL-terminated arrays prepared before the fork.
unsafe fn child(
    go: i32,
    status: i32,
    kcov: i32,
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let report = |stage: u8| {
        // SAFETY: errno location and write are async-signal-safe; the buffer is on the stack.
        unsafe {
            let e = *libc::__errno_location();
            let b = e.to_le_bytes();
            let msg = [stage, b[0], b[1], b[2], b[3]];
            libc::write(status, msg.as_ptr().cast(), msg.len());
            libc::_exit(127);
        }
    };
    // SAFETY: async-signal-safe calls on valid arguments (see the function's contract).
    unsafe {
        let mut byte = 0u8;
        loop {
            let n = libc::read(go, (&mut byte as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n < 0 && *libc::__errno_location() == libc::EINTR {
                continue;
            }
            // covobs gave up before starting it.
            libc::_exit(126);
        }
        // What Rust's runtime changed in covobs must not leak into the command: SIGPIPE is
        // ignored there, and no signal may stay blocked.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if kcov >= 0
            && libc::ioctl(
                kcov,
                covobs_common::kcov::ENABLE as _,
                covobs_common::kcov::TRACE_PC,
            ) != 0
        {
            report(STAGE_ENABLE);
        }
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        report(STAGE_EXEC);
    }
    // SAFETY: leaves the child at once.
    unsafe { libc::_exit(127) }
}
