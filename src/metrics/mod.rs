//! Prometheus metrics, registered once at start and shared by every shard.
//!
//! Hot-path handles (counters with fixed label values) are resolved once here
//! so that recording is one atomic add, never a label lookup.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

mod process;
mod sharded;
pub use sharded::{LocalHistogram, ShardedHistogram};
use std::fmt::Write;

/// Why a connection ended (the `reason` label of disconnections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client sent Close or hung up.
    ClientClose,
    /// No inbound frame within the idle timeout.
    Timeout,
    /// Closed as a slow consumer (see `queue`).
    SlowConsumer,
    /// Protocol violation, oversize message, or an I/O error.
    Error,
    /// Server shutdown.
    Shutdown,
    /// The user's tokens were revoked (a password change).
    SignedOut,
}

impl DisconnectReason {
    pub const ALL: [DisconnectReason; 6] = [
        DisconnectReason::ClientClose,
        DisconnectReason::Timeout,
        DisconnectReason::SlowConsumer,
        DisconnectReason::Error,
        DisconnectReason::Shutdown,
        DisconnectReason::SignedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientClose => "client_close",
            DisconnectReason::SignedOut => "signed_out",
            DisconnectReason::Timeout => "timeout",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::Error => "error",
            DisconnectReason::Shutdown => "shutdown",
        }
    }
}

impl EncodeLabelValue for DisconnectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Why a connection was refused before its upgrade (the `reason` label of
/// `chatd_rejected_connections_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// `server.max_connections` reached (503).
    MaxConnections,
    /// `server.max_handshakes` connections were already in their handshake.
    HandshakeLimit,
    /// Its address had `server.max_connections_per_ip` connections not yet
    /// upgraded.
    PerAddressLimit,
    /// An HTTP request in progress moved less than
    /// `server.min_transfer_rate` over `server.transfer_timeout`.
    TooSlow,
    /// The request head or upgrade did not complete within
    /// `server.handshake_timeout`, or a keep-alive connection sat idle.
    HandshakeTimeout,
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            RejectReason::MaxConnections => "max_connections",
            RejectReason::HandshakeLimit => "handshake_limit",
            RejectReason::PerAddressLimit => "per_address_limit",
            RejectReason::TooSlow => "too_slow",
            RejectReason::HandshakeTimeout => "handshake_timeout",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabel {
    reason: RejectReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    In,
    Out,
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Direction::In => "in",
            Direction::Out => "out",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: DisconnectReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabel {
    direction: Direction,
}

pub struct Metrics {
    registry: Registry,
    pub connected: Gauge,
    pub connections_total: Counter,
    disconnections: Family<ReasonLabel, Counter>,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub rooms: Gauge,
    /// Counted where the disconnection is (one event, one count): equals
    /// `websocket_disconnections_total{reason="slow_consumer"}`.
    pub slow_consumer_closes: Counter,
    /// Presence changes over `limits.presence_per_second` (a storm),
    /// announced in their room's summary instead of one by one.
    pub presence_coalesced: Counter,
    /// Presence summaries published.
    pub presence_summaries: Counter,
    /// Times a reader stopped reading its socket because the fan-out was
    /// behind or its own replies were piling up (backpressure).
    pub reader_pauses: Counter,
    /// Failed `accept` calls (typically EMFILE: out of file descriptors).
    pub accept_errors: Counter,
    /// Messages in shard inboxes (published, not yet fanned out), as of the
    /// last dispatch.
    pub inbox_backlog: Gauge,
    rejected: Family<RejectLabel, Counter>,
    /// One recipient's queue depth per fan-out per shard.
    pub queue_depth: Histogram,
    /// Arrival at this node to the write on a recipient's socket, per write.
    pub fanout_latency: ShardedHistogram,
    pub broker: BrokerMetrics,
    pub store: StoreMetrics,
    pub files: FileMetrics,
    pub auth: AuthMetrics,
}

/// Logins and new accounts (`accounts`).
#[derive(Clone, Default)]
pub struct AuthMetrics {
    /// Logins and new accounts refused by `auth.throttle` (429).
    pub throttled: Counter,
    /// Password hashes refused because `auth.argon2.max_waiting` were
    /// waiting already (503).
    pub hash_queue_full: Counter,
    /// Reads of the whole user list (`GET users`, the demo's user list and
    /// public-channel joins): it grows with the users, so nothing on a
    /// chat's path may read it.
    pub user_lists: Counter,
}

/// What the store thread records.
#[derive(Clone)]
pub struct StoreMetrics {
    /// Chats written (one per stored message; retries not counted).
    pub stored: Counter,
    /// Chats refused or lost by the store (the sender got MESSAGE_FAILED).
    pub errors: Counter,
    /// Chats per transaction (group commit).
    pub batch_size: Histogram,
    /// Seconds per transaction, commit (fsync) included.
    pub commit_seconds: Histogram,
    /// Several nodes: gaps in a room's `seq` that did not close by
    /// themselves within `store.reorder_timeout` and were read from the store.
    pub reorder_fills: Counter,
    /// Several nodes: numbers the store no longer had when a gap was filled
    /// (deleted by retention), skipped so delivery goes on.
    pub reorder_skipped: Counter,
    /// Times the database answered again after it was lost.
    pub reconnects: Counter,
}

/// Uploads (`files`).
#[derive(Clone, Default)]
pub struct FileMetrics {
    /// Files stored.
    pub uploaded: Counter,
    /// Bytes of the files stored.
    pub uploaded_bytes: Counter,
    /// Uploads refused: over `files.max_size`, empty, or cut off by the client.
    pub refused: Counter,
    /// Uploads lost to a storage failure (object store or metadata).
    pub failed: Counter,
    /// Thumbnails made.
    pub thumbnails: Counter,
    /// Images not decoded: their pixels would take more than
    /// `files.max_image_decode_bytes`.
    pub not_decoded: Counter,
}

/// What every broker backend records.
#[derive(Clone)]
pub struct BrokerMetrics {
    pub publishes: Counter,
    pub publish_errors: Counter,
    /// Messages per pipelined write to the bus.
    pub batch_size: Histogram,
    pub reconnects: Counter,
    pub subscribed_channels: Gauge,
    /// Stored messages the bus did not carry, delivered to this node's
    /// members directly.
    pub local_fallbacks: Counter,
    /// Catch-ups from the shared store after the bus came back.
    pub resyncs: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let connected = Gauge::default();
        registry.register(
            "websocket_connected_clients",
            "Currently connected WebSocket clients",
            connected.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "websocket_connections",
            "WebSocket connections established",
            connections_total.clone(),
        );
        let disconnections = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "websocket_disconnections",
            "WebSocket disconnections by reason",
            disconnections.clone(),
        );
        let messages = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "websocket_messages",
            "WebSocket messages received (in) and delivered (out)",
            messages.clone(),
        );
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "websocket_bytes",
            "WebSocket bytes received (in) and queued for clients (out)",
            bytes.clone(),
        );
        let rooms = Gauge::default();
        registry.register(
            "chatd_rooms",
            "Rooms with at least one member on this node",
            rooms.clone(),
        );
        let slow_consumer_closes = Counter::default();
        registry.register(
            "chatd_slow_consumer_closes",
            "Connections closed as slow consumers (send queue over its byte bound, or over its message bound for longer than limits.slow_consumer_timeout)",
            slow_consumer_closes.clone(),
        );
        let presence_coalesced = Counter::default();
        registry.register(
            "chatd_presence_coalesced",
            "Presence changes over limits.presence_per_second, announced in their room's per-second summary instead of one by one",
            presence_coalesced.clone(),
        );
        let presence_summaries = Counter::default();
        registry.register(
            "chatd_presence_summaries",
            "Presence summaries (several clients' changes in one event) published",
            presence_summaries.clone(),
        );
        let reader_pauses = Counter::default();
        registry.register(
            "chatd_reader_pauses",
            "Times a connection's reader waited for the fan-out or its own writer (backpressure)",
            reader_pauses.clone(),
        );
        let accept_errors = Counter::default();
        registry.register(
            "chatd_accept_errors",
            "Failed accept calls (e.g. out of file descriptors)",
            accept_errors.clone(),
        );
        let inbox_backlog = Gauge::default();
        registry.register(
            "chatd_inbox_backlog",
            "Messages published and not yet fanned out, node-wide (readers pause above limits.inbox_high_water)",
            inbox_backlog.clone(),
        );
        let rejected = Family::<RejectLabel, Counter>::default();
        registry.register(
            "chatd_rejected_connections",
            "Connections refused or dropped before the WebSocket upgrade",
            rejected.clone(),
        );
        for reason in [
            RejectReason::MaxConnections,
            RejectReason::HandshakeLimit,
            RejectReason::HandshakeTimeout,
        ] {
            drop(rejected.get_or_create(&RejectLabel { reason }));
        }
        // 1, 2, 4 ... 1024 frames.
        let queue_depth = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "chatd_send_queue_depth",
            "Send queue depth after a fan-out push (one recipient sampled per fan-out per shard)",
            queue_depth.clone(),
        );
        // 10 us ... ~1.3 s, doubling: fine enough below a millisecond.
        let fanout_latency = ShardedHistogram::doubling(0.000_01, 18);
        registry.register(
            "chatd_fanout_latency_seconds",
            "From a message's arrival at this node to its write to a recipient's socket (oldest frame of each write)",
            fanout_latency.clone(),
        );
        let store = StoreMetrics {
            stored: Counter::default(),
            errors: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            // 50 µs ... ~1.6 s, doubling.
            commit_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            reorder_fills: Counter::default(),
            reorder_skipped: Counter::default(),
            reconnects: Counter::default(),
        };
        registry.register(
            "chatd_store_messages",
            "Chats stored (durable history)",
            store.stored.clone(),
        );
        registry.register(
            "chatd_store_errors",
            "Chats the store refused or failed to write (the sender got MESSAGE_FAILED)",
            store.errors.clone(),
        );
        registry.register(
            "chatd_store_batch_size",
            "Chats per store transaction (group commit)",
            store.batch_size.clone(),
        );
        registry.register(
            "chatd_store_commit_seconds",
            "Time per store transaction, commit included",
            store.commit_seconds.clone(),
        );
        registry.register(
            "chatd_store_reorder_fills",
            "Gaps in a room's seq read from the store after store.reorder_timeout (several nodes)",
            store.reorder_fills.clone(),
        );
        registry.register(
            "chatd_store_reorder_skipped",
            "Missing seq numbers the store no longer had, skipped (several nodes)",
            store.reorder_skipped.clone(),
        );
        registry.register(
            "chatd_store_reconnects",
            "Times the store's database answered again after it was lost",
            store.reconnects.clone(),
        );
        let files = FileMetrics::default();
        for (name, help, counter) in [
            ("chatd_files_uploaded", "Files stored", &files.uploaded),
            (
                "chatd_files_uploaded_bytes",
                "Bytes of the files stored",
                &files.uploaded_bytes,
            ),
            (
                "chatd_files_refused",
                "Uploads refused (over files.max_size, empty, or cut off by the client)",
                &files.refused,
            ),
            (
                "chatd_files_failed",
                "Uploads lost to a storage failure",
                &files.failed,
            ),
            (
                "chatd_files_thumbnails",
                "Image thumbnails made",
                &files.thumbnails,
            ),
            (
                "chatd_files_images_not_decoded",
                "Images stored undecoded: their pixels would take more than files.max_image_decode_bytes",
                &files.not_decoded,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        let auth = AuthMetrics::default();
        registry.register(
            "chatd_auth_throttled",
            "Logins and new accounts refused by auth.throttle (429)",
            auth.throttled.clone(),
        );
        registry.register(
            "chatd_auth_hash_queue_full",
            "Password hashes refused with auth.argon2.max_waiting already waiting (503)",
            auth.hash_queue_full.clone(),
        );
        registry.register(
            "chatd_accounts_user_lists",
            "Reads of the whole user list (never on a chat's path)",
            auth.user_lists.clone(),
        );
        let broker = BrokerMetrics {
            publishes: Counter::default(),
            publish_errors: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            reconnects: Counter::default(),
            subscribed_channels: Gauge::default(),
            local_fallbacks: Counter::default(),
            resyncs: Counter::default(),
        };
        registry.register(
            "chatd_broker_publishes",
            "Messages published to the broker",
            broker.publishes.clone(),
        );
        registry.register(
            "chatd_broker_publish_errors",
            "Publishes refused or failed (the sender got MESSAGE_FAILED)",
            broker.publish_errors.clone(),
        );
        registry.register(
            "chatd_broker_publish_batch_size",
            "Messages per pipelined write to the message bus",
            broker.batch_size.clone(),
        );
        registry.register(
            "chatd_broker_reconnects",
            "Reconnections to the message bus",
            broker.reconnects.clone(),
        );
        registry.register(
            "chatd_broker_local_fallbacks",
            "Stored messages the bus did not carry, delivered to this node's members directly",
            broker.local_fallbacks.clone(),
        );
        registry.register(
            "chatd_broker_resyncs",
            "Catch-ups of this node's rooms from the shared store after a bus outage",
            broker.resyncs.clone(),
        );
        registry.register(
            "chatd_broker_subscribed_channels",
            "Bus channels this node is subscribed to",
            broker.subscribed_channels.clone(),
        );
        registry.register(
            "chatd_build",
            "Build information",
            Info::new(vec![
                ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                ("git_sha".to_string(), env!("BUILD_GIT_SHA").to_string()),
            ]),
        );
        registry.register_collector(Box::new(process::ProcessCollector));

        let dir = |f: &Family<DirectionLabel, Counter>, d| {
            f.get_or_create(&DirectionLabel { direction: d }).clone()
        };
        // Every reason shows from the first scrape, at 0.
        for reason in DisconnectReason::ALL {
            drop(disconnections.get_or_create(&ReasonLabel { reason }));
        }
        Metrics {
            messages_in: dir(&messages, Direction::In),
            messages_out: dir(&messages, Direction::Out),
            bytes_in: dir(&bytes, Direction::In),
            bytes_out: dir(&bytes, Direction::Out),
            registry,
            connected,
            connections_total,
            disconnections,
            rooms,
            slow_consumer_closes,
            presence_coalesced,
            presence_summaries,
            reader_pauses,
            accept_errors,
            inbox_backlog,
            rejected,
            queue_depth,
            fanout_latency,
            broker,
            store,
            files,
            auth,
        }
    }

    pub fn disconnected(&self, reason: DisconnectReason) {
        self.connected.dec();
        if reason == DisconnectReason::SlowConsumer {
            self.slow_consumer_closes.inc();
        }
        self.disconnections
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabel { reason }).inc();
    }

    /// Rejections so far for one reason.
    pub fn rejections(&self, reason: RejectReason) -> u64 {
        self.rejected.get_or_create(&RejectLabel { reason }).get()
    }

    /// Disconnections so far for one reason.
    pub fn disconnections(&self, reason: DisconnectReason) -> u64 {
        self.disconnections
            .get_or_create(&ReasonLabel { reason })
            .get()
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}
