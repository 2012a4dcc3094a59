//! The bus between nodes, behind one narrow trait.
//!
//! A connection publishes through [`Broker`]; the broker hands every message
//! that reaches this node (its own included) to a [`Delivery`], the local
//! fan-out. The broker never imports the fan-out: it is given the handler at
//! start, so backends sit side by side (`memory.rs` is the single-node
//! default; a Redis backend slots in beside it).

pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;

pub use crate::model::{Delivery, Origin, Payload, Topic};
use crate::protocol::RoomName;

pub use memory::MemoryBroker;
pub use redis::RedisBroker;

/// One message to publish.
pub struct Publish<'a> {
    pub topic: &'a Topic,
    pub payload: Payload,
    /// Whom to tell if the message is lost after it was accepted.
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the message bus is not connected")]
    Disconnected,
    #[error("too many messages waiting for the message bus")]
    Backlog,
    #[error("the message bus is shutting down")]
    Closed,
}

/// Publishes messages to every node, this one included.
pub trait Broker: Send + Sync + 'static {
    /// Publishes one encoded message from a connection on `shard`. Never
    /// waits on the network: a backend that cannot take the message now
    /// returns an error at once; one that fails later reports it to
    /// [`Delivery::failed`] with `origin`, when given.
    fn publish(&self, shard: usize, msg: Publish) -> Result<(), PublishError>;

    /// Publishes a message that is stored and acked already (the store
    /// calls it after each commit). Unlike [`Broker::publish`], a message
    /// the bus cannot take, or loses after taking it, is still delivered to
    /// this node's own members (they do not need the bus to hear their own
    /// node), and published again once the bus is back; other nodes get it
    /// from that, or from the shared store's catch-up if it comes first
    /// ([`Delivery::resync`], and the reorder stage's gap fill). The error
    /// says why the bus did not take it (for the log).
    fn publish_stored(
        &self,
        shard: usize,
        topic: &Topic,
        payload: Payload,
    ) -> Result<(), PublishError> {
        let publish = Publish {
            topic,
            payload,
            origin: None,
        };
        self.publish(shard, publish)
    }

    /// This node now has a member in `room` (called once per node, not per
    /// connection: the fan-out reference-counts members).
    fn subscribe(&self, room: &RoomName);

    /// The node's last member left `room`.
    fn unsubscribe(&self, room: &RoomName);

    /// Whether publishes can currently succeed (for `/readyz`).
    fn is_ready(&self) -> bool;

    /// Called once on each shard's thread at start, inside its runtime, so a
    /// backend can run per-shard tasks there (e.g. a publisher per shard).
    fn start_shard(&self, _shard: usize) {}

    /// Resolves once every message accepted so far has reached this node's
    /// fan-out (called at shutdown, after readers stopped, before the shards
    /// drain). The in-process broker delivers synchronously: nothing to wait.
    fn flush(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }
}
