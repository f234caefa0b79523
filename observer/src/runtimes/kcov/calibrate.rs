//! Where covobs' own uprobe trap starts in a kcov buffer.
//!
//! When a kcov-traced thread hits covobs' uprobe on ioctl(), the kernel traces the handling of
//! the trap too (from the int3 notifier on: kernel/notifier.c, kernel/events/uprobes.c, the
//! uprobe's BPF dispatch...) before the eBPF program runs and reads word 0. Those entries come
//! after everything the program itself had recorded, and they start with the same PC (PC
//! mode) or comparison ip (CMP mode) every time: the "anchor". Here a thread of covobs traces
//! itself through exactly that path: it resets its buffer and calls KCOV_DISABLE under the
//! probe, so the buffer the eBPF program copies is the trap alone and its first entry is the
//! anchor. Then the same call again with the anchor set must come back exact and empty: the
//! calibration checks itself.
use std::{sync::mpsc, time::Duration};

use covobs_common::{KcovRecord, kcov as k, kcov_flags};

use super::{KcovError, Mode, buffer::OwnedBuffer};
use crate::{
    discover::{Role, Runtime},
    probes::{EventReader, Probes, records::Record},
};

/// The anchors found, and how long covobs' trap is in each mode (entries).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Anchors {
    pub pc: Option<u64>,
    pub cmp: Option<u64>,
    pub pc_trap_entries: u64,
    pub cmp_trap_entries: u64,
}

enum Command {
    Run(Mode),
    Stop,
}

/// Learn the anchors and give them to the eBPF program. Records of other kinds that arrive
/// meanwhile are put in `other`, in order.
pub fn calibrate(
    probes: &mut Probes,
    reader: &mut EventReader,
    other: &mut Vec<Record>,
) -> Result<Anchors, KcovError> {
    let fail = |m: String| KcovError::Calibration(m);
    if probes.kcov_config().valid == 0 {
        return Err(fail("this kernel has no kcov covobs can follow".into()));
    }
    let started = std::time::Instant::now();
    let (file, offset) = own_ioctl()?;
    tracing::debug!("kcov calibration: ioctl() found in {:?}", started.elapsed());
    let (cmd_tx, cmd_rx) = mpsc::channel::<Command>();
    let (res_tx, res_rx) = mpsc::channel::<Result<i32, String>>();
    let worker = std::thread::Builder::new()
        .name("covobs-kcov-cal".into())
        .spawn(move || tracer(cmd_rx, res_tx))
        .map_err(|e| fail(format!("starting its thread: {e}")))?;
    let wait = |rx: &mpsc::Receiver<Result<i32, String>>| {
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| fail("its thread did not answer".into()))?
            .map_err(fail)
    };
    let result = (|| {
        let tid = wait(&res_rx)? as u32;
        probes
            .update_kcov(|c| c.calibration_tid = tid)
            .map_err(|e| fail(e.to_string()))?;
        let link = probes
            .attach_kcov_calibration(&file, offset)
            .map_err(|e| fail(e.to_string()))?;
        tracing::debug!(
            "kcov calibration: probe attached at {:?}",
            started.elapsed()
        );
        let mut anchors = Anchors::default();
        let run = |probes: &mut Probes, reader: &mut EventReader, other: &mut Vec<Record>, mode| {
            cmd_tx
                .send(Command::Run(mode))
                .map_err(|_| fail("its thread is gone".into()))?;
            match wait(&res_rx) {
                Ok(_) => {}
                // CMP mode needs CONFIG_KCOV_ENABLE_COMPARISONS.
                Err(_) if mode == Mode::Cmp => return Ok(None),
                Err(e) => return Err(e),
            }
            let _ = probes;
            Ok(Some(take_disable(reader, other)?))
        };
        for mode in [Mode::Pc, Mode::Cmp] {
            let Some((rec, words)) = run(probes, reader, other, mode)? else {
                continue;
            };
            let stride = mode.stride();
            let anchor = words.get(stride).copied().filter(|_| rec.count > 0);
            let Some(anchor) = anchor else {
                return Err(fail(format!(
                    "the trap left no {} in the buffer",
                    if mode == Mode::Pc { "PC" } else { "comparison" }
                )));
            };
            // Look back far enough for a trap up to twice as long as the one measured here.
            let window = (2 * rec.count + 64)
                .clamp(u64::from(k::ANCHOR_WINDOW), u64::from(k::MAX_ANCHOR_WINDOW))
                as u32;
            probes
                .update_kcov(|c| {
                    match mode {
                        Mode::Pc => c.anchor_pc = anchor,
                        Mode::Cmp => c.anchor_cmp = anchor,
                    }
                    c.anchor_window = c.anchor_window.max(window);
                })
                .map_err(|e| fail(e.to_string()))?;
            // The check: the same call again now finds nothing but the trap.
            let Some((check, _)) = run(probes, reader, other, mode)? else {
                return Err(fail("the second call failed".into()));
            };
            if check.flags & kcov_flags::EXACT == 0 || check.count != 0 {
                return Err(fail(format!(
                    "with anchor {anchor:#x} the check call found {} entries (exact: {})",
                    check.count,
                    check.flags & kcov_flags::EXACT != 0
                )));
            }
            match mode {
                Mode::Pc => {
                    anchors.pc = Some(anchor);
                    anchors.pc_trap_entries = rec.count;
                }
                Mode::Cmp => {
                    anchors.cmp = Some(anchor);
                    anchors.cmp_trap_entries = rec.count;
                }
            }
        }
        probes.detach_kcov_probe(link);
        Ok(anchors)
    })();
    let _ = cmd_tx.send(Command::Stop);
    let _ = worker.join();
    let _ = probes.update_kcov(|c| c.calibration_tid = 0);
    result
}

/// The calibration thread: its own kcov buffer, traced on command.
fn tracer(commands: mpsc::Receiver<Command>, results: mpsc::Sender<Result<i32, String>>) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let buffer = match OwnedBuffer::open(4096) {
        Ok(b) => b,
        Err(e) => {
            let _ = results.send(Err(e.to_string()));
            return;
        }
    };
    let _ = results.send(Ok(tid));
    while let Ok(Command::Run(mode)) = commands.recv() {
        let r = buffer
            .enable(mode)
            .map_err(|e| format!("KCOV_ENABLE: {e}"))
            .and_then(|()| {
                buffer.reset();
                buffer.disable().map_err(|e| format!("KCOV_DISABLE: {e}"))
            });
        if results.send(r.map(|()| tid)).is_err() {
            return;
        }
    }
}

/// covobs' own C library `ioctl`: (a path that opens it, file offset). Only the C library is
/// read (covobs' own executable is large, and it is not where ioctl() is).
fn own_ioctl() -> Result<(std::path::PathBuf, u64), KcovError> {
    let pid = std::process::id() as i32;
    let mappings = crate::discover::maps::read(pid)
        .map_err(|e| KcovError::Calibration(format!("reading /proc/self/maps: {e}")))?;
    mappings
        .iter()
        .filter(|m| {
            let name = m.path.rsplit('/').next().unwrap_or("");
            name.starts_with("libc.so") || name.starts_with("libc-")
        })
        .find_map(|m| {
            let info = crate::discover::elf::read(&m.map_file(pid)).ok()?;
            let h = info
                .hooks
                .iter()
                .find(|h| h.hook.runtime == Runtime::Libc && h.hook.role == Role::Ioctl)?;
            Some((m.map_file(pid), h.file_offset))
        })
        .ok_or_else(|| KcovError::Calibration("covobs' own ioctl() was not found".into()))
}

/// The calibration thread's KCOV_DISABLE record and the words copied with it.
fn take_disable(
    reader: &mut EventReader,
    other: &mut Vec<Record>,
) -> Result<(KcovRecord, Vec<u64>), KcovError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut chunks: Vec<(u64, u32, Vec<u64>)> = Vec::new();
    loop {
        let mut batch = Vec::new();
        reader.drain(&mut batch);
        for r in batch {
            match r {
                Record::KcovChunk {
                    event_id,
                    index,
                    words,
                    ..
                } => chunks.push((event_id, index, words)),
                Record::KcovIoctl(rec)
                    if rec.flags & kcov_flags::CALIBRATION != 0 && rec.cmd == k::DISABLE =>
                {
                    let mut mine: Vec<_> = chunks
                        .iter()
                        .filter(|(id, _, _)| *id == rec.event_id)
                        .collect();
                    mine.sort_by_key(|(_, i, _)| *i);
                    let words = mine.into_iter().flat_map(|(_, _, w)| w.clone()).collect();
                    return Ok((rec, words));
                }
                Record::KcovIoctl(rec) if rec.flags & kcov_flags::CALIBRATION != 0 => {}
                r => other.push(r),
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(KcovError::Calibration(
                "the uprobe on covobs' own ioctl() reported nothing".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
