//! The native (chat-api) protocol on a connection: chat, join, leave, ping.

use bytes::Bytes;
use serde::Serialize;

use super::{Conn, Handler};
use crate::broker::{Origin, Publish, Topic};
use crate::protocol::envelope::{
    ChatData, Empty, ErrorData, Event, PresenceData, Status, SystemData,
};
use crate::protocol::{self, ClientId, Command, ErrorCode, Header, Kind, ParseLimits, RoomName};
use crate::ws::OpCode;

pub struct Native {
    client_id: ClientId,
    /// The room from the URL: the target of a chat that names no room.
    url_room: Option<RoomName>,
    /// Rooms joined, in join order (at most `max_rooms_per_connection`).
    rooms: Vec<RoomName>,
}

impl Native {
    pub fn new(client_id: ClientId, url_room: Option<RoomName>) -> Native {
        Native {
            client_id,
            url_room,
            rooms: Vec::new(),
        }
    }

    fn reply<D: Serialize>(&self, conn: &Conn, kind: Kind, room: Option<&RoomName>, data: &D) {
        let header = Header {
            kind,
            room: room.map(RoomName::as_str),
            from: None,
        };
        conn.reply(protocol::encode(header, data).into_frame(OpCode::Text));
    }

    fn error(&self, conn: &Conn, code: ErrorCode, message: &str) {
        let data = ErrorData {
            code,
            message,
            client_msg_id: None,
        };
        self.reply(conn, Kind::Error, None, &data);
    }

    fn system(&self, conn: &Conn, event: Event, room: Option<&RoomName>) {
        let client_id = (event == Event::Connected).then(|| self.client_id.as_str());
        self.reply(conn, Kind::System, room, &SystemData { event, client_id });
    }

    fn presence(&self, conn: &Conn, room: &RoomName, status: Status) {
        if !conn.shard.presence.allow(room, std::time::Instant::now()) {
            conn.shard.node.metrics.presence_suppressed.inc();
            return;
        }
        let header = Header {
            kind: Kind::Presence,
            room: Some(room.as_str()),
            from: Some(self.client_id.as_str()),
        };
        let publish = Publish {
            topic: &Topic::Room(room.clone()),
            msg: protocol::encode(header, &PresenceData { status }),
            opcode: OpCode::Text,
            origin: None,
        };
        if let Err(e) = conn.shard.node.broker.publish(conn.shard.index, publish) {
            tracing::debug!(room = %room, error = %e, "presence not published");
        }
    }

    fn join(&mut self, conn: &Conn, room: RoomName) {
        if self.rooms.contains(&room) {
            return self.system(conn, Event::Joined, Some(&room));
        }
        let node = &conn.shard.node;
        if self.rooms.len() >= node.config.limits.max_rooms_per_connection {
            let limit = node.config.limits.max_rooms_per_connection;
            return self.error(
                conn,
                ErrorCode::RoomLimit,
                &format!("a connection may be in at most {limit} rooms"),
            );
        }
        conn.shard
            .rooms
            .join(&room, conn.state.id, conn.state.queue.clone());
        if node.registry.join(&room, conn.shard.index) {
            node.broker.subscribe(&room);
        }
        self.system(conn, Event::Joined, Some(&room));
        self.presence(conn, &room, Status::Online);
        self.rooms.push(room);
    }

    /// Removes the membership everywhere and tells the room.
    fn leave_room(&self, conn: &Conn, room: &RoomName) {
        let node = &conn.shard.node;
        conn.shard.rooms.leave(room, conn.state.id);
        if node.registry.leave(room, conn.shard.index) {
            node.broker.unsubscribe(room);
        }
        self.presence(conn, room, Status::Offline);
    }

    fn chat(
        &self,
        conn: &Conn,
        room: Option<RoomName>,
        content: &str,
        client_msg_id: Option<RoomName>,
    ) {
        let room = match room.or_else(|| self.url_room.clone()) {
            Some(room) if !self.rooms.contains(&room) => {
                let message = format!("join room {room} before posting to it");
                return self.error(conn, ErrorCode::NotMember, &message);
            }
            room => room,
        };
        let header = Header {
            kind: Kind::Chat,
            room: room.as_ref().map(RoomName::as_str),
            from: Some(self.client_id.as_str()),
        };
        let msg = protocol::encode(header, &ChatData { content });
        let topic = room.map_or(Topic::Global, Topic::Room);
        let publish = Publish {
            topic: &topic,
            msg,
            opcode: OpCode::Text,
            origin: Some(Origin {
                shard: conn.shard.index,
                conn: conn.state.id.0,
                client_msg_id: client_msg_id.clone(),
            }),
        };
        if let Err(e) = conn.shard.node.broker.publish(conn.shard.index, publish) {
            let message = format!("message not delivered: {e}");
            let data = ErrorData {
                code: ErrorCode::MessageFailed,
                message: &message,
                client_msg_id: client_msg_id.as_ref().map(RoomName::as_str),
            };
            self.reply(conn, Kind::Error, None, &data);
        }
    }
}

impl Handler for Native {
    fn on_open(&mut self, conn: &Conn) {
        conn.shard
            .rooms
            .add_native(conn.state.id, conn.state.queue.clone());
        self.system(conn, Event::Connected, self.url_room.as_ref());
        if let Some(room) = self.url_room.clone() {
            self.join(conn, room);
        }
    }

    fn on_data(&mut self, conn: &Conn, opcode: OpCode, payload: Bytes) {
        if opcode == OpCode::Binary {
            let message = "binary frames are not part of this protocol; send JSON text";
            return self.error(conn, ErrorCode::Unsupported, message);
        }
        let l = &conn.shard.node.config.limits;
        let limits = ParseLimits {
            max_name: l.max_name_length,
            max_depth: l.max_json_depth,
        };
        match protocol::parse(&payload, limits) {
            Err(e) => self.error(conn, ErrorCode::Validation, &e.to_string()),
            Ok(Command::Chat {
                room,
                content,
                client_msg_id,
            }) => self.chat(conn, room, &content, client_msg_id),
            Ok(Command::Join(room)) => self.join(conn, room),
            Ok(Command::Leave(room)) => match self.rooms.iter().position(|r| *r == room) {
                None => self.error(conn, ErrorCode::NotMember, &format!("not in room {room}")),
                Some(i) => {
                    let room = self.rooms.remove(i);
                    self.leave_room(conn, &room);
                    self.system(conn, Event::Left, Some(&room));
                }
            },
            Ok(Command::Ping) => self.reply(conn, Kind::Pong, None, &Empty {}),
        }
    }

    fn on_close(&mut self, conn: &Conn) {
        for room in std::mem::take(&mut self.rooms) {
            self.leave_room(conn, &room);
        }
        conn.shard.rooms.remove_native(conn.state.id);
    }
}
