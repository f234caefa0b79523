//! session.json (docs/output.md, "session.json"): one type, [`SessionInfo`], is what `attach`
//! (and its guest mode) writes at the end of a session and what every reader (the report, serve,
//! the fleet's collector) reads back. Versioned by its `layout` field like the artifact metadata.
//!
//! Readers do not depend on session.json, so every field is optional when read (a file of an older
//! covobs, or a hand-made one, lacks some); a field that is there must have its type. Keys the
//! writer always writes, `null` when it has no value, are [`Nullable`]; keys only one kind of
//! session has are left out by the other. Objects that the writer's own types fill (programs,
//! sinks, the PID namespace, runtimes found) are [`Object`]s: checked to be objects, kept as they
//! are.
use serde::{Deserialize, Serialize};

use crate::json::parse_json;

/// The newest layout of session.json this covobs writes and reads (a file without the field is
/// layout 1).
pub const LAYOUT: u32 = 1;

fn layout_1() -> u32 {
    1
}

/// session.json.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct SessionInfo {
    /// The layout this file follows ([`LAYOUT`]).
    #[serde(default = "layout_1")]
    pub layout: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covobs_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub started_unix_ns: Nullable<u64>,
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub ended_unix_ns: Nullable<u64>,
    /// CLOCK_BOOTTIME + this = Unix time, in ns (events and metadata use CLOCK_BOOTTIME).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_to_unix_offset_ns: Option<i64>,
    /// `uname -r` of the machine (attach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub kernel_build_id: Nullable<String>,
    /// The program `covobs run` launched (null for `attach`).
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub workload: Nullable<Workload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Options>,
    /// Why a guest session ended (qemu-exit, detach, stop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<Guest>,
    /// How file writes were tracked (attach; the probes' own description).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_tracking: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<Target>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub programs: Option<Vec<Object>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counters: Option<Counters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// What the fleet sink published and spooled (null without `--publish`).
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub fleet: Nullable<serde_json::Value>,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// `workload` of `covobs run`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct Workload {
    #[serde(default)]
    pub argv: Vec<String>,
    #[serde(default)]
    pub program: String,
    #[serde(default)]
    pub pid: u32,
    #[serde(default)]
    pub exit_status: Option<i32>,
    #[serde(default)]
    pub kernel_coverage: bool,
    /// The kcov buffer's size with `--kernel`, else null.
    #[serde(default)]
    pub kcov_entries: Option<u64>,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// `options`: what the session was asked to do (attach's, or a guest's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct Options {
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub once: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// signal, snapshot (attach); qemu, qemu-shared (guests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_snapshot: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub file_tracking_policy: Nullable<serde_json::Value>,
    /// Guests: the VM was paused for each snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<bool>,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// `guest`: the QEMU process a guest session read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct Guest {
    #[serde(default)]
    pub qemu_pid: u32,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub build_id: Option<String>,
    #[serde(default)]
    pub memory: String,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// One target of `targets`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct Target {
    pub pid: u32,
    /// Its id in its own innermost PID namespace (what its getpid() returns).
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub pid_in_own_namespace: Nullable<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    #[serde(default)]
    pub exe: Option<String>,
    /// Its working directory when covobs adopted it (bisect's relative sources start there).
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub cwd: Nullable<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtimes: Option<Vec<RuntimeFound>>,
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub llvm_profile_file: Nullable<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcda_files: Option<Vec<String>>,
    /// The node it ran on (a fleet's session.json).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// A runtime found in one of a target's modules (`targets[].runtimes[]`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct RuntimeFound {
    /// llvm, gcov, sancov, bisect, ocaml, libc, kcov.
    #[serde(default)]
    pub runtime: String,
    #[serde(default)]
    pub module: String,
    #[serde(default)]
    pub build_id: Option<String>,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// `counters`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct Counters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring_buffer_drops: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumps_triggered: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dumps_seen: Option<u64>,
    /// Each destination of the stream, the output directory first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Vec<Object>>,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// `resources`: what covobs itself used.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptors_peak: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptors_at_end: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor_limit_hard: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_peak_bytes: Option<u64>,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// `output`: how the session directory was written, and its failure if any.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "an object")]
pub struct Output {
    /// false with `--no-local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<String>,
    /// The gid of `--output-group`.
    #[serde(default, skip_serializing_if = "Nullable::is_absent")]
    pub group: Nullable<u32>,
    /// The failure of the output directory that stopped the session (null when none).
    #[serde(default)]
    pub fault: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_not_written: Option<u64>,
    /// Keys of a newer covobs: read over, not kept (and an array is refused, not read as
    /// this object's fields in order).
    #[serde(flatten, skip_serializing)]
    pub newer: Unknown,
}

/// Keys this covobs does not know, in an object it reads.
pub type Unknown = std::collections::BTreeMap<String, serde::de::IgnoredAny>;

/// A key one kind of session always writes, `null` when it has no value, and the other kind
/// leaves out (`Absent`, also what a reader gets from an older file without it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Nullable<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<T> Nullable<T> {
    pub fn is_absent(&self) -> bool {
        matches!(self, Self::Absent)
    }

    pub fn get(&self) -> Option<&T> {
        match self {
            Self::Value(v) => Some(v),
            Self::Absent | Self::Null => None,
        }
    }
}

impl<T> From<Option<T>> for Nullable<T> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Self::Value)
    }
}

impl<T: Serialize> Serialize for Nullable<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Value(v) => v.serialize(s),
            Self::Absent | Self::Null => s.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Nullable<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(d).map(Self::from)
    }
}

/// An object the writer's own types fill: checked to be an object, kept as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Object(pub serde_json::Map<String, serde_json::Value>);

#[derive(Debug, thiserror::Error)]
pub enum SessionJsonError {
    #[error("{0} is not a JSON object")]
    NotAnObject(&'static str),
    #[error("session.json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Object {
    /// The object a writer-side value serializes to (`what` names it in the error).
    pub fn of<T: Serialize>(what: &'static str, v: &T) -> Result<Self, SessionJsonError> {
        match serde_json::to_value(v)? {
            serde_json::Value::Object(m) => Ok(Self(m)),
            _ => Err(SessionJsonError::NotAnObject(what)),
        }
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Object, A::Error> {
                let mut map = serde_json::Map::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    map.insert(k, v);
                }
                Ok(Object(map))
            }
        }
        d.deserialize_map(Visitor)
    }
}

impl Counters {
    /// Add another session's counters (a fleet's session.json sums its nodes'): a counter is
    /// there when one of them has it.
    pub fn add(&mut self, other: &Counters) {
        let add = |a: &mut Option<u64>, b: Option<u64>| {
            if let Some(b) = b {
                *a = Some(a.unwrap_or(0) + b);
            }
        };
        add(&mut self.events, other.events);
        add(&mut self.artifacts, other.artifacts);
        add(&mut self.lost, other.lost);
        add(&mut self.ring_buffer_drops, other.ring_buffer_drops);
        add(&mut self.dumps_triggered, other.dumps_triggered);
        add(&mut self.snapshots, other.snapshots);
        add(&mut self.dumps_seen, other.dumps_seen);
    }
}

impl SessionInfo {
    /// Parse and check session.json: its schema, and a layout this covobs reads. `Err` is the
    /// reason, naming the field and quoting nothing of the file.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let info: Self = parse_json(bytes)?;
        if info.layout > LAYOUT {
            return Err(format!(
                "layout {} of a newer covobs (this one reads up to layout {LAYOUT})",
                info.layout
            ));
        }
        Ok(info)
    }

    /// The file's bytes: pretty JSON, keys in order, ending in a newline.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SessionJsonError> {
        // Through a Value: its keys are sorted, as session.json's always were.
        let mut bytes = serde_json::to_vec_pretty(&serde_json::to_value(self)?)?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    pub fn covobs_version(&self) -> Option<String> {
        self.covobs_version.clone()
    }

    pub fn kernel(&self) -> Option<String> {
        self.kernel.clone()
    }

    pub fn command(&self) -> Option<String> {
        self.command.as_ref().map(|c| c.join(" "))
    }

    /// (pid, comm, exe) of each target.
    pub fn targets(&self) -> Vec<(i64, String, String)> {
        self.targets
            .iter()
            .flatten()
            .map(|t| {
                (
                    i64::from(t.pid),
                    t.comm.clone().unwrap_or_default(),
                    t.exe.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The working directory a target had when covobs adopted it (`targets[].cwd`).
    pub fn cwd_of(&self, pid: u32) -> Option<String> {
        self.targets
            .iter()
            .flatten()
            .find(|t| t.pid == pid)?
            .cwd
            .get()
            .cloned()
    }

    /// Session start and end as Unix nanoseconds, when known.
    pub fn span_unix_ns(&self) -> Option<(u64, u64)> {
        Some((*self.started_unix_ns.get()?, *self.ended_unix_ns.get()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_json_of_the_wrong_types_is_refused_naming_the_field() {
        let good = br#"{"covobs_version": "0.1.0", "command": ["covobs", "attach"],
            "kernel": null, "options": {"interval_ms": 3000}, "file_tracking": {"any": 1},
            "targets": [{"pid": 12, "comm": "x", "exe": "/x", "cwd": "/srv", "runtimes": [{"runtime": "llvm"}],
                         "gcda_files": []}],
            "counters": {"events": 1, "artifacts": 2}}"#;
        let info = SessionInfo::parse(good).expect("valid");
        assert_eq!(info.cwd_of(12).as_deref(), Some("/srv"));
        assert_eq!(info.command().as_deref(), Some("covobs attach"));
        assert_eq!(info.targets(), [(12, "x".into(), "/x".into())]);
        for (doc, says) in [
            (
                r#"{"targets": "SECRET"}"#,
                "field `targets`: a string where a sequence",
            ),
            (
                r#"{"targets": [{"pid": "SECRET"}]}"#,
                "field `targets[0].pid`: a string",
            ),
            (
                r#"{"targets": [{"comm": "x"}]}"#,
                "field `targets[0]`: missing field `pid`",
            ),
            (
                r#"{"command": "SECRET"}"#,
                "field `command`: a string where a sequence",
            ),
            (
                r#"{"started_unix_ns": -1}"#,
                "field `started_unix_ns`: a value out of range",
            ),
            (
                r#"{"options": ["SECRET"]}"#,
                "field `options`: an array where an object",
            ),
            (
                r#"{"counters": {"lost": "SECRET"}}"#,
                "field `counters.lost`: a string",
            ),
        ] {
            let e = SessionInfo::parse(doc.as_bytes()).expect_err(doc);
            assert!(e.starts_with(says), "{doc}: {e}");
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn the_docs_example_parses() {
        let doc = include_str!("../../docs/output.md");
        let section = doc.split_once("## session.json").expect("the section").1;
        let example = section
            .split_once("```json\n")
            .and_then(|(_, b)| b.split_once("```"))
            .expect("the example")
            .0;
        let info = SessionInfo::parse(example.as_bytes()).expect("the session.json example parses");
        assert_eq!(info.layout, LAYOUT);
        assert_eq!(info.cwd_of(1234).as_deref(), Some("/srv/node"));
        let t = &info.targets.as_ref().expect("targets")[0];
        assert_eq!(t.pid_in_own_namespace, Nullable::Value(1));
        assert_eq!(t.runtimes.as_ref().expect("runtimes")[0].runtime, "llvm");
        let counters = info.counters.as_ref().expect("counters");
        assert_eq!(counters.sinks.as_ref().map(Vec::len), Some(2));
        let output = info.output.as_ref().expect("output");
        assert_eq!(
            (output.group.clone(), output.fault.clone()),
            (Nullable::Null, None)
        );
        assert_eq!(
            info.resources.as_ref().and_then(|r| r.descriptor_limit),
            Some(1048576)
        );
    }

    #[test]
    fn written_then_read_back_with_nulls_kept_and_absent_keys_left_out() {
        let info = SessionInfo {
            layout: LAYOUT,
            kernel: Some("6.1.0".into()),
            kernel_build_id: Nullable::Null,
            workload: Nullable::Null,
            targets: Some(vec![Target {
                pid: 7,
                cwd: Some("/srv".to_string()).into(),
                exe: None,
                ..Default::default()
            }]),
            output: Some(Output {
                group: Nullable::Null,
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = info.to_bytes().expect("bytes");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "kernel",
                "kernel_build_id",
                "layout",
                "output",
                "targets",
                "workload"
            ],
            "sorted, with the null keys and without the absent ones"
        );
        assert!(v["workload"].is_null() && v["targets"][0]["exe"].is_null());
        assert!(v["output"]["fault"].is_null() && v["output"]["group"].is_null());
        assert!(v["targets"][0].get("pid_in_own_namespace").is_none());
        assert_eq!(SessionInfo::parse(&bytes).expect("read back"), info);
        // A file of an older covobs (no layout) is layout 1; a newer layout is refused.
        assert_eq!(SessionInfo::parse(b"{}").expect("old").layout, 1);
        let e = SessionInfo::parse(br#"{"layout": 2, "targets": []}"#).expect_err("newer");
        assert!(e.contains("layout 2 of a newer covobs"), "{e}");
        // Keys of a newer covobs are read over.
        let info =
            SessionInfo::parse(br#"{"layout": 1, "someday": {"x": 1}, "counters": {"new": 2}}"#)
                .expect("unknown keys");
        assert_eq!(info.counters.map(|c| c.newer.len()), Some(1));
    }
}
