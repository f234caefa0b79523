//! A bounded fuzz run (proptest, a fixed number of cases) of what `covobs report` reads from a
//! session directory it does not trust: session.json and artifact metadata against their schema,
//! the bounded reader, and path resolution beneath the session. Nothing panics, nothing allocates
//! past its bound (this binary counts its own allocations), no error repeats a value of the
//! file it refuses, and nothing outside the session is ever read.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    fs,
    io::Write as _,
    os::unix::fs::symlink,
    path::Path,
};

use covobs::report::{
    session::{ArtifactMeta, SessionInfo},
    session_dir::{SessionDir, SessionFileError, read_bounded},
};
use proptest::{prelude::*, test_runner::Config};
use serde_json::{Value, json};

/// Counts the bytes this thread holds, and the most it held.
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| {
            if now > peak.get() {
                peak.set(now);
            }
        });
    });
}

// SAFETY: every call goes to the system allocator unchanged; the counting touches only
// thread-locals without destructors.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note(-(layout.size() as isize));
        // SAFETY: ptr came from this allocator with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Old and new block both exist for a moment.
        note(new_size as isize);
        note(-(layout.size() as isize));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `f` returns, and the most it allocated at once (bytes).
fn peak_of<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let r = f();
    let peak = PEAK.with(Cell::get) - base;
    (r, peak.max(0) as usize)
}

#[test]
fn the_allocation_count_sees_allocations() {
    let (v, peak) = peak_of(|| vec![1u8; 1 << 20]);
    assert!(peak >= 1 << 20, "{peak}");
    drop(v);
    let ((), peak) = peak_of(|| ());
    assert_eq!(peak, 0);
}

/// A JSON document's parse may hold its typed result (a few words per value the input spells out
/// in as few bytes) and the parser's scratch: bounded by a multiple of the input.
fn json_bound(input: usize) -> usize {
    32 * input + (64 << 10)
}

const MARK: &str = "SECRETMARK";

fn config() -> Config {
    Config {
        cases: 2000,
        failure_persistence: None,
        ..Config::default()
    }
}

fn valid_session() -> Value {
    json!({
        "covobs_version": "0.1.0",
        "command": ["covobs", "attach", "--name", MARK],
        "started_unix_ns": 1, "ended_unix_ns": 2, "boot_to_unix_offset_ns": -5,
        "kernel": "6.1.0", "kernel_build_id": "ab",
        "workload": null,
        "options": {"interval_ms": 3000, "thread": MARK},
        "file_tracking": {"anything": MARK},
        "pid_namespace": {"inode": 1, "initial": true, "level": 0},
        "targets": [{"pid": 12, "pid_in_own_namespace": 1, "comm": MARK, "exe": "/x",
                     "cwd": "/srv", "runtimes": [{"runtime": "llvm", "module": MARK}],
                     "gcda_files": []}],
        "programs": [{"name": "covobs_exec", "id": 137}],
        "counters": {"events": 1, "artifacts": 2, "lost": 0, "ring_buffer_drops": 0,
                     "dumps_triggered": 1, "snapshots": 0, "dumps_seen": 1}
    })
}

fn valid_metadata() -> Value {
    json!({
        "seq": 7, "runtime": "gcov", "pid": 1234, "tid": 1240, "comm": MARK,
        "trigger": "signal", "start_ns": 1, "end_ns": 2, "collected_ns": 3, "bytes": 24,
        "checksum": "sha256:00", "valid": true, "file": "000007-gcov.gcda",
        "source": {"path": MARK, "offset": 0, "inode": 42, "dev": 1},
        "format": {"name": "gcda", "version": 1},
        "module": {"path": "/usr/bin/x", "build_id": "9f", "copy": "modules/9f/x",
                   "producer": MARK, "llvm_major": 14},
        "parts": [{"file": "a.gcda", "path": "/t/a.gcda", "bytes": 24}]
    })
}

/// Paths (as `a.b[0].c`) of every value in a document.
fn paths(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                out.push(p.clone());
                paths(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}[{i}]");
                out.push(p.clone());
                paths(x, p, out);
            }
        }
        _ => {}
    }
}

fn slot<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    let mut cur = v;
    for part in path.split('.') {
        let (key, idx) = match part.split_once('[') {
            Some((k, i)) => (k, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        cur = &mut cur[key];
        if let Some(i) = idx {
            cur = &mut cur[i];
        }
    }
    cur
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(MARK)),
        Just(json!(format!("../{MARK}"))),
        Just(json!([MARK, 1])),
        Just(json!({"x": MARK})),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// The checks every parse result must pass; `Err` is a property violation.
fn judge<T>(
    what: &str,
    r: Result<T, String>,
    peak: usize,
    input: usize,
) -> Result<(), TestCaseError> {
    prop_assert!(
        peak <= json_bound(input),
        "{what}: {peak} bytes allocated for {input} bytes of input"
    );
    if let Err(e) = r {
        prop_assert!(!e.contains(MARK), "{what}: the error repeats the file: {e}");
        prop_assert!(!e.contains('\n'), "{what}: not one line: {e}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_nor_allocate_past_their_bound(
        bytes in prop::collection::vec(any::<u8>(), 0..4096)
    ) {
        let (r, peak) = peak_of(|| SessionInfo::parse(&bytes).map(drop));
        judge("session.json", r, peak, bytes.len())?;
        let (r, peak) = peak_of(|| ArtifactMeta::parse(&bytes).map(drop));
        judge("metadata", r, peak, bytes.len())?;
    }

    #[test]
    fn mutated_documents_never_panic_nor_repeat_their_content(
        which in 0usize..2,
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..4, any::<u8>()), 1..8),
    ) {
        let doc = if which == 0 { valid_session() } else { valid_metadata() };
        let mut bytes = serde_json::to_vec(&doc).expect("json");
        for (at, op, b) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] ^= b | 1,
                1 => bytes.insert(i, b),
                2 => { bytes.remove(i); }
                _ => bytes.truncate(i),
            }
        }
        let (r, peak) = peak_of(|| SessionInfo::parse(&bytes).map(drop));
        judge("session.json", r, peak, bytes.len())?;
        let (r, peak) = peak_of(|| ArtifactMeta::parse(&bytes).map(drop));
        judge("metadata", r, peak, bytes.len())?;
    }

    #[test]
    fn a_value_of_another_type_is_refused_by_its_field_name(
        which in 0usize..2,
        pick in any::<prop::sample::Index>(),
        value in any_value(),
    ) {
        let mut doc = if which == 0 { valid_session() } else { valid_metadata() };
        let mut all = Vec::new();
        paths(&doc, String::new(), &mut all);
        let path = all[pick.index(all.len())].clone();
        *slot(&mut doc, &path) = value;
        let bytes = serde_json::to_vec(&doc).expect("json");
        let (r, peak) = peak_of(|| if which == 0 {
            SessionInfo::parse(&bytes).map(drop)
        } else {
            ArtifactMeta::parse(&bytes).map(drop)
        });
        if let Err(e) = &r {
            // The field itself, or the object or array it sits in.
            let named = path
                .char_indices()
                .filter(|&(_, c)| c == '.' || c == '[')
                .map(|(n, _)| &path[..n])
                .chain([path.as_str()])
                .any(|field| e.contains(&format!("`{field}")));
            prop_assert!(named, "{path}: the error does not name the field: {e}");
        }
        judge(&path, r, peak, bytes.len())?;
    }

    #[test]
    fn the_bounded_reader_checks_the_size_first_and_reads_no_more(
        content in prop::collection::vec(any::<u8>(), 0..4096),
        sparse in prop_oneof![Just(0u64), 0u64..1 << 20, (1u64 << 30)..(1u64 << 40)],
        recorded in prop::option::of(prop_oneof![Just(0i64), -3i64..3, any::<u32>().prop_map(i64::from)]),
        cap in prop_oneof![0u64..8192, Just(1u64 << 20)],
    ) {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(&content).expect("write");
        let size = content.len() as u64 + sparse;
        f.set_len(size).expect("set_len");
        // A recorded size near the real one, or anything.
        let recorded = recorded.map(|d| {
            if d.unsigned_abs() < 3 { size.saturating_add_signed(d) } else { d as u64 }
        });
        let (r, peak) = peak_of(|| read_bounded(&f, recorded, cap));
        match r {
            Ok(bytes) => {
                prop_assert_eq!(bytes.len() as u64, size);
                prop_assert!(size <= cap);
                prop_assert!(recorded.is_none_or(|n| n == size));
                prop_assert_eq!(&bytes[..content.len()], &content[..]);
            }
            Err(SessionFileError::SizeMismatch { size: s, recorded: n }) => {
                prop_assert_eq!((s, Some(n)), (size, recorded));
            }
            Err(SessionFileError::TooLarge { size: s, cap: c }) => {
                prop_assert_eq!((s, c), (size, cap));
                prop_assert!(size > cap);
            }
            Err(e) => prop_assert!(false, "unexpected: {e}"),
        }
        // Never more than the file (or the cap), whatever the file claims.
        prop_assert!(
            peak as u64 <= size.min(cap).saturating_add(1024),
            "{peak} bytes allocated for a file of {size} and a cap of {cap}"
        );
    }
}

/// A session directory next to a secret, with every kind of way out.
fn trap() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::write(tmp.path().join("secret"), MARK).expect("secret");
    let s = tmp.path().join("s");
    fs::create_dir_all(s.join("d/e")).expect("mkdir");
    fs::write(s.join("d/e/f"), "inside").expect("write");
    fs::write(s.join("f"), "inside").expect("write");
    symlink(tmp.path().join("secret"), s.join("abs")).expect("symlink");
    symlink("../secret", s.join("rel")).expect("symlink");
    symlink("..", s.join("up")).expect("symlink");
    symlink("d", s.join("dlink")).expect("symlink");
    symlink("/proc/self/root", s.join("magic")).expect("symlink");
    (tmp, s)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn no_path_leads_out_of_the_session(
        parts in prop::collection::vec(
            prop::sample::select(vec![
                "..", ".", "", "d", "e", "f", "abs", "rel", "up", "dlink", "magic", "secret",
                "s", "tmp", "/",
            ]),
            1..6,
        ),
        walk in any::<bool>(),
    ) {
        thread_local! {
            static TRAP: (tempfile::TempDir, std::path::PathBuf) = trap();
        }
        let rel = parts.join("/");
        TRAP.with(|(tmp, s)| {
            let dir = SessionDir::open(s).expect("open");
            if walk {
                dir.walk_components();
            }
            match dir.read(Path::new(&rel), None, 1 << 20) {
                Ok(bytes) => {
                    prop_assert_eq!(&bytes[..], b"inside", "{} read something else", rel);
                }
                Err(e) => {
                    prop_assert!(!e.to_string().contains(MARK));
                }
            }
            let _ = tmp;
            Ok(())
        })?;
    }
}
