//! An event in each wire protocol, made once per message and protocol on
//! each node that has an audience for it, never once per recipient.
//! (Only the native chat-api protocol exists so far; the FastChat and
//! redis-chat-demo dialects will add their encoders here.)

use bytes::Bytes;

use crate::config::Wire;
use crate::model::{Event, EventKind, Topic};
use crate::protocol::envelope::{
    encode_as, ChatData, Event as SystemEvent, PresenceData, Stamp, Status, SystemData,
};
use crate::protocol::{demo, fastchat};
use crate::protocol::{Header, Kind};
use crate::ws::{OpCode, Outgoing};

/// `event` framed in `wire`'s dialect, if that dialect carries it.
pub fn frame(event: &Event, wire: Wire) -> Option<Bytes> {
    match wire {
        Wire::ChatApi => chat_api(event),
        Wire::FastChat => fastchat_live(event),
        Wire::Demo => demo_live(event, demo::Public::Empty),
        Wire::DemoPublicZero => demo_live(event, demo::Public::Zero),
        Wire::DemoPublicZeroNumber => demo_live(event, demo::Public::ZeroNumber),
    }
}

/// A chat as the demo dialect's `channelMessage` (its only live message):
/// the recipient is the public channel in the form the client joined it
/// (`""`, which the shipped client files public messages under, `"0"` or
/// `0`), the addressed user in a direct conversation.
fn demo_live(event: &Event, public: demo::Public) -> Option<Bytes> {
    if event.kind != EventKind::Chat {
        return None;
    }
    let Topic::Room(room) = &event.topic else {
        return None;
    };
    let recipient = match (&event.to, room.as_str().starts_with(DM_PREFIX)) {
        (Some(to), true) => demo::Recipient::User(to.as_str()),
        _ => demo::Recipient::Public(public),
    };
    let mut id = uuid::Uuid::encode_buffer();
    let id = event.id.hyphenated().encode_lower(&mut id);
    let at = humantime::format_rfc3339_millis(event.ts).to_string();
    let message = demo::Message::new(id, event.sender.as_str(), recipient, &event.body, &at);
    let text = demo::answer("channelMessage", &message);
    Some(Outgoing::from_payload(text.as_bytes()).into_frame(OpCode::Text))
}

/// An event as FastChat frames it: a chat as `MSG`, typing as `TYPING`,
/// the roster as `PRESENCE`; nothing else.
fn fastchat_live(event: &Event) -> Option<Bytes> {
    let text = match event.kind {
        EventKind::Chat => {
            let mut id = uuid::Uuid::encode_buffer();
            let id = &*event.id.hyphenated().encode_lower(&mut id);
            let at = humantime::format_rfc3339_seconds(event.ts).to_string();
            let data = fastchat::Msg {
                from: event.sender.as_str(),
                to: event.to.as_ref().map_or("", |t| t.as_str()),
                content: &event.body,
                message_id: event.client_msg_id.as_ref().map_or(id, |c| c.as_str()),
                id,
                timestamp: &at,
            };
            fastchat::message("MSG", &data)
        }
        EventKind::Typing => {
            let data = fastchat::Typing {
                user_id: event.sender.as_str(),
                is_typing: &*event.body != fastchat::STOPPED,
            };
            fastchat::message("TYPING", &data)
        }
        EventKind::Roster => {
            let users: sonic_rs::Value = sonic_rs::from_str(&event.body).ok()?;
            fastchat::message("PRESENCE", &fastchat::Presence { users })
        }
        _ => return None,
    };
    Some(Outgoing::from_payload(text.as_bytes()).into_frame(OpCode::Text))
}

/// The room-name prefix of direct conversations (see `accounts::access`;
/// `rooms` sits below it).
pub const DM_PREFIX: &str = "dm:";

/// The chat-api envelope of `event`, framed: what every native member gets
/// (`None` for what the protocol does not carry: other dialects' rosters,
/// control events).
pub fn chat_api(event: &Event) -> Option<Bytes> {
    Some(chat_api_json(event)?.into_frame(OpCode::Text))
}

/// The same, unframed (history pages collect several).
pub fn chat_api_json(event: &Event) -> Option<Outgoing> {
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
    Some(match event.kind {
        EventKind::Grant | EventKind::Roster | EventKind::SignOut => return None,
        EventKind::Chat => {
            let header = Header {
                kind: Kind::Chat,
                room,
                from,
            };
            // Made by this server, so valid JSON; left out if it is not.
            let attachments = event
                .attachments
                .as_deref()
                .and_then(|a| sonic_rs::from_str::<sonic_rs::LazyValue>(a).ok());
            let data = ChatData {
                content: &event.body,
                attachments,
                client_msg_id: event.client_msg_id.as_ref().map(|c| c.as_str()),
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
        EventKind::PresenceSummary => {
            // From the server, not a client: no `from`.
            let header = Header {
                kind: Kind::Presence,
                room,
                from: None,
            };
            // Made by this server from names and numbers: valid JSON.
            let data = sonic_rs::from_str::<sonic_rs::LazyValue>(&event.body).ok()?;
            encode_as(header, &data, stamp)
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
    })
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
        let frame = chat_api(&event).unwrap();
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
