//! The publisher behind the NATS sink: its own small tokio runtime, the connection, the stream
//! and the object store, and the spool. Shared (behind a mutex) by the sink's thread, a drainer
//! thread that replays the spool while no item comes, and the session's end, which publishes
//! session.json last and gives the spool a last chance.
use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, message::PublishMessage, object_store::ObjectStore};
use bytes::Bytes;
use serde::Serialize;

use super::{
    Names, NatsError, PublishOptions,
    connect::{self, Server},
    spool::{Spool, SpoolStats},
    wire::{self, Kind, ModuleMsg, Record},
};
use crate::stream::Item;

/// How long one message (or object) may wait for its acknowledgement before it is spooled.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failure, how long before the next attempt to publish.
const RETRY: Duration = Duration::from_millis(500);
/// How often the drainer looks at the spool while no item comes.
const DRAIN_EVERY: Duration = Duration::from_millis(250);

/// What the sink did (session.json `fleet`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct FleetStats {
    pub servers: String,
    pub fleet: String,
    pub node: String,
    pub session: String,
    /// Messages the stream acknowledged (first try or replayed), and how many of those it had
    /// already (a retry, stored once).
    pub published: u64,
    pub duplicates: u64,
    /// Objects uploaded, their bytes, and module copies another node had uploaded already.
    pub objects_uploaded: u64,
    pub object_bytes: u64,
    pub modules_present: u64,
    /// Whether the server answered when the session started.
    pub connected_at_start: bool,
    /// The last publishing failure (why things were spooled).
    pub last_error: Option<String>,
    pub spool: SpoolStats,
}

struct Publisher {
    rt: tokio::runtime::Runtime,
    client: async_nats::Client,
    js: jetstream::Context,
    store: Option<ObjectStore>,
    names: Names,
    node: String,
    session: String,
    events: u64,
    /// Module copies this session published already (every process of a module sends it).
    modules: std::collections::HashSet<String>,
    spool: Spool,
    retry_at: Instant,
    stats: FleetStats,
}

/// A handle on the publisher, for the sink and the session's end.
#[derive(Clone)]
pub struct FleetHandle {
    inner: Arc<Mutex<Publisher>>,
    stop: Arc<AtomicBool>,
    drainer: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl FleetHandle {
    /// Connect and prepare the stream and the bucket. A server that cannot be reached or refuses
    /// the credentials is an error, unless `offline_ok`: then a warning, and everything is
    /// spooled until it answers.
    pub fn start(opts: &PublishOptions, session: &str) -> Result<Self, NatsError> {
        let names = Names::new(&opts.fleet)?;
        super::check_name("--node", &opts.node)?;
        let servers = opts
            .servers
            .iter()
            .map(|s| Server::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("covobs-nats")
            .enable_all()
            .build()
            .map_err(NatsError::Runtime)?;
        let name = format!("covobs {} {}", opts.node, session);
        let creds = opts.creds.as_deref();
        let first = rt.block_on(connect::connect(&servers, creds, &name, false));
        let (client, offline) = match first {
            Ok(c) => (c, None),
            Err(e) if opts.offline_ok && !matches!(e, NatsError::Creds { .. }) => {
                let c = rt.block_on(connect::connect(&servers, creds, &name, true))?;
                (c, Some(e))
            }
            Err(e) => return Err(e),
        };
        // Only now: a start refused above leaves no spool directory behind.
        let spool = Spool::open_for(
            &opts.spool.join(&opts.fleet).join(&opts.node),
            session,
            opts.spool_max,
        )?;
        if let Some(e) = &offline {
            eprintln!(
                "covobs: warning: {e}; publishing to the spool {} until it answers",
                spool.path().display()
            );
        }
        let connected = offline.is_none();
        let js = jetstream::new(client.clone());
        let mut p = Publisher {
            rt,
            client,
            js,
            store: None,
            names,
            node: opts.node.clone(),
            session: session.to_owned(),
            events: 0,
            modules: Default::default(),
            spool,
            retry_at: Instant::now(),
            stats: FleetStats {
                servers: connect::shown(&servers),
                fleet: opts.fleet.clone(),
                node: opts.node.clone(),
                session: session.to_owned(),
                connected_at_start: connected,
                ..Default::default()
            },
        };
        if connected {
            p.setup().map_err(NatsError::JetStream)?;
        }
        let handle = Self {
            inner: Arc::new(Mutex::new(p)),
            stop: Arc::default(),
            drainer: Arc::default(),
        };
        handle.start_drainer();
        Ok(handle)
    }

    fn lock(&self) -> MutexGuard<'_, Publisher> {
        // A panic while publishing leaves a publisher whose state is still whole (every step
        // is a complete record): keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The publisher, waiting at most until `deadline` (a sink stuck in its I/O holds it).
    fn lock_by(&self, deadline: Instant) -> Option<MutexGuard<'_, Publisher>> {
        loop {
            match self.inner.try_lock() {
                Ok(g) => return Some(g),
                Err(std::sync::TryLockError::Poisoned(p)) => return Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn start_drainer(&self) {
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("covobs-spool".into())
            .spawn(move || {
                while !me.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(DRAIN_EVERY);
                    if let Ok(mut p) = me.inner.try_lock() {
                        p.drain_if_due();
                    }
                }
            });
        match spawned {
            Ok(h) => *self.drainer.lock().unwrap_or_else(|p| p.into_inner()) = Some(h),
            Err(e) => {
                tracing::warn!("no spool drainer thread ({e}): the spool drains as items come")
            }
        }
    }

    pub(super) fn publish(&self, item: &Item) {
        self.lock().publish(item);
    }

    pub(super) fn drain_if_due(&self) {
        self.lock().drain_if_due();
    }

    /// The figures now.
    pub fn stats(&self) -> FleetStats {
        let p = self.lock();
        let mut s = p.stats.clone();
        s.spool = p.spool.stats();
        s
    }

    /// Give the spool until `wait` to drain (the session's end, before session.json is
    /// written); returns the figures.
    pub fn settle(&self, wait: Duration) -> FleetStats {
        let deadline = Instant::now() + wait;
        let Some(mut p) = self.lock_by(deadline) else {
            return FleetStats::default();
        };
        while !p.spool.is_empty() && Instant::now() < deadline {
            p.retry_at = Instant::now();
            if !p.drain_if_due() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut s = p.stats.clone();
        s.spool = p.spool.stats();
        s
    }

    /// The session's end: publish `session_json` (the last message of the session), give the
    /// spool until `wait` to drain, stop. Returns the figures (spool left as it is: the next
    /// session on this node replays it).
    pub fn finish(&self, session_json: Option<Bytes>, wait: Duration) -> FleetStats {
        let deadline = Instant::now() + wait;
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self
            .drainer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = h.join();
        }
        let Some(mut p) = self.lock_by(deadline) else {
            eprintln!("covobs: warning: the NATS sink is stuck in its I/O: not waiting for it");
            return FleetStats::default();
        };
        if let Some(json) = session_json {
            let r = p.session_record(json);
            p.submit(r);
        }
        while !p.spool.is_empty() && Instant::now() < deadline {
            p.retry_at = Instant::now();
            if !p.drain_if_due() {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let mut s = p.stats.clone();
        s.spool = p.spool.stats();
        if s.spool.pending > 0 {
            eprintln!(
                "covobs: warning: {} records ({} bytes) are still in the spool {} (the server did not answer): the next covobs publishing as node {} replays them",
                s.spool.pending,
                s.spool.pending_bytes,
                p.spool.path().display(),
                p.node
            );
        }
        s
    }
}

impl Publisher {
    /// The stream and the bucket, created when missing.
    fn setup(&mut self) -> Result<(), String> {
        if self.store.is_some() {
            return Ok(());
        }
        let (js, names) = (self.js.clone(), self.names.clone());
        let store = self.rt.block_on(async move {
            tokio::time::timeout(ACK_TIMEOUT, ensure(&js, &names))
                .await
                .map_err(|_| "no answer from JetStream (timed out)".to_string())?
        })?;
        self.store = Some(store);
        Ok(())
    }

    fn session_record(&mut self, json: Bytes) -> Record {
        Record {
            subject: self.names.subject(&self.node, &self.session, Kind::Session),
            msg_id: format!("{}.{}.session", self.node, self.session),
            payload: json,
            ..Default::default()
        }
    }

    fn record(&mut self, item: &Item) -> Option<Record> {
        let subject = |kind| self.names.subject(&self.node, &self.session, kind);
        match item {
            Item::Event(e) => {
                let payload = serde_json::to_vec(&**e).ok()?;
                self.events += 1;
                Some(Record {
                    subject: subject(Kind::Events),
                    msg_id: format!("{}.{}.e{}", self.node, self.session, self.events),
                    payload: payload.into(),
                    ..Default::default()
                })
            }
            Item::Artifact(a) => {
                let (msg, objects) = match wire::artifact_record(a) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!("artifact {} not published: {e}", a.meta.seq);
                        return None;
                    }
                };
                Some(Record {
                    subject: subject(Kind::Artifacts),
                    msg_id: format!("{}.{}.a{}", self.node, self.session, msg.seq),
                    payload: serde_json::to_vec(&msg).ok()?.into(),
                    objects,
                    lazy: None,
                })
            }
            Item::Module(m) => {
                if !self.modules.insert(m.copy.clone()) {
                    return None;
                }
                let object = wire::module_object(&m.copy);
                let bytes = m.source.metadata().map(|md| md.len()).unwrap_or(0);
                let msg = ModuleMsg {
                    copy: m.copy.clone(),
                    object: object.clone(),
                    bytes,
                };
                Some(Record {
                    subject: subject(Kind::Modules),
                    msg_id: format!("{}.{}.m.{}", self.node, self.session, m.copy),
                    payload: serde_json::to_vec(&msg).ok()?.into(),
                    objects: Vec::new(),
                    lazy: Some(wire::LazyObject {
                        name: object,
                        source: m.clone(),
                    }),
                })
            }
        }
    }

    fn publish(&mut self, item: &Item) {
        if let Some(r) = self.record(item) {
            self.submit(r);
        }
    }

    /// Publish `r` now, or spool it (behind what is spooled already: order is kept).
    fn submit(&mut self, r: Record) {
        if !self.spool.is_empty() {
            self.drain_if_due();
        }
        if self.spool.is_empty() && Instant::now() >= self.retry_at {
            match self.send(&r) {
                Ok(()) => return,
                Err(why) => self.failed(why),
            }
        }
        self.spool_record(r);
    }

    fn failed(&mut self, why: String) {
        if self.stats.last_error.as_deref() != Some(why.as_str()) {
            tracing::warn!("publishing to NATS: {why}; spooling");
        }
        self.stats.last_error = Some(why);
        self.retry_at = Instant::now() + RETRY;
    }

    fn spool_record(&mut self, mut r: Record) {
        if let Some(lazy) = r.lazy.take() {
            match lazy.read() {
                Ok(bytes) => r.objects.push((lazy.name, bytes)),
                Err(e) => tracing::warn!("module {} not spooled: {e}", lazy.name),
            }
        }
        match self.spool.push(&r) {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                "the spool is full ({} bytes): {} not kept for the fleet",
                self.spool.stats.max_bytes,
                r.msg_id
            ),
            Err(e) => {
                tracing::warn!("{e}: {} not kept for the fleet", r.msg_id);
                self.spool.stats.dropped_full += 1;
            }
        }
    }

    /// Replay the spool, oldest first, while the server takes it. Returns whether it is empty.
    fn drain_if_due(&mut self) -> bool {
        while !self.spool.is_empty() {
            if Instant::now() < self.retry_at {
                return false;
            }
            let r = match self.spool.head() {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!("{e}: set aside");
                    self.spool.discard_head();
                    continue;
                }
            };
            match self.send(&r) {
                Ok(()) => self.spool.pop(),
                Err(why) => {
                    self.failed(why);
                    return false;
                }
            }
        }
        true
    }

    /// One record: its objects (those the store lacks), then its message, acknowledged.
    fn send(&mut self, r: &Record) -> Result<(), String> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err("not connected".into());
        }
        self.setup()?;
        let Some(store) = self.store.clone() else {
            return Err("no object store".into());
        };
        let js = self.js.clone();
        let r2 = r.clone();
        let sent = self.rt.block_on(async move {
            let mut uploaded = (0u64, 0u64, 0u64);
            let mut objects = r2.objects.clone();
            if let Some(lazy) = &r2.lazy {
                match tokio::time::timeout(ACK_TIMEOUT, store.info(&lazy.name)).await {
                    Ok(Ok(_)) => uploaded.2 += 1,
                    _ => {
                        let lazy = lazy.clone();
                        let bytes = tokio::task::spawn_blocking(move || lazy.read())
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| format!("reading the module: {e}"))?;
                        objects.push((
                            r2.lazy.as_ref().map_or(String::new(), |l| l.name.clone()),
                            bytes,
                        ));
                    }
                }
            }
            for (name, data) in &objects {
                let have = tokio::time::timeout(ACK_TIMEOUT, store.info(name)).await;
                if matches!(have, Ok(Ok(_))) {
                    continue;
                }
                let mut reader: &[u8] = data.as_ref();
                let put = store.put(name.as_str(), &mut reader);
                tokio::time::timeout(ACK_TIMEOUT * 4, put)
                    .await
                    .map_err(|_| format!("object {name}: timed out"))?
                    .map_err(|e| format!("object {name}: {e}"))?;
                uploaded.0 += 1;
                uploaded.1 += data.len() as u64;
            }
            let publish = PublishMessage::build()
                .payload(r2.payload.clone())
                .message_id(r2.msg_id.as_str());
            let ack = tokio::time::timeout(ACK_TIMEOUT, async {
                js.send_publish(r2.subject.clone(), publish)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
            .map_err(|_| "no acknowledgement (timed out)".to_string())??;
            Ok::<_, String>((uploaded, ack.duplicate))
        });
        let ((objects, bytes, present), duplicate) = sent?;
        self.stats.published += 1;
        self.stats.duplicates += u64::from(duplicate);
        self.stats.objects_uploaded += objects;
        self.stats.object_bytes += bytes;
        self.stats.modules_present += present;
        Ok(())
    }
}

/// The fleet's stream and object store, created when missing.
async fn ensure(js: &jetstream::Context, names: &Names) -> Result<ObjectStore, String> {
    js.get_or_create_stream(jetstream::stream::Config {
        name: names.stream(),
        subjects: vec![names.all()],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: super::DUPLICATE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("stream {}: {e}", names.stream()))?;
    match js.get_object_store(names.bucket()).await {
        Ok(s) => Ok(s),
        Err(_) => js
            .create_object_store(jetstream::object_store::Config {
                bucket: names.bucket(),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("object store {}: {e}", names.bucket())),
    }
}
