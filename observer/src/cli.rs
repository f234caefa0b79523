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
    /// Observe the targets, trigger their coverage dumps, collect each one, write a report.
    // The target is --pid/--name/--cgroup, or --qemu (main says when none is given).
    #[command(mut_group("TargetArgs", |g| g.required(false)))]
    Attach(AttachArgs),
    /// Ask a running `covobs attach` for a dump of its target now; prints what was collected.
    Dump(DumpArgs),
    /// What one coverage reached that another did not: two sessions (OLD NEW), or two labels of
    /// one session (DIR --label A --label B). Exit 1 with --fail-on-lost when coverage was lost.
    Diff(DiffArgs),
    /// Read a process's coverage counters from its memory (no signal) and write the files its
    /// coverage runtimes would write.
    Snapshot(SnapshotArgs),
    /// Launch a command and collect its coverage (with --kernel, the kernel code its system
    /// calls reach too, through kcov); one session and report for both.
    Run(RunArgs),
    /// A live web view of a session directory (one an attach or run is writing, or a finished
    /// one): coverage over time, the files, each file's lines, updated as artifacts arrive.
    Serve(ServeArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions { shell: clap_complete::Shell },
    /// Print covobs' man page, or a subcommand's (`covobs man attach`); --out-dir writes them all.
    Man(ManArgs),
    /// Build a fleet's session directory and report from what its nodes publish to NATS
    /// JetStream (docs/fleet.md).
    Collect(CollectArgs),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The session directory (what `covobs attach --out` or `covobs run --out` writes).
    pub dir: std::path::PathBuf,
    /// Where to listen. Loopback by default: anyone who can connect sees the coverage and the
    /// sources covobs shows. Port 0: any free port.
    #[arg(long, default_value = crate::serve::DEFAULT_ADDR)]
    pub addr: std::net::SocketAddr,
}

#[derive(Args, Debug)]
pub struct ManArgs {
    /// The subcommand whose page to print (default: covobs' own).
    pub subcommand: Option<String>,
    /// Write every page (covobs.1, covobs-attach.1, ...) into this directory instead.
    #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
    pub out_dir: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Also collect the kernel coverage of the command (kcov: its first thread, from its exec
    /// to its exit).
    #[arg(long)]
    pub kernel: bool,
    /// Session directory (must be new or empty). Default: ./covobs-out/<UTC timestamp>/.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Share the session directory with this group (name or gid): directories 0750 and files
    /// 0640 in that group, instead of 0700 and 0600 for root alone.
    #[arg(long, value_name = "GROUP")]
    pub output_group: Option<String>,
    /// kcov buffer size in entries (word 0 included); PCs beyond it are dropped by the kernel.
    #[arg(long, default_value_t = crate::run::DEFAULT_KCOV_ENTRIES)]
    pub kcov_entries: usize,
    /// Also print events as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Do not write the report at the end (`covobs report DIR` can write it later).
    #[arg(long)]
    pub no_report: bool,
    /// The kernel image with debug info for symbolizing kernel PCs (default: found by the
    /// running kernel's build id).
    #[arg(long)]
    pub vmlinux: Option<std::path::PathBuf>,
    /// As for attach.
    #[arg(long, value_enum, default_value = "window")]
    pub file_tracking: crate::probes::FileTrackingPolicy,
    /// Forward the eBPF programs' own log messages (debugging covobs).
    #[arg(long)]
    pub ebpf_log: bool,
    /// Also serve the session's live web view while it runs, as `covobs serve` (ADDR default
    /// 127.0.0.1:8047).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::serve::DEFAULT_ADDR)]
    pub serve: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The process to snapshot.
    #[arg(long, required_unless_present_any = ["image", "qemu"], conflicts_with_all = ["image", "qemu", "elf"])]
    pub pid: Option<i32>,
    /// A memory image holding --elf: an ELF core file (gcore) or a raw RAM dump (QEMU pmemsave)
    /// whose first byte was at --base.
    #[arg(long, value_name = "FILE", requires = "elf", conflicts_with = "qemu")]
    pub image: Option<std::path::PathBuf>,
    /// A QEMU process: read --elf's counters from its guest's RAM.
    #[arg(long, value_name = "PID", requires = "elf")]
    pub qemu: Option<i32>,
    /// The instrumented ELF (program or guest payload) the image or guest holds.
    #[arg(long, value_name = "BINARY")]
    pub elf: Option<std::path::PathBuf>,
    /// Raw image: the address of its first byte (guest-physical for pmemsave); hex with 0x.
    #[arg(long, value_name = "ADDR", requires = "image", value_parser = parse_addr)]
    pub base: Option<u64>,
    /// With --qemu: QEMU's QMP socket (default: the -qmp unix: socket on its command line).
    #[arg(long, value_name = "SOCKET", requires = "qemu")]
    pub qmp: Option<std::path::PathBuf>,
    /// With --qemu: stop the guest through QMP for an exact snapshot, then resume it.
    #[arg(long, requires = "qemu")]
    pub pause: bool,
    /// With --qemu: take the payload's own capture from this region it shares with the host
    /// (a memory-backend-file's mem-path, or its id), not its counters from guest RAM.
    #[arg(
        long,
        value_name = "REGION",
        requires = "qemu",
        conflicts_with = "pause"
    )]
    pub shared: Option<String>,
    /// Output file (one instrumented module); with several, a stem: <stem>.<module>.<ext>.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// A QEMU process: snapshot --elf's counters in its guest's RAM on every --interval tick
    /// (default 1s) until QEMU exits (docs/guests.md).
    #[arg(long, value_name = "PID", requires = "elf", conflicts_with_all = ["TargetArgs", "once", "mode", "final_snapshot", "follow_forks", "wait"])]
    pub qemu: Option<i32>,
    /// With --qemu: the guest payload (a fixed-address instrumented ELF).
    #[arg(long, value_name = "BINARY", requires = "qemu")]
    pub elf: Option<std::path::PathBuf>,
    /// With --qemu: QEMU's QMP socket (default: the -qmp unix: socket on its command line).
    #[arg(long, value_name = "SOCKET", requires = "qemu")]
    pub qmp: Option<std::path::PathBuf>,
    /// With --qemu: stop the guest through QMP for each snapshot (exact), then resume it.
    #[arg(long, requires = "qemu")]
    pub pause: bool,
    /// With --qemu: take the payload's own captures from this region it shares with the host
    /// (a memory-backend-file's mem-path, or its id), not its counters from guest RAM.
    #[arg(
        long,
        value_name = "REGION",
        requires = "qemu",
        conflicts_with = "pause"
    )]
    pub shared: Option<String>,
    /// Session directory (must be new or empty). Default: ./covobs-out/<UTC timestamp>/.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Share the session directory with this group (name or gid): directories 0750 and files
    /// 0640 in that group, instead of 0700 and 0600 for root alone.
    #[arg(long, value_name = "GROUP")]
    pub output_group: Option<String>,
    /// Trigger a dump this often (e.g. 3s; at least 10ms); each tick closes a label of its own,
    /// interval-000001 on (docs/labels.md).
    #[arg(long, value_parser = parse_interval)]
    pub interval: Option<Duration>,
    /// Trigger one dump, collect it, and stop.
    #[arg(long)]
    pub once: bool,
    /// Stop after this long (a last dump is triggered at detach).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The signal that makes the target dump.
    #[arg(long, default_value = "SIGUSR2", value_parser = parse_signal)]
    pub signal: nix::sys::signal::Signal,
    /// signal: make the target dump (it needs a handler); snapshot: read its counters from
    /// memory on each --interval tick, no signal at all.
    #[arg(long, value_enum, default_value = "signal")]
    pub mode: crate::attach::Mode,
    /// With --mode signal: also take a final snapshot from memory when a target dies without
    /// its runtime dumping at exit (SIGKILL, a crash). --mode snapshot always does.
    #[arg(long)]
    pub final_snapshot: bool,
    /// Which thread gets the signal: auto, main, ocaml, all, or a thread id.
    #[arg(long, default_value = "auto")]
    pub thread: crate::trigger::ThreadChoice,
    /// Send the signal even to a target without a handler for it (it may die).
    #[arg(long)]
    pub force: bool,
    /// Also print events as JSON lines on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also serve the session's live web view while it runs, as `covobs serve` (ADDR default
    /// 127.0.0.1:8047).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = crate::serve::DEFAULT_ADDR)]
    pub serve: Option<std::net::SocketAddr>,
    /// With --name: wait for a process with that name instead of failing when none runs.
    #[arg(long)]
    pub wait: bool,
    /// Also attach to the children the targets fork.
    #[arg(long)]
    pub follow_forks: bool,
    /// How long a signalled target may take to dump before the dump is reported lost.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub dump_timeout: Duration,
    /// Do not write the report at the end (`covobs report DIR` can write it later).
    #[arg(long)]
    pub no_report: bool,
    /// How the dump signal reaches the OCaml thread: from covobs (pidfd), or from eBPF with
    /// bpf_send_signal_thread the next time that thread runs a probed OCaml runtime function.
    #[arg(long, value_enum, default_value = "pidfd")]
    pub deliver: crate::attach::Deliver,
    /// The name of the thread that runs OCaml, used where the runtime's symbols are stripped.
    #[arg(long, default_value = "ffi-ocaml-executor-thread")]
    pub ocaml_thread_name: String,
    /// Where the kernel cannot attach BPF trampolines: follow dump outputs with syscall
    /// tracepoints only around the dumps covobs triggers (window), for the whole session
    /// (always: exact for the target's own dumps too, but every system call on the machine pays),
    /// or never (off: dumps are located in the file the target's environment names).
    #[arg(long, value_enum, default_value = "window")]
    pub file_tracking: crate::probes::FileTrackingPolicy,
    /// Forward the eBPF programs' own log messages (debugging covobs).
    #[arg(long)]
    pub ebpf_log: bool,
    /// The kernel image with debug info for symbolizing kernel PCs (kcov users' coverage;
    /// default: found by the running kernel's build id).
    #[arg(long)]
    pub vmlinux: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub publish: PublishArgs,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the dumps to be collected.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Close a label: what the targets gained since their previous labelled state is
    /// attributed to NAME in the report (docs/labels.md). Letters, digits and `._:@+=-`.
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The old session directory (or the session, with two --label).
    pub old: std::path::PathBuf,
    /// The new session directory.
    pub new: Option<std::path::PathBuf>,
    /// Two labels of one session to compare, old first.
    #[arg(long, value_name = "NAME")]
    pub label: Vec<String>,
    /// One JSON object instead of the text.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when something covered in OLD is not covered in NEW.
    #[arg(long)]
    pub fail_on_lost: bool,
    /// Also write the diff as one HTML page to FILE (created, never overwritten).
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = true)]
pub struct TargetArgs {
    /// The process to observe (its id in covobs' PID namespace).
    #[arg(long, conflicts_with_all = ["name", "cgroup"])]
    pub pid: Option<i32>,
    /// Every process with this name (as `pgrep -x`), including ones that start later.
    #[arg(long)]
    pub name: Option<String>,
    /// Every process in this cgroup v2 or below it (a container), including ones that start or
    /// are moved there later: a directory of the cgroup2 mount, or a path as /proc/PID/cgroup
    /// shows it. With --name, only the processes of the cgroup that have that name.
    #[arg(long)]
    pub cgroup: Option<String>,
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
    /// The name of the thread that runs OCaml, used where the runtime's symbols are stripped.
    #[arg(long, default_value = "ffi-ocaml-executor-thread")]
    pub ocaml_thread_name: String,
    #[command(flatten)]
    pub publish: PublishArgs,
}

pub fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, String> {
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .or_else(|_| {
            s.parse::<i32>()
                .map_err(|_| ())
                .and_then(|n| nix::sys::signal::Signal::try_from(n).map_err(|_| ()))
        })
        .map_err(|_| format!("{s:?} is not a signal (e.g. SIGUSR2, USR1, 12)"))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 3s, 2m)"))
}

/// The shortest `--interval`: below it covobs would spend its time triggering, and a target
/// would do little but dump.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "{s} is too short: the interval must be at least {}ms (a target dumping more often does little else)",
            MIN_INTERVAL.as_millis()
        ));
    }
    Ok(d)
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The session directory (what `covobs attach --out` wrote).
    pub dir: std::path::PathBuf,
    /// What to write, comma-separated: lcov, html, cobertura, json (summary and timeline).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "lcov,html,cobertura,json"
    )]
    pub format: Vec<crate::report::Format>,
    /// A directory bisect_ppx's relative OCaml source names start from (repeatable), tried
    /// before the binary's compilation directory, the target's working directory, the binary's
    /// directory and the current directory (each with its parents).
    #[arg(long = "source-path", value_name = "DIR")]
    pub source_path: Vec<std::path::PathBuf>,
    /// The kernel image with debug info for kcov artifacts (default: found by their build id).
    #[arg(long)]
    pub vmlinux: Option<std::path::PathBuf>,
    /// Share report/ with this group (name or gid): 0750 and 0640 instead of 0700 and 0600.
    #[arg(long, value_name = "GROUP")]
    pub output_group: Option<String>,
    /// Compute LLVM coverage with llvm-profdata and llvm-cov of each module's LLVM instead of
    /// covobs' own engine (the same figures, much slower; for cross-checking).
    #[arg(long = "llvm-cov")]
    pub llvm_cov: bool,
    /// Only this label's report, under report/labels/<NAME>/ (docs/labels.md).
    #[arg(long, value_name = "NAME")]
    pub label: Option<String>,
}

/// An address: hexadecimal with `0x`, else decimal.
pub fn parse_addr(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(&hex.replace('_', ""), 16),
        None => s.replace('_', "").parse(),
    };
    r.map_err(|e| format!("{s:?} is not an address: {e}"))
}

impl SnapshotArgs {
    /// Where the memory to snapshot is.
    pub fn source(&self) -> crate::snapshot::command::Source {
        use crate::snapshot::command::Source;
        let elf = self.elf.clone().unwrap_or_default();
        match (self.pid, &self.image, self.qemu) {
            (_, Some(path), _) => Source::Image {
                path: path.clone(),
                elf,
                base: self.base,
            },
            (_, None, Some(pid)) => Source::Qemu {
                pid,
                elf,
                qmp: self.qmp.clone(),
                pause: self.pause,
                shared: self.shared.clone(),
            },
            (pid, None, None) => Source::Pid(pid.unwrap_or(0)),
        }
    }
}

// ---- Fleets (docs/fleet.md): publishing to NATS JetStream, and `covobs collect`. ----

/// Publishing a session to a fleet's NATS JetStream (attach, run, watch).
#[derive(Args, Debug, Clone, Default)]
pub struct PublishArgs {
    /// Also publish the session to this NATS server: nats://HOST:PORT, or tls://HOST:PORT for
    /// TLS; user:password@ or token@ before the host for credentials. Repeat for the servers of
    /// one cluster.
    #[arg(long = "publish", value_name = "URL")]
    pub publish: Vec<String>,
    /// This node's name in the fleet (default: the host name).
    #[arg(long, value_name = "NAME", requires = "publish")]
    pub node: Option<String>,
    /// The fleet to publish to (default: default).
    #[arg(long, value_name = "NAME", requires = "publish")]
    pub fleet: Option<String>,
    /// A NATS credentials file (user JWT and nkey seed).
    #[arg(long, value_name = "FILE", requires = "publish")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// Where what cannot be published waits, replayed in order when the server is back
    /// (under <DIR>/<fleet>/<node>/).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/var/spool/covobs",
        requires = "publish"
    )]
    pub spool: std::path::PathBuf,
    /// The most the spool holds (e.g. 512M, 2G); beyond, records are dropped and counted.
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub spool_max: u64,
    /// Start even when no server answers or it refuses the credentials: a warning, and
    /// everything goes to the spool until it answers. Without it, that is an error (exit 2).
    #[arg(long, requires = "publish")]
    pub publish_offline_ok: bool,
    /// At the end, how long to wait for the spool to drain.
    #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
    pub publish_wait: Duration,
    /// With --publish: write no local session directory (nothing under --out) and so no local
    /// report: the fleet's collector (`covobs collect`) writes both. The spool is still used.
    #[arg(long)]
    pub no_local: bool,
}

impl PublishArgs {
    /// The options, when publishing; `--no-local` without `--publish` is bad usage.
    pub fn options(&self) -> Result<Option<crate::stream::nats::PublishOptions>, crate::BadInput> {
        if self.publish.is_empty() {
            if self.no_local {
                return Err(crate::BadInput(
                    "--no-local needs --publish: without it the session would go nowhere".into(),
                ));
            }
            return Ok(None);
        }
        Ok(Some(crate::stream::nats::PublishOptions {
            servers: self.publish.clone(),
            node: self
                .node
                .clone()
                .unwrap_or_else(crate::stream::nats::default_node),
            fleet: self
                .fleet
                .clone()
                .unwrap_or_else(|| crate::stream::nats::DEFAULT_FLEET.into()),
            creds: self.nats_creds.clone(),
            spool: self.spool.clone(),
            spool_max: self.spool_max,
            offline_ok: self.publish_offline_ok,
            wait: self.publish_wait,
            no_local: self.no_local,
        }))
    }
}

#[derive(Args, Debug)]
pub struct CollectArgs {
    /// The fleet's NATS servers (nats:// or tls://, credentials as for --publish).
    #[arg(required = true, value_name = "URL")]
    pub servers: Vec<String>,
    /// The fleet's session directory: new, or one an earlier `covobs collect` wrote (it resumes).
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// The fleet to collect (default: default).
    #[arg(long, value_name = "NAME", default_value = crate::stream::nats::DEFAULT_FLEET)]
    pub fleet: String,
    /// A NATS credentials file (user JWT and nkey seed).
    #[arg(long, value_name = "FILE")]
    pub nats_creds: Option<std::path::PathBuf>,
    /// Keep collecting as nodes publish, the report kept current (until Ctrl-C or SIGTERM);
    /// without it, take what the stream holds now, write the report and exit.
    #[arg(long)]
    pub follow: bool,
    /// With --follow: the report is rewritten at most this often.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = parse_duration)]
    pub report_every: Duration,
}

/// A size: bytes, or with K, M, G (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (examples: 4096, 512M, 2G)"))
}
