//! The fleet session's session.json (every node's targets, the counters summed, the nodes),
//! fleet/nodes.json (per-node figures) and the report.
use std::path::Path;

use serde_json::{Value, json};

use super::{FleetError, state::State, state::write_replace};

/// Each node session's session.json that arrived, as (node, session, value).
fn node_sessions(out: &Path, state: &State) -> Vec<(String, String, Value)> {
    let mut v = Vec::new();
    for (node, figures) in &state.nodes {
        let dir = out.join("fleet/nodes").join(node);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut sessions: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        sessions.sort();
        for s in sessions {
            let p = dir.join(&s).join("session.json");
            if let Some(j) = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            {
                v.push((node.clone(), s.to_string_lossy().into_owned(), j));
            }
        }
        let _ = figures;
    }
    v
}

/// Write session.json and fleet/nodes.json, then the report; returns what to print.
pub fn write(out: &Path, state: &State, servers: &str, quiet: bool) -> Result<String, FleetError> {
    let sessions = node_sessions(out, state);
    let mut targets = Vec::new();
    let mut counters = serde_json::Map::new();
    let mut started: Option<u64> = None;
    let mut ended: Option<u64> = None;
    let mut nodes = serde_json::Map::new();
    for (node, figures) in &state.nodes {
        nodes.insert(
            node.clone(),
            json!({ "collected": figures, "sessions": {} }),
        );
    }
    for (node, session, j) in &sessions {
        for t in j["targets"].as_array().into_iter().flatten() {
            let mut t = t.clone();
            if let Some(o) = t.as_object_mut() {
                o.insert("node".into(), node.clone().into());
            }
            targets.push(t);
        }
        for (k, v) in j["counters"].as_object().into_iter().flatten() {
            if let Some(n) = v.as_u64() {
                let sum = counters.get(k).and_then(Value::as_u64).unwrap_or(0) + n;
                counters.insert(k.clone(), sum.into());
            }
        }
        if let Some(s) = j["started_unix_ns"].as_u64() {
            started = Some(started.map_or(s, |x| x.min(s)));
        }
        if let Some(e) = j["ended_unix_ns"].as_u64() {
            ended = Some(ended.map_or(e, |x| x.max(e)));
        }
        if let Some(n) = nodes
            .get_mut(node)
            .and_then(|n| n["sessions"].as_object_mut())
        {
            n.insert(
                session.clone(),
                json!({
                    "counters": j["counters"],
                    "fleet": j["fleet"],
                    "started_unix_ns": j["started_unix_ns"],
                    "ended_unix_ns": j["ended_unix_ns"],
                }),
            );
        }
    }
    let info = json!({
        "covobs_version": env!("CARGO_PKG_VERSION"),
        "command": std::env::args().collect::<Vec<_>>(),
        "started_unix_ns": started,
        "ended_unix_ns": ended,
        "targets": targets,
        "counters": counters,
        "fleet": {
            "name": state.fleet,
            "servers": servers,
            "durable_consumer": state.durable,
            "last_stream_seq": state.last_stream_seq,
            "artifacts": state.seqs.len(),
            "nodes": nodes.keys().collect::<Vec<_>>(),
        },
    });
    let put = |name: &str, v: &Value| -> Result<(), FleetError> {
        let p = out.join(name);
        let mut b =
            serde_json::to_vec_pretty(v).map_err(|e| FleetError::Write(p.clone(), e.into()))?;
        b.push(b'\n');
        write_replace(&p, &b).map_err(|e| FleetError::Write(p, e))
    };
    put("session.json", &info)?;
    put("fleet/nodes.json", &Value::Object(nodes.clone()))?;
    let opts = crate::report::ReportOptions::default();
    let summary = crate::report::generate(out, &opts)?;
    let mut text = String::new();
    if !quiet {
        text.push_str(&format!(
            "covobs collect: fleet {}: {} nodes, {} sessions, {} artifacts\n",
            state.fleet,
            state.nodes.len(),
            state
                .nodes
                .values()
                .map(|n| n.sessions.len())
                .sum::<usize>(),
            state.seqs.len()
        ));
        for (node, n) in &state.nodes {
            text.push_str(&format!(
                "  node {node}: {} sessions ({} ended), {} artifacts ({} bytes), {} events, {} module copies\n",
                n.sessions.len(),
                n.sessions_ended,
                n.artifacts,
                n.artifact_bytes,
                n.events,
                n.modules
            ));
        }
        for w in &summary.warnings {
            eprintln!(
                "covobs: warning: {}",
                crate::terminal::printable(&w.to_string())
            );
        }
        text.push_str(&summary.render());
    }
    Ok(text)
}
