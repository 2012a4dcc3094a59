//! chatd: a real-time WebSocket chat server.
//!
//! # Layout
//!
//! Dependencies point down this list; a chat message passes each module once:
//! `conn` (read, parse) → `broker` (publish) → `rooms` (fan-out) → `queue` →
//! `conn::writer`.
//!
//! - `fuzzing`: entry points for `fuzz/` (hidden; raw input into the parsers);
//!   `bench`: what `benches/` drives directly (hidden).
//!
//! The crate's API is [`start`], [`Server`], [`Config`] (the `config`
//! module) and the `metrics` module; every other module is `pub(crate)`.
//! - [`runtime`]: start and stop; one current-thread runtime and one
//!   `SO_REUSEPORT` listener per shard; the accept loop; shard inboxes.
//! - [`http`]: routes, health and readiness, metrics listener; a plain
//!   connection's upgrade head read and answered by chatd (`head.rs`), the
//!   WebSocket endpoints' checks (`upgrade.rs`), everything else through
//!   hyper: the REST API (`api.rs`; login sessions: `sessions.rs`), file
//!   uploads and downloads
//!   (`files.rs`, with the rest of an abandoned body read after an early
//!   answer: `linger.rs`), the embedded web client (`web.rs`); every
//!   route's refusals in one JSON shape (`error.rs`).
//! - [`conn`]: one connection in one task (`task.rs`): read loop (with its
//!   read budget), close paths, writer, the held-back 101 of an upgrade
//!   hyper answered (`hold.rs`), the bytes read ahead of hyper put back
//!   (`rewind.rs`), an HTTP connection's socket counting the bytes it
//!   moves (`metered.rs`);
//!   the handlers: native (chat-api), the FastChat and redis-chat-demo
//!   dialects, and relay.
//! - [`chat`]: the chat service (join, leave, post and their access checks,
//!   in events): the one caller of local rooms, registry and broker for chat;
//!   `conversations.rs`: groups, direct messages, notifications, removals,
//!   the server publish API; `files.rs`: who may read a file, a chat's
//!   attachments; `presence.rs`: join/leave announcements and their
//!   per-second summaries.
//! - [`shard`]: one shard's connections and rooms, owned by its thread; its
//!   inbox dispatch and heartbeat sweep.
//! - [`node`]: what all shards share (config, registry, broker, metrics,
//!   accounts).
//! - [`accounts`]: users (Argon2id passwords, login tokens with a revocable
//!   generation and a login session each), who is online (with Redis: a lease per node), who may use
//!   a private conversation; the REST layer and the chat service call it.
//! - [`files`]: uploaded files: bytes in an object store (a local directory
//!   or S3), metadata in the store's directory; streaming uploads, content
//!   sniffing, safe names, image dimensions and thumbnails.
//! - [`store`]: durable history: a store thread with a bounded queue and
//!   group commit, per-room `seq`, acks, idempotent send, history,
//!   recovery, retention, delivery receipts, a health check that connects
//!   anew after the database restarts; `sqlite.rs`, `postgres.rs`,
//!   `mysql.rs` and `redis.rs` behind one trait;
//!   `order.rs`, the reorder stage in front of the bus when several nodes
//!   share one history.
//! - [`broker`]: the narrow `Broker` trait; `memory.rs` is the in-process
//!   default; `redis.rs` delivers a stored message the bus did not carry
//!   to this node's members itself, and publishes it again once the bus is
//!   back.
//! - [`rooms`]: node-wide registry (which shards have members of a room) and
//!   each shard's member queues; fan-out of one frame (per dialect, and per
//!   deflate window when compressed) to many queues; the presence budget.
//! - [`model`]: a message's route (`Topic`, `Origin`) and the bus's local
//!   side (`Delivery`), shared by `broker` and `rooms`.
//! - [`protocol`]: the wire protocols' text: the native JSON protocol (typed
//!   commands in, envelopes out), the FastChat and redis-chat-demo dialects.
//! - [`ws`]: WebSocket frames: server frames encoded once, client frames read,
//!   permessage-deflate (negotiation, compress once, inflate).
//! - [`queue`]: the bounded per-client frame queue (a leaf: `rooms` pushes,
//!   `conn` drains; a parked writer's frames written through to its socket,
//!   which `conn` gives it) and the options its writer drains it
//!   with (one per shard).
//! - [`tls`]: loading the certificate for `wss://`, and Redis clients for
//!   `rediss://` with their CA; [`auth`]: tokens on upgrades.
//! - [`config`], [`metrics`] (with a histogram each shard records into
//!   without a lock, `sharded.rs`), [`shutdown`]: leaves.
//! - [`peers`]: connections not yet upgraded counted per source address,
//!   and the trusted proxies whose `X-Forwarded-For` is believed (a leaf:
//!   `config` checks its ranges with it).

pub(crate) mod accounts;
pub(crate) mod auth;
pub(crate) mod broker;
pub(crate) mod chat;
pub mod config;
pub(crate) mod conn;
pub(crate) mod files;
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http;
pub mod metrics;
pub(crate) mod model;
pub(crate) mod node;
pub(crate) mod peers;
pub(crate) mod protocol;
pub(crate) mod queue;
pub(crate) mod rooms;
pub(crate) mod runtime;
pub(crate) mod shard;
pub(crate) mod shutdown;
pub(crate) mod store;
pub(crate) mod tls;
pub(crate) mod ws;

pub use config::Config;
pub use runtime::{start, Server, ShutdownReport, StartError};

/// What the micro-benchmarks in `benches/` drive directly (not an API:
/// hidden from the docs).
#[doc(hidden)]
pub mod bench {
    pub use crate::config::Wire;
    pub use crate::model::{Event, Payload, Topic};
    pub use crate::protocol::envelope::ChatData;
    pub use crate::protocol::{encode, parse, ClientId, Header, Kind, ParseLimits, RoomName};
    pub use crate::queue::{ClientQueue, Limits};
    pub use crate::rooms::{ConnId, LocalRooms, Voice};
    pub use crate::store::{drive as drive_store, Database, Retention, Settings as StoreSettings};
    pub use crate::ws::deflate::Window;
    pub use crate::ws::{frame, OpCode, Outgoing};
}
