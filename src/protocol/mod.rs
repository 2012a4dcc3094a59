//! The native JSON protocol (chat-api): typed commands in, envelopes out.

pub mod command;
pub mod depth;
pub mod envelope;
pub mod names;

pub use command::{parse, Command, ParseLimits};
pub use envelope::{encode, ErrorCode, Header, Kind};
pub use names::{ClientId, NameError, RoomName};
