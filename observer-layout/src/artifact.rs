//! Artifact metadata, `<pid>-<comm>/<seq>-<runtime>.json` (docs/output.md, "Artifact metadata"):
//! one type, written by the collectors and read back by the report.
//!
//! Reading is lenient where the directory may have been written by an older covobs or by hand:
//! only `seq`, `runtime`, `pid`, `valid` and `file` must be there; a field that is there must
//! have its type. A file of a newer layout than this covobs reads is refused as a whole.
use std::{borrow::Cow, path::Path};

use serde::{Deserialize, Serialize};

/// The layout version covobs writes, and the newest it reads. Files without `layout` are 1.
pub const LAYOUT: u32 = 1;

/// The coverage runtime an artifact is of. A name this covobs does not know (written by a newer
/// one) is kept as it is, so the report can say it does not read it yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Llvm,
    Gcov,
    Bisect,
    Sancov,
    Kcov,
    #[serde(untagged)]
    Unknown(String),
}

impl Runtime {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Llvm => "llvm",
            Self::Gcov => "gcov",
            Self::Bisect => "bisect",
            Self::Sancov => "sancov",
            Self::Kcov => "kcov",
            Self::Unknown(name) => name,
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a dump happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// covobs sent the signal that led to it.
    Signal,
    /// The target dumped on its own (a timer, its own code).
    #[serde(rename = "self")]
    SelfDump,
    /// The runtime's exit-time dump (the process called exit()); for kcov, the buffer of a
    /// thread read after it exited.
    Exit,
    /// covobs read the counters from the target's memory.
    Snapshot,
    /// covobs' last snapshot, copied in the kernel as the process exited; kcov: the buffer of a
    /// thread still tracing, read by covobs when it detached.
    Final,
}

impl Trigger {
    /// As in the events and the artifact metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "signal",
            Self::SelfDump => "self",
            Self::Exit => "exit",
            Self::Snapshot => "snapshot",
            Self::Final => "final",
        }
    }
}

/// The `trigger` an artifact's metadata names: one of covobs' own, or a name this covobs does not
/// know (a newer one's, a hand-made file's), kept as it is: the report shows it, never reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Triggered {
    Known(Trigger),
    Unknown(String),
}

impl Triggered {
    pub fn as_str(&self) -> &str {
        match self {
            Self::Known(t) => t.as_str(),
            Self::Unknown(name) => name,
        }
    }
}

impl From<Trigger> for Triggered {
    fn from(t: Trigger) -> Self {
        Self::Known(t)
    }
}

/// One artifact's metadata. The writer fills every field it knows (the `Option`s it always
/// fills are optional for readers of older or hand-made directories).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    pub seq: u64,
    pub runtime: Runtime,
    pub pid: u32,
    #[serde(default)]
    pub tid: Option<u32>,
    #[serde(default)]
    pub comm: Option<String>,
    #[serde(default)]
    pub trigger: Option<Triggered>,
    #[serde(default)]
    pub start_ns: Option<u64>,
    #[serde(default)]
    pub end_ns: Option<u64>,
    #[serde(default)]
    pub collected_ns: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub checksum: Option<String>,
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    pub file: String,
    /// Where the bytes were (absent or null in a hand-made file: empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub source: SourceInfo,
    /// What the bytes are (absent or null in a hand-made file: empty).
    #[serde(default, deserialize_with = "null_as_default")]
    pub format: FormatInfo,
    #[serde(default)]
    pub module: Option<ModuleMeta>,
    /// For an artifact that is a directory: its files (name in the directory, path in the
    /// target, bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartMeta>,
    /// Snapshots: how the counters were read and what they added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotInfo>,
    /// kcov artifacts: mode, entries, exactness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kcov: Option<KcovMeta>,
    /// When the process started (CLOCK_BOOTTIME ns, clock-tick resolution): with the pid, the
    /// process instance whose counters these are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start_ns: Option<u64>,
    /// What the runtime merged into its counters right before writing this dump (an LLVM `%m`
    /// pool's earlier content): the report subtracts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged: Option<MergedBase>,
    /// The layout this file follows ([`LAYOUT`]).
    #[serde(default = "layout_1")]
    pub layout: u32,
}

fn layout_1() -> u32 {
    1
}

/// `null` read as the value's default, as an absent field is (readers before this type took
/// both for these fields).
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The earlier content of a merge-pool file that a dump merged into its counters: the previous
/// artifact of this process from that file (`seq`), or a copy kept beside the artifact (`file`,
/// `<seq>-<runtime>.merged`, relative to its directory) when the file held something covobs did
/// not collect (dumps from before it attached, an earlier run).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedBase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub checksum: Option<String>,
    /// gcov: the .gcda files the copy holds, one after another, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<MergedPart>,
}

/// One .gcda file in a gcov dump's `merged` copy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedPart {
    /// Where it was in the target.
    pub path: String,
    pub bytes: u64,
}

/// One file of a directory artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartMeta {
    /// Its name inside the artifact directory.
    pub file: String,
    /// Where it was in the target.
    pub path: String,
    pub bytes: u64,
}

/// How an artifact's bytes were located.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocatedBy {
    /// The kernel showed the dump's writes.
    Kernel,
    /// The kernel showed the dump's files and sizes but not where it wrote (no BTF): the bytes
    /// it appended, at the end of the file.
    #[serde(rename = "kernel-size")]
    KernelSize,
    /// Expanded from the target's environment (LLVM_PROFILE_FILE, GCOV_PREFIX): exact only if
    /// nothing else wrote the file meanwhile.
    Environment,
    /// Read from the target's memory (a snapshot).
    Memory,
    /// kcov: read from the shared buffer's view, not copied by the kernel.
    View,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub offset: u64,
    #[serde(default)]
    pub inode: Option<u64>,
    #[serde(default)]
    pub dev: Option<u64>,
    #[serde(default)]
    pub located_by: Option<LocatedBy>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatInfo {
    #[serde(default)]
    pub name: Cow<'static, str>,
    #[serde(default)]
    pub version: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleMeta {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub build_id: Option<String>,
    /// Relative to the session directory: `modules/<build-id>/<file name>`.
    #[serde(default)]
    pub copy: Option<String>,
    #[serde(default)]
    pub producer: Option<String>,
    #[serde(default)]
    pub llvm_major: Option<u32>,
}

/// When a read started and ended (CLOCK_BOOTTIME ns) and how much it moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadTiming {
    pub start_ns: u64,
    pub end_ns: u64,
    pub bytes: u64,
    /// System calls it took (1 unless the kernel returned a short read that was retried).
    pub syscalls: u32,
}

/// The change a snapshot brought to its module.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// Counters covered in this snapshot.
    pub covered: u64,
    /// Covered now, not in the previous snapshot of this module in this process (all covered
    /// ones for the first).
    pub new_covered: u64,
    /// Covered before, zero now: the target reset its counters in between.
    pub reset: u64,
    /// This is the module's first snapshot in this process.
    pub first: bool,
}

/// How a snapshot was read (`snapshot` field).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// `process_vm_readv`, or `ebpf:<hook>` for a copy made in the kernel at exit.
    pub method: String,
    /// The live ranges read (counters, bitmap): the copy's window and size.
    pub read: ReadTiming,
    pub load_bias: u64,
    /// Run-time address of the counters.
    pub counters_addr: u64,
    pub counters: u64,
    /// Covered counters, and what this snapshot added since the previous one of the module.
    #[serde(flatten)]
    pub delta: Delta,
    /// Bytes of counters the kernel could not read at exit (not resident): written as zero.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable_bytes: u64,
    pub consistency: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a kcov buffer holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KcovMode {
    /// KCOV_TRACE_PC: one return address per traced basic block.
    Pc,
    /// KCOV_TRACE_CMP: (type, arg1, arg2, ip) per traced comparison.
    Cmp,
}

/// The `kcov` part of an artifact's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KcovMeta {
    pub mode: KcovMode,
    /// Entries: PCs, or comparison records.
    pub entries: u64,
    /// Distinct PCs (comparison ips).
    pub unique: u64,
    /// The entries are exactly those the thread had when it called KCOV_DISABLE.
    pub exact: bool,
    pub kernel_release: String,
}

impl ArtifactMeta {
    /// Parse and check a metadata file: its schema, and an artifact that stays in its process
    /// directory. `Err` is the reason to leave the artifact out.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let meta: Self = crate::json::parse_json(bytes)?;
        if meta.layout > LAYOUT {
            return Err(format!(
                "layout {} of a newer covobs (this one reads up to layout {LAYOUT})",
                meta.layout
            ));
        }
        if !is_inside(&meta.file) {
            return Err(
                "field `file` must name a file in its directory (relative, without `..`)".into(),
            );
        }
        Ok(meta)
    }
}

/// A relative path of plain names (no `/` first, no `.` or `..`), not empty.
pub fn is_inside(rel: &str) -> bool {
    let p = Path::new(rel);
    !rel.is_empty()
        && !p.is_absolute()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump() -> ArtifactMeta {
        ArtifactMeta {
            seq: 7,
            runtime: Runtime::Llvm,
            pid: 1234,
            tid: Some(1240),
            comm: Some("runner".into()),
            trigger: Some(Trigger::Signal.into()),
            start_ns: Some(1),
            end_ns: Some(2),
            collected_ns: Some(3),
            bytes: Some(24),
            checksum: Some("sha256:ab".into()),
            valid: false,
            invalid_reason: Some("short".into()),
            file: "000007-llvm.profraw".into(),
            source: SourceInfo {
                path: "/tmp/p.profraw".into(),
                offset: 48,
                inode: Some(42),
                dev: None,
                located_by: Some(LocatedBy::Environment),
            },
            format: FormatInfo {
                name: "llvm-raw-profile".into(),
                version: 10,
            },
            module: Some(ModuleMeta {
                path: Some("/bin/runner".into()),
                build_id: Some("9f0c".into()),
                copy: None,
                producer: None,
                llvm_major: Some(23),
            }),
            parts: vec![PartMeta {
                file: "a.gcda".into(),
                path: "/t/a.gcda".into(),
                bytes: 3,
            }],
            snapshot: None,
            kcov: None,
            process_start_ns: Some(5),
            merged: Some(MergedBase {
                seq: None,
                file: Some("000007-llvm.merged".into()),
                bytes: Some(8),
                checksum: Some("sha256:cd".into()),
                parts: Vec::new(),
            }),
            layout: LAYOUT,
        }
    }

    fn snapshot() -> ArtifactMeta {
        ArtifactMeta {
            runtime: Runtime::Sancov,
            trigger: Some(Trigger::Final.into()),
            parts: Vec::new(),
            merged: None,
            invalid_reason: None,
            valid: true,
            source: SourceInfo {
                path: "/proc/9/mem".into(),
                offset: 4096,
                inode: None,
                dev: None,
                located_by: Some(LocatedBy::Memory),
            },
            snapshot: Some(SnapshotInfo {
                method: "ebpf:sched_process_exit".into(),
                read: ReadTiming {
                    start_ns: 1,
                    end_ns: 2,
                    bytes: 912,
                    syscalls: 1,
                },
                load_bias: 4096,
                counters_addr: 8192,
                counters: 114,
                delta: Delta {
                    covered: 53,
                    new_covered: 9,
                    reset: 1,
                    first: false,
                },
                unreadable_bytes: 16,
                consistency: "exact".into(),
            }),
            ..dump()
        }
    }

    fn kcov() -> ArtifactMeta {
        ArtifactMeta {
            runtime: Runtime::Kcov,
            trigger: Some(Triggered::Unknown("a newer trigger".into())),
            parts: Vec::new(),
            merged: None,
            kcov: Some(KcovMeta {
                mode: KcovMode::Cmp,
                entries: 4,
                unique: 2,
                exact: true,
                kernel_release: "6.12.0".into(),
            }),
            ..dump()
        }
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        for meta in [dump(), snapshot(), kcov()] {
            let text = serde_json::to_string_pretty(&meta).expect("serialize");
            let back: ArtifactMeta = serde_json::from_str(&text).expect("parse");
            assert_eq!(back, meta, "{text}");
        }
    }

    #[test]
    fn written_in_the_documented_order_with_the_layout_last() {
        let text = serde_json::to_string(&dump()).expect("serialize");
        assert_eq!(
            text,
            concat!(
                r#"{"seq":7,"runtime":"llvm","pid":1234,"tid":1240,"comm":"runner","#,
                r#""trigger":"signal","start_ns":1,"end_ns":2,"collected_ns":3,"bytes":24,"#,
                r#""checksum":"sha256:ab","valid":false,"invalid_reason":"short","#,
                r#""file":"000007-llvm.profraw","source":{"path":"/tmp/p.profraw","offset":48,"#,
                r#""inode":42,"dev":null,"located_by":"environment"},"#,
                r#""format":{"name":"llvm-raw-profile","version":10},"#,
                r#""module":{"path":"/bin/runner","build_id":"9f0c","copy":null,"producer":null,"#,
                r#""llvm_major":23},"parts":[{"file":"a.gcda","path":"/t/a.gcda","bytes":3}],"#,
                r#""process_start_ns":5,"merged":{"file":"000007-llvm.merged","bytes":8,"#,
                r#""checksum":"sha256:cd"},"layout":1}"#
            )
        );
        let text = serde_json::to_string(&snapshot().snapshot).expect("serialize");
        assert!(
            text.contains(r#""counters":114,"covered":53,"new_covered":9,"reset":1,"first":false,"unreadable_bytes":16,"#),
            "{text}"
        );
        let whole = SnapshotInfo {
            unreadable_bytes: 0,
            ..snapshot().snapshot.expect("snapshot")
        };
        let text = serde_json::to_string(&whole).expect("serialize");
        assert!(!text.contains("unreadable_bytes"), "{text}");
    }

    #[test]
    fn runtime_and_trigger_are_enums_that_keep_an_unknown_name() {
        for (name, rt) in [
            ("llvm", Runtime::Llvm),
            ("gcov", Runtime::Gcov),
            ("bisect", Runtime::Bisect),
            ("sancov", Runtime::Sancov),
            ("kcov", Runtime::Kcov),
            ("minicov", Runtime::Unknown("minicov".into())),
        ] {
            let json = format!("\"{name}\"");
            assert_eq!(serde_json::from_str::<Runtime>(&json).expect(name), rt);
            assert_eq!(serde_json::to_string(&rt).expect(name), json);
            assert_eq!(rt.as_str(), name);
        }
        assert!(serde_json::from_str::<Runtime>("5").is_err());
        assert_eq!(
            serde_json::from_str::<Trigger>("\"self\"").expect("self"),
            Trigger::SelfDump
        );
        assert!(serde_json::from_str::<Trigger>("\"sometimes\"").is_err());
        for (json, t) in [
            ("\"self\"", Triggered::Known(Trigger::SelfDump)),
            ("\"sometimes\"", Triggered::Unknown("sometimes".into())),
        ] {
            assert_eq!(serde_json::from_str::<Triggered>(json).expect(json), t);
            assert_eq!(serde_json::to_string(&t).expect(json), json);
        }
        assert!(serde_json::from_str::<Triggered>("5").is_err());
    }

    #[test]
    fn a_hand_made_file_needs_only_its_identity_and_is_layout_1() {
        let m: ArtifactMeta = serde_json::from_str(
            r#"{"seq": 1, "runtime": "gcov", "pid": 2, "valid": true, "file": "000001-gcov.gcda",
                "source": {"path": "/x", "inode": 1}}"#,
        )
        .expect("parse");
        assert_eq!(
            (m.runtime, m.layout, m.tid, m.trigger),
            (Runtime::Gcov, 1, None, None)
        );
        assert_eq!(m.source.located_by, None);
        assert_eq!(m.format, FormatInfo::default());
        let m: ArtifactMeta = serde_json::from_str(
            r#"{"seq": 1, "runtime": "llvm", "pid": 2, "valid": true, "file": "f",
                "source": null, "format": null, "module": null, "merged": null}"#,
        )
        .expect("nulls");
        assert_eq!((m.source, m.format), Default::default());
        assert!(
            serde_json::from_str::<ArtifactMeta>(
                r#"{"seq": 1, "runtime": "llvm", "pid": 2, "valid": true, "file": "f",
                    "format": {"version": "x"}}"#
            )
            .is_err()
        );
    }

    /// docs/output.md's examples are this type's.
    #[test]
    fn the_documented_examples_parse() {
        let doc = include_str!("../../docs/output.md");
        let section = doc
            .split_once("## Artifact metadata")
            .expect("the section")
            .1;
        let mut blocks = section
            .split("```json\n")
            .skip(1)
            .map(|b| b.split_once("```").expect("a closed block").0);
        let meta: ArtifactMeta = serde_json::from_str(blocks.next().expect("the example"))
            .expect("the metadata example parses");
        assert_eq!(
            (meta.seq, &meta.runtime, meta.trigger, meta.layout),
            (7, &Runtime::Llvm, Some(Trigger::Signal.into()), LAYOUT)
        );
        assert_eq!(meta.module.and_then(|m| m.llvm_major), Some(23));
        let snap = format!("{{{}}}", blocks.next().expect("the snapshot example"));
        let snap: serde_json::Value = serde_json::from_str(&snap).expect("json");
        let info: SnapshotInfo =
            serde_json::from_value(snap["snapshot"].clone()).expect("the snapshot example parses");
        assert_eq!((info.counters, info.delta.new_covered), (114, 9));
    }
}
