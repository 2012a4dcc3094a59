//! The in-process broker: a single node is its own bus.

use std::sync::Arc;

use super::{Broker, Delivery, Publish, PublishError};
use crate::metrics::BrokerMetrics;
use crate::protocol::RoomName;

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
    fn publish(&self, _shard: usize, p: Publish) -> Result<(), PublishError> {
        self.metrics.publishes.inc();
        self.delivery.deliver(p.topic, p.payload);
        Ok(())
    }

    fn subscribe(&self, _room: &RoomName) {}

    fn unsubscribe(&self, _room: &RoomName) {}

    fn is_ready(&self) -> bool {
        true
    }
}
