//! `cargo xtask vm-test` without arguments: the smoke test proving the guest is what the
//! kernel-coverage work needs. Compiles fixtures/kcov-example/*.c on the host, boots the VM
//! once and runs fixtures/kcov-example/vm-smoke.sh in it (BTF, kcov, tracepoints, uprobes,
//! bpffs, cgroup2, namespaces, the kcov.rst example, a JIT-compiled BPF tracepoint program),
//! then symbolizes the example's PCs on the host with `addr2line -e vmlinux` (PC-1 rule) and
//! requires every PC to resolve and some to be in fs/read_write.c.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use super::{kernel, qemu};

const FIXTURE: &str = "kcov-example";
const PROGRAMS: &[&str] = &["kcov_example", "bpf_tracepoint_check"];

/// Compile the C helpers into target/fixtures/bin/.
pub fn build_fixtures() -> Result<PathBuf> {
    let bin = crate::fixtures::bin_dir();
    std::fs::create_dir_all(&bin)?;
    let src = crate::fixtures::src_dir(FIXTURE);
    for prog in PROGRAMS {
        crate::run(
            Command::new("gcc")
                .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o"])
                .arg(bin.join(prog))
                .arg(src.join(format!("{prog}.c"))),
        )?;
    }
    Ok(bin)
}

pub fn run(vm: qemu::Spec) -> Result<()> {
    let started = Instant::now();
    let kernel = kernel::ensure()?;
    let bin = build_fixtures()?;
    let out = crate::workspace_root()
        .join("target/vm-test")
        .join(format!("smoke-{}", std::process::id()));
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let script = crate::fixtures::src_dir(FIXTURE).join("vm-smoke.sh");
    let spec = qemu::Spec {
        command: vec![
            "/bin/sh".into(),
            script.to_string_lossy().into_owned(),
            bin.to_string_lossy().into_owned(),
            out.to_string_lossy().into_owned(),
        ],
        share: Some(out.clone()),
        ..vm
    };
    let outcome = qemu::run(&spec, &kernel)?;
    match outcome.status {
        qemu::Status::Exited(0) => {}
        qemu::Status::Exited(code) => bail!("the in-guest smoke checks failed (exit {code})"),
        qemu::Status::TimedOut => bail!(
            "the VM smoke test timed out after {} s\n{}",
            spec.timeout.as_secs(),
            qemu::logs_tail(&outcome.run_dir)
        ),
        qemu::Status::Failed(why) => bail!("the VM failed: {why}"),
    }
    let pcs = read_pcs(&out.join("kcov-pcs.txt"))?;
    check_symbolized(&kernel.vmlinux, &pcs)?;
    std::fs::remove_dir_all(&out)?;
    eprintln!(
        "[vm] smoke test passed: {} (2 vCPUs), boot-to-command {}, VM total {:.1} s, \
         vm-test total {:.1} s",
        outcome.accel.to_uppercase(),
        secs(outcome.boot_to_command),
        outcome.total.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("unknown".into(), |d| format!("{:.1} s", d.as_secs_f64()))
}

fn read_pcs(path: &Path) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the PCs the guest wrote to {}", path.display()))?;
    let pcs = text
        .lines()
        .map(|l| {
            u64::from_str_radix(l.trim().trim_start_matches("0x"), 16)
                .with_context(|| format!("bad PC line {l:?} in {}", path.display()))
        })
        .collect::<Result<Vec<u64>>>()?;
    if pcs.is_empty() {
        bail!("kcov recorded no PC for read(-1, NULL, 0)");
    }
    Ok(pcs)
}

/// Symbolize PC-1 of each PC (kcov records return addresses) with addr2line on the host.
fn check_symbolized(vmlinux: &Path, pcs: &[u64]) -> Result<()> {
    let out = Command::new("addr2line")
        .arg("-e")
        .arg(vmlinux)
        .arg("-f")
        .args(pcs.iter().map(|pc| format!("{:#x}", pc.wrapping_sub(1))))
        .output()
        .context("spawning addr2line (binutils)")?;
    if !out.status.success() {
        bail!("addr2line failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != pcs.len() * 2 {
        bail!(
            "addr2line printed {} lines for {} PCs",
            lines.len(),
            pcs.len()
        );
    }
    let mut unresolved = 0;
    let mut in_read_write = 0;
    for (pc, pair) in pcs.iter().zip(lines.chunks(2)) {
        let (func, place) = (pair[0], pair[1]);
        eprintln!("[vm]   {pc:#x}  {func}  {place}");
        if place.starts_with("??") || func == "??" {
            unresolved += 1;
        }
        if place.contains("fs/read_write.c:") {
            in_read_write += 1;
        }
    }
    if unresolved > 0 {
        bail!(
            "{unresolved} of {} kcov PCs did not symbolize against {}: \
             the guest kernel is not this vmlinux?",
            pcs.len(),
            vmlinux.display()
        );
    }
    if in_read_write == 0 {
        bail!("no kcov PC of read(-1, NULL, 0) symbolized to fs/read_write.c");
    }
    eprintln!(
        "[vm] ok: {} kcov PCs symbolized with addr2line, {in_read_write} in fs/read_write.c",
        pcs.len()
    );
    Ok(())
}
