//! What a client may send on the native (chat-api) endpoint, parsed into a
//! typed [`Command`] at the boundary so nothing past it matches on strings.

use serde::Deserialize;
use std::borrow::Cow;

use super::names::{NameError, RoomName};

/// A validated client request.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `room: None` means "my URL room, or everyone if I have none".
    Chat {
        room: Option<RoomName>,
        content: Cow<'a, str>,
    },
    Join(RoomName),
    Leave(RoomName),
    Ping,
}

/// Why a text message was refused; sent back as a `VALIDATION` error.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed JSON: {0}")]
    Json(String),
    #[error("missing field \"type\"")]
    MissingType,
    #[error("unknown type {0:?}; expected chat, join, leave or ping")]
    UnknownType(String),
    #[error("type {0} needs a \"room\"")]
    MissingRoom(&'static str),
    #[error("invalid room name: {0}")]
    InvalidRoom(NameError),
    #[error("chat needs data.content (a non-empty string)")]
    MissingContent,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<RawData<'a>>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
}

/// Parses one text message. Fields the server assigns itself (`id`, `from`,
/// `timestamp`) are ignored if a client sends them.
pub fn parse(text: &[u8], max_room_len: usize) -> Result<Command<'_>, ParseError> {
    let raw: Raw<'_> =
        sonic_rs::from_slice(text).map_err(|e| ParseError::Json(short(e.to_string())))?;
    let kind = raw.kind.ok_or(ParseError::MissingType)?;
    let room = |what: &'static str| -> Result<RoomName, ParseError> {
        let name = raw.room.as_deref().ok_or(ParseError::MissingRoom(what))?;
        RoomName::parse(name, max_room_len).map_err(ParseError::InvalidRoom)
    };
    match &*kind {
        "chat" => {
            let room = match raw.room.as_deref() {
                None | Some("") => None,
                Some(_) => Some(room("chat")?),
            };
            let content = raw.data.and_then(|d| d.content).filter(|c| !c.is_empty());
            let content = content.ok_or(ParseError::MissingContent)?;
            Ok(Command::Chat { room, content })
        }
        "join" => Ok(Command::Join(room("join")?)),
        "leave" => Ok(Command::Leave(room("leave")?)),
        "ping" => Ok(Command::Ping),
        other => Err(ParseError::UnknownType(short(other.to_string()))),
    }
}

/// Keeps error messages (which echo client input) short.
fn short(mut s: String) -> String {
    const MAX: usize = 120;
    if s.len() > MAX {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name, 64).unwrap()
    }

    #[test]
    fn parses_each_command() {
        let chat = parse(
            br#"{"type":"chat","room":"r1","data":{"content":"hi"}}"#,
            64,
        )
        .unwrap();
        assert_eq!(
            chat,
            Command::Chat {
                room: Some(room("r1")),
                content: "hi".into()
            }
        );
        let global = parse(br#"{"type":"chat","data":{"content":"hi \"q\""}}"#, 64).unwrap();
        assert_eq!(
            global,
            Command::Chat {
                room: None,
                content: "hi \"q\"".into()
            }
        );
        assert_eq!(
            parse(br#"{"type":"join","room":"a"}"#, 64),
            Ok(Command::Join(room("a")))
        );
        assert_eq!(
            parse(br#"{"type":"leave","room":"a"}"#, 64),
            Ok(Command::Leave(room("a")))
        );
        assert_eq!(parse(br#"{"type":"ping"}"#, 64), Ok(Command::Ping));
    }

    #[test]
    fn ignores_server_assigned_fields() {
        let msg =
            br#"{"id":"x","from":"mallory","timestamp":"t","type":"chat","data":{"content":"c"}}"#;
        assert_eq!(
            parse(msg, 64),
            Ok(Command::Chat {
                room: None,
                content: "c".into()
            })
        );
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert!(matches!(parse(b"{not json", 64), Err(ParseError::Json(_))));
        assert!(matches!(parse(b"[1,2]", 64), Err(ParseError::Json(_))));
        assert_eq!(parse(br#"{"room":"a"}"#, 64), Err(ParseError::MissingType));
        assert_eq!(
            parse(br#"{"type":"dance"}"#, 64),
            Err(ParseError::UnknownType("dance".into()))
        );
        assert_eq!(
            parse(br#"{"type":"join"}"#, 64),
            Err(ParseError::MissingRoom("join"))
        );
        assert_eq!(
            parse(br#"{"type":"join","room":"no spaces"}"#, 64),
            Err(ParseError::InvalidRoom(NameError::BadChar))
        );
        assert_eq!(
            parse(br#"{"type":"chat","data":{}}"#, 64),
            Err(ParseError::MissingContent)
        );
        assert_eq!(
            parse(br#"{"type":"chat","data":{"content":""}}"#, 64),
            Err(ParseError::MissingContent)
        );
        assert!(matches!(
            parse(br#"{"type":"chat","data":{"content":5}}"#, 64),
            Err(ParseError::Json(_))
        ));
    }
}
