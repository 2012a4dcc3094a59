//! The WebSocket wire format: frames the server writes and frames it reads.
//! The HTTP upgrade handshake itself is done by `fastwebsockets`.

pub mod frame;
pub mod reader;

pub use frame::{OpCode, Outgoing};
pub use reader::{FrameReader, Message, ReadError, ReadSource};
