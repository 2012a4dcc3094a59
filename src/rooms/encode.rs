//! An event in each wire protocol, made once per message and protocol on
//! each node that has an audience for it, never once per recipient.
//! (Only the native chat-api protocol exists so far; the FastChat and
//! redis-chat-demo dialects will add their encoders here.)

use bytes::Bytes;

use crate::model::{Event, EventKind, Topic};
use crate::protocol::envelope::{
    encode_as, ChatData, Event as SystemEvent, PresenceData, Stamp, Status, SystemData,
};
use crate::protocol::{Header, Kind};
use crate::ws::{OpCode, Outgoing};

/// The chat-api envelope of `event`, framed: what every native member gets.
pub fn chat_api(event: &Event) -> Bytes {
    chat_api_json(event).into_frame(OpCode::Text)
}

/// The same, unframed (history pages collect several).
pub fn chat_api_json(event: &Event) -> Outgoing {
    let room = match &event.topic {
        Topic::Room(room) => Some(room.as_str()),
        Topic::Global | Topic::Relay => None,
    };
    let from = Some(event.sender.as_str());
    let stamp = Stamp {
        id: event.id,
        at: event.ts,
        seq: event.seq,
    };
    match event.kind {
        EventKind::Chat => {
            let header = Header {
                kind: Kind::Chat,
                room,
                from,
            };
            let data = ChatData {
                content: &event.body,
            };
            encode_as(header, &data, stamp)
        }
        EventKind::Presence { online } => {
            let header = Header {
                kind: Kind::Presence,
                room,
                from,
            };
            let status = if online {
                Status::Online
            } else {
                Status::Offline
            };
            encode_as(header, &PresenceData { status }, stamp)
        }
        EventKind::Notification => {
            let header = Header {
                kind: Kind::Notification,
                room,
                from,
            };
            // Stored as the JSON text it was made from.
            let data: sonic_rs::Value =
                sonic_rs::from_str(&event.body).unwrap_or_else(|_| sonic_rs::Value::new());
            encode_as(header, &data, stamp)
        }
        EventKind::Typing => {
            let header = Header {
                kind: Kind::Typing,
                room,
                from,
            };
            encode_as(header, &crate::protocol::envelope::Empty {}, stamp)
        }
        // Handled by each shard (members removed), never fanned out; framed
        // as what it means, should one ever be.
        EventKind::Revoke => {
            let header = Header {
                kind: Kind::System,
                room,
                from,
            };
            let data = SystemData {
                event: SystemEvent::Removed,
                client_id: None,
            };
            encode_as(header, &data, stamp)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ClientId, RoomName};

    #[test]
    fn the_envelope_carries_the_event_s_own_id_and_time() {
        let room = RoomName::parse("r", 64).unwrap();
        let event = Event::chat(
            Topic::Room(room),
            ClientId::parse("alice", 64).unwrap(),
            "hi",
        );
        let frame = chat_api(&event);
        let start = frame.iter().position(|&b| b == b'{').unwrap();
        let text = std::str::from_utf8(&frame[start..]).unwrap();
        assert!(text.contains(&event.id.to_string()), "{text}");
        assert!(
            text.contains(r#""type":"chat","room":"r","from":"alice""#),
            "{text}"
        );
        assert!(text.contains(r#""data":{"content":"hi"}"#), "{text}");
    }
}
