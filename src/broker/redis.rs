//! The Redis broker: every node shares fan-out through Redis pub/sub.
//!
//! - Publishing: each shard has its own connection and a bounded queue of
//!   outgoing messages; a shard's publisher sends everything queued as one
//!   pipeline (`PUBLISH`, or `SPUBLISH` on a cluster), so there is never one
//!   round trip per message.
//! - Subscribing: one connection per node (RESP3 push messages), one channel
//!   per room, subscribed while the node has a member (the registry
//!   reference-counts members), plus the global and relay channels.
//! - Ordering: a node delivers its own messages only when they come back from
//!   Redis, so Redis orders each room for every node alike.
//! - Faults: a health check (PING) marks the bus down or up; while down,
//!   publishes fail at once (`MESSAGE_FAILED`) instead of queueing without
//!   bound; on recovery every wanted channel is subscribed again, and the
//!   delivery is told to catch up from the shared store (`Delivery::resync`).
//! - A stored (acked) message the bus cannot take, or loses, goes to this
//!   node's fan-out directly (`publish_stored`), and is published again once
//!   the bus is back, marked with this node's id so that this node skips it:
//!   an ack means every member gets it, whatever the bus does (with a shared
//!   store the other nodes' reorder stage drops it if their catch-up came
//!   first).
//!
//! The bus payload is one tag byte and the message: `E` and an event in its
//! compact encoding (`model::Event::encode`; the receiving node frames it
//! once per wire protocol), or `F` and a finished relay frame (passed on as
//! it is).

use bytes::Bytes;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{PushInfo, PushKind, RedisResult, Value};
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use super::{Broker, Delivery, Origin, Payload, Publish, PublishError, Topic};
use crate::config::RedisConfig;
use crate::metrics::BrokerMetrics;
use crate::model::Event;
use crate::protocol::RoomName;

/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One message on its way to Redis.
struct Outbound {
    channel: Bytes,
    payload: Bytes,
    /// Told if the message is finally not published.
    origin: Option<Origin>,
    /// A stored message: delivered here directly if finally not published.
    fallback: Option<(Topic, Payload)>,
}

enum SubCommand {
    Subscribe(Bytes),
    Unsubscribe(Bytes),
}

struct Shared {
    config: RedisConfig,
    delivery: Arc<dyn Delivery>,
    metrics: BrokerMetrics,
    /// The bus answered the last health check and every wanted channel is
    /// subscribed.
    ready: AtomicBool,
    /// Longest room name accepted back from the bus.
    max_name: usize,
    /// Messages accepted by `publish` and not yet written to Redis.
    pending: AtomicUsize,
    /// This node's private channel, for the flush marker.
    marker_channel: Bytes,
    /// The last flush marker that came back through the subscription.
    marker_seen: AtomicU64,
    marker_arrived: tokio::sync::Notify,
    /// A publish failed, or the subscription connection dropped, since the
    /// last health check: other nodes' publishes may have been lost too, so
    /// this node catches up from the shared store (a bus blip shorter than
    /// one check is not seen as an outage by the check).
    publish_lost: AtomicBool,
    /// This node's id, in what it publishes again (see `unsent`).
    node: [u8; 16],
    /// Stored messages this node delivered to its own members because the
    /// bus did not carry them: (channel, bus payload), oldest first,
    /// published for the other nodes once the bus is back. Bounded by
    /// `max_pending`; beyond it the other nodes rely on the shared store's
    /// catch-up alone.
    unsent: Mutex<VecDeque<(Bytes, Bytes)>>,
    /// What was published again, kept `republish_window` (at most
    /// `max_pending`): a node whose own reconnect came after that publish
    /// was not subscribed to hear it, and asks for it by announcing its
    /// return on `nodes_channel`.
    republished: Mutex<VecDeque<(Instant, Bytes, Bytes)>>,
    /// Where nodes announce that they are subscribed again after an outage.
    nodes_channel: Bytes,
    /// Another node announced its return: publish `republished` again.
    peer_back: AtomicBool,
    /// Ids of the events heard published again, so one heard twice (sent
    /// again for a later node) is delivered once.
    heard_again: Mutex<RecentIds>,
}

/// The last ids seen, at most a bound of them (oldest forgotten first).
struct RecentIds {
    ids: std::collections::HashSet<uuid::Uuid>,
    order: VecDeque<uuid::Uuid>,
    max: usize,
}

impl RecentIds {
    /// False if `id` was seen already.
    fn insert(&mut self, id: uuid::Uuid) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

pub struct RedisBroker {
    shared: Arc<Shared>,
    /// Per-shard publish queues (bounded: `max_pending`).
    publish_tx: Vec<mpsc::Sender<Outbound>>,
    publish_rx: Mutex<Vec<Option<mpsc::Receiver<Outbound>>>>,
    sub_tx: mpsc::UnboundedSender<SubCommand>,
    sub_rx: Mutex<Option<mpsc::UnboundedReceiver<SubCommand>>>,
    marker_sent: AtomicU64,
}

impl RedisBroker {
    pub fn new(
        config: RedisConfig,
        shards: usize,
        max_name: usize,
        delivery: Arc<dyn Delivery>,
        metrics: BrokerMetrics,
    ) -> RedisBroker {
        let (publish_tx, publish_rx): (Vec<_>, Vec<_>) = (0..shards)
            .map(|_| mpsc::channel(config.max_pending))
            .map(|(t, r)| (t, Some(r)))
            .unzip();
        let (sub_tx, sub_rx) = mpsc::unbounded_channel();
        let config_prefix = config.channel_prefix.clone();
        let config_max_pending = config.max_pending;
        let node = uuid::Uuid::new_v4();
        let shared = Arc::new(Shared {
            config,
            delivery,
            metrics,
            ready: AtomicBool::new(false),
            max_name,
            pending: AtomicUsize::new(0),
            marker_channel: Bytes::from(format!("{config_prefix}node:{node}")),
            marker_seen: AtomicU64::new(0),
            marker_arrived: tokio::sync::Notify::new(),
            publish_lost: AtomicBool::new(false),
            node: node.into_bytes(),
            unsent: Mutex::new(VecDeque::new()),
            republished: Mutex::new(VecDeque::new()),
            nodes_channel: Bytes::from(format!("{config_prefix}nodes")),
            peer_back: AtomicBool::new(false),
            heard_again: Mutex::new(RecentIds {
                ids: Default::default(),
                order: VecDeque::new(),
                max: config_max_pending,
            }),
        });
        RedisBroker {
            shared,
            publish_tx,
            publish_rx: Mutex::new(publish_rx),
            sub_tx,
            sub_rx: Mutex::new(Some(sub_rx)),
            marker_sent: AtomicU64::new(0),
        }
    }

    fn channel(&self, topic: &Topic) -> Bytes {
        let prefix = &self.shared.config.channel_prefix;
        Bytes::from(match topic {
            Topic::Room(room) => format!("{prefix}room:{room}"),
            Topic::Global => format!("{prefix}global"),
            Topic::Relay => format!("{prefix}relay"),
        })
    }
}

impl RedisBroker {
    /// Queues `out` for `shard`'s publisher. On a full or closed queue, a
    /// stored message goes to this node's fan-out directly.
    fn enqueue(&self, shard: usize, out: Outbound) -> Result<(), PublishError> {
        self.shared.pending.fetch_add(1, Ordering::AcqRel);
        self.publish_tx[shard].try_send(out).map_err(|e| {
            self.shared.pending.fetch_sub(1, Ordering::AcqRel);
            self.shared.metrics.publish_errors.inc();
            let (error, out) = match e {
                mpsc::error::TrySendError::Full(out) => (PublishError::Backlog, out),
                mpsc::error::TrySendError::Closed(out) => (PublishError::Closed, out),
            };
            self.shared.fall_back(out);
            error
        })
    }
}

impl Broker for RedisBroker {
    fn publish(&self, shard: usize, p: Publish) -> Result<(), PublishError> {
        if !self.shared.ready.load(Ordering::Acquire) {
            self.shared.metrics.publish_errors.inc();
            return Err(PublishError::Disconnected);
        }
        let payload = bus_payload(&p.payload);
        let out = Outbound {
            channel: self.channel(p.topic),
            payload,
            origin: p.origin,
            fallback: None,
        };
        self.enqueue(shard, out)
    }

    fn publish_stored(
        &self,
        shard: usize,
        topic: &Topic,
        payload: Payload,
    ) -> Result<(), PublishError> {
        // Queued even while the bus is down: the publisher then delivers it
        // here at once (see `publisher`), behind the stored messages queued
        // before it, so this node's members get them in the store's order.
        let out = Outbound {
            channel: self.channel(topic),
            payload: bus_payload(&payload),
            origin: None,
            fallback: Some((topic.clone(), payload)),
        };
        self.enqueue(shard, out)
    }

    fn subscribe(&self, room: &RoomName) {
        let _ = self.sub_tx.send(SubCommand::Subscribe(
            self.channel(&Topic::Room(room.clone())),
        ));
    }

    fn unsubscribe(&self, room: &RoomName) {
        let _ = self.sub_tx.send(SubCommand::Unsubscribe(
            self.channel(&Topic::Room(room.clone())),
        ));
    }

    fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }

    /// Waits until every accepted message is written to Redis, then sends a
    /// marker on this node's own channel through shard 0's publisher and
    /// waits for it to come back: Redis delivers to one subscriber in the
    /// order it executed the publishes, so everything published before the
    /// marker has then reached the local fan-out. (On a cluster, channels on
    /// other shards are not ordered with the marker: there it is best effort.)
    fn flush(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            while self.shared.pending.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            if !self.is_ready() {
                return;
            }
            let seq = self.marker_sent.fetch_add(1, Ordering::AcqRel) + 1;
            let marker = Outbound {
                channel: self.shared.marker_channel.clone(),
                payload: Bytes::from(seq.to_string()),
                origin: None,
                fallback: None,
            };
            self.shared.pending.fetch_add(1, Ordering::AcqRel);
            if self.publish_tx[0].try_send(marker).is_err() {
                self.shared.pending.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            loop {
                let arrived = self.shared.marker_arrived.notified();
                if self.shared.marker_seen.load(Ordering::Acquire) >= seq {
                    return;
                }
                arrived.await;
            }
        })
    }

    fn start_shard(&self, shard: usize) {
        if let Some(rx) = self.publish_rx.lock().get_mut(shard).and_then(Option::take) {
            tokio::task::spawn_local(publisher(self.shared.clone(), rx));
        }
        if shard == 0 {
            if let Some(rx) = self.sub_rx.lock().take() {
                let always = vec![
                    self.channel(&Topic::Global),
                    self.channel(&Topic::Relay),
                    self.shared.marker_channel.clone(),
                    self.shared.nodes_channel.clone(),
                ];
                tokio::task::spawn_local(subscriber(self.shared.clone(), rx, always));
            }
        }
    }
}

/// A connection to a single Redis or to a cluster.
enum Bus {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Bus {
    /// Connects, retrying with exponential backoff until it succeeds.
    async fn connect(shared: &Arc<Shared>, push: bool) -> Bus {
        let mut delay = Duration::from_millis(50);
        loop {
            match Bus::try_connect(shared, push).await {
                Ok(bus) => return bus,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot connect to redis");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn try_connect(shared: &Arc<Shared>, push: bool) -> RedisResult<Bus> {
        let cfg = &shared.config;
        let timeout = Some(cfg.connect_timeout);
        if cfg.is_cluster() {
            let mut builder = redis::cluster::ClusterClient::builder(cfg.seeds())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .connection_timeout(cfg.connect_timeout)
                .response_timeout(cfg.connect_timeout);
            if push {
                builder = builder.push_sender(push_handler(shared.clone()));
            }
            let builder = crate::tls::redis_cluster(builder, &cfg.ca_file)?;
            return Ok(Bus::Cluster(builder.build()?.get_async_connection().await?));
        }
        let client = crate::tls::redis_client(&with_resp3(&cfg.url), &cfg.ca_file)?;
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(timeout)
            .set_response_timeout(timeout)
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        if push {
            // Our own health check resubscribes after an outage it sees; the
            // library's covers a reconnect quicker than one check interval.
            config = config
                .set_push_sender(push_handler(shared.clone()))
                .set_automatic_resubscription();
        }
        Ok(Bus::Single(
            client.get_connection_manager_with_config(config).await?,
        ))
    }

    async fn subscribe(&mut self, channel: &[u8]) -> RedisResult<()> {
        match self {
            Bus::Single(c) => c.subscribe(channel).await,
            Bus::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &[u8]) -> RedisResult<()> {
        match self {
            Bus::Single(c) => c.unsubscribe(channel).await,
            Bus::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    async fn ping(&mut self) -> RedisResult<()> {
        let cmd = redis::cmd("PING");
        match self {
            Bus::Single(c) => cmd.query_async(c).await,
            Bus::Cluster(c) => cmd.query_async(c).await,
        }
    }

    /// Sends a batch in order: one pipeline on a single Redis; on a cluster
    /// (where a pipeline must stay within one slot) concurrent commands,
    /// issued in order on the cluster connection.
    async fn publish(&mut self, batch: &[Outbound]) -> RedisResult<()> {
        match self {
            Bus::Single(c) => {
                let mut pipe = redis::pipe();
                for o in batch {
                    pipe.cmd("PUBLISH")
                        .arg(&o.channel[..])
                        .arg(&o.payload[..])
                        .ignore();
                }
                pipe.query_async(c).await
            }
            Bus::Cluster(c) => {
                let sends = batch.iter().map(|o| {
                    let mut c = c.clone();
                    let cmd = redis::cmd("SPUBLISH")
                        .arg(&o.channel[..])
                        .arg(&o.payload[..])
                        .to_owned();
                    async move { cmd.query_async::<i64>(&mut c).await }
                });
                // join_all polls (and so issues) the commands in order.
                for result in futures_util::future::join_all(sends).await {
                    result?;
                }
                Ok(())
            }
        }
    }
}

const TAG_EVENT: u8 = b'E';
const TAG_FRAME: u8 = b'F';
/// An event published again after the bus did not carry it: the tag, the
/// publishing node's id (16 bytes), the event.
const TAG_REPUBLISHED: u8 = b'R';

fn bus_payload(payload: &Payload) -> Bytes {
    match payload {
        Payload::Event(event) => {
            let mut out = Vec::with_capacity(64 + event.body.len());
            out.push(TAG_EVENT);
            event.encode(&mut out);
            out.into()
        }
        Payload::Frame(frame) => {
            let mut out = Vec::with_capacity(1 + frame.len());
            out.push(TAG_FRAME);
            out.extend_from_slice(frame);
            out.into()
        }
    }
}

fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

/// Turns a pushed pub/sub message into a local delivery.
fn push_handler(
    shared: Arc<Shared>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync {
    move |info: PushInfo| {
        if info.kind == PushKind::Disconnection {
            // The library reconnects and resubscribes by itself, maybe
            // between two health checks: the check then treats it as a
            // blip (resubscribe, announce the return, catch up).
            shared.publish_lost.store(true, Ordering::Release);
        }
        if matches!(info.kind, PushKind::Message | PushKind::SMessage) {
            if let [Value::BulkString(channel), Value::BulkString(payload)] = &info.data[..] {
                shared.on_message(channel, payload);
            }
        }
        Ok(())
    }
}

impl Shared {
    /// `out`, if a stored message (its `fallback`), was not carried by the
    /// bus: straight to this node's fan-out (through the reorder stage, when
    /// there is one, which also drops it should the bus deliver it after
    /// all), and kept to be published for the other nodes once the bus is
    /// back: its bus payload, retagged with this node's id.
    fn fall_back(&self, out: Outbound) {
        let Some((topic, payload)) = out.fallback else {
            return;
        };
        self.metrics.local_fallbacks.inc();
        if let Some((&TAG_EVENT, event)) = out.payload.split_first() {
            let mut unsent = self.unsent.lock();
            if unsent.len() < self.config.max_pending {
                let mut again = Vec::with_capacity(1 + self.node.len() + event.len());
                again.push(TAG_REPUBLISHED);
                again.extend_from_slice(&self.node);
                again.extend_from_slice(event);
                unsent.push_back((out.channel, again.into()));
            }
        }
        self.delivery.deliver(&topic, payload);
    }

    fn on_message(&self, channel: &[u8], payload: &[u8]) {
        if channel == &self.nodes_channel[..] {
            if payload != self.node {
                self.peer_back.store(true, Ordering::Release);
            }
            return;
        }
        if channel == &self.marker_channel[..] {
            let seq = std::str::from_utf8(payload)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            self.marker_seen.fetch_max(seq, Ordering::AcqRel);
            self.marker_arrived.notify_waiters();
            return;
        }
        let Some(name) = channel.strip_prefix(self.config.channel_prefix.as_bytes()) else {
            return;
        };
        let topic = match name {
            b"global" => Topic::Global,
            b"relay" => Topic::Relay,
            room => {
                let Some(room) = room
                    .strip_prefix(b"room:")
                    .and_then(|r| std::str::from_utf8(r).ok())
                else {
                    return;
                };
                match RoomName::parse(room, self.max_name) {
                    Ok(room) => Topic::Room(room),
                    Err(_) => return,
                }
            }
        };
        let event = |data: &[u8]| match Event::decode(data, self.max_name) {
            Ok(event) if event.topic == topic => Some(Payload::Event(Arc::new(event))),
            _ => None,
        };
        let payload = match payload.split_first() {
            Some((&TAG_EVENT, data)) => match event(data) {
                Some(payload) => payload,
                None => return,
            },
            // Published again by the node that stored it: its own members
            // have it already.
            Some((&TAG_REPUBLISHED, data)) => match data.split_at_checked(self.node.len()) {
                Some((node, _)) if node == self.node => return,
                Some((_, data)) => match event(data) {
                    Some(Payload::Event(event)) if self.heard_again.lock().insert(event.id) => {
                        Payload::Event(event)
                    }
                    _ => return,
                },
                None => return,
            },
            Some((&TAG_FRAME, frame)) => Payload::Frame(Bytes::copy_from_slice(frame)),
            _ => return,
        };
        self.delivery.deliver(&topic, payload);
    }
}

/// One shard's publisher: everything queued since the last write goes out as
/// one pipelined batch.
async fn publisher(shared: Arc<Shared>, mut rx: mpsc::Receiver<Outbound>) {
    let mut bus = Bus::connect(&shared, false).await;
    let max_batch = shared.config.max_batch;
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let n = batch.len() as u64;
        let sent = if shared.ready.load(Ordering::Acquire) {
            // The first write after an outage finds the old socket broken
            // (the connection reconnects on that error): try once more
            // before giving up.
            let mut sent = bus.publish(&batch).await;
            if let Err(e) = &sent {
                tracing::debug!(error = %e, "publish failed; retrying once");
                sent = bus.publish(&batch).await;
            }
            sent
        } else {
            // The bus is down: no attempt (only stored messages are queued
            // meanwhile, and they go to this node's members now, in order).
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "the bus is down",
            )))
        };
        match sent {
            Ok(()) => {
                shared.metrics.publishes.inc_by(n);
                shared.metrics.batch_size.observe(n as f64);
            }
            Err(e) => {
                shared.metrics.publish_errors.inc_by(n);
                if shared.ready.swap(false, Ordering::AcqRel) {
                    shared.publish_lost.store(true, Ordering::Release);
                    tracing::warn!(error = %e, messages = n, "publish to redis failed; senders told");
                }
                // Accepted, then lost: each sender gets MESSAGE_FAILED, and
                // each stored message reaches this node's members directly.
                for mut out in batch.drain(..) {
                    if let Some(origin) = out.origin.take() {
                        shared.delivery.failed(origin);
                    }
                    shared.fall_back(out);
                }
            }
        }
        shared.pending.fetch_sub(n as usize, Ordering::AcqRel);
        batch.clear();
    }
}

/// The node's subscriptions: applies subscribe/unsubscribe requests in order,
/// checks the bus every `health_interval`, and after an outage subscribes
/// every wanted channel again before declaring the bus ready.
async fn subscriber(
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<SubCommand>,
    always: Vec<Bytes>,
) {
    let mut wanted: BTreeSet<Bytes> = always.into_iter().collect();
    let mut bus = Bus::connect(&shared, true).await;
    let mut healthy = false;
    let mut ever_ready = false;
    let mut tick = tokio::time::interval(shared.config.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                let result = match command {
                    SubCommand::Subscribe(ch) => {
                        let r = if healthy { bus.subscribe(&ch).await } else { Ok(()) };
                        wanted.insert(ch);
                        r
                    }
                    SubCommand::Unsubscribe(ch) => {
                        wanted.remove(&ch);
                        if healthy { bus.unsubscribe(&ch).await } else { Ok(()) }
                    }
                };
                shared.metrics.subscribed_channels.set(wanted.len() as i64);
                if let Err(e) = result {
                    tracing::warn!(error = %e, "redis subscription change failed");
                    healthy = false;
                }
            }
            _ = tick.tick() => {
                let lost = shared.publish_lost.swap(false, Ordering::AcqRel);
                if bus.ping().await.is_err() {
                    healthy = false;
                } else if !healthy {
                    healthy = resubscribe(&mut bus, &wanted).await;
                    if healthy {
                        if ever_ready {
                            healthy = announce_return(&shared, &mut bus).await;
                            shared.metrics.reconnects.inc();
                            tracing::info!(channels = wanted.len(), "redis reconnected; subscriptions restored");
                            // Subscribed again: what other nodes stored
                            // meanwhile is read from the shared store.
                            shared.metrics.resyncs.inc();
                            shared.delivery.resync();
                        }
                        ever_ready = true;
                    }
                } else if lost {
                    // A blip the checks did not see: resubscribe (the old
                    // connection's subscriptions may be gone) and catch up.
                    healthy = resubscribe(&mut bus, &wanted).await
                        && announce_return(&shared, &mut bus).await;
                    shared.metrics.resyncs.inc();
                    shared.delivery.resync();
                }
                if healthy && shared.peer_back.swap(false, Ordering::AcqRel) {
                    shared.send_again();
                }
                if healthy {
                    healthy = republish(&shared, &mut bus).await;
                }
            }
        }
        if !healthy && shared.ready.swap(false, Ordering::AcqRel) {
            tracing::warn!("redis unreachable; publishes fail until it is back");
        }
        if healthy {
            shared.ready.store(true, Ordering::Release);
        }
    }
}

/// Tells the other nodes this one is subscribed again: each publishes what
/// it published again meanwhile once more (this node may have missed it).
async fn announce_return(shared: &Shared, bus: &mut Bus) -> bool {
    let hello = Outbound {
        channel: shared.nodes_channel.clone(),
        payload: Bytes::copy_from_slice(&shared.node),
        origin: None,
        fallback: None,
    };
    match bus.publish(std::slice::from_ref(&hello)).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "announcing the reconnect failed");
            false
        }
    }
}

impl Shared {
    /// Queues what was published again within `republish_window` to be
    /// published once more, ahead of what is still unsent (it is older).
    fn send_again(&self) {
        let window = self.config.republish_window;
        let mut republished = self.republished.lock();
        while republished
            .front()
            .is_some_and(|(at, _, _)| at.elapsed() > window)
        {
            republished.pop_front();
        }
        let mut unsent = self.unsent.lock();
        for (_, channel, payload) in republished.drain(..).rev() {
            unsent.push_front((channel, payload));
        }
    }
}

/// Publishes what the bus did not carry (`Shared::unsent`), oldest first, in
/// batches; false (the rest kept, in order) if the bus fails again. What it
/// publishes is kept in `Shared::republished` for nodes that come back later.
async fn republish(shared: &Shared, bus: &mut Bus) -> bool {
    loop {
        let batch: Vec<Outbound> = {
            let mut unsent = shared.unsent.lock();
            let n = unsent.len().min(shared.config.max_batch);
            unsent
                .drain(..n)
                .map(|(channel, payload)| Outbound {
                    channel,
                    payload,
                    origin: None,
                    fallback: None,
                })
                .collect()
        };
        if batch.is_empty() {
            return true;
        }
        if let Err(e) = bus.publish(&batch).await {
            tracing::warn!(error = %e, "publishing what the bus missed failed; retrying");
            let mut unsent = shared.unsent.lock();
            for out in batch.into_iter().rev() {
                unsent.push_front((out.channel, out.payload));
            }
            return false;
        }
        shared.metrics.publishes.inc_by(batch.len() as u64);
        let now = Instant::now();
        let mut republished = shared.republished.lock();
        for out in batch {
            if republished.len() >= shared.config.max_pending {
                republished.pop_front();
            }
            republished.push_back((now, out.channel, out.payload));
        }
    }
}

async fn resubscribe(bus: &mut Bus, wanted: &BTreeSet<Bytes>) -> bool {
    for ch in wanted {
        if let Err(e) = bus.subscribe(ch).await {
            tracing::warn!(error = %e, "redis resubscribe failed");
            return false;
        }
    }
    true
}
