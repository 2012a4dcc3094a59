//! The WebSocket wire format: frames the server writes and frames it reads,
//! and permessage-deflate. The HTTP upgrade handshake itself is done by
//! `fastwebsockets`.

pub mod deflate;
pub mod frame;
pub mod reader;

pub use frame::{OpCode, Outgoing};
pub use reader::{FrameReader, Message, ReadError, ReadSource};
