//! What the layers below the connection share about a message: the
//! protocol-neutral [`Event`], where it goes ([`Topic`]), who sent it
//! ([`Origin`]), what the bus carries ([`Payload`]) and the bus's local side
//! ([`Delivery`]). Kept below `broker` and `rooms` so that neither has to
//! import the other.

pub mod event;

use bytes::Bytes;
use std::sync::Arc;

use crate::protocol::RoomName;

pub use event::{Event, EventKind};

/// What the bus carries.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A chat-level event; each node frames it once per wire protocol.
    Event(Arc<Event>),
    /// A finished server frame passed on verbatim (`/relay`). Server frames
    /// are unmasked, so one node's frame is valid on every node's sockets.
    Frame(Bytes),
}

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

impl Origin {
    /// A message the server makes itself (a notification, a server-side
    /// publish): nobody to ack or to tell of a failure. (No shard has this
    /// index, so acks and failures addressed to it are dropped.)
    pub fn server(client_msg_id: Option<RoomName>) -> Origin {
        Origin {
            shard: usize::MAX,
            conn: 0,
            client_msg_id,
        }
    }
}

/// A stored message's acknowledgement, for its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub origin: Origin,
    pub room: RoomName,
    pub id: uuid::Uuid,
    pub seq: u64,
}

/// A joining member's catch-up from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub shard: usize,
    pub conn: u64,
    pub room: RoomName,
    /// The stored messages after the member's `since_seq`, in order.
    pub events: Vec<Event>,
    /// Everything up to this `seq` is in `events` or was before `since_seq`.
    pub up_to: u64,
    /// False when the store could not give every message after `since_seq`.
    pub complete: bool,
    /// The oldest `seq` the store has for the room (when incomplete).
    pub oldest: Option<u64>,
}

/// The local side of the bus: receives every message for this node.
pub trait Delivery: Send + Sync + 'static {
    /// One message for this node's audience of `topic`.
    fn deliver(&self, topic: &Topic, payload: Payload);

    /// A message accepted from `origin` was finally not published (the bus
    /// failed after `publish` returned Ok): tell its sender.
    fn failed(&self, origin: Origin);

    /// The bus is back after an outage (and this node subscribed again):
    /// whatever other nodes stored meanwhile never reached this node, so a
    /// delivery that can read the shared store catches its rooms up from
    /// it. Without a shared store there is nothing to read.
    fn resync(&self) {}
}
