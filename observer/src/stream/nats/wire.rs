//! What goes over the wire (docs/fleet.md): one message per item, its bytes in the object store
//! first. Shared by the publishing sink and `covobs collect`.
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The last token of a subject: what the message holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// One event object (as in events.jsonl).
    Events,
    /// An [`ArtifactMsg`].
    Artifacts,
    /// A [`ModuleMsg`].
    Modules,
    /// The session's session.json, the last message of a session.
    Session,
}

impl Kind {
    pub fn token(self) -> &'static str {
        match self {
            Kind::Events => "events",
            Kind::Artifacts => "artifacts",
            Kind::Modules => "modules",
            Kind::Session => "session",
        }
    }

    pub fn from_token(t: &str) -> Option<Self> {
        Some(match t {
            "events" => Kind::Events,
            "artifacts" => Kind::Artifacts,
            "modules" => Kind::Modules,
            "session" => Kind::Session,
            _ => return None,
        })
    }
}

/// One file of an artifact, relative to its process directory (`<pid>-<comm>`): the data file,
/// a directory artifact's parts (`<file>/<part>`), extra files and the metadata file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileRef {
    pub path: String,
    /// The object holding it: `sha256/<hex>`.
    pub object: String,
    pub bytes: u64,
}

/// An artifact: where it goes, its sequence number in its session, and its files.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArtifactMsg {
    /// `<pid>-<comm>`.
    pub dir: String,
    pub seq: u64,
    /// The metadata file's name (`<seq>-<runtime>.json`), one of `files`.
    pub meta: String,
    pub files: Vec<FileRef>,
}

/// A module copy: `copy` is `modules/<build-id>/<name>`, its bytes in `object`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModuleMsg {
    pub copy: String,
    pub object: String,
    pub bytes: u64,
}

/// The object name of a module copy (`modules/<build-id>/<name>` -> `module/<build-id>`): one
/// per build id for the whole fleet, whatever the file is called on each node.
pub fn module_object(copy: &str) -> String {
    let rel = copy.strip_prefix("modules/").unwrap_or(copy);
    let id = rel.split_once('/').map_or(rel, |(id, _)| id);
    format!("module/{id}")
}

pub fn sha256_object(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256/{hex}")
}

/// One message to publish and the objects it refers to (uploaded before it, in order).
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub subject: String,
    pub msg_id: String,
    pub payload: Bytes,
    pub objects: Vec<(String, Bytes)>,
    /// An object that is uploaded only if the store does not hold it yet, read when needed (a
    /// module: the same build id from every node).
    pub lazy: Option<LazyObject>,
}

/// A module's bytes, read (positioned reads only: the file is shared) when the store lacks it.
#[derive(Clone, Debug)]
pub struct LazyObject {
    pub name: String,
    pub source: std::sync::Arc<super::super::Module>,
}

impl LazyObject {
    /// The whole file, with positioned reads.
    pub fn read(&self) -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt as _;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            match self.source.source.read_at(&mut buf, offset) {
                Ok(0) => return Ok(Bytes::from(out)),
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    offset += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The files of an artifact as the output directory writes them (stream/dir.rs), each with its
/// object.
pub fn artifact_record(
    a: &crate::collect::Artifact,
) -> Result<(ArtifactMsg, Vec<(String, Bytes)>), serde_json::Error> {
    let file = a.meta.file.as_str();
    let stem = file.rsplit_once('.').map_or(file, |(stem, _)| stem);
    let mut files = Vec::new();
    let mut objects: Vec<(String, Bytes)> = Vec::new();
    let mut add = |path: String, data: Bytes| {
        let object = sha256_object(&data);
        files.push(FileRef {
            path,
            object: object.clone(),
            bytes: data.len() as u64,
        });
        if !objects.iter().any(|(o, _)| *o == object) {
            objects.push((object, data));
        }
    };
    if a.parts.is_empty() {
        add(file.to_owned(), a.data.clone());
    } else {
        for (name, data) in &a.parts {
            add(format!("{file}/{name}"), data.clone());
        }
    }
    for (ext, data) in &a.extra {
        add(format!("{stem}.{ext}"), data.clone());
    }
    let meta = format!("{stem}.json");
    add(
        meta.clone(),
        Bytes::from(serde_json::to_vec_pretty(&a.meta)?),
    );
    Ok((
        ArtifactMsg {
            dir: a.dir.clone(),
            seq: a.meta.seq,
            meta,
            files,
        },
        objects,
    ))
}
