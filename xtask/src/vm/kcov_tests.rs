//! `cargo xtask vm-test --kcov` (and `cargo xtask test`): covobs' kernel-coverage integration
//! tests (tests/tests/kcov_vm.rs), built on the host and run in the kcov VM, where they are
//! the ignored tests of that test executable.
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use super::{kernel, qemu};

/// Build covobs and the kcov test executable; its path.
pub fn build() -> Result<std::path::PathBuf> {
    crate::run(Command::new(env!("CARGO")).args(["build", "-p", "covobs"]))?;
    let out = Command::new(env!("CARGO"))
        .args([
            "test",
            "--no-run",
            "-p",
            "covobs-tests",
            "--test",
            "kcov_vm",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the kcov tests failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "kcov_vm")
        .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
        .context("cargo did not say where the kcov_vm test executable is")
}

pub fn run(vm: qemu::Spec) -> Result<()> {
    let started = std::time::Instant::now();
    let exe = build()?;
    let kernel = kernel::ensure()?;
    let spec = qemu::Spec {
        command: vec![
            exe.to_string_lossy().into_owned(),
            "--ignored".into(),
            "--test-threads=1".into(),
        ],
        ..vm
    };
    let outcome = qemu::run(&spec, &kernel)?;
    match outcome.status {
        qemu::Status::Exited(0) => {
            eprintln!(
                "[vm] kcov tests passed: {}, VM total {:.1} s, with the build {:.1} s",
                outcome.accel.to_uppercase(),
                outcome.total.as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        qemu::Status::Exited(code) => bail!("the kcov tests failed in the VM (exit {code})"),
        qemu::Status::TimedOut => bail!(
            "the kcov tests timed out in the VM after {} s\n{}",
            spec.timeout.as_secs(),
            qemu::logs_tail(&outcome.run_dir)
        ),
        qemu::Status::Failed(why) => bail!("the VM failed: {why}"),
    }
}
