//! A multi-threaded target for `covobs watch` tests, driven line by line on stdin:
//!
//!   spawn NAME      start a thread that names itself NAME  -> "spawned NAME TID"
//!   kill TID SIG    tgkill(own pid, TID, SIG)               -> "sent TID SIG"
//!   stop NAME       end thread NAME and join it             -> "stopped NAME TID"
//!   quit            exit(0)
//!
//! SIGUSR1 and SIGUSR2 have handlers (they count), so signals do not kill it.
use std::{
    collections::HashMap,
    io::{BufRead, Write},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
};

static RECEIVED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    RECEIVED.fetch_add(1, Ordering::Relaxed);
}

fn gettid() -> i32 {
    // SAFETY: no preconditions.
    unsafe { libc::gettid() }
}

fn main() {
    for sig in [libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: installs an async-signal-safe handler (one atomic add).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let pid = std::process::id();
    let mut out = std::io::stdout();
    let _ = writeln!(out, "ready {pid}");
    let _ = out.flush();

    let mut threads: HashMap<String, (i32, mpsc::Sender<()>, thread::JoinHandle<()>)> =
        HashMap::new();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["spawn", name] => {
                let (tid_tx, tid_rx) = mpsc::channel();
                let (stop_tx, stop_rx) = mpsc::channel::<()>();
                let thread_name = name.to_string();
                let handle = thread::spawn(move || {
                    let c = std::ffi::CString::new(thread_name).unwrap_or_default();
                    // SAFETY: PR_SET_NAME reads a NUL-terminated string (truncated to 15 bytes).
                    unsafe { libc::prctl(libc::PR_SET_NAME, c.as_ptr()) };
                    let _ = tid_tx.send(gettid());
                    let _ = stop_rx.recv();
                });
                let tid = tid_rx.recv().unwrap_or(0);
                threads.insert(name.to_string(), (tid, stop_tx, handle));
                let _ = writeln!(out, "spawned {name} {tid}");
            }
            ["kill", tid, sig] => {
                let tid: i32 = tid.parse().unwrap_or(0);
                let sig: i32 = sig.parse().unwrap_or(0);
                // SAFETY: tgkill on our own thread group with a handled signal.
                unsafe { libc::syscall(libc::SYS_tgkill, pid as i32, tid, sig) };
                let _ = writeln!(out, "sent {tid} {sig}");
            }
            ["stop", name] => {
                if let Some((tid, stop, handle)) = threads.remove(*name) {
                    let _ = stop.send(());
                    let _ = handle.join();
                    let _ = writeln!(out, "stopped {name} {tid}");
                }
            }
            // exit(3) without dropping `threads`: their channels stay open, so the threads still
            // block when exit_group kills them (SIGKILL), instead of racing it to a clean end.
            ["quit"] => std::process::exit(0),
            _ => {
                let _ = writeln!(out, "? {line}");
            }
        }
        let _ = out.flush();
    }
}
