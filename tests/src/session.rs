//! What a `covobs attach` session wrote: its JSON files and the collected artifacts.
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Covobs;

/// `covobs attach --json --no-report ARGS`: events on stdout, no report at the end.
pub fn attach(args: &[&str]) -> Covobs {
    let mut all = vec!["attach", "--json", "--no-report"];
    all.extend_from_slice(args);
    Covobs::start(&all)
}

/// A JSON file, or a panic that names it.
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One collected artifact: its metadata file and what that file says.
pub struct Artifact {
    pub meta_path: PathBuf,
    pub meta: Value,
}

impl Artifact {
    /// The collected file the metadata describes.
    pub fn data_path(&self) -> PathBuf {
        let dir = self.meta_path.parent().expect("artifact dir");
        dir.join(self.meta["file"].as_str().expect("metadata names its file"))
    }

    pub fn data(&self) -> Vec<u8> {
        let path = self.data_path();
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    pub fn runtime(&self) -> &str {
        self.meta["runtime"].as_str().unwrap_or_default()
    }
}

/// Every artifact of a session directory, in `seq` order.
pub fn artifacts(out: &Path) -> Vec<Artifact> {
    let mut found = Vec::new();
    for dir in std::fs::read_dir(out).expect("session dir").flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        if !dir.path().is_dir() || name == "modules" || name == "report" {
            continue;
        }
        for f in std::fs::read_dir(dir.path())
            .expect("artifact dir")
            .flatten()
        {
            let meta_path = f.path();
            if meta_path.extension().is_some_and(|e| e == "json") {
                let meta = read_json(&meta_path);
                if meta["seq"].is_u64() {
                    found.push(Artifact { meta_path, meta });
                }
            }
        }
    }
    found.sort_by_key(|a| a.meta["seq"].as_u64());
    found
}
