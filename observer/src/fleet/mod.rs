//! `covobs collect` (docs/fleet.md): the fleet's reporting stage. A durable JetStream consumer
//! takes what the nodes published, in stream order, into one session directory that
//! `covobs report` reads as any other, and writes its report: merged exact coverage of every
//! node, per-node figures (fleet/nodes.json). Each batch is written and synced, then the state
//! saved, then the batch acknowledged: a collector stopped at any point resumes where it was,
//! and nothing is taken twice.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt as _;

use crate::stream::nats::{
    Names, NatsError,
    connect::{self, Server},
    wire::Kind,
};

mod state;
mod summary;
mod take;

use state::State;

/// The most messages taken in one batch.
const BATCH: usize = 512;
/// How long one fetch waits for messages.
const FETCH_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("no fleet {fleet:?} on {servers} (nothing was published to it)")]
    NoFleet { fleet: String, servers: String },
    #[error(
        "{0} is not empty and is not a fleet directory covobs collect wrote: choose a new --out"
    )]
    NotFleetDir(PathBuf),
    #[error("{0} was collected from fleet {1:?}, not {2:?}")]
    OtherFleet(PathBuf, String, String),
    #[error("collector state {}: {}", .0.display(), .1)]
    State(PathBuf, String),
    #[error("writing {}: {}", .0.display(), .1)]
    Write(PathBuf, #[source] std::io::Error),
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error("the report: {0}")]
    Report(#[from] crate::report::ReportError),
}

impl FleetError {
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::Nats(e) => e.is_bad_input(),
            Self::NoFleet { .. } | Self::NotFleetDir(_) | Self::OtherFleet(..) => true,
            Self::Report(e) => e.is_bad_input(),
            _ => false,
        }
    }
}

pub struct CollectOptions {
    pub servers: Vec<String>,
    pub out: PathBuf,
    pub fleet: String,
    pub creds: Option<PathBuf>,
    pub follow: bool,
    pub report_every: Duration,
}

fn js_err(e: impl std::fmt::Display) -> FleetError {
    FleetError::JetStream(e.to_string())
}

/// The collector's state: an earlier run's (resume), or a new one in a new or empty directory.
fn open_state(opts: &CollectOptions) -> Result<State, FleetError> {
    if let Some(s) = State::load(&opts.out)? {
        if s.fleet != opts.fleet {
            return Err(FleetError::OtherFleet(
                opts.out.clone(),
                s.fleet,
                opts.fleet.clone(),
            ));
        }
        return Ok(s);
    }
    let empty = match std::fs::read_dir(&opts.out) {
        Ok(mut d) => d.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(FleetError::Write(opts.out.clone(), e)),
    };
    if !empty {
        return Err(FleetError::NotFleetDir(opts.out.clone()));
    }
    let fleet_dir = opts.out.join("fleet");
    std::fs::create_dir_all(&fleet_dir).map_err(|e| FleetError::Write(fleet_dir.clone(), e))?;
    let s = State {
        fleet: opts.fleet.clone(),
        durable: format!(
            "collect-{}-{}",
            crate::sys::clock::realtime_ns() / 1_000_000,
            std::process::id()
        ),
        next_seq: 1,
        ..Default::default()
    };
    s.save(&opts.out)?;
    Ok(s)
}

pub async fn run(opts: CollectOptions) -> Result<(), FleetError> {
    let names = Names::new(&opts.fleet)?;
    let servers = opts
        .servers
        .iter()
        .map(|s| Server::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let shown = connect::shown(&servers);
    let client = connect::connect(&servers, opts.creds.as_deref(), "covobs collect", false).await?;
    let js = jetstream::new(client);
    let stream = match js.get_stream(names.stream()).await {
        Ok(s) => s,
        Err(_) => {
            return Err(FleetError::NoFleet {
                fleet: opts.fleet.clone(),
                servers: shown,
            });
        }
    };
    let store = js.get_object_store(names.bucket()).await.map_err(js_err)?;
    let mut state = open_state(&opts)?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            &state.durable,
            pull::Config {
                durable_name: Some(state.durable.clone()),
                ack_policy: jetstream::consumer::AckPolicy::All,
                max_ack_pending: (BATCH * 4) as i64,
                ..Default::default()
            },
        )
        .await
        .map_err(js_err)?;
    let mut taker = take::Taker::open(&opts.out, store, &state)?;
    let mut shutdown = crate::sys::shutdown::Shutdown::install(None);
    let mut reported = None::<Instant>;
    let mut changed = true;
    let mut left_out = 0u64;
    loop {
        let batch = consumer
            .fetch()
            .max_messages(BATCH)
            .expires(FETCH_WAIT)
            .messages()
            .await
            .map_err(js_err)?;
        let messages: Vec<_> = tokio::select! {
            m = batch.collect::<Vec<_>>() => m,
            _ = shutdown.signalled() => break,
        };
        let mut last = None;
        for m in messages {
            let m = match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!("fetch: {e}");
                    continue;
                }
            };
            let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
            if seq > state.last_stream_seq {
                match parse_subject(&names, m.subject.as_str()) {
                    Some((node, session, kind)) => {
                        if let Err(why) = taker
                            .take(&mut state, &node, &session, kind, &m.payload)
                            .await?
                        {
                            left_out += 1;
                            eprintln!(
                                "covobs: warning: {}: left out: {}",
                                crate::terminal::printable(m.subject.as_str()),
                                crate::terminal::printable(&why)
                            );
                        }
                        changed = true;
                    }
                    None => tracing::debug!("not a covobs subject: {}", m.subject),
                }
                state.last_stream_seq = seq;
            }
            last = Some(m);
        }
        let took = last.is_some();
        if let Some(m) = last {
            state.events_len = taker.sync()?;
            state.save(&opts.out)?;
            // AckPolicy::All: this acknowledges the whole batch, after it is durable.
            m.ack().await.map_err(js_err)?;
        }
        if !opts.follow {
            if took {
                continue;
            }
            // Nothing came: done once the stream holds nothing more for this consumer.
            let mut c = consumer.clone();
            let pending = c.info().await.map_err(js_err)?.num_pending;
            if pending == 0 {
                break;
            }
            continue;
        }
        // --follow: the report kept current, at most every --report-every.
        if changed && reported.is_none_or(|t| t.elapsed() >= opts.report_every) {
            // A report that fails now is written again at the next change; the data stays.
            if let Err(e) =
                tokio::task::block_in_place(|| summary::write(&opts.out, &state, &shown, true))
            {
                eprintln!("covobs: warning: the fleet report: {e}");
            }
            reported = Some(Instant::now());
            changed = false;
        }
    }
    let report = tokio::task::block_in_place(|| summary::write(&opts.out, &state, &shown, false))?;
    print!("{report}");
    if left_out > 0 {
        eprintln!("covobs: warning: {left_out} messages left out (see above)");
    }
    Ok(())
}

/// `covobs.<fleet>.<node>.<session>.<kind>`, each a valid name.
fn parse_subject(names: &Names, subject: &str) -> Option<(String, String, Kind)> {
    let rest = subject.strip_prefix(&format!("covobs.{}.", names.fleet))?;
    let mut t = rest.split('.');
    let (node, session, kind) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() {
        return None;
    }
    crate::stream::nats::check_name("node", node).ok()?;
    crate::stream::nats::check_name("session", session).ok()?;
    Some((node.to_owned(), session.to_owned(), Kind::from_token(kind)?))
}
