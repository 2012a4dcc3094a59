//! The server's outgoing envelope:
//! `{"id","type","room","from","data","timestamp"}`.
//!
//! Every envelope is serialised exactly once, straight into an [`Outgoing`]
//! buffer that already has room for the WebSocket frame header.

use serde::Serialize;
use std::time::SystemTime;

use crate::ws::Outgoing;

/// The `type` of a server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Chat,
    Presence,
    System,
    Error,
    Pong,
    Ack,
    History,
    Notification,
    Typing,
}

/// Error codes carried in `data.code` of an `error` message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The message was malformed or refused; nothing was sent.
    Validation,
    /// Posting to or leaving a room the connection has not joined.
    NotMember,
    /// The per-connection room cap was reached.
    RoomLimit,
    /// The message could not be handed to the broker; it was not delivered.
    MessageFailed,
    /// Binary frames are not part of the native protocol.
    Unsupported,
    /// A private conversation the client is not a member of, or another
    /// user's channel.
    Forbidden,
    /// Over a per-user rate limit; `retry_after_ms` says when to try again.
    RateLimited,
}

#[derive(Serialize)]
pub struct ChatData<'a> {
    pub content: &'a str,
    /// The files attached (as the chat service resolved them), raw JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachments: Option<sonic_rs::LazyValue<'a>>,
    /// The sender's id for the message (its `client_msg_id`), when it gave
    /// one: live and in history, so every client names it alike.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Online,
    Offline,
}

#[derive(Serialize)]
pub struct PresenceData {
    pub status: Status,
}

/// What a `system` message reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// Sent once after the upgrade: tells the client its id and URL room.
    Connected,
    Joined,
    Left,
    /// After a join with `since_seq`: the catch-up is complete (or not).
    Recovered,
    /// The user was removed from the (private) room: no more messages from it.
    Removed,
}

#[derive(Serialize)]
pub struct SystemData<'a> {
    pub event: Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
}

/// `{"event":"recovered","recovered":bool,"oldest_seq":N}`.
#[derive(Serialize)]
pub struct RecoveredData {
    pub event: Event,
    pub recovered: bool,
    /// The oldest `seq` still stored, when the catch-up is incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_seq: Option<u64>,
}

#[derive(Serialize)]
pub struct ErrorData<'a> {
    pub code: ErrorCode,
    pub message: &'a str,
    /// The `client_msg_id` of the chat this error is about, where it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<&'a str>,
    /// `RATE_LIMITED`: when the next one would be taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

/// A stored message's acknowledgement.
#[derive(Serialize)]
pub struct AckData<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_msg_id: Option<&'a str>,
    pub id: &'a str,
    pub seq: u64,
}

#[derive(Serialize)]
pub struct Empty {}

/// Who and where a message is about; `None` fields are left out.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub kind: Kind,
    pub room: Option<&'a str>,
    pub from: Option<&'a str>,
}

#[derive(Serialize)]
struct Envelope<'a, D> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    /// A stored message's place in its room.
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    data: &'a D,
    timestamp: &'a str,
}

/// Serialises one envelope with a fresh time-ordered id and the current time
/// (a reply to one connection: it is not an event).
pub fn encode<D: Serialize>(header: Header<'_>, data: &D) -> Outgoing {
    let now = Stamp {
        id: uuid::Uuid::now_v7(),
        at: SystemTime::now(),
        seq: None,
    };
    encode_as(header, data, now)
}

/// The identity of the event an envelope carries.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub id: uuid::Uuid,
    pub at: SystemTime,
    pub seq: Option<u64>,
}

/// Serialises one envelope with the id, time and `seq` of its event.
pub fn encode_as<D: Serialize>(header: Header<'_>, data: &D, stamp: Stamp) -> Outgoing {
    let Stamp { id, at, seq } = stamp;
    let mut id_buf = uuid::Uuid::encode_buffer();
    let id = id.hyphenated().encode_lower(&mut id_buf);
    let mut ts_buf = [0u8; 32];
    let timestamp = timestamp(at, &mut ts_buf);
    let env = Envelope {
        id,
        kind: header.kind,
        room: header.room,
        from: header.from,
        seq,
        data,
        timestamp,
    };
    let mut out = Outgoing::default();
    sonic_rs::to_writer(out.writer(), &env).expect("envelope fields always serialise");
    out
}

/// RFC 3339 UTC with milliseconds, e.g. `2024-01-15T10:30:00.123Z`.
fn timestamp(now: SystemTime, buf: &mut [u8; 32]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{}", humantime::format_rfc3339_millis(now)).expect("fits in 32 bytes");
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).expect("ascii")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::OpCode;

    #[test]
    fn chat_envelope_has_every_field() {
        let header = Header {
            kind: Kind::Chat,
            room: Some("r"),
            from: Some("alice"),
        };
        let out = encode(
            header,
            &ChatData {
                content: "hi \"there\"",
                attachments: None,
                client_msg_id: None,
            },
        );
        let v: sonic_rs::Value = sonic_rs::from_slice(out.payload()).unwrap();
        use sonic_rs::JsonValueTrait;
        assert_eq!(v["type"].as_str(), Some("chat"));
        assert_eq!(v["room"].as_str(), Some("r"));
        assert_eq!(v["from"].as_str(), Some("alice"));
        assert_eq!(v["data"]["content"].as_str(), Some("hi \"there\""));
        let id = uuid::Uuid::parse_str(v["id"].as_str().unwrap()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), "2024-01-15T10:30:00.123Z".len());
        assert!(humantime::parse_rfc3339(ts).is_ok());
        let frame = out.into_frame(OpCode::Text);
        assert_eq!(frame[0], 0x81);
    }

    #[test]
    fn absent_room_and_from_are_omitted() {
        let out = encode(
            Header {
                kind: Kind::Pong,
                room: None,
                from: None,
            },
            &Empty {},
        );
        let text = std::str::from_utf8(out.payload()).unwrap();
        assert!(text.contains(r#""type":"pong""#), "{text}");
        assert!(!text.contains("room") && !text.contains("from"), "{text}");
    }
}
