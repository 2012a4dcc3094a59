//! The wire protocols' text: the native JSON protocol (chat-api: typed
//! commands in, envelopes out) and the redis-chat-demo dialect (`demo.rs`).

pub mod command;
pub mod demo;
pub mod depth;
pub mod envelope;
pub mod names;

pub use command::{parse, Command, ParseLimits};
pub use envelope::{encode, ErrorCode, Header, Kind};
pub use names::{ClientId, NameError, RoomName};
