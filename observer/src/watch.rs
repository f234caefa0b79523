//! `covobs watch`: live threads, processes and signals of the targets, triggering nothing.
use std::time::Duration;

use crate::{attach::AttachOptions, target::TargetSpec};

pub struct WatchOptions {
    pub target: TargetSpec,
    pub json: bool,
    pub duration: Option<Duration>,
    /// With --name: keep waiting when no process has the name yet.
    pub wait: bool,
    pub follow_forks: bool,
    pub ebpf_log: bool,
    pub ocaml_thread_name: String,
    /// Also publish the events to a fleet's NATS JetStream.
    pub publish: Option<crate::stream::nats::PublishOptions>,
}

/// `watch` is an attach session that only observes: discovery, OCaml thread identity and dump
/// probes, but no signal, no collection and no output directory.
pub async fn run(opts: WatchOptions) -> anyhow::Result<()> {
    crate::attach::run(AttachOptions {
        json: opts.json,
        duration: opts.duration,
        wait: opts.wait,
        follow_forks: opts.follow_forks,
        ebpf_log: opts.ebpf_log,
        ocaml_thread_name: opts.ocaml_thread_name,
        publish: opts.publish,
        ..AttachOptions::observe(opts.target)
    })
    .await
}
