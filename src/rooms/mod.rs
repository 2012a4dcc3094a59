//! Room membership and fan-out: the node-wide [`Registry`] (which shards
//! have members) and each shard's [`LocalRooms`] (which queues).

pub mod encode;
pub mod local;
pub mod presence;
pub mod registry;

pub use local::{client_key, ConnId, Fanout, LocalRooms, Voice};
pub use presence::PresenceLimiter;
pub use registry::{Registry, ShardMsg};
