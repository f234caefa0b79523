//! The fleet session's session.json (every node's targets, the counters summed, the nodes),
//! fleet/nodes.json (per-node figures) and the report.
use std::path::Path;

use serde_json::{Value, json};

use super::{FleetError, state::State, state::write_replace};
use crate::layout::session::{Counters, Nullable, SessionInfo};

/// Each node session's session.json that arrived (and reads as one), as (node, session, info).
fn node_sessions(out: &Path, state: &State) -> Vec<(String, String, SessionInfo)> {
    let mut v = Vec::new();
    for node in state.nodes.keys() {
        let dir = out.join("fleet/nodes").join(node);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut sessions: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        sessions.sort();
        for s in sessions {
            let p = dir.join(&s).join("session.json");
            if let Some(info) = std::fs::read(&p)
                .ok()
                .and_then(|b| SessionInfo::parse(&b).ok())
            {
                v.push((node.clone(), s.to_string_lossy().into_owned(), info));
            }
        }
    }
    v
}

/// Write session.json and fleet/nodes.json, then the report; returns what to print.
pub fn write(out: &Path, state: &State, servers: &str, quiet: bool) -> Result<String, FleetError> {
    let sessions = node_sessions(out, state);
    let mut targets = Vec::new();
    let mut counters = Counters::default();
    let mut started: Option<u64> = None;
    let mut ended: Option<u64> = None;
    let mut nodes = serde_json::Map::new();
    for (node, figures) in &state.nodes {
        nodes.insert(
            node.clone(),
            json!({ "collected": figures, "sessions": {} }),
        );
    }
    for (node, session, info) in &sessions {
        for t in info.targets.iter().flatten() {
            let mut t = t.clone();
            t.node = Some(node.clone());
            targets.push(t);
        }
        if let Some(c) = &info.counters {
            counters.add(c);
        }
        if let Some(&s) = info.started_unix_ns.get() {
            started = Some(started.map_or(s, |x| x.min(s)));
        }
        if let Some(&e) = info.ended_unix_ns.get() {
            ended = Some(ended.map_or(e, |x| x.max(e)));
        }
        if let Some(n) = nodes
            .get_mut(node)
            .and_then(|n| n["sessions"].as_object_mut())
        {
            n.insert(
                session.clone(),
                json!({
                    "counters": info.counters,
                    "fleet": info.fleet,
                    "started_unix_ns": info.started_unix_ns,
                    "ended_unix_ns": info.ended_unix_ns,
                }),
            );
        }
    }
    let info = SessionInfo {
        layout: crate::layout::session::LAYOUT,
        covobs_version: Some(env!("CARGO_PKG_VERSION").into()),
        command: Some(std::env::args().collect()),
        started_unix_ns: started.into(),
        ended_unix_ns: ended.into(),
        targets: Some(targets),
        counters: Some(counters),
        fleet: Nullable::Value(json!({
            "name": state.fleet,
            "servers": servers,
            "durable_consumer": state.durable,
            "last_stream_seq": state.last_stream_seq,
            "artifacts": state.seqs.len(),
            "nodes": nodes.keys().collect::<Vec<_>>(),
        })),
        ..Default::default()
    };
    let session_json = info
        .to_bytes()
        .map_err(|e| FleetError::Write(out.join("session.json"), std::io::Error::other(e)))?;
    let put = |name: &str, v: &Value| -> Result<(), FleetError> {
        let p = out.join(name);
        let mut b =
            serde_json::to_vec_pretty(v).map_err(|e| FleetError::Write(p.clone(), e.into()))?;
        b.push(b'\n');
        write_replace(&p, &b).map_err(|e| FleetError::Write(p, e))
    };
    let p = out.join("session.json");
    write_replace(&p, &session_json).map_err(|e| FleetError::Write(p, e))?;
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
