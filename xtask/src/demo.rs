//! `./dev demo`: start the bundled instrumented workload (the Rust LLVM fixture, under the name
//! `covobs-demo`), attach covobs to it by name the way a user would, and end with the report.
use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

pub fn run() -> Result<()> {
    crate::fixtures::build_all()?;
    let root = crate::workspace_root();
    let work = root.join("target/demo");
    std::fs::create_dir_all(&work)?;
    // The workload under its own name, as a daemon would run.
    let bin = work.join("covobs-demo");
    let _ = std::fs::remove_file(&bin);
    std::fs::copy(crate::fixtures::bin_dir().join("llvm-rust-target"), &bin)
        .context("copying the demo workload")?;
    let profile = work.join("covobs-demo.profraw");
    let _ = std::fs::remove_file(&profile);
    let mut workload = Command::new(&bin)
        .env("LLVM_PROFILE_FILE", &profile)
        .current_dir(&work)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the demo workload")?;
    let mut ready = String::new();
    if let Some(out) = workload.stdout.take() {
        BufReader::new(out).read_line(&mut ready)?;
    }
    println!("demo: started {}", ready.trim());

    let out = root.join("covobs-out").join(format!(
        "demo-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    ));
    let covobs = root.join("target/debug/covobs");
    println!(
        "demo: {} attach --name covobs-demo --interval 2s --duration 10s --out {}",
        covobs.display(),
        out.display()
    );
    let status = Command::new(&covobs)
        .args([
            "attach",
            "--name",
            "covobs-demo",
            "--interval",
            "2s",
            "--duration",
            "10s",
            "--out",
        ])
        .arg(&out)
        .status()
        .context("running covobs")?;
    let _ = workload.kill();
    let _ = workload.wait();
    if !status.success() {
        bail!("covobs attach failed: {status}");
    }
    let index = out.join("report/html/index.html");
    println!("\ndemo: session in {}", out.display());
    if index.is_file() {
        println!("demo: open {} in a browser", index.display());
    } else {
        bail!("the report is missing: {}", index.display());
    }
    Ok(())
}
