//! The in-process broker: a single node is its own bus.

use std::sync::Arc;

use super::{Broker, Delivery, PublishError, Topic};
use crate::metrics::BrokerMetrics;
use crate::protocol::RoomName;
use crate::ws::{OpCode, Outgoing};

/// Frames each message once and hands it straight to the local fan-out.
pub struct MemoryBroker {
    delivery: Arc<dyn Delivery>,
    metrics: BrokerMetrics,
}

impl MemoryBroker {
    pub fn new(delivery: Arc<dyn Delivery>, metrics: BrokerMetrics) -> MemoryBroker {
        MemoryBroker { delivery, metrics }
    }
}

impl Broker for MemoryBroker {
    fn publish(
        &self,
        _shard: usize,
        topic: &Topic,
        msg: Outgoing,
        opcode: OpCode,
    ) -> Result<(), PublishError> {
        self.metrics.publishes.inc();
        self.delivery.deliver(topic, msg.into_frame(opcode));
        Ok(())
    }

    fn subscribe(&self, _room: &RoomName) {}

    fn unsubscribe(&self, _room: &RoomName) {}

    fn is_ready(&self) -> bool {
        true
    }
}
