//! The pipeline's contract: the primary sink alone answers durability, a stuck sink costs the
//! others nothing, and what it could not take is counted.
use std::{
    sync::{Arc, Barrier},
    time::Duration,
};

use super::*;
use crate::{
    collect::{ArtifactMeta, FormatInfo, LocatedBy, ModuleMeta, SourceInfo, Trigger},
    events::Body,
    layout::artifact::Runtime,
};

fn artifact(seq: u64) -> Artifact {
    let data = seq.to_le_bytes().to_vec();
    Artifact {
        dir: "1-t".into(),
        meta: ArtifactMeta {
            seq,
            runtime: Runtime::Llvm,
            pid: 1,
            tid: Some(1),
            comm: Some("t".into()),
            trigger: Some(Trigger::SelfDump.into()),
            start_ns: Some(0),
            end_ns: Some(0),
            collected_ns: Some(0),
            bytes: Some(data.len() as u64),
            checksum: Some(crate::collect::checksum(&data)),
            valid: true,
            invalid_reason: None,
            file: format!("{seq:06}-llvm.profraw"),
            source: SourceInfo {
                path: "/t".into(),
                offset: 0,
                inode: None,
                dev: None,
                located_by: Some(LocatedBy::Kernel),
            },
            format: FormatInfo {
                name: "profraw".into(),
                version: 10,
            },
            module: Some(ModuleMeta {
                path: Some("/t".into()),
                build_id: None,
                copy: None,
                producer: None,
                llvm_major: None,
            }),
            parts: Vec::new(),
            snapshot: None,
            kcov: None,
            process_start_ns: None,
            merged: None,
            layout: crate::layout::artifact::LAYOUT,
        },
        data: data.into(),
        parts: Vec::new(),
        extra: Vec::new(),
    }
}

fn event(n: u32) -> Event {
    Event {
        ts_ns: n as u64,
        pid: 1,
        tid: n,
        body: Body::ThreadExit {
            name: format!("t{n}"),
        },
    }
}

/// Blocks on its first item until released; its queue holds 4.
struct Stuck(Arc<Barrier>, bool);

impl Sink for Stuck {
    fn name(&self) -> &'static str {
        "stuck"
    }
    fn queue(&self) -> usize {
        4
    }
    fn accept(&mut self, _item: &Item) -> Result<(), StreamError> {
        if !self.1 {
            self.1 = true;
            self.0.wait();
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_sink_never_holds_the_directory_back_and_its_losses_are_counted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("s");
    let dir = DirSink::create(&root, OutputModes::default()).expect("dir");
    let release = Arc::new(Barrier::new(2));
    let pipeline = Pipeline::new(
        Some(Box::new(dir)),
        vec![Box::new(Stuck(release.clone(), false))],
    )
    .expect("pipeline");
    let tx = pipeline.sender();
    for n in 0..100 {
        tx.event(event(n)).await;
    }
    // Every artifact durable while the other sink is stuck on its first item.
    for seq in 1..=10 {
        let at = tx.artifact(artifact(seq)).await.await;
        assert!(matches!(at, Ok(Ok(_))), "{at:?}");
        let written = std::fs::read(root.join(format!("1-t/{seq:06}-llvm.profraw"))).unwrap();
        assert_eq!(written, seq.to_le_bytes());
    }
    drop(tx);
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        release.wait();
    });
    let stats = pipeline
        .finish_within(Duration::from_millis(100))
        .await
        .expect("finish");
    releaser.join().unwrap();
    assert_eq!((stats.events, stats.artifacts), (100, 10));
    let primary = &stats.sinks[0];
    assert!(primary.primary);
    assert_eq!((primary.delivered, primary.dropped), (110, 0));
    let stuck = &stats.sinks[1];
    // One taken (the one it was stuck on), what its queue held abandoned, the rest dropped:
    // every item accounted for.
    assert_eq!(stuck.delivered, 1, "{stuck:?}");
    assert!((3..=4).contains(&stuck.abandoned), "{stuck:?}");
    assert_eq!(
        stuck.delivered + stuck.abandoned + stuck.dropped,
        110,
        "{stuck:?}"
    );
    assert!(stats.warnings()[0].contains("the stuck sink fell behind"));
    let lines = std::fs::read_to_string(root.join("events.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 100);
}

/// Without the primary sink (`--no-local`), an artifact is answered at dispatch: kept when a sink
/// that takes artifacts queued it, and an error when none takes artifacts or one had to drop it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_primary_sink_only_a_queued_artifact_is_kept() {
    struct Quick {
        artifacts: bool,
    }
    impl Sink for Quick {
        fn name(&self) -> &'static str {
            "quick"
        }
        fn takes(&self, kind: Kind) -> bool {
            kind != Kind::Artifact || self.artifacts
        }
        fn accept(&mut self, _item: &Item) -> Result<(), StreamError> {
            Ok(())
        }
    }
    // Events only: nothing keeps the artifact.
    let pipeline =
        Pipeline::new(None, vec![Box::new(Quick { artifacts: false })]).expect("pipeline");
    let answer = pipeline.sender().artifact(artifact(1)).await.await;
    assert!(
        matches!(&answer, Ok(Err(e)) if e.contains("no sink keeps artifacts")),
        "{answer:?}"
    );
    let stats = pipeline.finish().await.expect("finish");
    assert_eq!(stats.sinks[0].delivered, 0);
    // A sink that takes artifacts queued it: answered as kept, and it was delivered.
    let pipeline =
        Pipeline::new(None, vec![Box::new(Quick { artifacts: true })]).expect("pipeline");
    let answer = pipeline.sender().artifact(artifact(1)).await.await;
    assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
    let stats = pipeline.finish().await.expect("finish");
    assert_eq!(stats.sinks[0].delivered, 1);
}
