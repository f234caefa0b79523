//! The labels of a session, read from the `label` events of its events.jsonl.
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read},
    path::Path,
};

use serde::Deserialize;

use super::LabelError;
use crate::session_dir::{SessionDir, SessionFileError};

/// The longest events.jsonl line read (a label event lists the artifacts of one request).
const MAX_EVENT_LINE: u64 = 4 << 20;

/// One label: its name and what closed it, in the order the labels first closed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Label {
    pub name: String,
    /// The artifacts (relative to the session) whose states close it.
    pub artifacts: Vec<String>,
    /// Dumps asked for it that were lost.
    pub lost: Vec<String>,
    /// How many times it was closed (a name closed again adds up).
    pub closed: u64,
}

#[derive(Deserialize)]
struct LabelEvent {
    event: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    artifacts: Vec<String>,
    #[serde(default)]
    lost: Vec<String>,
}

/// The session's labels, in closing order; none when it has no events.jsonl.
pub fn read(dir: &SessionDir) -> Result<Vec<Label>, LabelError> {
    let file = match dir.open_file(Path::new("events.jsonl")) {
        Ok(f) => f,
        Err(SessionFileError::Missing) => return Ok(Vec::new()),
        Err(e) => return Err(LabelError::Events(e.to_string())),
    };
    let mut reader = BufReader::new(file);
    let mut labels: Vec<Label> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_EVENT_LINE + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| LabelError::Events(e.to_string()))?;
        if n == 0 {
            break;
        }
        if line.len() as u64 > MAX_EVENT_LINE {
            return Err(LabelError::Events(format!(
                "a line longer than {MAX_EVENT_LINE} bytes"
            )));
        }
        // Most lines are other events: only those that can be labels are parsed.
        if !line.windows(b"\"label\"".len()).any(|w| w == b"\"label\"") {
            continue;
        }
        // A last line cut short by a killed covobs is not a label.
        let Ok(e) = serde_json::from_slice::<LabelEvent>(&line) else {
            continue;
        };
        if e.event != "label" || super::name::check(&e.label).is_err() {
            continue;
        }
        let i = *by_name.entry(e.label.clone()).or_insert_with(|| {
            labels.push(Label {
                name: e.label.clone(),
                ..Label::default()
            });
            labels.len() - 1
        });
        let l = &mut labels[i];
        l.artifacts.extend(e.artifacts);
        l.lost.extend(e.lost);
        l.closed += 1;
    }
    Ok(labels)
}
