//! Decoding of the eBPF programs' ring-buffer records into events.
use covobs_common::{
    COMM_LEN, DumpRecord, ExecRecord, FileIdentity, FileOpenRecord, FileWriteRecord, Header,
    KcovChunkRecord, KcovRecord, SignalRecord, SignalSentRecord, TaskRecord, kind,
};

use crate::events::{Body, Event, handler_name, signal_name, signal_result_name};

/// A decoded record: the event, plus what the kernel did to the watch set while producing it.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub event: Event,
    /// The kernel started watching this process just now (its name matched at exec or rename).
    pub newly_watched: bool,
    /// A thread exit on a kernel that cannot say whether the whole group died.
    pub group_dead_unknown: bool,
}

/// Any record of the eBPF programs.
#[derive(Clone, Debug)]
pub enum Record {
    /// Lifecycle and signals: becomes a public event.
    Event(Decoded),
    /// A dump function was entered.
    DumpStart { hdr: Header, cookie: u64 },
    /// A dump function returned `ret`.
    DumpEnd {
        hdr: Header,
        cookie: u64,
        ret: i64,
        start_ns: u64,
    },
    /// The dumping thread opened a file.
    FileOpen {
        hdr: Header,
        cookie: u64,
        ret: i64,
        flags: i32,
        dfd: i32,
        file: FileIdentity,
        path: String,
    },
    /// The dumping thread wrote to a file.
    FileWrite {
        hdr: Header,
        cookie: u64,
        fd: i32,
        call: u32,
        ret: i64,
        offset: i64,
        file: FileIdentity,
    },
    /// The doctor's self-test uprobe fired.
    Selftest { hdr: Header },
    /// An OCaml runtime probe sent a requested signal to the thread that hit it.
    BpfSignalSent {
        hdr: Header,
        sig: u32,
        ret: i64,
        requested_ns: u64,
    },
    /// A watched thread called a kcov ioctl.
    KcovIoctl(KcovRecord),
    /// Words of a kcov buffer copied at a KCOV_DISABLE (before its `KcovIoctl`).
    KcovChunk {
        hdr: Header,
        event_id: u64,
        index: u32,
        words: Vec<u64>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("record kind {kind} needs {need} bytes, got {got}")]
    Truncated { kind: u32, need: usize, got: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

/// Copy a `#[repr(C)]` plain-data record out of the ring buffer's bytes.
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, RecordError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(RecordError::Truncated {
            kind,
            need,
            got: bytes.len(),
        });
    }
    // SAFETY: the length was checked; T is a plain-data `#[repr(C)]` record (only integers and
    // byte arrays, valid for any bit pattern) and read_unaligned has no alignment requirement.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// A NUL-padded kernel string as text.
pub fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn comm(bytes: &[u8; COMM_LEN]) -> String {
    cstr(bytes)
}

pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
    if bytes.len() < size_of::<Header>() {
        return Err(RecordError::Short(bytes.len()));
    }
    let hdr: Header = read(bytes, 0)?;
    match hdr.kind {
        kind::DUMP_START | kind::DUMP_END => {
            let r: DumpRecord = read(bytes, hdr.kind)?;
            return Ok(if hdr.kind == kind::DUMP_START {
                Record::DumpStart {
                    hdr,
                    cookie: r.cookie,
                }
            } else {
                Record::DumpEnd {
                    hdr,
                    cookie: r.cookie,
                    // The dump functions return a C int (or nothing): only the low half of
                    // the return register is theirs, so -1 reads as -1, not 4294967295.
                    ret: i64::from(r.ret as i32),
                    start_ns: r.start_ns,
                }
            });
        }
        kind::FILE_OPEN => {
            let r: FileOpenRecord = read(bytes, hdr.kind)?;
            return Ok(Record::FileOpen {
                hdr,
                cookie: r.dump_cookie,
                ret: r.ret,
                flags: r.flags,
                dfd: r.dfd,
                file: r.file,
                path: cstr(&r.path),
            });
        }
        kind::FILE_WRITE => {
            let r: FileWriteRecord = read(bytes, hdr.kind)?;
            return Ok(Record::FileWrite {
                hdr,
                cookie: r.dump_cookie,
                fd: r.fd,
                call: r.call,
                ret: r.ret,
                offset: r.offset,
                file: r.file,
            });
        }
        kind::SELFTEST => return Ok(Record::Selftest { hdr }),
        kind::BPF_SIGNAL_SENT => {
            let r: SignalSentRecord = read(bytes, hdr.kind)?;
            return Ok(Record::BpfSignalSent {
                hdr,
                sig: r.sig,
                ret: r.ret,
                requested_ns: r.requested_ns,
            });
        }
        kind::KCOV_IOCTL => return read(bytes, hdr.kind).map(Record::KcovIoctl),
        kind::KCOV_CHUNK => {
            let r: KcovChunkRecord = read(bytes, hdr.kind)?;
            let n = (r.words as usize).min(r.data.len());
            return Ok(Record::KcovChunk {
                hdr,
                event_id: r.event_id,
                index: r.index,
                words: r.data[..n].to_vec(),
            });
        }
        _ => {}
    }
    decode_event(hdr, bytes).map(Record::Event)
}

fn decode_event(hdr: Header, bytes: &[u8]) -> Result<Decoded, RecordError> {
    let mut newly_watched = false;
    let mut group_dead_unknown = false;
    let (pid, tid, body) = match hdr.kind {
        kind::PROCESS_EXEC => {
            let r: ExecRecord = read(bytes, hdr.kind)?;
            newly_watched = r.newly_watched != 0;
            let body = Body::ProcessExec {
                filename: cstr(&r.filename),
                comm: comm(&r.comm),
                old_tid: r.old_tid,
            };
            (hdr.tgid, hdr.tid, body)
        }
        kind::PROCESS_FORK => {
            let r: TaskRecord = read(bytes, hdr.kind)?;
            newly_watched = hdr._reserved & covobs_common::FORK_CHILD_WATCHED != 0;
            let body = Body::ProcessFork {
                child_pid: r.other_tgid,
                comm: comm(&r.comm),
                followed: false,
            };
            (hdr.tgid, hdr.tid, body)
        }
        kind::THREAD_START => {
            let r: TaskRecord = read(bytes, hdr.kind)?;
            let body = Body::ThreadStart {
                name: comm(&r.comm),
                parent_tid: hdr.tid,
            };
            (r.other_tgid, r.other_tid, body)
        }
        kind::THREAD_EXIT | kind::PROCESS_EXIT => {
            let r: TaskRecord = read(bytes, hdr.kind)?;
            group_dead_unknown = r.flags == 2;
            let body = if hdr.kind == kind::PROCESS_EXIT {
                Body::ProcessExit {
                    comm: comm(&r.comm),
                }
            } else {
                Body::ThreadExit {
                    name: comm(&r.comm),
                }
            };
            (hdr.tgid, hdr.tid, body)
        }
        kind::CGROUP_MOVE => {
            let r: TaskRecord = read(bytes, hdr.kind)?;
            newly_watched = r.flags == 1;
            let body = Body::CgroupMove {
                comm: comm(&r.comm),
                entered: newly_watched,
                // The tracker knows which cgroup is selected.
                cgroup: String::new(),
            };
            (hdr.tgid, hdr.tid, body)
        }
        kind::THREAD_RENAME => {
            let r: TaskRecord = read(bytes, hdr.kind)?;
            newly_watched = r.flags == 1;
            let body = Body::ThreadRename {
                old_name: comm(&r.comm),
                name: comm(&r.comm2),
            };
            (hdr.tgid, hdr.tid, body)
        }
        kind::SIGNAL_GENERATE => {
            let r: SignalRecord = read(bytes, hdr.kind)?;
            let body = Body::SignalGenerate {
                sig: r.sig,
                signal: signal_name(r.sig),
                code: r.code,
                sender_pid: hdr.tgid,
                sender_tid: hdr.tid,
                sender_comm: comm(&r.comm),
                group: r.group != 0,
                result: signal_result_name(r.result),
            };
            (r.target_tgid, r.target_tid, body)
        }
        kind::SIGNAL_DELIVER => {
            let r: SignalRecord = read(bytes, hdr.kind)?;
            let body = Body::SignalDeliver {
                sig: r.sig,
                signal: signal_name(r.sig),
                code: r.code,
                handler: handler_name(r.sa_handler),
                sa_flags: r.sa_flags,
            };
            (hdr.tgid, hdr.tid, body)
        }
        other => return Err(RecordError::UnknownKind(other)),
    };
    Ok(Decoded {
        event: Event {
            ts_ns: hdr.ts_ns,
            pid,
            tid,
            body,
        },
        newly_watched,
        group_dead_unknown,
    })
}

/// The name of a record kind, for drop accounting.
pub fn kind_name(k: u32) -> &'static str {
    match k {
        kind::PROCESS_EXEC => "process_exec",
        kind::PROCESS_FORK => "process_fork",
        kind::PROCESS_EXIT => "process_exit",
        kind::THREAD_START => "thread_start",
        kind::THREAD_EXIT => "thread_exit",
        kind::THREAD_RENAME => "thread_rename",
        kind::CGROUP_MOVE => "cgroup_move",
        kind::SIGNAL_GENERATE => "signal_generate",
        kind::SIGNAL_DELIVER => "signal_deliver",
        kind::DUMP_START => "dump_start",
        kind::DUMP_END => "dump_end",
        kind::FILE_OPEN => "dump_file_open",
        kind::FILE_WRITE => "dump_file_write",
        kind::KCOV_IOCTL => "kcov_ioctl",
        kind::KCOV_CHUNK => "kcov_chunk",
        _ => "record",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test-only view of a plain-data record as bytes.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    #[test]
    fn decodes_a_signal_generate_as_an_event_about_the_target() {
        let mut c = [0u8; COMM_LEN];
        c[..4].copy_from_slice(b"bash");
        let rec = SignalRecord {
            hdr: Header {
                kind: kind::SIGNAL_GENERATE,
                _reserved: 0,
                ts_ns: 42,
                tgid: 100,
                tid: 101,
            },
            sig: 12,
            code: -6,
            errno: 0,
            result: 0,
            target_tid: 201,
            target_tgid: 200,
            group: 0,
            _pad: 0,
            sa_handler: 0,
            sa_flags: 0,
            comm: c,
        };
        let Record::Event(d) = decode(&bytes_of(&rec)).unwrap() else {
            panic!("not an event")
        };
        assert_eq!((d.event.pid, d.event.tid, d.event.ts_ns), (200, 201, 42));
        let v = serde_json::to_value(&d.event).unwrap();
        assert_eq!(v["event"], "signal_generate");
        assert_eq!(v["signal"], "SIGUSR2");
        assert_eq!(v["sender_pid"], 100);
        assert_eq!(v["sender_comm"], "bash");
        assert_eq!(v["result"], "delivered");
    }

    #[test]
    fn a_dump_end_reads_the_c_int_its_function_returned() {
        let rec = DumpRecord {
            hdr: Header {
                kind: kind::DUMP_END,
                ..Default::default()
            },
            cookie: 3,
            // What rax holds after `return -1;` from an int function: the upper half is zero.
            ret: 0xFFFF_FFFF,
            start_ns: 7,
        };
        let Record::DumpEnd { ret, cookie, .. } = decode(&bytes_of(&rec)).unwrap() else {
            panic!("not a dump end")
        };
        assert_eq!((ret, cookie), (-1, 3));
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        assert!(matches!(decode(&[0; 8]), Err(RecordError::Short(8))));
        let hdr = Header {
            kind: 99,
            ..Default::default()
        };
        assert!(matches!(
            decode(&bytes_of(&hdr)),
            Err(RecordError::UnknownKind(99))
        ));
        let hdr = Header {
            kind: kind::SIGNAL_DELIVER,
            ..Default::default()
        };
        assert!(matches!(
            decode(&bytes_of(&hdr)),
            Err(RecordError::Truncated { .. })
        ));
    }
}
