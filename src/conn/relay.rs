//! The relay endpoint: every message from any relay client goes verbatim
//! (same opcode, same bytes) to every relay client, the sender included.

use bytes::Bytes;

use super::{Conn, Handler};
use crate::broker::{Payload, Publish, Topic};
use crate::ws::{OpCode, Outgoing};

pub struct Relay;

impl Handler for Relay {
    type Resume = ();

    fn on_open(&mut self, conn: &Conn) {
        conn.shard
            .rooms
            .add_relay(conn.state.id, conn.state.queue.clone(), conn.state.deflate);
    }

    fn on_data(
        &mut self,
        conn: &Conn,
        opcode: OpCode,
        payload: Bytes,
    ) -> Option<super::Deferred<()>> {
        // Framed once here; every relay client on every node gets this frame.
        let frame = Outgoing::from_payload(&payload).into_frame(opcode);
        let publish = Publish {
            topic: &Topic::Relay,
            payload: Payload::Frame(frame),
            origin: None,
        };
        if let Err(e) = conn.shard.node.broker.publish(conn.shard.index, publish) {
            tracing::warn!(error = %e, "relay message not delivered");
        }
        None
    }

    fn on_close(&mut self, conn: &Conn) {
        conn.shard.rooms.remove_relay(conn.state.id);
    }
}
