//! `covobs attach`: observe the targets, trigger their dumps, collect each one, stream everything
//! to the output directory (and stdout), and write the report at the end.
use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

use crate::{
    BadInput, classify,
    probes::Probes,
    stream::{DirSink, HumanSink, JsonLinesSink, OutputHealth, Pipeline, PrimarySink, Sink},
    sys::{clock, shutdown::Shutdown},
    target::{TargetSpec, Tracker},
};

mod adopt;
mod artifact;
mod collections;
mod collector;
pub mod control;
mod deliveries;
mod delivery;
mod dump_dirs;
pub mod guest;
pub mod kcov;
mod kcov_session;
mod labels;
pub mod launch;
mod leave;
mod losses;
mod options;
pub mod progress;
mod requests;
pub mod session;
pub mod snapshots;
mod stopping;
pub mod targets;
mod triggering;

use launch::{Launch, Prepared};
pub use options::{AttachOptions, Deliver, Mode, Purpose};
use session::Session;

use crate::layout::session::{self as session_layout, Nullable, Object, SessionInfo};

/// The signals an attach reports: its dump signal (to confirm each delivery) and those that end a
/// target. A target's own signal traffic is filtered out in the kernel.
pub fn attach_signal_mask(dump: Signal) -> u64 {
    use Signal::*;
    [
        dump, SIGKILL, SIGTERM, SIGINT, SIGQUIT, SIGABRT, SIGSEGV, SIGBUS, SIGILL, SIGFPE,
    ]
    .iter()
    .fold(0u64, |m, s| m | (1u64 << (*s as i32 - 1)))
}

/// The default session directory: ./covobs-out/<UTC timestamp>.
pub fn default_out_dir() -> PathBuf {
    let secs = clock::realtime_ns() / 1_000_000_000;
    // SAFETY: gmtime_r writes into a valid, zeroed tm struct.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: i64 = secs as i64;
        libc::gmtime_r(&t, &mut tm);
        tm
    };
    PathBuf::from(format!(
        "covobs-out/{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    ))
}

pub async fn run(opts: AttachOptions) -> anyhow::Result<()> {
    run_session(opts, None).await
}

/// An attach session; with `launch`, around a workload covobs forks (`covobs run`): the child is
/// held before its exec until it is watched.
pub async fn run_session(
    mut opts: AttachOptions,
    mut launch: Option<Prepared>,
) -> anyhow::Result<()> {
    let mut shutdown = Shutdown::install(opts.duration);
    crate::require_privileges()?;
    let out_dir = opts.out.clone().unwrap_or_else(default_out_dir);
    // `--no-local`: the fleet is the only destination; nothing is written under --out.
    let local =
        opts.purpose == Purpose::Collect && !opts.publish.as_ref().is_some_and(|p| p.no_local);
    let started_unix = clock::realtime_ns();
    // A busy session holds many descriptors (probes, targets, artifacts being written).
    crate::stream::raise_nofile_limit();
    // Bound now, so a bad address is refused before anything starts.
    let listener = crate::serve::bind_for_session(opts.serve).await?;
    // The fleet's server too: a wrong password or no server is refused before anything starts.
    let fleet = match opts.publish.clone() {
        Some(p) => {
            let session_id = format!("{}-{}", started_unix / 1_000_000, std::process::id());
            let started = tokio::task::spawn_blocking(move || {
                crate::stream::nats::FleetHandle::start(&p, &session_id)
            })
            .await?;
            Some(started.map_err(|e| {
                let bad = e.is_bad_input();
                classify(e, bad)
            })?)
        }
        None => None,
    };

    let mut probes = Probes::load(&opts.purpose.probes(&opts)).map_err(|e| {
        let bad = e.is_bad_input();
        classify(e, bad)
    })?;
    // The workload is forked only now that covobs can observe it.
    let mut child = match launch.as_mut() {
        Some(l) => {
            let c = l.spawn()?;
            opts.target = TargetSpec::Pid(c.pid as i32);
            Some(c)
        }
        None => None,
    };
    let opts = Arc::new(opts);
    // A running target's dumps are held until its profile cursors are placed (not for the
    // workload covobs launches: its dumps all follow its exec).
    let mut tracker =
        Tracker::new(opts.target.clone(), opts.follow_forks).hold_dumps(launch.is_none());
    let initial = tracker.start(&mut probes, opts.wait).map_err(|e| {
        let bad = e.is_bad_input();
        classify(e, bad)
    })?;

    if initial.is_empty() {
        match (tracker.pattern(), tracker.spec().cgroup()) {
            (Some(pattern), None) => eprintln!(
                "covobs: no process named {:?} yet; waiting for one",
                pattern.as_str()
            ),
            (pattern, Some(cgroup)) => eprintln!(
                "covobs: no process{} in cgroup {} yet; waiting for one",
                pattern
                    .map(|p| format!(" named {:?}", p.as_str()))
                    .unwrap_or_default(),
                cgroup.path
            ),
            (None, None) => {}
        }
    }

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut primary: Option<Box<dyn PrimarySink>> = None;
    let mut output = None;
    // What creating the output directory adds (./covobs-out too, the first time), to remove
    // when the session is refused.
    let created_from = first_missing(&out_dir);
    if local {
        // The output directory is created only once the target is known to exist: bad input
        // leaves nothing behind.
        let dir_sink =
            DirSink::create(&out_dir, opts.modes).map_err(|e| BadInput(e.to_string()))?;
        output = Some(dir_sink.health());
        primary = Some(Box::new(dir_sink));
    }
    let mut serving = None;
    if let Some(listener) = listener.filter(|_| local) {
        eprintln!("{}", crate::serve::announce(&out_dir, &listener));
        let report_opts = crate::report::ReportOptions {
            vmlinux: opts.vmlinux.clone(),
            ..Default::default()
        };
        match crate::serve::start(listener, &out_dir, report_opts) {
            Ok(s) => serving = Some(s),
            Err(e) => eprintln!("covobs: warning: no live view: {e}"),
        }
    }
    if opts.json {
        sinks.push(Box::new(JsonLinesSink::new(std::io::stdout(), "stdout")));
    } else if opts.purpose == Purpose::Observe {
        sinks.push(Box::new(HumanSink::new(std::io::stdout())));
    } else {
        sinks.push(Box::new(HumanSink::coverage_view(std::io::stdout())));
    }
    if let Some(slow) = crate::stream::slow::SlowSink::from_env() {
        sinks.push(Box::new(slow));
    }
    if let Some(f) = &fleet {
        sinks.push(Box::new(crate::stream::nats::NatsSink::new(f.clone())));
    }
    let pipeline = Pipeline::new(primary, sinks)?;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut session = Session::new(
        opts.clone(),
        probes,
        tracker,
        pipeline.sender(),
        done_tx,
        out_dir.clone(),
    );

    // The live coverage (the progress line's, and the end report's).
    let report_opts = (!opts.no_report && local).then(|| crate::report::ReportOptions {
        vmlinux: opts.vmlinux.clone(),
        modes: opts.modes,
        ..Default::default()
    });
    let mut progress = progress::Progress::new(
        !opts.json && !opts.no_report && local,
        &out_dir,
        report_opts,
    );
    let result = drive(
        &mut session,
        initial,
        &mut shutdown,
        &mut done_rx,
        launch.as_mut().zip(child.as_mut()),
        output.as_ref(),
        &mut progress,
    )
    .await;
    if opts.purpose == Purpose::Observe {
        return finish_watch(session, pipeline, result.map(drop), fleet).await;
    }
    let workload = match (&launch, child.as_mut()) {
        (Some(l), Some(c)) => {
            let status = tokio::task::block_in_place(|| c.wait());
            if let Some(code) = status.filter(|c| *c != 0) {
                eprintln!("covobs: the workload exited with status {code}");
            }
            Some(session_layout::Workload {
                argv: c.argv.clone(),
                program: c.program.display().to_string(),
                pid: c.pid,
                exit_status: status,
                kernel_coverage: l.kernel,
                kcov_entries: l.kernel.then_some(l.kcov_entries as u64),
                ..Default::default()
            })
        }
        _ => None,
    };
    let summary = match result {
        Ok(line) => line,
        Err(e) => {
            if e.downcast_ref::<BadInput>().is_some() {
                // Refused before anything was triggered: leave nothing behind.
                if let Some(s) = serving.take() {
                    s.stop().await;
                }
                drop(session);
                let _ = pipeline.finish().await;
                if let Some(f) = fleet {
                    let _ = tokio::task::spawn_blocking(move || {
                        f.finish(None, std::time::Duration::ZERO)
                    })
                    .await;
                }
                tokio::task::block_in_place(|| progress.stop());
                if local {
                    remove_refused(&out_dir, created_from.as_deref());
                }
            } else {
                let _ = finish(
                    session,
                    pipeline,
                    output.as_ref(),
                    started_unix,
                    workload,
                    fleet,
                )
                .await;
            }
            return Err(e);
        }
    };
    let finished = finish(
        session,
        pipeline,
        output.as_ref(),
        started_unix,
        workload,
        fleet,
    )
    .await;
    // After the pipeline is flushed: the summary comes after the last event.
    eprintln!("covobs: {summary}");
    if let Some(fault) = output.as_ref().and_then(|o| o.fault()) {
        // What was written before the fault is a session of its own: reportable once there is
        // room again (or from a copy).
        if out_dir.is_dir() {
            eprintln!(
                "covobs: what was written before the failure is in {}: `covobs report {}` reports it",
                out_dir.display(),
                out_dir.display()
            );
        }
        anyhow::bail!("{fault}: covobs stopped; the dumps it could not write are counted lost");
    }
    finished?;
    if !local {
        // No local report either: it is the collector's (`covobs collect`).
        if let Some(p) = &opts.publish {
            eprintln!(
                "covobs: session published to fleet {} as node {} (--no-local: no local directory)",
                p.fleet, p.node
            );
        }
        return Ok(());
    }
    if !opts.no_report {
        report(&out_dir, opts.vmlinux.clone(), opts.modes, progress).await;
    }
    eprintln!("covobs: session written to {}", out_dir.display());
    if let Some(s) = serving {
        s.stop().await;
    }
    Ok(())
}

/// The outermost directory on the way to `dir` that does not exist yet: creating `dir` creates
/// it and everything below. None when `dir` exists.
fn first_missing(dir: &std::path::Path) -> Option<PathBuf> {
    let mut missing = None;
    for a in dir.ancestors() {
        if a.as_os_str().is_empty() || std::fs::symlink_metadata(a).is_ok() {
            break;
        }
        missing = Some(a.to_path_buf());
    }
    missing
}

/// Undo a refused session's directory: what covobs created (from `created_from` down), or, in a
/// directory the user gave that existed (and was empty), only what covobs put into it.
fn remove_refused(dir: &std::path::Path, created_from: Option<&std::path::Path>) {
    let Some(top) = created_from else {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                let _ = match e.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
                    _ => std::fs::remove_file(&p),
                };
            }
        }
        return;
    };
    let _ = std::fs::remove_dir_all(dir);
    // Parents created for it, while empty (another session may have appeared in ./covobs-out).
    for a in dir.ancestors().skip(1) {
        if !a.starts_with(top) || std::fs::remove_dir(a).is_err() {
            break;
        }
    }
}

/// The loop: records, ticks, requests, collections, until shutdown; then the detach-time dump.
async fn drive(
    session: &mut Session,
    initial: Vec<crate::events::Event>,
    shutdown: &mut Shutdown,
    done_rx: &mut mpsc::UnboundedReceiver<session::Outcome>,
    launch: Option<(&mut Prepared, &mut Launch)>,
    output: Option<&OutputHealth>,
    progress: &mut progress::Progress,
) -> anyhow::Result<String> {
    let opts = session.opts.clone();
    let mut reader = session
        .probes
        .take_reader()
        .context("opening the eBPF ring buffer")?;
    let early = session.start_kcov(&mut reader);
    // `covobs dump` asks a collecting session only.
    let control = match opts.purpose {
        Purpose::Collect => Some(control::ControlServer::bind()?.serve()),
        Purpose::Observe => None,
    };

    if let Some((prepared, child)) = launch {
        // The workload: a fork of covobs until its exec, adopted then; its executable's dump
        // functions are probed now, so even a workload that ends at once is collected.
        for e in initial {
            session.on_record_event(e).await;
        }
        session.launched = Some(child.pid);
        session.prepare_exec(child.pid, &child.program).await;
        if let Some(buffer) = prepared.buffer.take() {
            let comm = child
                .program
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            session
                .kcov
                .own(child.pid, &comm, buffer, crate::runtimes::kcov::Mode::Pc);
        }
        child.go().map_err(|e| BadInput(e.to_string()))?;
        for record in early {
            session.on_record(record).await;
        }
        return drive_loop(
            session, shutdown, done_rx, reader, control, output, progress,
        )
        .await;
    }

    // Adopt the targets found at start; refuse unsafe ones before anything is sent.
    let mut refusals = Vec::new();
    for e in initial {
        let pid = e.pid;
        let comm = match &e.body {
            crate::events::Body::Target { comm, .. } => comm.clone(),
            _ => String::new(),
        };
        session.on_record_event(e).await;
        let dumpable = session.adopt(pid, &comm, false).await;
        if opts.purpose == Purpose::Observe {
            continue;
        }
        if dumpable.is_empty() && session.kcov.has_buffers(pid) {
            // A kcov user: its kernel coverage is collected, nothing is triggered.
            continue;
        }
        // The OCaml thread is known from the probes after their first counts.
        if session.needs_ocaml_thread(pid) {
            session.wait_for_ocaml_thread(pid, OCAML_WAIT).await;
        }
        let gone = session
            .tracker
            .get(pid)
            .is_some_and(|t| !t.process.is_alive());
        if gone {
            refusals.push(format!(
                "process {pid} ({comm}) exited while covobs was attaching"
            ));
        } else if dumpable.is_empty() {
            refusals.push(match opts.mode {
                Mode::Signal => format!(
                    "process {pid} ({comm}) has no coverage runtime covobs can trigger (looked for __llvm_profile_write_file; --mode snapshot reads counters without one)"
                ),
                Mode::Snapshot => format!(
                    "process {pid} ({comm}) has no coverage counters covobs can read (looked for __llvm_prf_cnts and __sancov_cntrs)"
                ),
            });
        } else if let Err(why) = session.check_triggerable(pid) {
            refusals.push(why);
        }
    }
    if !refusals.is_empty() && session.targets.len() == refusals.len() && !opts.wait {
        return Err(BadInput(format!("nothing to attach to: {}", refusals.join("; "))).into());
    }
    for r in &refusals {
        eprintln!("covobs: warning: {r}");
    }
    for record in early {
        session.on_record(record).await;
    }
    drive_loop(
        session, shutdown, done_rx, reader, control, output, progress,
    )
    .await
}

async fn drive_loop(
    session: &mut Session,
    shutdown: &mut Shutdown,
    done_rx: &mut mpsc::UnboundedReceiver<session::Outcome>,
    mut reader: crate::probes::EventReader,
    mut control: Option<control::Requests>,
    output: Option<&OutputHealth>,
    progress: &mut progress::Progress,
) -> anyhow::Result<String> {
    let opts = session.opts.clone();
    let mut finals = session.snapshots.take_reader();
    let mut final_batch = Vec::new();

    shutdown.start_clock();
    if opts.once {
        session.trigger_all("once").await;
    }
    let mut interval = opts.interval.map(|d| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut batch = Vec::new();
    let mut stopping_since: Option<tokio::time::Instant> = None;
    let mut fault = output.map(OutputHealth::subscribe);

    loop {
        tokio::select! {
            // Records are taken in chunks, and more are read only when a batch is done: when
            // the output holds the session up, the kernel counts what it cannot keep (drops)
            // instead of covobs' memory, and a stop is seen between chunks.
            read = reader.read(&mut batch), if batch.is_empty() => {
                read.context("reading the eBPF ring buffer")?;
            }
            _ = std::future::ready(()), if !batch.is_empty() => {
                let chunk = batch.len().min(RECORD_CHUNK);
                for record in batch.drain(..chunk) {
                    session.on_record(record).await;
                }
            }
            read = read_finals(&mut finals, &mut final_batch) => {
                read.context("reading the final-snapshot ring buffer")?;
                // What the exiting process did before (an exit-time dump starting) is in the
                // main ring buffer: handle it first, so a final copy knows about that dump.
                reader.drain(&mut batch);
                for record in batch.drain(..) {
                    session.on_record(record).await;
                }
                session.on_final_records(final_batch.drain(..)).await;
            }
            Some(outcome) = done_rx.recv() => {
                progress.artifact(&session.out_dir, &outcome);
                session.on_outcome(outcome).await;
            }
            Some((req, responder)) = accept(control.as_mut()) => {
                match output.and_then(OutputHealth::fault) {
                    // Nothing more can be written: no new dump is asked of the targets.
                    Some(fault) => responder.send(control::DumpResponse {
                        error: Some(fault),
                        ..Default::default()
                    }).await,
                    None => session.on_request(req, responder).await,
                }
            }
            _ = next_tick(&mut interval), if stopping_since.is_none() => {
                session.trigger_interval().await;
            }
            Some(why) = output_fault(fault.as_mut()) => {
                // covobs' own failure: said at once, and the session stops (no detach-time
                // dump: it could not be written). What is in flight ends as `lost`.
                progress.suspend(|| eprintln!("covobs: error: {why}; stopping"));
                fault = None;
                stopping_since.get_or_insert_with(tokio::time::Instant::now);
            }
            _ = tick.tick() => {
                if let Some(o) = output {
                    o.check();
                }
                session.update_ocaml().await;
                session.expire().await;
                session.release_left();
                session.kcov_tick().await;
                session.check_ring_buffer().await;
                progress.update(session);
            }
            _ = shutdown.wait(), if stopping_since.is_none() => {
                stopping_since = Some(tokio::time::Instant::now());
                if !opts.once && opts.purpose == Purpose::Collect {
                    session.trigger_all("detach").await;
                }
            }
        }
        if opts.once
            && stopping_since.is_none()
            && !session.busy()
            && session.counters().dumps_triggered + session.counters().snapshots > 0
        {
            stopping_since = Some(tokio::time::Instant::now());
        }
        if session.tracker.finished() && stopping_since.is_none() {
            stopping_since = Some(tokio::time::Instant::now());
        }
        if let Some(since) = stopping_since {
            // Stopping waits for the dumps asked for (the detach-time dump, up to its timeout)
            // and, briefly, for the ends of dumps running now; the collection backlog is bounded
            // below, after the loop. Targets dumping on their own keep dumping: waiting for a
            // moment without any dump running would never end.
            let grace = opts.dump_timeout + Duration::from_secs(1);
            let waiting = session.awaiting_dumps()
                || (session.dumps_active() && since.elapsed() < STOP_DUMP_ENDS);
            if !waiting || since.elapsed() > grace {
                break;
            }
        }
    }
    // Records that arrived meanwhile, then collections still running.
    reader.drain(&mut batch);
    for record in batch.drain(..) {
        session.on_record(record).await;
    }
    if let Some(f) = finals.as_mut() {
        f.drain(&mut final_batch);
        session.on_final_records(final_batch.drain(..)).await;
    }
    // What the kernel dropped while covobs observed: from here on the records are not read (a
    // target that keeps dumping while covobs writes its backlog is no longer observed), so later
    // drops are no loss of this session's.
    session.check_ring_buffer().await;
    session.kcov_finish().await;
    session.expire_all().await;
    session.unended_dumps_lost().await;
    // The backlog: collected for --dump-timeout, at least STOP_COLLECT (or until a second Ctrl-C
    // or SIGTERM), then given
    // up dump by dump, each with its `lost` event; what no collector answered for within
    // STOP_ABANDON more is counted lost in one event. Never a silent loss, never an endless wait.
    let collect_until = tokio::time::Instant::now() + STOP_COLLECT.max(opts.dump_timeout);
    let again = wait_outcomes(session, done_rx, collect_until, Some(shutdown), None).await;
    if session.in_flight() > 0 {
        if again {
            eprintln!(
                "covobs: stopping now: the collection backlog is given up, each dump reported lost"
            );
        }
        session.collections.abandon();
        // Given-up dumps answer at once; artifacts already handed to the output are answered as
        // the output directory's queue (bounded) drains, so they are waited for without a bound
        // (as the output's end is); only collections stuck elsewhere are cut short.
        let collecting = session.collections.shared();
        let until = tokio::time::Instant::now() + STOP_ABANDON;
        wait_outcomes(session, done_rx, until, None, Some(&collecting)).await;
    }
    session.unanswered_lost().await;
    Ok(progress.finish(session))
}

/// Records handled between two looks at everything else the session waits for (a stop, the
/// outcomes, requests, ticks).
const RECORD_CHUNK: usize = 256;

/// After a stop, how long covobs waits for the ends of dumps already running.
const STOP_DUMP_ENDS: Duration = Duration::from_secs(1);
/// After a stop (and the detach-time dump), how long covobs keeps collecting its backlog at least
/// (`--dump-timeout` when longer: a dump that takes long to read is not cut short by default).
const STOP_COLLECT: Duration = Duration::from_secs(5);
/// Then how long the collectors have to report what they give up.
const STOP_ABANDON: Duration = Duration::from_secs(2);

/// Take collection outcomes until none is in flight or `until`; true if a second stop signal
/// came (`shutdown`) and cut the wait short. With `collecting`, `until` is moved on while every
/// collection in flight is an artifact handed to the output (answered as its queue drains).
async fn wait_outcomes(
    session: &mut Session,
    done_rx: &mut mpsc::UnboundedReceiver<session::Outcome>,
    mut until: tokio::time::Instant,
    mut shutdown: Option<&mut Shutdown>,
    collecting: Option<&collections::Collecting>,
) -> bool {
    while session.in_flight() > 0 {
        let again = async {
            match shutdown.as_mut() {
                Some(s) => s.signalled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            o = done_rx.recv() => match o {
                Some(o) => session.on_outcome(o).await,
                None => break,
            },
            _ = tokio::time::sleep_until(until) => {
                let settling = collecting
                    .map_or(0, |c| c.settling.load(std::sync::atomic::Ordering::SeqCst));
                if collecting.is_some() && session.in_flight() as u64 <= settling {
                    until = tokio::time::Instant::now() + STOP_ABANDON;
                    continue;
                }
                break;
            }
            _ = again => return true,
        }
    }
    false
}

/// How long attach waits, at start, for the probes to show which thread runs OCaml.
const OCAML_WAIT: Duration = Duration::from_secs(3);

/// The next `covobs dump` request; never, without a control socket (watch).
async fn accept(
    control: Option<&mut control::Requests>,
) -> Option<(control::DumpRequest, control::Responder)> {
    match control {
        Some(c) => c.next().await,
        None => std::future::pending().await,
    }
}

/// The output directory's fault, when it is raised; never, without an output directory.
async fn output_fault(
    fault: Option<&mut tokio::sync::watch::Receiver<Option<String>>>,
) -> Option<String> {
    let Some(rx) = fault else {
        return std::future::pending().await;
    };
    match rx.wait_for(Option::is_some).await {
        Ok(f) => f.clone(),
        Err(_) => std::future::pending().await,
    }
}

/// The next records of the final-snapshot ring buffer; never, without one.
async fn read_finals(
    reader: &mut Option<crate::probes::final_snapshots::FinalReader>,
    out: &mut Vec<crate::snapshot::exit::FinalRecord>,
) -> std::io::Result<()> {
    match reader {
        Some(r) => r.read(out).await,
        None => std::future::pending().await,
    }
}

/// How long the sinks other than the directory get at the end: a publishing session's NATS sink
/// gets --publish-wait for what is still queued for it (it publishes or spools it), as its spool
/// then gets to drain.
fn finish_grace(publish_wait: Duration) -> Duration {
    publish_wait.max(crate::stream::FINISH_GRACE)
}

/// End a watch: detach everything, flush the output, one summary line.
async fn finish_watch(
    session: Session,
    pipeline: Pipeline,
    result: anyhow::Result<()>,
    fleet: Option<crate::stream::nats::FleetHandle>,
) -> anyhow::Result<()> {
    let json = session.opts.json;
    let drops = session.counters().ring_buffer_drops;
    let wait = session
        .opts
        .publish
        .as_ref()
        .map(|p| p.wait)
        .unwrap_or_default();
    drop(session);
    let stats = pipeline.finish_within(finish_grace(wait)).await?;
    if let Some(f) = fleet {
        tokio::task::spawn_blocking(move || f.finish(None, wait)).await?;
    }
    for w in stats.warnings() {
        eprintln!("covobs: warning: {w}");
    }
    result?;
    if !json {
        eprintln!(
            "covobs: {} events, {drops} lost to a full ring buffer; every probe detached",
            stats.events
        );
    }
    Ok(())
}

/// The next `--interval` tick; never, without an interval.
async fn next_tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Detach everything, flush the pipeline, write session.json.
async fn finish(
    mut session: Session,
    pipeline: Pipeline,
    output: Option<&OutputHealth>,
    started_unix: u64,
    workload: Option<session_layout::Workload>,
    fleet: Option<crate::stream::nats::FleetHandle>,
) -> anyhow::Result<()> {
    let programs = session.probes.programs().to_vec();
    let file_tracking = session.probes.file_tracking;
    let pidns = session.probes.pidns;
    let opts = session.opts.clone();
    let counters = session.counters();
    let history = std::mem::take(&mut session.history);
    let kernel = session.kcov.kernel.clone();
    // Counted while the session still holds everything it held.
    let descriptors_at_end = crate::stream::descriptors_in_use();
    // Every probe goes away here, before the last write; so does the session's pipeline handle,
    // which the pipeline waits for.
    drop(session);
    let publish_wait = opts.publish.as_ref().map(|p| p.wait).unwrap_or_default();
    let stats = pipeline.finish_within(finish_grace(publish_wait)).await?;
    for w in stats.warnings() {
        eprintln!("covobs: warning: {w}");
    }
    let (nofile_soft, nofile_hard) = crate::stream::nofile_limit();
    // The spool's last chance before its figures go into session.json.
    let fleet_stats = match &fleet {
        Some(f) => {
            let f = f.clone();
            Some(tokio::task::spawn_blocking(move || f.settle(publish_wait)).await?)
        }
        None => None,
    };
    // Without a local directory (--no-local), session.json still goes to the fleet.
    let modes = output.map_or(opts.modes, |o| o.dir().modes());
    let info = SessionInfo {
        layout: session_layout::LAYOUT,
        covobs_version: Some(env!("CARGO_PKG_VERSION").into()),
        command: Some(opts.command.clone()),
        started_unix_ns: Nullable::Value(started_unix),
        ended_unix_ns: Nullable::Value(clock::realtime_ns()),
        boot_to_unix_offset_ns: Some(clock::boot_to_unix_offset_ns() as i64),
        kernel: Some(kernel.release),
        kernel_build_id: kernel.build_id.into(),
        workload: workload.into(),
        options: Some(session_layout::Options {
            interval_ms: opts.interval.map(|d| d.as_millis() as u64),
            once: Some(opts.once),
            thread: Some(format!("{:?}", opts.thread).to_lowercase()),
            signal: Some(opts.signal.as_str().into()),
            mode: serde_json::from_value(serde_json::to_value(opts.mode)?)?,
            final_snapshot: Some(opts.final_snapshot || opts.mode == Mode::Snapshot),
            force: Some(opts.force),
            dump_timeout_ms: Some(opts.dump_timeout.as_millis() as u64),
            file_tracking_policy: Nullable::Value(serde_json::to_value(opts.file_tracking)?),
            ..Default::default()
        }),
        file_tracking: Some(serde_json::to_value(file_tracking)?),
        pid_namespace: Some(Object::of("pid_namespace", &pidns)?),
        targets: Some(history),
        programs: Some(
            programs
                .iter()
                .map(|p| Object::of("programs[]", p))
                .collect::<Result<_, _>>()?,
        ),
        counters: Some(session_layout::Counters {
            events: Some(stats.events),
            artifacts: Some(counters.artifacts),
            lost: Some(counters.lost),
            ring_buffer_drops: Some(counters.ring_buffer_drops),
            dumps_triggered: Some(counters.dumps_triggered),
            snapshots: Some(counters.snapshots),
            dumps_seen: Some(counters.dumps_seen),
            sinks: Some(
                stats
                    .sinks
                    .iter()
                    .map(|s| Object::of("counters.sinks[]", s))
                    .collect::<Result<_, _>>()?,
            ),
            ..Default::default()
        }),
        resources: Some(session_layout::Resources {
            descriptors_peak: Some(stats.descriptors_peak.max(descriptors_at_end)),
            descriptors_at_end: Some(descriptors_at_end),
            descriptor_limit: Some(nofile_soft),
            descriptor_limit_hard: Some(nofile_hard),
            rss_peak_bytes: Some(crate::stream::peak_rss_bytes()),
            ..Default::default()
        }),
        output: Some(session_layout::Output {
            local: Some(output.is_some()),
            dir_mode: Some(format!("{:04o}", modes.dir_mode())),
            file_mode: Some(format!("{:04o}", modes.file_mode())),
            group: modes.group.into(),
            fault: output.and_then(OutputHealth::fault),
            events_not_written: Some(output.map_or(0, OutputHealth::unwritten_events)),
            ..Default::default()
        }),
        fleet: fleet_stats.map(serde_json::to_value).transpose()?.into(),
        ..Default::default()
    };
    let bytes = info.to_bytes()?;
    if let Some(output) = output {
        let dir = output.dir();
        // Whole or not at all: a full disk leaves no half session.json.
        dir.write_new(dir.fd(), "session.json", &bytes, true)
            .with_context(|| format!("writing {}", dir.path().join("session.json").display()))?;
    }
    // session.json is the session's last message to the fleet.
    if let Some(f) = fleet {
        let json = bytes::Bytes::from(bytes);
        tokio::task::spawn_blocking(move || f.finish(Some(json), publish_wait)).await?;
    }
    Ok(())
}

/// The report at the end of attach (the live coverage's, see [`progress`]). A failure there loses nothing: the collected data stays in
/// the directory for `covobs report DIR`.
async fn report(
    out_dir: &std::path::Path,
    vmlinux: Option<PathBuf>,
    modes: crate::stream::OutputModes,
    progress: progress::Progress,
) {
    let dir = out_dir.to_path_buf();
    let result = tokio::task::spawn_blocking(move || {
        // The live coverage's report, finished; from the directory when there is none.
        if let Some(done) = progress.report() {
            return done;
        }
        let opts = crate::report::ReportOptions {
            vmlinux,
            modes,
            ..Default::default()
        };
        crate::report::generate(&dir, &opts)
    })
    .await;
    match result {
        Ok(Ok(summary)) => {
            eprint!("{}", summary.render());
            for w in &summary.warnings {
                eprintln!("covobs: warning: {w}");
            }
            for x in &summary.excluded {
                eprintln!("covobs: left out of the report: {x}");
            }
        }
        Ok(Err(e)) => eprintln!(
            "covobs: the report could not be written ({e}); the data is in {}: run `covobs report {}`",
            out_dir.display(),
            out_dir.display()
        ),
        Err(e) => eprintln!("covobs: the report stage failed: {e}"),
    }
}
