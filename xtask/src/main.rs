//! covobs' developer tasks. `./dev` runs the set-up, then these.
use std::process::Command;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod fixtures;
mod install;
mod newcomer;
mod static_build;
mod vm;

#[derive(Parser)]
#[command(about = "covobs developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the instrumented test targets into target/fixtures.
    Fixtures,
    /// Build fixtures, then run every test: host integration tests, then the kcov VM tests.
    Test {
        /// Extra arguments for `cargo test` (a filter, `--nocapture`, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        cargo_args: Vec<String>,
    },
    /// Build covobs statically linked (musl): the binary of the container image.
    Static,
    /// Run covobs on the bundled demo workload and write a report.
    Demo,
    /// Build the static covobs and install it with its shell completions (bash, zsh, fish) and
    /// man pages under a prefix. Files already up to date are left alone.
    Install {
        /// Where: PREFIX/bin/covobs, PREFIX/share/{bash-completion,zsh,fish,man}/...
        #[arg(long, default_value = install::DEFAULT_PREFIX)]
        prefix: std::path::PathBuf,
        /// Install this covobs binary instead of building the static one (tests).
        #[arg(long, hide = true)]
        binary: Option<std::path::PathBuf>,
    },
    /// A new user's path in a fresh clone: the README's two commands, the install step, then
    /// covobs from the PATH (doctor, --version, man, completion). Runs the whole test suite in
    /// the clone: not part of the suite.
    NewcomerCheck {
        /// Install there instead of a prefix of the check's own (e.g. /usr/local as the README).
        #[arg(long)]
        prefix: Option<std::path::PathBuf>,
        /// Keep the clone and the prefix afterwards.
        #[arg(long)]
        keep: bool,
        /// Skip `./dev test` in the clone.
        #[arg(long)]
        skip_test: bool,
    },
    /// Run the benchmarks and print their figures (all, or the ones named: watch, attach, ocaml,
    /// snapshot, kcov, report, scale, guest, fleet).
    Bench { which: Vec<String> },
    /// Build (or find in /var/cache/covobs) the kcov + BPF + BTF test kernel.
    Kernel,
    /// Run a host command inside a QEMU guest running the kcov kernel; exit with its status.
    VmRun {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// The guest half of `bench kcov` (run inside the kcov VM by the benchmark).
    #[command(hide = true)]
    BenchKcovGuest { share: std::path::PathBuf },
    /// Kernel-coverage tests in the kcov VM: the smoke test, or a test executable given after `--`.
    VmTest {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// A test executable (and its arguments) to run in the guest instead of the smoke test.
        #[arg(last = true, value_name = "TEST")]
        command: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().task {
        Task::Fixtures => fixtures::build_all(),
        Task::Test { cargo_args } => {
            fixtures::build_all()?;
            static_build::build()?;
            run(Command::new(env!("CARGO"))
                .args(["test", "--workspace"])
                .args(&cargo_args))?;
            vm::vm_test(&vm::VmArgs::default(), Vec::new())?;
            let kcov = vm::VmArgs {
                kcov: true,
                ..vm::VmArgs::default()
            };
            vm::vm_test(&kcov, Vec::new())
        }
        Task::Static => static_build::build().map(drop),
        Task::Demo => demo::run(),
        Task::Install { prefix, binary } => install::run(&prefix, binary),
        Task::NewcomerCheck {
            prefix,
            keep,
            skip_test,
        } => newcomer::run(&newcomer::Options {
            prefix,
            keep,
            skip_test,
        }),
        Task::Bench { which } => {
            fixtures::build_all()?;
            fixtures::llvm::build_for_benches()?;
            run(Command::new(env!("CARGO")).args(["build", "--release", "-p", "covobs"]))?;
            bench::run(&which)
        }
        Task::Kernel => vm::kernel_cmd(),
        Task::VmRun { vm, command } => std::process::exit(vm::vm_run(&vm, command)),
        Task::VmTest { vm, command } => vm::vm_test(&vm, command),
        Task::BenchKcovGuest { share } => bench::kcov::guest(&share),
    }
}

/// Run a command, failing with its status when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}
