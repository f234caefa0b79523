//! The kcov test kernel and the QEMU VM that boots it with the host's files shared in.
//!
//! - `cargo xtask kernel`: build (or find in /var/cache/covobs) the kcov + BPF + BTF kernel
//!   (kernel.rs, config fragment `kernel/covobs-kcov.config`).
//! - `cargo xtask vm-run [OPTIONS] -- CMD ARGS...`: run a host command inside a guest running
//!   that kernel; exits with CMD's status, 124 on timeout, 125 when the VM itself failed.
//! - `cargo xtask vm-test [OPTIONS] [-- TEST-BINARY ARGS...]`: the kernel-coverage test
//!   entry point (CI, `./dev test`): without arguments the smoke test (smoke.rs), with
//!   arguments that test executable inside the guest, failing when it fails; with `--kcov`
//!   covobs' kcov integration tests (kcov_tests.rs, tests/tests/kcov_vm.rs).
//!
//! # The guest
//! QEMU (TCG `-cpu max`; KVM `-cpu host` only where /proc/cpuinfo shows vmx/svm and /dev/kvm
//! opens), 2 vCPUs and 2 GiB by default, no disk and no network card. The initramfs
//! (initramfs.rs, init.sh) mounts the host's `/` read-only over 9p and switch_roots into it
//! (a real root, not a chroot: user namespaces and pivot_root work). Default timeouts: 600 s,
//! 120 s for the smoke test.
//!
//! It can:
//! - run host-built binaries unchanged at their host paths, dynamically linked against the
//!   host's glibc, as root with all capabilities, in the host's working directory (if it is
//!   visible in the guest, else `/`);
//! - see the workspace (this checkout) at its host path, wherever it is;
//! - write to tmpfs on /tmp, /var/tmp, /run, /dev/shm (lost at exit), and to the output share:
//!   `--share HOST_DIR` (writable 9p at the same path; the host sees the files at once), by
//!   default a fresh temp dir; its path is in `$COVOBS_VM_SHARE`. `$COVOBS_IN_VM=1`;
//! - use kcov (/sys/kernel/debug/kcov: PC and CMP modes, all of the kernel instrumented), BPF
//!   (JIT, BTF at /sys/kernel/btf/vmlinux, tracepoints incl. syscalls:*, uprobes,
//!   kprobes, fentry, ring buffers, bpf_send_signal_thread), perf events, debugfs, tracefs,
//!   bpffs, cgroup2, user/pid/ipc/uts/net/mount namespaces, unix and loopback TCP/UDP
//!   sockets (v4 and v6), SysV IPC, POSIX mqueues, process_vm_readv, pidfd_getfd,
//!   /proc/PID/map_files;
//! - see the host's environment variables `RUST_*`, `CARGO_*`, `COVOBS_*`, `LANG`, `LC_ALL`,
//!   `PATH` (plus the standard directories), and `--env NAME=VALUE`; `HOME=/root`, `TERM=dumb`.
//!
//! It cannot:
//! - write anywhere else on the host's filesystem (read-only root; its /tmp, /run, /var/tmp
//!   are hidden by the guest's tmpfs, so host paths under them are not visible);
//! - reach the network (no NIC; loopback only), load kernel modules (none are built), use
//!   block devices, KVM, sound, USB or a graphics console;
//! - read stdin (it is /dev/null) or get a terminal: stdout/stderr are virtio serial ports,
//!   streamed to the host's stdout/stderr (the kernel's console goes there only with
//!   `--verbose`; otherwise into the run directory's console.log);
//! - run systemd or other services: the command is the only workload, and when it exits the
//!   guest is powered off, killing whatever it left running;
//! - see host files change while it runs: the root is mounted with 9p `cache=loose` (the
//!   output share and control directory are not cached);
//! - keep KASLR: the kernel is not relocatable, so kcov PCs equal vmlinux addresses;
//! - keep the host's wall clock to better than a second: it is read from the emulated RTC
//!   at boot (monotonic clocks run on the TSC at the host's rate under TCG, kvm-clock
//!   under KVM).
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};

mod cache;
mod guest;
mod initramfs;
mod kconfig;
mod kcov_tests;
mod kernel;
mod qemu;
mod smoke;
mod sources;
mod tsc;

/// Options shared by `vm-run` and `vm-test`.
#[derive(clap::Args, Debug, Clone)]
pub struct VmArgs {
    /// Kill the guest after this many seconds (vm-run then exits 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MB", default_value_t = 2048)]
    pub mem: u32,
    /// Guest vCPUs.
    #[arg(long, default_value_t = 2)]
    pub cpus: u32,
    /// Host directory shared writable into the guest at the same path (default: a fresh
    /// temp dir, deleted afterwards unless --keep).
    #[arg(long, value_name = "HOST_DIR")]
    pub share: Option<PathBuf>,
    /// Show the guest kernel's console (boot messages) on stderr.
    #[arg(long)]
    pub verbose: bool,
    /// Set an environment variable for the command in the guest.
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Keep the run directory (console/QEMU logs, control files, default share).
    #[arg(long)]
    pub keep: bool,
    /// vm-test: run covobs' kernel-coverage integration tests (tests/tests/kcov_vm.rs)
    /// instead of the smoke test.
    #[arg(long)]
    pub kcov: bool,
}

impl Default for VmArgs {
    /// The same defaults as the command line's.
    fn default() -> Self {
        VmArgs {
            timeout: None,
            mem: 2048,
            cpus: 2,
            share: None,
            verbose: false,
            env: Vec::new(),
            keep: false,
            kcov: false,
        }
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

impl VmArgs {
    fn spec(&self, command: Vec<String>, default_timeout: u64) -> qemu::Spec {
        qemu::Spec {
            command,
            timeout: Duration::from_secs(self.timeout.unwrap_or(default_timeout)),
            mem_mb: self.mem,
            cpus: self.cpus,
            share: self.share.clone(),
            verbose: self.verbose,
            env: self.env.clone(),
            keep: self.keep,
        }
    }
}

/// `cargo xtask kernel`: print where the kernel is and how long finding or building it took.
pub fn kernel_cmd() -> Result<()> {
    let started = std::time::Instant::now();
    let kernel = kernel::ensure()?;
    eprintln!(
        "[vm] kernel ready in {:.3} s: {}",
        started.elapsed().as_secs_f64(),
        kernel.dir.display()
    );
    println!("{}", kernel.bzimage.display());
    println!("{}", kernel.vmlinux.display());
    Ok(())
}

/// The kcov kernel's vmlinux (built or found in the cache).
pub fn vmlinux() -> Result<PathBuf> {
    Ok(kernel::ensure()?.vmlinux)
}

/// Exit status of `vm-run` when the VM timed out.
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit status of `vm-run` when the VM could not run the command or did not report back.
pub const EXIT_VM_FAILED: i32 = 125;

/// `cargo xtask vm-run`: returns the exit status for the process.
pub fn vm_run(args: &VmArgs, command: Vec<String>) -> i32 {
    let spec = args.spec(command, 600);
    match kernel::ensure().and_then(|k| qemu::run(&spec, &k)) {
        Ok(outcome) => {
            if args.verbose {
                eprintln!(
                    "[vm] {} {} vCPUs {} MiB: boot-to-command {}, total {:.1} s",
                    outcome.accel.to_uppercase(),
                    spec.cpus,
                    spec.mem_mb,
                    outcome
                        .boot_to_command
                        .map_or("unknown".into(), |d| format!("{:.1} s", d.as_secs_f64())),
                    outcome.total.as_secs_f64()
                );
            }
            match outcome.status {
                qemu::Status::Exited(code) => code,
                qemu::Status::TimedOut => {
                    eprintln!(
                        "[vm] error: timed out after {} s; the guest was killed\n{}",
                        spec.timeout.as_secs(),
                        qemu::logs_tail(&outcome.run_dir)
                    );
                    EXIT_TIMEOUT
                }
                qemu::Status::Failed(why) => {
                    eprintln!("[vm] error: {why}");
                    EXIT_VM_FAILED
                }
            }
        }
        Err(e) => {
            eprintln!("[vm] error: {e:#}");
            EXIT_VM_FAILED
        }
    }
}

/// `cargo xtask vm-test`: the smoke test, or `command` (a test executable) in the guest.
pub fn vm_test(args: &VmArgs, command: Vec<String>) -> Result<()> {
    if args.kcov {
        return kcov_tests::run(args.spec(Vec::new(), 600));
    }
    if command.is_empty() {
        return smoke::run(args.spec(Vec::new(), 120));
    }
    let spec = args.spec(command, 600);
    let outcome = qemu::run(&spec, &kernel::ensure()?)?;
    match outcome.status {
        qemu::Status::Exited(0) => Ok(()),
        qemu::Status::Exited(code) => {
            bail!("{:?} failed in the VM (exit {code})", spec.command)
        }
        qemu::Status::TimedOut => bail!(
            "{:?} timed out in the VM after {} s\n{}",
            spec.command,
            spec.timeout.as_secs(),
            qemu::logs_tail(&outcome.run_dir)
        ),
        qemu::Status::Failed(why) => bail!("the VM failed: {why}"),
    }
}
