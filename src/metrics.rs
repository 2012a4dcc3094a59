//! Prometheus metrics, registered once at start and shared by every shard.
//!
//! Hot-path handles (counters with fixed label values) are resolved once here
//! so that recording is one atomic add, never a label lookup.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::fmt::Write;

/// Why a connection ended (the `reason` label of disconnections).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DisconnectReason {
    /// The client sent Close or hung up.
    ClientClose,
    /// No inbound frame within the idle timeout.
    Timeout,
    /// Send queue overflowed.
    SlowConsumer,
    /// Protocol violation, oversize message, or an I/O error.
    Error,
    /// Server shutdown.
    Shutdown,
}

impl DisconnectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisconnectReason::ClientClose => "client_close",
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
    pub slow_consumer_closes: Counter,
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
            "Connections closed because their send queue was full",
            slow_consumer_closes.clone(),
        );
        let dir = |f: &Family<DirectionLabel, Counter>, d| {
            f.get_or_create(&DirectionLabel { direction: d }).clone()
        };
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
        }
    }

    pub fn disconnected(&self, reason: DisconnectReason) {
        self.connected.dec();
        self.disconnections
            .get_or_create(&ReasonLabel { reason })
            .inc();
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
