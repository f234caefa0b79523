//! Boots the test kernel under QEMU and runs one command in it (`cargo xtask vm-run`).
//!
//! Channels: the serial console (kernel + init messages) and two virtio serial ports (the
//! command's stdout and stderr) go to files in the run directory, which threads tail to the
//! host's stderr/stdout while QEMU runs; the exit status comes back as a file on the control
//! share (9p). QEMU is killed at the timeout; a guest that panics reboots, which ends QEMU.
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{guest, initramfs, kernel, tsc};

/// What to run and how.
#[derive(Debug, Clone)]
pub struct Spec {
    pub command: Vec<String>,
    pub timeout: Duration,
    pub mem_mb: u32,
    pub cpus: u32,
    /// Host directory shared writable at the same path inside; None: a fresh temp dir.
    pub share: Option<PathBuf>,
    pub verbose: bool,
    pub env: Vec<(String, String)>,
    /// Keep the run directory (logs, control files, default share) afterwards.
    pub keep: bool,
}

/// How a run ended.
#[derive(Debug)]
pub enum Status {
    /// The command ran and exited with this status (128+N: killed by signal N).
    Exited(i32),
    /// The timeout struck; QEMU was killed.
    TimedOut,
    /// The guest never reported a status (panic, init failure, QEMU error): why.
    Failed(String),
}

#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub accel: &'static str,
    /// From starting QEMU to init starting the command (seen on the console).
    pub boot_to_command: Option<Duration>,
    pub total: Duration,
    pub run_dir: PathBuf,
}

/// TCG unless the CPU has hardware virtualization and /dev/kvm opens
/// (`COVOBS_VM_ACCEL=tcg|kvm` overrides).
fn accel() -> &'static str {
    match std::env::var("COVOBS_VM_ACCEL").as_deref() {
        Ok("kvm") => return "kvm",
        Ok("tcg") => return "tcg",
        _ => {}
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let dev = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if hw && dev { "kvm" } else { "tcg" }
}

/// QEMU's option syntax doubles commas inside values.
fn opt_path(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

fn fresh_run_dir() -> Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!("covobs-vm-{}-{nanos:09}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Boot the VM, run `spec.command` in it, return how it ended.
pub fn run(spec: &Spec, kernel: &kernel::Kernel) -> Result<Outcome> {
    let initrd = initramfs::ensure()?;
    let run_dir = fresh_run_dir()?;
    let ctl = run_dir.join("ctl");
    std::fs::create_dir(&ctl)?;
    let share = match &spec.share {
        Some(dir) => {
            let dir = dir
                .canonicalize()
                .with_context(|| format!("--share {}", dir.display()))?;
            if !dir.is_dir() {
                bail!("--share {}: not a directory", dir.display());
            }
            dir
        }
        None => {
            let dir = run_dir.join("share");
            std::fs::create_dir(&dir)?;
            dir
        }
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let env = guest::environment(&share, &spec.env)?;
    guest::write_control(&ctl, &share, &cwd, &env, &spec.command)?;

    let logs = ["console.log", "stdout.log", "stderr.log", "qemu.log"].map(|n| run_dir.join(n));
    for log in &logs {
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    }
    let [console_log, stdout_log, stderr_log, qemu_log] = &logs;
    let accel = accel();
    let mut append = String::from("console=ttyS0 panic=-1 rdinit=/init");
    if accel == "tcg" {
        // See tsc.rs. tsc=reliable: the clocksource watchdog would compare the TSC with
        // jiffies, which lag under TCG, and drop the TSC.
        match tsc::host_khz() {
            Some(khz) => append.push_str(&format!(" tsc_early_khz={khz} tsc=reliable")),
            None => eprintln!(
                "[vm] warning: the host has no constant TSC; the guest's clocks may tick in \
                 jiffies (4 ms)"
            ),
        }
    }
    if !spec.verbose {
        append.push_str(" quiet");
    }
    // Extra kernel parameters for debugging the guest (e.g. initcall_debug).
    if let Ok(extra) = std::env::var("COVOBS_VM_APPEND") {
        append.push(' ');
        append.push_str(&extra);
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-name",
        "covobs-vm",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
    ])
    .args(["-no-reboot", "-accel", accel])
    .args(["-cpu", if accel == "kvm" { "host" } else { "max" }])
    // One socket per vCPU: without ACPI the kernel finds CPUs in SeaBIOS' MP table,
    // which lists one entry per package.
    .arg("-smp")
    .arg(format!("{0},sockets={0},cores=1,threads=1", spec.cpus))
    .args(["-m", &spec.mem_mb.to_string()])
    .arg("-kernel")
    .arg(&kernel.bzimage)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", &append])
    .arg("-chardev")
    .arg(format!("file,id=con,path={}", opt_path(console_log)))
    .args(["-serial", "chardev:con"])
    .args(["-device", "virtio-serial-pci,id=vser"]);
    for (id, log) in [("stdout", stdout_log), ("stderr", stderr_log)] {
        cmd.arg("-chardev")
            .arg(format!("file,id={id},path={}", opt_path(log)))
            .arg("-device")
            .arg(format!(
                "virtserialport,bus=vser.0,chardev={id},name=covobs.{id}"
            ));
    }
    // The workspace on its own too: a checkout under /tmp, /var/tmp or /run (a CI clone) would
    // be hidden by the guest's tmpfs there.
    let workspace = crate::workspace_root();
    let exports: [(&str, &Path, &str); 4] = [
        ("hostroot", Path::new("/"), ",readonly=on"),
        ("covobs_ws", &workspace, ",readonly=on"),
        ("covobs_ctl", &ctl, ""),
        ("covobs_share", &share, ""),
    ];
    for (tag, path, extra) in exports {
        cmd.arg("-fsdev")
            .arg(format!(
                "local,id={tag},path={},security_model=none,multidevs=remap{extra}",
                opt_path(path)
            ))
            .arg("-device")
            .arg(format!("virtio-9p-pci,fsdev={tag},mount_tag={tag}"));
    }
    let qemu_out = std::fs::File::create(qemu_log)?;
    cmd.args(["-device", "virtio-rng-pci"])
        .stdin(Stdio::null())
        .stdout(qemu_out.try_clone()?)
        .stderr(qemu_out);

    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .context("spawning qemu-system-x86_64 (Debian package qemu-system-x86)")?;
    let done = Arc::new(AtomicBool::new(false));
    let command_started = Arc::new(Mutex::new(None));
    let tails = [
        tail(
            console_log,
            Sink::Console(spec.verbose, command_started.clone()),
            done.clone(),
        )?,
        tail(stdout_log, Sink::Stdout, done.clone())?,
        tail(stderr_log, Sink::Stderr, done.clone())?,
    ];
    let timed_out = wait_or_kill(&mut child, spec.timeout)?;
    done.store(true, Ordering::SeqCst);
    for t in tails {
        let _ = t.join();
    }
    let total = started.elapsed();
    let boot_to_command = command_started
        .lock()
        .ok()
        .and_then(|g| *g)
        .map(|t: Instant| t.duration_since(started));

    let status = if timed_out {
        Status::TimedOut
    } else {
        match std::fs::read_to_string(ctl.join("status")) {
            Ok(text) => match text.trim().parse() {
                Ok(code) => Status::Exited(code),
                Err(_) => Status::Failed(format!("bad status file content {text:?}")),
            },
            Err(_) => {
                let console = std::fs::read(console_log).unwrap_or_default();
                let why = diagnose(&String::from_utf8_lossy(&console));
                Status::Failed(format!("{why}\n{}", logs_tail(&run_dir)))
            }
        }
    };
    let keep = spec.keep || !matches!(status, Status::Exited(_));
    if !keep {
        std::fs::remove_dir_all(&run_dir)
            .with_context(|| format!("removing {}", run_dir.display()))?;
    }
    Ok(Outcome {
        status,
        accel,
        boot_to_command,
        total,
        run_dir,
    })
}

/// Wait for QEMU; kill it at the timeout. Returns whether it timed out.
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().context("waiting for qemu")?.is_some() {
            return Ok(false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            child.wait().context("reaping qemu")?;
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Why a guest ended without a status: a panic or init failure line from the console.
fn diagnose(console: &str) -> String {
    if let Some(line) = console.lines().find(|l| l.contains("Kernel panic")) {
        format!("the guest kernel panicked: {}", line.trim())
    } else if let Some(line) = console.lines().find(|l| l.contains("covobs-vm: FAILED")) {
        format!("the guest's init failed: {}", line.trim())
    } else {
        "the guest ended without reporting the command's exit status".to_owned()
    }
}

/// The last lines of a run's console and QEMU logs, for error messages.
pub fn logs_tail(run_dir: &Path) -> String {
    let (console, qemu) = (run_dir.join("console.log"), run_dir.join("qemu.log"));
    format!(
        "--- last console lines ({}) ---\n{}\n--- qemu ({}) ---\n{}",
        console.display(),
        kernel::tail(&console, 30),
        qemu.display(),
        kernel::tail(&qemu, 10)
    )
}

enum Sink {
    /// Console: echoed to stderr when verbose; notes when init starts the command.
    Console(bool, Arc<Mutex<Option<Instant>>>),
    Stdout,
    Stderr,
}

/// Follow a file QEMU writes, copying what appears to the sink, until `done` and drained.
fn tail(path: &Path, sink: Sink, done: Arc<AtomicBool>) -> Result<JoinHandle<()>> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let mut line = Vec::new();
        loop {
            let finished = done.load(Ordering::SeqCst);
            let n = file.read(&mut buf).unwrap_or(0);
            if n == 0 {
                if finished {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            let chunk = &buf[..n];
            match &sink {
                Sink::Stdout => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(chunk).and_then(|()| out.flush());
                }
                Sink::Stderr => {
                    let _ = std::io::stderr().lock().write_all(chunk);
                }
                Sink::Console(verbose, started) => {
                    if *verbose {
                        let _ = std::io::stderr().lock().write_all(chunk);
                    }
                    for &b in chunk {
                        if b != b'\n' {
                            line.push(b);
                            continue;
                        }
                        if line.starts_with(b"covobs-vm: run at ")
                            && let Ok(mut g) = started.lock()
                        {
                            *g = Some(Instant::now());
                        }
                        line.clear();
                    }
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_why_the_guest_died() {
        let panic = "[    1.0] Kernel panic - not syncing: Attempted to kill init!\n";
        assert!(diagnose(panic).starts_with("the guest kernel panicked: [    1.0] Kernel panic"));
        let init = "covobs-vm: init at 1 s\ncovobs-vm: FAILED: bpffs\n";
        assert_eq!(
            diagnose(init),
            "the guest's init failed: covobs-vm: FAILED: bpffs"
        );
        assert!(diagnose("").contains("without reporting"));
    }
}
