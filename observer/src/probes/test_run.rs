//! BPF_PROG_TEST_RUN of a raw tracepoint program: the kernel runs it once, now, in the calling
//! thread's context (Linux 5.10+). covobs learns facts about itself this way (its PID namespace's
//! level) without attaching anything.
use std::os::fd::{AsRawFd, BorrowedFd};

/// `BPF_PROG_TEST_RUN` of `enum bpf_cmd`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr`.
#[repr(C, align(8))]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so it is zero: the kernel refuses non-zero bytes past the last field it knows.
    _pad: u32,
}

/// Run the raw tracepoint program `prog` once with no arguments; its return value.
pub fn run_raw_tracepoint(prog: BorrowedFd<'_>) -> std::io::Result<u32> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: bpf(2) reads and writes `attr`, a valid `union bpf_attr` prefix of the size passed;
    // with no data or context buffers, nothing else is touched.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(attr.retval)
}
