//! Command-line interface (the design's CLI contract).
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "covobs",
    version,
    about = "Collect code coverage from running processes, with eBPF",
    long_about = None
)]
pub struct Cli {
    /// More log output (-v: info, -vv: debug, -vvv: trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// What this kernel and these privileges allow; exit 0 if attaching can work.
    Doctor {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a session directory's report: merged LCOV, HTML, Cobertura, JSON summary, timeline.
    Report(ReportArgs),
    /// Live threads, processes and signals of the targets; triggers nothing.
    Watch(WatchArgs),
}

#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// The process to observe.
    #[arg(long)]
    pub pid: Option<i32>,
    /// Every process with this name (as `pgrep -x`), including ones that start later.
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Stop after this long (e.g. 10s, 2m); default: until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// With --name: wait for a process with that name instead of failing when none runs.
    #[arg(long)]
    pub wait: bool,
    /// Also watch the children the targets fork.
    #[arg(long)]
    pub follow_forks: bool,
    /// Forward the eBPF programs' own log messages (debugging covobs).
    #[arg(long)]
    pub ebpf_log: bool,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 3s, 2m)"))
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The session directory (what `covobs attach --out` wrote).
    pub dir: std::path::PathBuf,
    /// What to write, comma-separated: lcov, html, cobertura, json (summary and timeline).
    #[arg(long, value_delimiter = ',', default_value = "lcov,html,cobertura,json")]
    pub format: Vec<crate::report::Format>,
}
