//! The wire protocols' text: the native JSON protocol (chat-api: typed
//! commands in, envelopes out) and the dialects: redis-chat-demo (`demo.rs`)
//! and FastChat (`fastchat.rs`).

pub mod command;
pub mod demo;
pub mod depth;
pub mod envelope;
pub mod fastchat;
pub mod names;

pub use command::{parse, Command, ParseLimits};
pub use envelope::{encode, ErrorCode, Header, Kind};
pub use names::{ClientId, NameError, RoomName};
