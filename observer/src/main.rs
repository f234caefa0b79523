//! The `covobs` command. Exit codes: 0 success, 1 runtime failure, 2 bad usage or bad input.
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser as _;
use covobs::{
    BadInput, attach,
    cli::{Cli, Command, TargetArgs},
    doctor,
    target::{Cgroup, NamePattern, TargetSpec},
    terminal::printable,
    watch,
};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("covobs: error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("covobs: error: {}", printable(&format!("{err:#}")));
            if err.downcast_ref::<BadInput>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Doctor { json } => {
            let report = doctor::run();
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", doctor::render(&report));
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Report(args) => report(args).await,
        Command::Collect(args) => {
            covobs::fleet::run(covobs::fleet::CollectOptions {
                servers: args.servers,
                out: args.out,
                fleet: args.fleet,
                creds: args.nats_creds,
                follow: args.follow,
                report_every: args.report_every,
            })
            .await
            .map_err(|e| edge_error(e.is_bad_input(), e))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff(args) => diff(args).await,
        Command::Serve(args) => {
            covobs::serve::run(args.dir, args.addr).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            covobs::manual::print(&covobs::manual::completions(shell))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man(args) => {
            let bad = |e: covobs::manual::ManualError| {
                let b = e.is_bad_input();
                covobs::classify(e, b)
            };
            match args.out_dir {
                Some(dir) => {
                    for name in covobs::manual::write_pages(&dir).map_err(bad)? {
                        println!("{}", dir.join(name).display());
                    }
                }
                None => {
                    let page = covobs::manual::page(args.subcommand.as_deref()).map_err(bad)?;
                    covobs::manual::print(&page)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Watch(args) => {
            watch::run(watch::WatchOptions {
                target: target_spec(&args.target)?,
                json: args.json,
                duration: args.duration,
                wait: args.wait,
                follow_forks: args.follow_forks,
                ebpf_log: args.ebpf_log,
                ocaml_thread_name: args.ocaml_thread_name,
                publish: publish_options(&args.publish, false)?,
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Attach(args) => {
            if args.once && args.interval.is_some() {
                return Err(BadInput("--once and --interval exclude each other".into()).into());
            }
            let modes = output_modes(args.output_group.as_deref())?;
            let publish = publish_options(&args.publish, args.serve.is_some())?;
            if args.qemu.is_some() && args.publish.no_local {
                return Err(
                    BadInput("--no-local: --qemu sessions are not published".into()).into(),
                );
            }
            if let (Some(qemu), Some(elf)) = (args.qemu, args.elf.clone()) {
                attach::guest::run(attach::guest::GuestOptions {
                    qemu,
                    elf,
                    qmp: args.qmp,
                    pause: args.pause,
                    shared: args.shared,
                    out: args.out,
                    modes,
                    interval: args.interval.unwrap_or(attach::guest::DEFAULT_INTERVAL),
                    duration: args.duration,
                    json: args.json,
                    no_report: args.no_report,
                    command: std::env::args().collect(),
                })
                .await?;
                return Ok(ExitCode::SUCCESS);
            }
            let t = &args.target;
            if t.pid.is_none() && t.name.is_none() && t.cgroup.is_none() {
                return Err(BadInput("give --pid, --name, --cgroup or --qemu".into()).into());
            }
            attach::run(attach::AttachOptions {
                out: args.out,
                modes,
                interval: args.interval,
                once: args.once,
                duration: args.duration,
                signal: args.signal,
                thread: args.thread,
                force: args.force,
                json: args.json,
                serve: args.serve,
                wait: args.wait,
                follow_forks: args.follow_forks,
                ebpf_log: args.ebpf_log,
                dump_timeout: args.dump_timeout,
                no_report: args.no_report,
                file_tracking: args.file_tracking,
                deliver: args.deliver,
                ocaml_thread_name: args.ocaml_thread_name,
                mode: args.mode,
                final_snapshot: args.final_snapshot,
                command: std::env::args().collect(),
                vmlinux: args.vmlinux,
                publish,
                ..attach::AttachOptions::new(target_spec(&args.target)?)
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            let modes = output_modes(args.output_group.as_deref())?;
            let publish = publish_options(&args.publish, args.serve.is_some())?;
            covobs::run::run(covobs::run::RunOptions {
                command: args.command,
                kernel: args.kernel,
                kcov_entries: args.kcov_entries,
                attach: attach::AttachOptions {
                    out: args.out,
                    modes,
                    json: args.json,
                    serve: args.serve,
                    ebpf_log: args.ebpf_log,
                    no_report: args.no_report,
                    file_tracking: args.file_tracking,
                    command: std::env::args().collect(),
                    vmlinux: args.vmlinux,
                    publish,
                    // The target: replaced by the launched workload's pid.
                    ..attach::AttachOptions::new(TargetSpec::Pid(0))
                },
            })
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot(args) => {
            let out = args.out.clone();
            let source = args.source();
            let written = tokio::task::spawn_blocking(move || {
                covobs::snapshot::command::run_source(&source, &out)
            })
            .await?
            .map_err(|e| edge_error(e.is_bad_input(), e))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&written)?);
            } else {
                print!("{}", covobs::snapshot::command::render(&written));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump(args) => {
            covobs::require_privileges()?;
            if let Some(label) = &args.label {
                covobs::report::labels::name::check(label).map_err(BadInput)?;
            }
            let target = match target_spec(&args.target)? {
                TargetSpec::Pid(p) => attach::control::DumpTarget::Pid(p),
                TargetSpec::Name(n) => attach::control::DumpTarget::Name(n.as_str().to_owned()),
                TargetSpec::Cgroup { .. } => {
                    return Err(BadInput(
                        "covobs dump takes --pid or --name (of a process the attach watches)"
                            .into(),
                    )
                    .into());
                }
            };
            let what = attach::control::DumpRequest {
                label: args.label.clone(),
                ..attach::control::DumpRequest::new(target)
            };
            let response = attach::control::request_dump(what, args.timeout)
                .await
                .map_err(|e| {
                    let bad = e.is_bad_input();
                    covobs::classify(e, bad)
                })?;
            if args.json {
                println!("{}", serde_json::to_string(&response)?);
            } else {
                for t in &response.triggered {
                    println!("signalled {t}");
                }
                for a in &response.artifacts {
                    println!(
                        "collected {}",
                        std::path::Path::new(&response.session_dir)
                            .join(a)
                            .display()
                    );
                }
                if let Some(label) = &args.label {
                    println!("closed label {label}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--publish` and its companions; `--no-local` leaves no directory for `--serve` to show.
fn publish_options(
    args: &covobs::cli::PublishArgs,
    serve: bool,
) -> Result<Option<covobs::stream::nats::PublishOptions>, BadInput> {
    let options = args.options()?;
    if serve && args.no_local {
        return Err(BadInput(
            "--serve shows the local session directory: not with --no-local".into(),
        ));
    }
    Ok(options)
}

/// `--output-group`: an unknown group is bad input.
/// A library error at the edge: bad input (exit 2, its one line) or covobs' own failure.
fn edge_error<E: std::error::Error + Send + Sync + 'static>(bad: bool, e: E) -> anyhow::Error {
    if bad {
        anyhow::Error::new(BadInput(e.to_string()))
    } else {
        anyhow::Error::new(e)
    }
}

fn output_modes(group: Option<&str>) -> Result<covobs::stream::OutputModes, BadInput> {
    covobs::stream::OutputModes::with_group(group).map_err(|e| BadInput(e.to_string()))
}

fn target_spec(args: &TargetArgs) -> Result<TargetSpec, BadInput> {
    let name = args
        .name
        .as_deref()
        .map(NamePattern::new)
        .transpose()
        .map_err(|e| BadInput(e.to_string()))?;
    match (&args.pid, name, &args.cgroup) {
        (Some(pid), _, _) => Ok(TargetSpec::Pid(*pid)),
        (None, name, Some(cgroup)) => Ok(TargetSpec::Cgroup {
            cgroup: Cgroup::resolve(cgroup).map_err(|e| BadInput(e.to_string()))?,
            name,
        }),
        (None, Some(name), None) => Ok(TargetSpec::Name(name)),
        (None, None, None) => Err(BadInput("give --pid, --name or --cgroup".into())),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    // The NATS client logs each failed (re)connection itself; covobs says what it means for
    // the session once (docs/fleet.md). Its own log from -vv on.
    let nats = if verbose >= 2 { default } else { "off" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},async_nats={nats}"))
    });
    // aya and aya-log speak `log`; route them into tracing.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// `covobs report DIR`: bad input exits 2; a session none of whose artifacts could be reported
/// exits 1 (the report is still written, with the reasons).
async fn diff(args: covobs::cli::DiffArgs) -> Result<ExitCode> {
    use covobs::report::{self, diff};
    let opts = report::ReportOptions::default();
    let run = match (args.new, args.label.as_slice()) {
        (Some(new), []) => {
            let old = args.old;
            tokio::task::spawn_blocking(move || diff::sessions(&old, &new, &opts)).await?
        }
        (None, [a, b]) => {
            let (dir, a, b) = (args.old, a.clone(), b.clone());
            tokio::task::spawn_blocking(move || diff::labels(&dir, &a, &b, &opts)).await?
        }
        _ => {
            return Err(BadInput(
                "covobs diff takes two session directories (OLD NEW), or one and two --label"
                    .into(),
            )
            .into());
        }
    };
    let d = run.map_err(|e| edge_error(e.is_bad_input(), e))?;
    if let Some(path) = &args.html {
        report::output::create(path, d.html().as_bytes())
            .map_err(|e| edge_error(e.is_bad_input(), e))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        // File and function names come from the targets.
        for line in d.render().lines() {
            println!("{}", printable(line));
        }
    }
    if args.fail_on_lost && d.lost() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

async fn report(args: covobs::cli::ReportArgs) -> Result<ExitCode> {
    use covobs::report;
    if let Some(bad) = args.source_path.iter().find(|d| !d.is_dir()) {
        return Err(BadInput(format!(
            "--source-path {}: no such directory",
            bad.display()
        ))
        .into());
    }
    let opts = report::ReportOptions {
        modes: output_modes(args.output_group.as_deref())?,
        formats: args.format.into_iter().collect(),
        source_paths: args.source_path,
        vmlinux: args.vmlinux,
        llvm_cov: args.llvm_cov,
        ..report::ReportOptions::default()
    };
    let dir = args.dir;
    if let Some(label) = args.label {
        let summary =
            tokio::task::spawn_blocking(move || report::labels::report_label(&dir, &label, &opts))
                .await?
                .map_err(|e| edge_error(e.is_bad_input(), e))?;
        for w in &summary.warnings {
            eprintln!("covobs: warning: {}", printable(&w.to_string()));
        }
        print!("{}", summary.render());
        return Ok(ExitCode::SUCCESS);
    }
    let summary = tokio::task::spawn_blocking(move || report::generate(&dir, &opts))
        .await?
        .map_err(|e| edge_error(e.is_bad_input(), e))?;
    // Module and file names in these come from the targets.
    for w in &summary.warnings {
        eprintln!("covobs: warning: {}", printable(&w.to_string()));
    }
    for e in &summary.excluded {
        eprintln!("covobs: warning: {}", printable(&e.to_string()));
    }
    print!("{}", summary.render());
    if summary.artifacts > 0 && summary.reported == 0 {
        anyhow::bail!(
            "none of the {} artifacts could be reported (see the warnings above)",
            summary.artifacts
        );
    }
    Ok(ExitCode::SUCCESS)
}
