//! Fleets (docs/fleet.md): the session published to NATS JetStream for `covobs collect`.
//!
//! One stream per fleet (`COVOBS_<fleet>`, subjects `covobs.<fleet>.>`), one object store per
//! fleet (`covobs_<fleet>`) for artifact bytes (keyed by their sha256) and module binaries (keyed
//! by build id, uploaded once for the whole fleet). Every message carries a `Nats-Msg-Id`, so a
//! retry (a replay of the spool, a reconnect) is never stored twice within the stream's
//! duplicate window, and the collector skips what it took already beyond it.
//!
//! The sink never blocks the target or the ring-buffer reader: it is one more [`super::Sink`],
//! on its own thread, and what it cannot publish goes to a bounded spool on local disk
//! ([`spool`]), replayed in order once the server is back.
use std::{path::PathBuf, time::Duration};

pub mod connect;
pub mod publisher;
pub mod sink;
pub mod spool;
pub mod wire;

pub use connect::{Server, connect};
pub use publisher::{FleetHandle, FleetStats};
pub use sink::NatsSink;

/// The default fleet, on both sides.
pub const DEFAULT_FLEET: &str = "default";
/// How long the connection to a server may take at start.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The stream's duplicate window: a message id seen within it is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("{0}")]
    BadName(String),
    #[error("--publish {url}: {why}")]
    BadUrl { url: String, why: String },
    #[error("--nats-creds {}: {source}", path.display())]
    Creds {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("NATS server {servers}: {why}")]
    Connect { servers: String, why: String },
    #[error("NATS server {servers}: {why}")]
    Refused { servers: String, why: String },
    #[error("NATS JetStream: {0}")]
    JetStream(String),
    #[error("the spool {}: {source}", path.display())]
    Spool {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the NATS client: {0}")]
    Runtime(#[source] std::io::Error),
}

impl NatsError {
    /// Bad input (exit 2): what the user gave cannot work (a bad URL or name, credentials the
    /// server refuses, no server there).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::BadName(_)
                | Self::BadUrl { .. }
                | Self::Creds { .. }
                | Self::Connect { .. }
                | Self::Refused { .. }
        )
    }
}

/// What `--publish` and its companions say.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    /// The servers (`nats://`, `tls://`; user:password@ or token@ in the URL).
    pub servers: Vec<String>,
    pub node: String,
    pub fleet: String,
    /// A NATS credentials file (JWT and nkey seed).
    pub creds: Option<PathBuf>,
    /// Where what could not be published waits.
    pub spool: PathBuf,
    /// The most bytes the spool holds; beyond, records are dropped and counted.
    pub spool_max: u64,
    /// Start even when no server can be reached or it refuses the credentials: warn and spool.
    pub offline_ok: bool,
    /// At the end, how long the spool may take to drain.
    pub wait: Duration,
    /// `--no-local`: the fleet is the only destination (no session directory, no local report).
    pub no_local: bool,
}

/// A name that is one token of a subject and part of stream and bucket names: letters, digits,
/// `_` and `-`, at most 64.
pub fn check_name(what: &str, name: &str) -> Result<(), NatsError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NatsError::BadName(format!(
            "{what} {name:?}: use letters, digits, '_' and '-' (at most 64)"
        )))
    }
}

/// The host name as a node name: characters a subject token cannot hold become '_'.
pub fn default_node() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into());
    let short = host.split('.').next().unwrap_or(&host);
    let mut n: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if n.is_empty() {
        n = "node".into();
    }
    n
}

/// Stream, bucket and subject names of a fleet (docs/fleet.md).
#[derive(Clone, Debug)]
pub struct Names {
    pub fleet: String,
}

impl Names {
    pub fn new(fleet: &str) -> Result<Self, NatsError> {
        check_name("--fleet", fleet)?;
        Ok(Self {
            fleet: fleet.to_owned(),
        })
    }

    pub fn stream(&self) -> String {
        format!("COVOBS_{}", self.fleet)
    }

    pub fn bucket(&self) -> String {
        format!("covobs_{}", self.fleet)
    }

    /// Every subject of the fleet.
    pub fn all(&self) -> String {
        format!("covobs.{}.>", self.fleet)
    }

    /// `covobs.<fleet>.<node>.<session>.<kind>`.
    pub fn subject(&self, node: &str, session: &str, kind: wire::Kind) -> String {
        format!("covobs.{}.{node}.{session}.{}", self.fleet, kind.token())
    }
}
