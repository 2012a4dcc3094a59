//! Durable history: a narrow [`Backend`] per database (`sqlite.rs`, the
//! embedded one; `postgres.rs`, `mysql.rs`, `redis.rs`) run by one store
//! thread beside the shards, so that no write ever blocks a shard.
//!
//! A chat to a room goes from the chat service into the store's bounded
//! queue (full: the sender gets `MESSAGE_FAILED` at once). The store thread
//! takes everything queued (at most `store.max_batch`), gives each message
//! the next `seq` of its room, writes them in one transaction (group
//! commit), and only then publishes them, in `seq` order, and acks each
//! sender. So an ack means the message is on disk, and a message that was
//! not stored is neither delivered nor acked. A retry with the same
//! `client_msg_id` (same sender and room) gets the original ack and is not
//! stored or delivered again.

pub mod directory;
pub mod mysql;
pub mod order;
pub mod postgres;
pub mod redis;
pub mod sqlite;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

use crate::broker::{Broker, Delivery, Origin, Payload};
use crate::metrics::StoreMetrics;
use crate::model::{Ack, Event, Recovery, Topic};
use crate::protocol::{ClientId, RoomName};
use crate::rooms::Registry;
use directory::{Directory, DirectoryRequest};
use order::Wake;
pub use order::{Order, OrderWakes};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store: {0}")]
    Open(String),
    #[error("store query failed: {0}")]
    Query(String),
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("the store is not running")]
    Stopped,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> StoreError {
        StoreError::Query(e.to_string())
    }
}

/// One message to store (its `seq` is set by the store thread).
pub struct Row {
    pub event: Event,
    pub client_msg_id: Option<RoomName>,
}

/// What a database must do. Called only on the store thread, one call at a
/// time.
pub(crate) trait Backend {
    /// The highest `seq` stored in `room` (0 if none).
    async fn last_seq(&mut self, room: &RoomName) -> Result<u64, StoreError>;
    /// How many messages `room` holds now (retention may have removed
    /// some: not the last `seq`).
    async fn count(&mut self, room: &RoomName) -> Result<u64, StoreError>;
    /// `user` got `room`'s messages up to `seq`: raises their delivery
    /// receipt (never lowers it).
    async fn mark_delivered(
        &mut self,
        room: &RoomName,
        user: &str,
        seq: u64,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Every user's delivery receipt in `room`: (user, `seq`), by user.
    async fn receipts(&mut self, room: &RoomName) -> Result<Vec<(String, u64)>, StoreError>;
    /// The id and `seq` of each already stored message among `keys`
    /// (room, sender, client_msg_id); one query for all of them.
    async fn find(&mut self, keys: &[RetryKey]) -> Result<HashMap<RetryKey, Stored>, StoreError>;
    /// Gives each of `rows` the next `seq` of its room, in order, and writes
    /// them in one transaction (on an error, nothing is written).
    async fn append(&mut self, rows: &mut [Row]) -> Result<(), StoreError>;
    /// Deletes messages older than `max_age` and, per room, all but the
    /// newest `max_messages` (each: `None` keeps everything).
    async fn trim(
        &mut self,
        max_age: Option<std::time::Duration>,
        max_messages: Option<u64>,
    ) -> Result<(), StoreError>;
    /// Up to `limit` messages of `room` with `seq > after`, oldest first.
    async fn since(
        &mut self,
        room: &RoomName,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;
    /// Whether the database answers (a trivial query).
    async fn ping(&mut self) -> Result<(), StoreError>;
    /// A new connection in place of one the database dropped (a restart):
    /// the store goes on once it answers again.
    async fn reconnect(&mut self) -> Result<(), StoreError>;
    /// Up to `limit` messages of `room` with `seq < before_seq`, newest first.
    async fn history(
        &mut self,
        room: &RoomName,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;
}

/// A stored row, read back (`SELECT seq, id, sender, body, ts_ms, kind,
/// attachments, client_msg_id`), as the event it was: the same for every
/// backend.
pub(crate) struct StoredRow {
    pub seq: i64,
    pub id: Vec<u8>,
    pub sender: String,
    pub body: String,
    pub ts_ms: i64,
    pub kind: String,
    pub attachments: Option<String>,
    pub client_msg_id: Option<String>,
}

impl StoredRow {
    fn into_event(self, room: &RoomName, max_name: usize) -> Result<Event, StoreError> {
        let corrupt = |e: String| StoreError::Corrupt(e);
        Ok(Event {
            id: uuid::Uuid::from_slice(&self.id).map_err(|e| corrupt(e.to_string()))?,
            topic: Topic::Room(room.clone()),
            seq: Some(self.seq as u64),
            sender: ClientId::parse(&self.sender, max_name).map_err(|e| corrupt(e.to_string()))?,
            to: None,
            kind: crate::model::EventKind::from_stored(&self.kind),
            body: self.body.into(),
            attachments: self.attachments.map(Into::into),
            // Checked when it was taken; an empty one is none.
            client_msg_id: self
                .client_msg_id
                .filter(|c| !c.is_empty())
                .and_then(|c| RoomName::parse(&c, max_name).ok()),
            ts: std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.ts_ms.max(0) as u64),
        })
    }
}

/// The values a backend binds for one row, in column order (`room, seq, id,
/// sender, client_msg_id, body, ts_ms, kind, attachments`).
pub(crate) struct RowValues<'a> {
    pub room: &'a str,
    pub seq: i64,
    pub id: &'a [u8],
    pub sender: &'a str,
    pub client_msg_id: Option<&'a str>,
    pub body: &'a str,
    pub ts_ms: i64,
    pub kind: &'static str,
    pub attachments: Option<&'a str>,
}

impl Row {
    /// The room the row is stored in.
    pub(crate) fn room(&self) -> Result<&RoomName, StoreError> {
        match &self.event.topic {
            Topic::Room(room) => Ok(room),
            _ => Err(StoreError::Query("only room messages are stored".into())),
        }
    }

    pub(crate) fn values(&self) -> Result<RowValues<'_>, StoreError> {
        let room = self.room()?;
        let ts = self
            .event
            .ts
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(RowValues {
            room: room.as_str(),
            seq: self.event.seq.unwrap_or(0) as i64,
            id: &self.event.id.as_bytes()[..],
            sender: self.event.sender.as_str(),
            client_msg_id: self.client_msg_id.as_ref().map(RoomName::as_str),
            body: &self.event.body,
            ts_ms: ts.as_millis() as i64,
            kind: self.event.kind.stored_name(),
            attachments: self.event.attachments.as_deref(),
        })
    }
}

/// A lookup's answer row `(room, sender, client_msg_id, id, seq)` as the
/// key it answers (among `keys`) and the stored id and `seq`.
pub(crate) fn found_key(
    keys: &[RetryKey],
    (room, sender, key, id, seq): LookupAnswer,
) -> Result<Option<(RetryKey, Stored)>, StoreError> {
    let id = uuid::Uuid::from_slice(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(keys
        .iter()
        .find(|(r, s, c)| r.as_str() == room && s.as_str() == sender && c.as_str() == key)
        .map(|k| (k.clone(), (id, seq as u64))))
}

fn retry_key(row: &Row) -> Option<RetryKey> {
    let Topic::Room(room) = &row.event.topic else {
        return None;
    };
    let id = row.client_msg_id.clone()?;
    Some((room.clone(), row.event.sender.clone(), id))
}

/// Where the store is and how it batches.
#[derive(Clone)]
pub struct Settings {
    pub database: Database,
    pub max_pending: usize,
    pub max_batch: usize,
    pub max_name: usize,
    /// Most messages one catch-up carries.
    pub max_recover: u32,
    pub retention: Retention,
    /// Several nodes: how long a gap in a room's `seq` may stay open before
    /// the missing messages are read from the store.
    pub reorder_timeout: std::time::Duration,
    pub metrics: StoreMetrics,
}

/// What the store keeps (enforced in the background).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Delete messages older than this.
    pub max_age: Option<std::time::Duration>,
    /// Keep at most this many messages per room (the newest).
    pub max_messages: Option<u64>,
    /// How often the limits are enforced.
    pub interval: std::time::Duration,
}

impl Retention {
    fn enabled(&self) -> bool {
        self.max_age.is_some() || self.max_messages.is_some()
    }
}

enum Request {
    Append {
        row: Row,
        origin: Origin,
    },
    History {
        room: RoomName,
        before_seq: Option<u64>,
        limit: u32,
        reply: oneshot::Sender<Result<Vec<Event>, StoreError>>,
    },
    /// A recipient confirmed a message (by its sender's id for it): its
    /// delivery receipt is raised to that message's `seq`.
    Delivered {
        /// The message as each of the recipient's conversations could
        /// hold it: (room, sender, client_msg_id).
        keys: Vec<RetryKey>,
        user: String,
    },
    /// Every user's delivery receipt in a room.
    Receipts {
        room: RoomName,
        reply: oneshot::Sender<Result<Vec<(String, u64)>, StoreError>>,
    },
    /// How many messages a room holds.
    Count {
        room: RoomName,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    /// Answered once everything queued before it is written, published and
    /// acked (shutdown).
    Flush(oneshot::Sender<()>),
    /// Users and private conversations.
    Directory(DirectoryRequest),
    /// A member joined `room` on `shard` with `since_seq`.
    Recover {
        room: RoomName,
        since: u64,
        shard: usize,
        conn: u64,
    },
}

/// The shards' side of the store: submits without waiting.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Request>,
    /// The database answered the last check (`/readyz`).
    ready: Arc<AtomicBool>,
    /// Several nodes share the history: delivery is put in `seq` order.
    order: Option<Arc<Order>>,
}

/// A request's answer, to come on a channel.
pub type Answer<T> = oneshot::Receiver<Result<T, StoreError>>;

/// A user's delivery receipt in a room: (user id, highest `seq` delivered).
pub type Receipt = (String, u64);

/// The store queue is full (or the store stopped): the message was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the store is busy; try again")]
pub struct Busy;

impl StoreHandle {
    /// Whether the database answered the store's last check: while it does
    /// not, chats get `MESSAGE_FAILED` and `/readyz` says so.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Queues a chat for storing, then delivery and an ack to `origin`.
    pub fn append(&self, event: Event, origin: Origin) -> Result<(), Busy> {
        let row = Row {
            event,
            client_msg_id: origin.client_msg_id.clone(),
        };
        self.tx
            .try_send(Request::Append { row, origin })
            .map_err(|_| Busy)
    }

    /// The node subscribed to `room` (its first member here joined).
    pub fn subscribed(&self, room: &RoomName) {
        if let Some(order) = &self.order {
            order.watch(room);
        }
    }

    /// The node's last member of `room` left.
    pub fn unsubscribed(&self, room: &RoomName) {
        if let Some(order) = &self.order {
            order.forget(room);
        }
    }

    /// Asks for a joining member's catch-up (sent to its shard's inbox).
    pub fn recover(&self, room: RoomName, since: u64, shard: usize, conn: u64) -> Result<(), Busy> {
        let request = Request::Recover {
            room,
            since,
            shard,
            conn,
        };
        self.tx.try_send(request).map_err(|_| Busy)
    }

    /// Resolves once every message queued so far is stored, published and
    /// acked (called at shutdown, after the readers stopped).
    pub async fn flush(&self) {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Request::Flush(done)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Queues a directory request (users, conversations); it is answered
    /// on its own channel.
    pub fn directory(&self, request: DirectoryRequest) -> Result<(), Busy> {
        self.tx
            .try_send(Request::Directory(request))
            .map_err(|_| Busy)
    }

    /// `user` confirmed the message one of `keys` names (the sender's id
    /// for it, in each conversation it may be in): their delivery receipt
    /// in its room is raised to its `seq` (an unknown message changes
    /// nothing).
    pub fn delivered(&self, keys: Vec<RetryKey>, user: String) -> Result<(), Busy> {
        self.tx
            .try_send(Request::Delivered { keys, user })
            .map_err(|_| Busy)
    }

    /// Asks for every user's delivery receipt in `room`.
    pub fn receipts(&self, room: RoomName) -> Result<Answer<Vec<Receipt>>, Busy> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request::Receipts { room, reply })
            .map_err(|_| Busy)?;
        Ok(rx)
    }

    /// Asks how many messages `room` holds; the answer comes on the
    /// receiver.
    pub fn count(
        &self,
        room: RoomName,
    ) -> Result<oneshot::Receiver<Result<u64, StoreError>>, Busy> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request::Count { room, reply })
            .map_err(|_| Busy)?;
        Ok(rx)
    }

    /// Asks for a page of history; the answer comes on the receiver.
    pub fn history(
        &self,
        room: RoomName,
        before_seq: Option<u64>,
        limit: u32,
    ) -> Result<oneshot::Receiver<Result<Vec<Event>, StoreError>>, Busy> {
        let (reply, rx) = oneshot::channel();
        let request = Request::History {
            room,
            before_seq,
            limit,
            reply,
        };
        self.tx.try_send(request).map_err(|_| Busy)?;
        Ok(rx)
    }
}

/// Which database, and where.
#[derive(Debug, Clone)]
pub enum Database {
    /// One SQLite file on this node.
    Sqlite(PathBuf),
    /// A PostgreSQL server, by URL.
    Postgres(String),
    /// A MySQL or MariaDB server, by URL.
    Mysql(String),
    /// A Redis server, by URL, with the prefix of every key.
    Redis {
        url: String,
        prefix: String,
        /// The CA a `rediss://` server's certificate is checked against
        /// (empty: the system's roots).
        ca_file: PathBuf,
    },
}

/// Opens the store and starts its thread; fails (naming the cause) if the
/// database cannot be opened or migrated. With `order` (several nodes share
/// the history), the broker delivers through it and the store thread fills
/// its gaps.
pub fn start(
    settings: Settings,
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
    order: Option<(Arc<Order>, OrderWakes)>,
) -> Result<StoreHandle, StoreError> {
    let (order, wakes) = order.unzip();
    let (tx, rx) = mpsc::channel(settings.max_pending);
    let ready = Arc::new(AtomicBool::new(true));
    let thread_ready = ready.clone();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let thread_order = order.clone();
    std::thread::Builder::new()
        .name("chatd-store".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = opened_tx.send(Err(StoreError::Open(e.to_string())));
                    return;
                }
            };
            rt.block_on(async move {
                let max_name = settings.max_name;
                let parts = Parts {
                    settings: settings.clone(),
                    registry,
                    broker,
                    order: thread_order,
                    ready: thread_ready,
                };
                let channels = (rx, wakes);
                match &settings.database {
                    Database::Sqlite(path) => {
                        let opened = sqlite::Sqlite::open(path, max_name).await;
                        serve(opened, opened_tx, parts, channels).await
                    }
                    Database::Postgres(url) => {
                        let opened = postgres::Postgres::open(url, max_name).await;
                        serve(opened, opened_tx, parts, channels).await
                    }
                    Database::Mysql(url) => {
                        let opened = mysql::Mysql::open(url, max_name).await;
                        serve(opened, opened_tx, parts, channels).await
                    }
                    Database::Redis {
                        url,
                        prefix,
                        ca_file,
                    } => {
                        let client = crate::tls::redis_client(url, ca_file);
                        let opened = redis::RedisStore::open(client, prefix, max_name).await;
                        serve(opened, opened_tx, parts, channels).await
                    }
                }
            });
        })
        .map_err(|e| StoreError::Open(e.to_string()))?;
    opened_rx.recv().map_err(|_| StoreError::Stopped)??;
    Ok(StoreHandle { tx, ready, order })
}

/// What the store thread works with besides its database.
struct Parts {
    settings: Settings,
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
    order: Option<Arc<Order>>,
    ready: Arc<AtomicBool>,
}

/// Reports how opening went, then runs the store on `backend` until every
/// handle is gone.
async fn serve<B: Backend + Directory>(
    opened: Result<B, StoreError>,
    report: std::sync::mpsc::Sender<Result<(), StoreError>>,
    parts: Parts,
    (rx, wakes): (mpsc::Receiver<Request>, Option<OrderWakes>),
) {
    let Parts {
        settings,
        registry,
        broker,
        order,
        ready,
    } = parts;
    let backend = match opened {
        Ok(backend) => {
            let _ = report.send(Ok(()));
            backend
        }
        Err(e) => {
            let _ = report.send(Err(e));
            return;
        }
    };
    let writer = Writer {
        backend,
        registry,
        broker,
        order,
        gaps: std::collections::VecDeque::new(),
        reorder_timeout: settings.reorder_timeout,
        max_recover: settings.max_recover,
        retention: settings.retention,
        metrics: settings.metrics,
        health: Health {
            ready,
            checked: Instant::now(),
            retry_at: Instant::now(),
            backoff: MIN_BACKOFF,
        },
    };
    writer.run(rx, wakes, settings.max_batch).await;
}

/// The store thread's state.
struct Writer<B> {
    backend: B,
    registry: Arc<Registry>,
    broker: Arc<dyn Broker>,
    /// Several nodes: the reorder stage whose gaps this thread fills.
    order: Option<Arc<Order>>,
    /// Gaps to look at again, each when its reorder timeout is over (one
    /// timeout for all: the queue is in deadline order).
    gaps: std::collections::VecDeque<(tokio::time::Instant, RoomName)>,
    reorder_timeout: std::time::Duration,
    max_recover: u32,
    retention: Retention,
    metrics: StoreMetrics,
    health: Health,
}

/// How often the store checks that its database answers.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a check or a reconnect may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);
/// First and longest wait between two reconnect attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the database answers, and when to try reconnecting next.
struct Health {
    /// Shared with every [`StoreHandle`] (`/readyz`).
    ready: Arc<AtomicBool>,
    /// The last check.
    checked: Instant,
    /// No reconnect attempt before this.
    retry_at: Instant,
    /// The next wait after a failed attempt (doubles up to `MAX_BACKOFF`).
    backoff: Duration,
}

/// What became of one append.
enum Outcome {
    /// Stored at this index of the group's rows.
    New { row: usize, origin: Origin },
    /// A retry of the message at this index of the same group.
    SameAs { row: usize, origin: Origin },
    /// A retry of an already stored message: ack it again.
    Stored { ack: Ack },
}

/// What a message is, before the write.
enum Prepared {
    New,
    SameAs(usize),
    Stored(uuid::Uuid, u64),
}

/// What makes a send idempotent: (room, sender, client_msg_id).
pub type RetryKey = (RoomName, ClientId, RoomName);

/// A stored message's id and `seq`.
pub type Stored = (uuid::Uuid, u64);

/// One row of an idempotency lookup: `(room, sender, client_msg_id, id, seq)`.
pub(crate) type LookupAnswer = (String, String, String, Vec<u8>, i64);

impl<B: Backend + Directory> Writer<B> {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        wakes: Option<OrderWakes>,
        max_batch: usize,
    ) {
        let mut batch = Vec::with_capacity(max_batch);
        let retention = self.retention;
        let mut tick = tokio::time::interval(retention.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut wakes, ordered) = match wakes {
            Some(OrderWakes(rx)) => (rx, true),
            None => (mpsc::unbounded_channel().1, false),
        };
        let mut health = tokio::time::interval(CHECK_INTERVAL);
        health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = self.gaps.front().map(|(at, _)| *at);
            let received = tokio::select! {
                n = rx.recv_many(&mut batch, max_batch) => n,
                _ = tick.tick(), if retention.enabled() => {
                    if let Err(e) = self.backend.trim(retention.max_age, retention.max_messages).await {
                        tracing::warn!(error = %e, "store retention failed");
                    }
                    continue;
                }
                Some(wake) = wakes.recv(), if ordered => {
                    self.wake(wake).await;
                    continue;
                }
                _ = health.tick() => {
                    self.check().await;
                    continue;
                }
                _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                    if let Some((_, room)) = self.gaps.pop_front() {
                        self.fill(&room).await;
                    }
                    continue;
                }
            };
            if received == 0 {
                return;
            }
            let mut appends = Vec::new();
            for request in batch.drain(..) {
                match request {
                    Request::Append { row, origin } => appends.push((row, origin)),
                    Request::History {
                        room,
                        before_seq,
                        limit,
                        reply,
                    } => {
                        // Read after the writes queued before it.
                        self.write(std::mem::take(&mut appends)).await;
                        let page = self.backend.history(&room, before_seq, limit).await;
                        let _ = reply.send(page);
                    }
                    Request::Delivered { keys, user } => {
                        // The message may be in this very group.
                        self.write(std::mem::take(&mut appends)).await;
                        self.receipt(&keys, &user).await;
                    }
                    Request::Receipts { room, reply } => {
                        self.write(std::mem::take(&mut appends)).await;
                        let _ = reply.send(self.backend.receipts(&room).await);
                    }
                    Request::Count { room, reply } => {
                        // Counted after the writes queued before it.
                        self.write(std::mem::take(&mut appends)).await;
                        let _ = reply.send(self.backend.count(&room).await);
                    }
                    Request::Directory(request) => {
                        // Answered after the writes queued before it.
                        self.write(std::mem::take(&mut appends)).await;
                        request.answer(&mut self.backend).await;
                    }
                    Request::Flush(done) => {
                        self.write(std::mem::take(&mut appends)).await;
                        let _ = done.send(());
                    }
                    Request::Recover {
                        room,
                        since,
                        shard,
                        conn,
                    } => {
                        // Everything written before is published before the
                        // catch-up is read: the member's shard gets the
                        // live messages up to `up_to` before the catch-up
                        // (and skips them), and every later one after it.
                        self.write(std::mem::take(&mut appends)).await;
                        let recovery = self.recovery(room, since, shard, conn).await;
                        self.registry.recovered(recovery);
                    }
                }
            }
            self.write(appends).await;
        }
    }

    /// Stores one group in one transaction, then publishes and acks it in
    /// order; if the write fails, every sender of the group is told.
    async fn write(&mut self, appends: Vec<(Row, Origin)>) {
        if appends.is_empty() {
            return;
        }
        // Which of the group's client_msg_ids are stored already: one query.
        let keys: Vec<RetryKey> = appends
            .iter()
            .filter_map(|(row, _)| retry_key(row))
            .collect();
        let stored = if keys.is_empty() {
            Ok(HashMap::new())
        } else {
            self.backend.find(&keys).await
        };
        let stored = match stored {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "store lookup failed; senders told");
                self.metrics.errors.inc_by(appends.len() as u64);
                for (_, origin) in appends {
                    self.registry.failed(origin);
                }
                self.suspect().await;
                return;
            }
        };
        let mut rows: Vec<Row> = Vec::with_capacity(appends.len());
        let mut outcomes = Vec::with_capacity(appends.len());
        let mut in_group: HashMap<RetryKey, usize> = HashMap::new();
        for (row, origin) in appends {
            let Topic::Room(room) = row.event.topic.clone() else {
                continue;
            };
            match Self::prepare(&row, &stored, &in_group) {
                Prepared::Stored(id, seq) => outcomes.push(Outcome::Stored {
                    ack: Ack {
                        origin,
                        room,
                        id,
                        seq,
                    },
                }),
                Prepared::SameAs(row) => outcomes.push(Outcome::SameAs { row, origin }),
                Prepared::New => {
                    if let Some(key) = row.client_msg_id.clone() {
                        in_group.insert((room, row.event.sender.clone(), key), rows.len());
                    }
                    outcomes.push(Outcome::New {
                        row: rows.len(),
                        origin,
                    });
                    rows.push(row);
                }
            }
        }
        let started = std::time::Instant::now();
        let written = if rows.is_empty() {
            Ok(())
        } else {
            self.backend.append(&mut rows).await
        };
        if !rows.is_empty() && written.is_ok() {
            let m = &self.metrics;
            m.stored.inc_by(rows.len() as u64);
            m.batch_size.observe(rows.len() as f64);
            m.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        if let Err(e) = &written {
            tracing::warn!(error = %e, messages = rows.len(), "store write failed; senders told");
        }
        if written.is_err() {
            self.suspect().await;
        }
        let ack_of = |row: &Row, origin: Origin| Ack {
            origin,
            room: match &row.event.topic {
                Topic::Room(room) => room.clone(),
                _ => unreachable!("only room messages are stored"),
            },
            id: row.event.id,
            seq: row.event.seq.unwrap_or(0),
        };
        let acks: Vec<Option<Ack>> = outcomes
            .into_iter()
            .map(|outcome| match outcome {
                Outcome::Stored { ack } => Some(ack),
                Outcome::New { origin, .. } | Outcome::SameAs { origin, .. }
                    if written.is_err() =>
                {
                    self.metrics.errors.inc();
                    self.registry.failed(origin);
                    None
                }
                Outcome::New { row, origin } | Outcome::SameAs { row, origin } => {
                    Some(ack_of(&rows[row], origin))
                }
            })
            .collect();
        if written.is_ok() {
            for row in rows {
                self.publish(row.event);
            }
        }
        for ack in acks.into_iter().flatten() {
            self.registry.acked(ack);
        }
    }

    /// A request failed: the database may be gone. Checked at once (at most
    /// every few hundred milliseconds, so a failing flood does not turn
    /// into a flood of checks).
    async fn suspect(&mut self) {
        if self.health.checked.elapsed() >= MIN_BACKOFF {
            self.check().await;
        }
    }

    /// Checks the database answers; if not, marks the store not ready
    /// (`/readyz` 503, `chatd_store_*`) and, when its backoff allows,
    /// connects anew. Requests meanwhile fail at once on the dead
    /// connection, and their senders get `MESSAGE_FAILED`.
    async fn check(&mut self) {
        let now = Instant::now();
        self.health.checked = now;
        let answers = |r: Result<Result<(), StoreError>, _>| matches!(r, Ok(Ok(())));
        if answers(tokio::time::timeout(CHECK_TIMEOUT, self.backend.ping()).await) {
            if !self.health.ready.swap(true, Ordering::AcqRel) {
                // (Redis's connection manager connects again by itself.)
                self.metrics.reconnects.inc();
                tracing::info!("the store's database answers again");
            }
            self.health.backoff = MIN_BACKOFF;
            return;
        }
        if self.health.ready.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                "the store's database does not answer; chats get MESSAGE_FAILED until it does"
            );
        }
        if now < self.health.retry_at {
            return;
        }
        let reconnected = tokio::time::timeout(CHECK_TIMEOUT, self.backend.reconnect()).await;
        let answer = match reconnected {
            Ok(Ok(())) => tokio::time::timeout(CHECK_TIMEOUT, self.backend.ping()).await,
            Ok(Err(e)) => Ok(Err(e)),
            Err(elapsed) => Err(elapsed),
        };
        if answers(answer) {
            self.metrics.reconnects.inc();
            self.health.ready.store(true, Ordering::Release);
            self.health.backoff = MIN_BACKOFF;
            tracing::info!("reconnected to the store's database");
        } else {
            self.health.retry_at = Instant::now() + self.health.backoff;
            self.health.backoff = (self.health.backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Raises `user`'s delivery receipt to the `seq` of the message `keys`
    /// name, if it is stored.
    async fn receipt(&mut self, keys: &[RetryKey], user: &str) {
        let found = match self.backend.find(keys).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "delivery receipt not looked up");
                return;
            }
        };
        let Some(((room, _, _), (_, seq))) = found.into_iter().next() else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        if let Err(e) = self.backend.mark_delivered(&room, user, seq, now).await {
            tracing::warn!(error = %e, "delivery receipt not stored");
        }
    }

    /// The stored messages of `room` after `since`, if the store has them all
    /// and they are at most `max_recover`.
    async fn recovery(&mut self, room: RoomName, since: u64, shard: usize, conn: u64) -> Recovery {
        let mut recovery = Recovery {
            shard,
            conn,
            room,
            events: Vec::new(),
            up_to: 0,
            complete: false,
            oldest: None,
        };
        let room = &recovery.room;
        let Ok(up_to) = self.delivered(room).await else {
            return recovery;
        };
        recovery.up_to = up_to;
        if since >= up_to {
            recovery.complete = true;
            return recovery;
        }
        let Ok(mut events) = self.backend.since(room, since, self.max_recover + 1).await else {
            return recovery;
        };
        // Several nodes: others may have stored more since `up_to`; those
        // reach the member live.
        events.retain(|e| e.seq.is_some_and(|seq| seq <= up_to));
        let first = events.first().and_then(|e| e.seq);
        if events.len() > self.max_recover as usize || first != Some(since + 1) {
            // Too many to replay, or some are gone (retention): the client
            // pages the history itself.
            recovery.oldest = first;
            return recovery;
        }
        recovery.events = events;
        recovery.complete = true;
        recovery
    }

    /// The last `seq` of `room` this node's fan-out was given: with one
    /// node, the last stored (this thread publishes each group before it
    /// reads anything); with several, what the reorder stage delivered
    /// (its baseline read now if it has none yet).
    async fn delivered(&mut self, room: &RoomName) -> Result<u64, StoreError> {
        let Some(order) = self.order.clone() else {
            return self.backend.last_seq(room).await;
        };
        if let Some(seq) = order.delivered(room) {
            return Ok(seq);
        }
        let last = self.backend.last_seq(room).await?;
        // Not watched (the member left meanwhile): what is stored.
        Ok(order.baseline(room, last).unwrap_or(last))
    }

    /// A request of the reorder stage.
    async fn wake(&mut self, wake: Wake) {
        let Some(order) = self.order.clone() else {
            return;
        };
        match wake {
            Wake::Baseline(room) => {
                if order.needs_baseline(&room) != Some(true) {
                    return;
                }
                match self.backend.last_seq(&room).await {
                    Ok(last) => {
                        order.baseline(&room, last);
                    }
                    Err(e) => {
                        // Asked again at the room's next recovery or
                        // resubscription; meanwhile its messages are held.
                        tracing::warn!(room = %room, error = %e, "room baseline not read");
                    }
                }
            }
            Wake::Gap(room) => {
                let at = tokio::time::Instant::now() + self.reorder_timeout;
                self.gaps.push_back((at, room));
            }
            Wake::CatchUp(room) => self.catch_up(&order, room).await,
        }
    }

    /// After a bus outage: delivers what the store has of `room` after the
    /// last `seq` this node delivered (what other nodes stored meanwhile),
    /// in pages of `max_recover`. A room still waiting for its baseline
    /// needs nothing: its baseline is read from the store after this.
    async fn catch_up(&mut self, order: &Arc<Order>, room: RoomName) {
        while let Some(after) = order.delivered(&room) {
            match self.backend.since(&room, after, self.max_recover).await {
                Ok(events) => {
                    let more = events.len() >= self.max_recover as usize;
                    order.catch_up(&room, events);
                    if !more {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(room = %room, error = %e, "catch-up after a bus outage failed; retrying");
                    let (order, retry) = (
                        order.clone(),
                        self.reorder_timeout.max(std::time::Duration::from_secs(1)),
                    );
                    tokio::spawn(async move {
                        tokio::time::sleep(retry).await;
                        order.request_catch_up(room);
                    });
                    return;
                }
            }
        }
    }

    /// Reads a gap that did not close by itself from the store.
    async fn fill(&mut self, room: &RoomName) {
        let Some(order) = self.order.clone() else {
            return;
        };
        let Some((from, to)) = order.gap(room) else {
            return;
        };
        let limit = (to - from + 1).min(u64::from(self.max_recover)) as u32;
        match self.backend.since(room, from - 1, limit).await {
            Ok(events) => {
                let all = events.len() < limit as usize;
                self.metrics.reorder_fills.inc();
                let skipped = order.fill(room, events, all);
                if skipped > 0 {
                    tracing::warn!(room = %room, skipped, "seq numbers missing from the store");
                    self.metrics.reorder_skipped.inc_by(skipped);
                }
            }
            Err(e) => {
                tracing::warn!(room = %room, error = %e, "gap not read; asked again");
                order.fill(room, Vec::new(), false);
            }
        }
    }

    /// What `row` is: new, or a retry of a message stored before or earlier
    /// in this group.
    fn prepare(
        row: &Row,
        stored: &HashMap<RetryKey, Stored>,
        in_group: &HashMap<RetryKey, usize>,
    ) -> Prepared {
        if let Some(key) = retry_key(row) {
            if let Some(&(id, seq)) = stored.get(&key) {
                return Prepared::Stored(id, seq);
            }
            if let Some(&first) = in_group.get(&key) {
                return Prepared::SameAs(first);
            }
        }
        Prepared::New
    }

    /// Delivers a stored event to every node. Through shard 0's publisher
    /// whatever the sender's shard, so that a bus keeps the store's order.
    /// Acked already: a bus failure now is not the sender's to retry; the
    /// broker delivers it to this node's members itself and publishes it
    /// again when the bus is back (other nodes may read it from a shared
    /// store first).
    fn publish(&self, event: Event) {
        let topic = event.topic.clone();
        let payload = Payload::Event(Arc::new(event));
        if let Err(e) = self.broker.publish_stored(0, &topic, payload) {
            tracing::debug!(error = %e, "stored message not published; delivered on this node");
        }
    }
}

/// Drives the store thread alone, as fast as it takes chats: `total` chats
/// (each with a `client_msg_id`, spread over `rooms` rooms) into the
/// database, group-committed, numbered, published (to a node without
/// members) and acked. Returns the seconds from the first chat to the last
/// commit. For `benches/store.rs`: the store's own ceiling, without sockets.
pub async fn drive(settings: Settings, total: u64, rooms: u64) -> Result<f64, StoreError> {
    let registry = Arc::new(Registry::new(Vec::new()));
    let metrics = crate::metrics::Metrics::new();
    let broker: Arc<dyn Broker> = Arc::new(crate::broker::MemoryBroker::new(
        registry.clone(),
        metrics.broker.clone(),
    ));
    let store = start(settings, registry, broker, None)?;
    let sender = ClientId::parse("bench", 64).expect("a valid name");
    let names: Vec<RoomName> = (0..rooms.max(1))
        .map(|r| RoomName::parse(&format!("room{r}"), 64).expect("a valid name"))
        .collect();
    let body = "a chat line of about forty bytes, typical";
    let started = std::time::Instant::now();
    for n in 0..total {
        let room = names[(n % names.len() as u64) as usize].clone();
        let origin = Origin {
            shard: 0,
            conn: 0,
            client_msg_id: RoomName::parse(&format!("k{n}"), 64).ok(),
        };
        loop {
            let event = Event::chat(Topic::Room(room.clone()), sender.clone(), body);
            if store.append(event, origin.clone()).is_ok() {
                break;
            }
            // Full: let the store thread drain (as a sender told
            // MESSAGE_FAILED would retry).
            tokio::time::sleep(std::time::Duration::from_micros(200)).await;
        }
    }
    store.flush().await;
    Ok(started.elapsed().as_secs_f64())
}
