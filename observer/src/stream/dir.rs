//! The output directory sink (docs/output.md): events.jsonl, each artifact and its metadata, and
//! copies of the instrumented modules. Files are created, never overwritten; artifacts are
//! fsync'ed (file and directory) before they are reported durable.
use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
};

use super::{Item, Sink, StreamError};
use crate::sys::clock;

pub struct DirSink {
    root: PathBuf,
    events: File,
}

fn io(source: std::io::Error) -> StreamError {
    StreamError::Io {
        sink: "output directory",
        source,
    }
}

/// Create a file that must not exist yet.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

impl DirSink {
    /// Use `root` as the session directory; it must be new or empty.
    pub fn create(root: &Path) -> Result<Self, StreamError> {
        fs::create_dir_all(root).map_err(io)?;
        if fs::read_dir(root).map_err(io)?.next().is_some() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} is not empty: covobs never overwrites output; choose a new --out",
                    root.display()
                ),
            )));
        }
        let events = create_new(&root.join("events.jsonl")).map_err(io)?;
        Ok(Self {
            root: root.to_path_buf(),
            events,
        })
    }

    fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
        let mut f = create_new(path)?;
        f.write_all(data)?;
        f.sync_all()
    }
}

impl Sink for DirSink {
    fn name(&self) -> &'static str {
        "output directory"
    }

    fn accept(&mut self, item: &mut Item) -> Result<(), StreamError> {
        match item {
            Item::Event(event) => {
                serde_json::to_writer(&mut self.events, event).map_err(|e| io(e.into()))?;
                self.events.write_all(b"\n").map_err(io)
            }
            Item::Artifact { artifact, durable } => {
                let result = (|| -> std::io::Result<u64> {
                    let dir = self.root.join(&artifact.dir);
                    fs::create_dir_all(&dir)?;
                    if artifact.parts.is_empty() {
                        Self::write_synced(&dir.join(&artifact.meta.file), &artifact.data)?;
                    } else {
                        // A dump that wrote several files: a directory of them.
                        let sub = dir.join(&artifact.meta.file);
                        fs::create_dir(&sub)?;
                        for (name, data) in &artifact.parts {
                            Self::write_synced(&sub.join(name), data)?;
                        }
                        File::open(&sub)?.sync_all()?;
                    }
                    let stem = artifact
                        .meta
                        .file
                        .rsplit_once('.')
                        .map_or(artifact.meta.file.as_str(), |(stem, _)| stem);
                    for (ext, data) in &artifact.extra {
                        Self::write_synced(&dir.join(format!("{stem}.{ext}")), data)?;
                    }
                    let meta_name = format!("{stem}.json");
                    let meta = serde_json::to_vec_pretty(&artifact.meta)?;
                    Self::write_synced(&dir.join(meta_name), &meta)?;
                    // The new names must survive a crash too.
                    File::open(&dir)?.sync_all()?;
                    Ok(clock::boot_ns())
                })();
                let reply = result.as_ref().map(|t| *t).map_err(|e| e.to_string());
                if let Some(tx) = durable.take() {
                    let _ = tx.send(reply);
                }
                result.map(|_| ()).map_err(io)
            }
            Item::Module { copy, source } => {
                let dst = self.root.join(&*copy);
                if dst.exists() {
                    return Ok(());
                }
                if let Some(parent) = dst.parent() {
                    fs::create_dir_all(parent).map_err(io)?;
                }
                let mut from: &File = source;
                let mut to = create_new(&dst).map_err(io)?;
                std::io::copy(&mut from, &mut to).map_err(io)?;
                Ok(())
            }
        }
    }

    fn finish(&mut self) -> Result<(), StreamError> {
        self.events.sync_all().map_err(io)
    }
}
