//! One message as a protocol-neutral fact: made once by the chat service,
//! carried by the broker in a compact binary encoding, and framed by each
//! node once per wire protocol present in its audience.

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use uuid::Uuid;

use super::Topic;
use crate::protocol::{ClientId, RoomName};

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A chat message; `body` is its content.
    Chat,
    /// The sender came online in (joined) or went offline from (left) the room.
    Presence { online: bool },
    /// Several clients' presence changes in the room, coalesced (a join
    /// storm); `body` is the JSON `data` (`online`, `offline`, `more`).
    PresenceSummary,
    /// A notification to one user (in their channel `user:<id>`); `body` is
    /// its JSON `data`. Stored like a chat.
    Notification,
    /// The sender is typing in the room (ephemeral: never stored); `body`
    /// `stop` when they stopped.
    Typing,
    /// Control, never sent to clients: the sender opened the conversation
    /// named in `body` with `to`, whose connections that join on their own
    /// (FastChat) are told (published in `to`'s channel).
    Grant,
    /// The online users (`body`: a JSON list), for dialects that are sent
    /// the whole list on every change (FastChat's PRESENCE).
    Roster,
    /// Control, never sent to clients: the sender (a user id) was removed
    /// from the room; every node drops that user's memberships in it at once.
    Revoke,
    /// Control, never sent to clients: the sender (a user id) changed their
    /// password, so their tokens are revoked; every node closes that user's
    /// connections at once (published to every node).
    SignOut,
}

impl EventKind {
    /// The name stored with a message (the `kind` column).
    pub fn stored_name(&self) -> &'static str {
        match self {
            EventKind::Notification => "notification",
            _ => "chat",
        }
    }

    /// The kind a stored message was.
    pub fn from_stored(name: &str) -> EventKind {
        match name {
            "notification" => EventKind::Notification,
            _ => EventKind::Chat,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Time-ordered (UUID v7), made once where the event is made.
    pub id: Uuid,
    /// The conversation: a room, or every native client (room-less chats).
    pub topic: Topic,
    /// The position in its conversation, once the event is stored (durable
    /// history); `None` for ephemeral events.
    pub seq: Option<u64>,
    pub sender: ClientId,
    /// The user a chat in a direct conversation is for, where the sender
    /// named one (dialects whose messages say `to`: FastChat, the demo's
    /// private channels). Not stored.
    pub to: Option<ClientId>,
    pub kind: EventKind,
    /// The chat content (empty for presence).
    pub body: Box<str>,
    /// A chat's attachments: a JSON array of the files' public metadata
    /// (`id`, `name`, `size`, `content_type`, `url`, image `width` and
    /// `height`, `thumbnail_url`), resolved and checked by the chat service
    /// when the chat was posted; stored and carried with it.
    pub attachments: Option<Box<str>>,
    /// The id the sender gave a chat (`client_msg_id`, FastChat's
    /// `message_id`): stored with it, and shown to its recipients where a
    /// dialect names messages by the sender's id (FastChat's `MSG`), so the
    /// sender can match their acks and its own resends to what they saw.
    pub client_msg_id: Option<RoomName>,
    /// When the event was made.
    pub ts: SystemTime,
}

impl Event {
    /// A new chat event from `sender` to `topic`.
    pub fn chat(topic: Topic, sender: ClientId, body: &str) -> Event {
        Event::new(topic, sender, EventKind::Chat, body)
    }

    /// A notification for the user whose channel is `room`; `data` is JSON.
    pub fn notification(room: RoomName, sender: ClientId, data: &str) -> Event {
        Event::new(Topic::Room(room), sender, EventKind::Notification, data)
    }

    /// `sender` is typing in `room`.
    pub fn typing(room: RoomName, sender: ClientId) -> Event {
        Event::new(Topic::Room(room), sender, EventKind::Typing, "")
    }

    /// `sender` (display name `name`) opened `conversation` with `to` (see
    /// [`EventKind::Grant`]), published in `channel` (`to`'s). The body is
    /// `conversation` and `name` on two lines.
    pub fn grant(
        channel: RoomName,
        sender: ClientId,
        to: ClientId,
        conversation: &str,
        name: &str,
    ) -> Event {
        let body = format!("{conversation}\n{name}");
        let mut e = Event::new(Topic::Room(channel), sender, EventKind::Grant, &body);
        e.to = Some(to);
        e
    }

    /// The online users as a JSON list, for `room`'s members.
    pub fn roster(room: RoomName, sender: ClientId, users: &str) -> Event {
        Event::new(Topic::Room(room), sender, EventKind::Roster, users)
    }

    /// `user`'s tokens were revoked (see [`EventKind::SignOut`]): those of
    /// login session `session`, or all of them (`None`).
    pub fn sign_out(user: ClientId, session: Option<&str>) -> Event {
        Event::new(
            Topic::Global,
            user,
            EventKind::SignOut,
            session.unwrap_or_default(),
        )
    }

    /// `user` was removed from `room` (see [`EventKind::Revoke`]).
    pub fn revoke(room: RoomName, user: ClientId) -> Event {
        Event::new(Topic::Room(room), user, EventKind::Revoke, "")
    }

    /// Presence changes in `room` coalesced into one event (`data`: JSON).
    pub fn presence_summary(room: RoomName, data: &str) -> Event {
        let server = ClientId::parse("server", 64).expect("a valid name");
        Event::new(Topic::Room(room), server, EventKind::PresenceSummary, data)
    }

    /// A new presence event about `sender` in `room`.
    pub fn presence(room: RoomName, sender: ClientId, online: bool) -> Event {
        Event::new(
            Topic::Room(room),
            sender,
            EventKind::Presence { online },
            "",
        )
    }

    fn new(topic: Topic, sender: ClientId, kind: EventKind, body: &str) -> Event {
        Event {
            id: Uuid::now_v7(),
            topic,
            seq: None,
            sender,
            to: None,
            kind,
            body: body.into(),
            attachments: None,
            client_msg_id: None,
            ts: SystemTime::now(),
        }
    }

    /// The compact encoding the broker carries between nodes:
    /// `version kind(1) id(16) ts_ms(8) seq(8, 0 = none) topic(1 tag, 1 len,
    /// name) sender(1 len, name) to(1 len, name; 0 = none) body(4 len,
    /// utf-8) attachments(4 len, utf-8 JSON; 0 = none) client_msg_id(1 len,
    /// name; 0 = none)`, integers big-endian.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(VERSION);
        out.push(match self.kind {
            EventKind::Chat => KIND_CHAT,
            EventKind::Presence { online: true } => KIND_ONLINE,
            EventKind::Presence { online: false } => KIND_OFFLINE,
            EventKind::Notification => KIND_NOTIFICATION,
            EventKind::Revoke => KIND_REVOKE,
            EventKind::Typing => KIND_TYPING,
            EventKind::Grant => KIND_GRANT,
            EventKind::Roster => KIND_ROSTER,
            EventKind::PresenceSummary => KIND_PRESENCE_SUMMARY,
            EventKind::SignOut => KIND_SIGN_OUT,
        });
        out.extend_from_slice(self.id.as_bytes());
        let ms = self.ts.duration_since(UNIX_EPOCH).unwrap_or_default();
        out.extend_from_slice(&(ms.as_millis() as u64).to_be_bytes());
        out.extend_from_slice(&self.seq.unwrap_or(0).to_be_bytes());
        let (tag, name) = match &self.topic {
            Topic::Room(room) => (TOPIC_ROOM, room.as_str()),
            Topic::Global => (TOPIC_GLOBAL, ""),
            Topic::Relay => (TOPIC_RELAY, ""),
        };
        out.push(tag);
        short_str(out, name);
        short_str(out, self.sender.as_str());
        short_str(out, self.to.as_ref().map_or("", ClientId::as_str));
        out.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        out.extend_from_slice(self.body.as_bytes());
        let attachments = self.attachments.as_deref().unwrap_or("");
        out.extend_from_slice(&(attachments.len() as u32).to_be_bytes());
        out.extend_from_slice(attachments.as_bytes());
        short_str(
            out,
            self.client_msg_id.as_ref().map_or("", RoomName::as_str),
        );
    }

    /// Reads [`Event::encode`]'s output; names are validated again with
    /// `max_name` (the bus is another process's input).
    pub fn decode(data: &[u8], max_name: usize) -> Result<Event, DecodeError> {
        let mut r = Reader(data);
        if r.u8()? != VERSION {
            return Err(DecodeError::Version);
        }
        let kind = match r.u8()? {
            KIND_CHAT => EventKind::Chat,
            KIND_ONLINE => EventKind::Presence { online: true },
            KIND_OFFLINE => EventKind::Presence { online: false },
            KIND_NOTIFICATION => EventKind::Notification,
            KIND_REVOKE => EventKind::Revoke,
            KIND_TYPING => EventKind::Typing,
            KIND_GRANT => EventKind::Grant,
            KIND_ROSTER => EventKind::Roster,
            KIND_PRESENCE_SUMMARY => EventKind::PresenceSummary,
            KIND_SIGN_OUT => EventKind::SignOut,
            _ => return Err(DecodeError::Invalid),
        };
        let id = Uuid::from_bytes(r.take(16)?.try_into().expect("16 bytes"));
        let ts = UNIX_EPOCH + Duration::from_millis(r.u64()?);
        let seq = Some(r.u64()?).filter(|&s| s != 0);
        let tag = r.u8()?;
        let len = r.u8()? as usize;
        let name = r.str(len)?;
        let topic = match (tag, name) {
            (TOPIC_ROOM, name) => Topic::Room(RoomName::parse(name, max_name)?),
            // Only a room has a name (one encoding per event).
            (TOPIC_GLOBAL, "") => Topic::Global,
            (TOPIC_RELAY, "") => Topic::Relay,
            _ => return Err(DecodeError::Invalid),
        };
        let len = r.u8()? as usize;
        let sender = ClientId::parse(r.str(len)?, max_name)?;
        let len = r.u8()? as usize;
        let to = match r.str(len)? {
            "" => None,
            to => Some(ClientId::parse(to, max_name)?),
        };
        let len = r.u32()? as usize;
        let body = r.str(len)?.into();
        let len = r.u32()? as usize;
        let attachments = match r.str(len)? {
            "" => None,
            json => Some(json.into()),
        };
        let len = r.u8()? as usize;
        let client_msg_id = match r.str(len)? {
            "" => None,
            id => Some(RoomName::parse(id, max_name)?),
        };
        if !r.0.is_empty() {
            return Err(DecodeError::Invalid);
        }
        Ok(Event {
            id,
            topic,
            seq,
            sender,
            to,
            kind,
            body,
            attachments,
            client_msg_id,
            ts,
        })
    }
}

/// 2: with `to` (after the sender); 3: with attachments (after the body);
/// 4: with the sender's `client_msg_id` (last).
const VERSION: u8 = 4;
const KIND_CHAT: u8 = 1;
const KIND_ONLINE: u8 = 2;
const KIND_OFFLINE: u8 = 3;
const KIND_NOTIFICATION: u8 = 4;
const KIND_REVOKE: u8 = 5;
const KIND_TYPING: u8 = 6;
const KIND_GRANT: u8 = 7;
const KIND_ROSTER: u8 = 8;
const KIND_PRESENCE_SUMMARY: u8 = 9;
const KIND_SIGN_OUT: u8 = 10;
const TOPIC_ROOM: u8 = 1;
const TOPIC_GLOBAL: u8 = 2;
const TOPIC_RELAY: u8 = 3;

/// Names are at most 255 bytes on the bus (they are far shorter: validated
/// names, `limits.max_name_length`).
fn short_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(u8::MAX as usize);
    out.push(len as u8);
    out.extend_from_slice(&s.as_bytes()[..len]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event encoding version")]
    Version,
    #[error("truncated or malformed event")]
    Invalid,
    #[error("invalid name in event: {0}")]
    Name(#[from] crate::protocol::NameError),
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Invalid);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn str(&mut self, n: usize) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| DecodeError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind_and_topic() {
        let alice = ClientId::parse("alice", 64).unwrap();
        let room = RoomName::parse("lobby", 64).unwrap();
        let mut stored = Event::chat(Topic::Room(room.clone()), alice.clone(), "hi \u{e9}");
        stored.seq = Some(42);
        stored.attachments = Some(r#"[{"id":"f"}]"#.into());
        stored.client_msg_id = Some(RoomName::parse("m-1", 64).unwrap());
        for event in [
            stored,
            Event::chat(Topic::Global, alice.clone(), "to all"),
            Event::presence(room, alice, false),
        ] {
            let mut buf = Vec::new();
            event.encode(&mut buf);
            let back = Event::decode(&buf, 64).unwrap();
            // The wire keeps milliseconds.
            let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis();
            assert_eq!(ms(back.ts), ms(event.ts));
            assert_eq!(
                Event {
                    ts: event.ts,
                    ..back
                },
                event
            );
        }
    }

    #[test]
    fn refuses_truncated_and_trailing_input() {
        let event = Event::chat(Topic::Global, ClientId::generate(), "x");
        let mut buf = Vec::new();
        event.encode(&mut buf);
        for n in 0..buf.len() {
            assert!(Event::decode(&buf[..n], 64).is_err(), "prefix {n}");
        }
        buf.push(0);
        assert_eq!(Event::decode(&buf, 64), Err(DecodeError::Invalid));
    }

    /// Found by the `event` fuzz target: a global event with a room name
    /// decoded, and re-encoded differently (the name dropped).
    #[test]
    fn only_a_room_topic_carries_a_name() {
        let event = Event::chat(Topic::Global, ClientId::generate(), "x");
        let mut buf = Vec::new();
        event.encode(&mut buf);
        let tag = 1 + 1 + 16 + 8 + 8;
        assert_eq!(buf[tag..tag + 2], [TOPIC_GLOBAL, 0]);
        let mut named = buf[..tag + 1].to_vec();
        named.extend_from_slice(&[1, b'r']);
        named.extend_from_slice(&buf[tag + 2..]);
        assert_eq!(Event::decode(&named, 64), Err(DecodeError::Invalid));
    }
}
