//! Writing what the fleet published into the collector's session directory: events appended
//! to events.jsonl (with their node and session), artifacts under `<pid>-<comm>@<node>/` with a
//! fleet-wide sequence number, modules once per build id, each session's session.json under
//! `fleet/nodes/<node>/<session>/`.
use std::{
    io::{Seek as _, SeekFrom, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use async_nats::jetstream::object_store::ObjectStore;
use tokio::io::AsyncReadExt as _;

use super::{FleetError, state::State};
use crate::stream::nats::wire::{ArtifactMsg, Kind, ModuleMsg, sha256_object};

/// The most bytes of one object the collector reads.
const MAX_OBJECT: u64 = 4 << 30;

pub struct Taker {
    pub out: PathBuf,
    pub store: ObjectStore,
    events: std::fs::File,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FleetError + '_ {
    move |e| FleetError::Write(path.to_path_buf(), e)
}

fn mkdirs(p: &Path) -> Result<(), FleetError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(io(p))
}

/// Write `path` whole, synced (an earlier attempt's copy is replaced).
fn write_file(path: &Path, data: &[u8]) -> Result<(), FleetError> {
    if let Some(parent) = path.parent() {
        mkdirs(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io(path))?;
    f.write_all(data).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// A relative path of plain names.
fn plain(rel: &str) -> bool {
    crate::report::session::is_inside(rel)
}

impl Taker {
    /// Open events.jsonl, cut back to what the state says was written whole.
    pub fn open(out: &Path, store: ObjectStore, state: &State) -> Result<Self, FleetError> {
        let p = out.join("events.jsonl");
        let mut events = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .map_err(io(&p))?;
        events.set_len(state.events_len).map_err(io(&p))?;
        events.seek(SeekFrom::End(0)).map_err(io(&p))?;
        Ok(Self {
            out: out.to_path_buf(),
            store,
            events,
        })
    }

    /// Make what was appended durable; returns events.jsonl's length.
    pub fn sync(&mut self) -> Result<u64, FleetError> {
        let p = self.out.join("events.jsonl");
        self.events.sync_data().map_err(io(&p))?;
        self.events.stream_position().map_err(io(&p))
    }

    async fn object(&self, name: &str) -> Result<Vec<u8>, String> {
        let mut obj = self
            .store
            .get(name)
            .await
            .map_err(|e| format!("object {name}: {e}"))?;
        let mut data = Vec::new();
        (&mut obj)
            .take(MAX_OBJECT)
            .read_to_end(&mut data)
            .await
            .map_err(|e| format!("object {name}: {e}"))?;
        if name.starts_with("sha256/") && sha256_object(&data) != name {
            return Err(format!("object {name}: its bytes do not have that sha256"));
        }
        Ok(data)
    }

    /// Take one message. `Err(String)`: a message left out (with the reason, warned about);
    /// `Err` of the outer result: the collector's own failure (its directory).
    pub async fn take(
        &mut self,
        state: &mut State,
        node: &str,
        session: &str,
        kind: Kind,
        payload: &[u8],
    ) -> Result<Result<(), String>, FleetError> {
        match kind {
            Kind::Events => {
                let mut v: serde_json::Value = match serde_json::from_slice(payload) {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(format!("event: {e}"))),
                };
                let Some(obj) = v.as_object_mut() else {
                    return Ok(Err("event: not an object".into()));
                };
                obj.insert("node".into(), node.into());
                obj.insert("session".into(), session.into());
                let mut line = serde_json::to_vec(&v)
                    .map_err(|e| FleetError::Write(self.out.join("events.jsonl"), e.into()))?;
                line.push(b'\n');
                let p = self.out.join("events.jsonl");
                self.events.write_all(&line).map_err(io(&p))?;
                state.node(node).events += 1;
                Ok(Ok(()))
            }
            Kind::Artifacts => self.artifact(state, node, session, payload).await,
            Kind::Modules => {
                let m: ModuleMsg = match serde_json::from_slice(payload) {
                    Ok(m) => m,
                    Err(e) => return Ok(Err(format!("module: {e}"))),
                };
                if !m.copy.starts_with("modules/") || !plain(&m.copy) {
                    return Ok(Err(format!(
                        "module {:?}: not modules/<build-id>/<name>",
                        m.copy
                    )));
                }
                let dest = self.out.join(&m.copy);
                if dest.exists() {
                    return Ok(Ok(()));
                }
                let data = match self.object(&m.object).await {
                    Ok(d) => d,
                    Err(why) => return Ok(Err(why)),
                };
                let tmp = dest.with_extension("covobs-tmp");
                write_file(&tmp, &data)?;
                std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
                state.node(node).modules += 1;
                Ok(Ok(()))
            }
            Kind::Session => {
                let dir = self.out.join("fleet/nodes").join(node).join(session);
                write_file(&dir.join("session.json"), payload)?;
                state.node(node).sessions_ended += 1;
                Ok(Ok(()))
            }
        }
    }

    async fn artifact(
        &mut self,
        state: &mut State,
        node: &str,
        session: &str,
        payload: &[u8],
    ) -> Result<Result<(), String>, FleetError> {
        let a: ArtifactMsg = match serde_json::from_slice(payload) {
            Ok(a) => a,
            Err(e) => return Ok(Err(format!("artifact: {e}"))),
        };
        let key = format!("{node}/{session}/{}", a.seq);
        if state.seqs.contains_key(&key) {
            return Ok(Ok(()));
        }
        if !crate::report::session::is_process_dir(&a.dir) || !plain(&a.dir) || a.dir.contains('/')
        {
            return Ok(Err(format!(
                "artifact {key}: {:?} is not a process directory",
                a.dir
            )));
        }
        let Some(old_stem) = a.meta.strip_suffix(".json") else {
            return Ok(Err(format!("artifact {key}: no metadata file")));
        };
        let Some((_, runtime)) = old_stem.split_once('-') else {
            return Ok(Err(format!(
                "artifact {key}: {old_stem:?} is not <seq>-<runtime>"
            )));
        };
        let seq = state.next_seq;
        let new_stem = format!("{seq}-{runtime}");
        let rename = |p: &str| -> String {
            match p.strip_prefix(old_stem) {
                Some(rest) if rest.is_empty() || rest.starts_with('.') || rest.starts_with('/') => {
                    format!("{new_stem}{rest}")
                }
                _ => p.to_owned(),
            }
        };
        let pdir = self.out.join(format!("{}@{node}", a.dir));
        let mut meta_bytes = None;
        let mut total = 0u64;
        for f in &a.files {
            if !plain(&f.path) {
                return Ok(Err(format!(
                    "artifact {key}: {:?} is not a file of it",
                    f.path
                )));
            }
            let data = match self.object(&f.object).await {
                Ok(d) => d,
                Err(why) => return Ok(Err(format!("artifact {key}: {why}"))),
            };
            if f.path == a.meta {
                meta_bytes = Some(data);
                continue;
            }
            total += data.len() as u64;
            write_file(&pdir.join(rename(&f.path)), &data)?;
        }
        let Some(meta) = meta_bytes else {
            return Ok(Err(format!(
                "artifact {key}: its metadata is not among its files"
            )));
        };
        let mut meta: serde_json::Value = match serde_json::from_slice(&meta) {
            Ok(m) => m,
            Err(e) => return Ok(Err(format!("artifact {key}: metadata: {e}"))),
        };
        // The fleet's sequence numbers: this artifact's, and the one it merged (same session).
        if let Some(o) = meta.as_object_mut() {
            o.insert("seq".into(), seq.into());
            if let Some(file) = o.get("file").and_then(|f| f.as_str()).map(rename) {
                o.insert("file".into(), file.into());
            }
            if let Some(m) = o.get_mut("merged").and_then(|m| m.as_object_mut()) {
                if let Some(old) = m.get("seq").and_then(|s| s.as_u64()) {
                    match state.seqs.get(&format!("{node}/{session}/{old}")) {
                        Some(new) => {
                            m.insert("seq".into(), (*new).into());
                        }
                        None => {
                            m.remove("seq");
                        }
                    }
                }
                if let Some(file) = m.get("file").and_then(|f| f.as_str()).map(rename) {
                    m.insert("file".into(), file.into());
                }
            }
            o.insert("node".into(), node.into());
            o.insert("session".into(), session.into());
        }
        let bytes = serde_json::to_vec_pretty(&meta)
            .map_err(|e| FleetError::Write(pdir.clone(), e.into()))?;
        // The metadata last: the report finds an artifact by it.
        write_file(&pdir.join(format!("{new_stem}.json")), &bytes)?;
        state.next_seq += 1;
        state.seqs.insert(key, seq);
        let n = state.node(node);
        n.artifacts += 1;
        n.artifact_bytes += total;
        if !n.sessions.iter().any(|s| s == session) {
            n.sessions.push(session.to_owned());
        }
        Ok(Ok(()))
    }
}
