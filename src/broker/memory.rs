//! The in-process broker: a single node is its own bus.

use std::sync::Arc;

use super::{Broker, Delivery, PublishError, Topic};
use crate::protocol::RoomName;
use crate::ws::{OpCode, Outgoing};

/// Frames each message once and hands it straight to the local fan-out.
pub struct MemoryBroker {
    delivery: Arc<dyn Delivery>,
}

impl MemoryBroker {
    pub fn new(delivery: Arc<dyn Delivery>) -> MemoryBroker {
        MemoryBroker { delivery }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, topic: &Topic, msg: Outgoing, opcode: OpCode) -> Result<(), PublishError> {
        self.delivery.deliver(topic, msg.into_frame(opcode));
        Ok(())
    }

    fn subscribe(&self, _room: &RoomName) {}

    fn unsubscribe(&self, _room: &RoomName) {}

    fn is_ready(&self) -> bool {
        true
    }
}
