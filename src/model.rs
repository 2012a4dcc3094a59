//! What the layers below the connection share about a message's route:
//! where it goes ([`Topic`]), who sent it ([`Origin`]), and the local side of
//! the bus ([`Delivery`]). Kept below `broker` and `rooms` so that neither
//! has to import the other.

use bytes::Bytes;

use crate::protocol::RoomName;

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// The members of one room.
    Room(RoomName),
    /// Every native connection (a chat without a room from a room-less client).
    Global,
    /// Every `/relay` connection.
    Relay,
}

/// Who published a message, so that a publish that fails after it was
/// accepted can still be reported to its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The sender's shard.
    pub shard: usize,
    /// The sender's connection (`rooms::ConnId`'s value).
    pub conn: u64,
    /// The client's id for the message, echoed in the failure.
    pub client_msg_id: Option<RoomName>,
}

/// The local side of the bus: receives framed messages for this node.
pub trait Delivery: Send + Sync + 'static {
    /// `frame` is a complete WebSocket frame, identical for every recipient.
    fn deliver(&self, topic: &Topic, frame: Bytes);

    /// A message accepted from `origin` was finally not published (the bus
    /// failed after `publish` returned Ok): tell its sender.
    fn failed(&self, origin: Origin);
}
