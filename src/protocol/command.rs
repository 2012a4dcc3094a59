//! What a client may send on the native (chat-api) endpoint, parsed into a
//! typed [`Command`] at the boundary so nothing past it matches on strings.

use serde::Deserialize;
use sonic_rs::error::Category;
use std::borrow::Cow;

use super::depth;
use super::names::{NameError, RoomName};

/// A validated client request.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `room: None` means "my URL room, or everyone if I have none".
    Chat {
        room: Option<RoomName>,
        content: Cow<'a, str>,
        /// The client's own id for this message, echoed in a
        /// `MESSAGE_FAILED` error so the client knows which one failed.
        client_msg_id: Option<RoomName>,
        /// `data.attachments[].file_id`: uploaded files (checked by the
        /// chat service).
        attachments: Vec<FileId>,
    },
    /// `since_seq` (in `data`): replay the stored messages after it first.
    Join {
        room: RoomName,
        since_seq: Option<u64>,
    },
    Leave(RoomName),
    /// A page of the room's stored messages, newest first.
    History {
        room: RoomName,
        before_seq: Option<u64>,
        limit: Option<u64>,
    },
    /// The client is typing in the room (relayed, never stored).
    Typing(RoomName),
    Ping,
}

/// Bounds applied while parsing.
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Longest room name or `client_msg_id`.
    pub max_name: usize,
    /// Deepest nesting of arrays and objects (anywhere, ignored fields too).
    pub max_depth: usize,
}

/// Why a text message was refused; sent back as a `VALIDATION` error. The
/// texts are short and stable: they never echo parser internals.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed JSON at line {line}, column {column}")]
    Malformed { line: usize, column: usize },
    #[error("JSON nested deeper than {0} levels")]
    TooDeep(usize),
    #[error(
        "expected a JSON object with string fields type, room, client_msg_id and data.content"
    )]
    WrongShape,
    #[error("missing field \"type\"")]
    MissingType,
    #[error("unknown type {0:?}; expected chat, join, leave, history, typing or ping")]
    UnknownType(String),
    #[error("type {0} needs a \"room\"")]
    MissingRoom(&'static str),
    #[error("invalid room name: {0}")]
    InvalidRoom(NameError),
    #[error("invalid client_msg_id: {0}")]
    InvalidClientMsgId(NameError),
    #[error("chat needs data.content (a non-empty string) or data.attachments")]
    MissingContent,
    #[error("data.attachments must be a list of {{\"file_id\": \"<uuid>\"}}")]
    InvalidAttachment,
}

/// An uploaded file's id, as a client names it in an attachment: a UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileId(String);

impl FileId {
    pub fn parse(s: &str) -> Option<FileId> {
        uuid::Uuid::parse_str(s)
            .ok()
            .map(|u| FileId(u.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    room: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client_msg_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<RawData<'a>>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    before_seq: Option<u64>,
    #[serde(default)]
    since_seq: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(borrow, default)]
    attachments: Option<Vec<RawAttachment<'a>>>,
}

#[derive(Deserialize)]
struct RawAttachment<'a> {
    #[serde(borrow)]
    file_id: Cow<'a, str>,
}

/// Parses one text message. Fields the server assigns itself (`id`, `from`,
/// `timestamp`) are ignored if a client sends them.
pub fn parse(text: &[u8], limits: ParseLimits) -> Result<Command<'_>, ParseError> {
    // Before the parser: it recurses per level (a stack overflow otherwise).
    depth::check(text, limits.max_depth).map_err(|_| ParseError::TooDeep(limits.max_depth))?;
    let raw: Raw<'_> = sonic_rs::from_slice(text).map_err(|e| match e.classify() {
        Category::TypeUnmatched | Category::NotFound => ParseError::WrongShape,
        _ => ParseError::Malformed {
            line: e.line(),
            column: e.column(),
        },
    })?;
    let max_name = limits.max_name;
    let kind = raw.kind.ok_or(ParseError::MissingType)?;
    let room = |what: &'static str| -> Result<RoomName, ParseError> {
        let name = raw.room.as_deref().ok_or(ParseError::MissingRoom(what))?;
        RoomName::parse(name, max_name).map_err(ParseError::InvalidRoom)
    };
    match &*kind {
        "chat" => {
            let room = match raw.room.as_deref() {
                None | Some("") => None,
                Some(_) => Some(room("chat")?),
            };
            let client_msg_id = raw
                .client_msg_id
                .as_deref()
                .map(|id| RoomName::parse(id, max_name))
                .transpose()
                .map_err(ParseError::InvalidClientMsgId)?;
            let (content, attachments) = match raw.data {
                Some(d) => (
                    d.content.unwrap_or_default(),
                    d.attachments.unwrap_or_default(),
                ),
                None => (Cow::Borrowed(""), Vec::new()),
            };
            let attachments = attachments
                .iter()
                .map(|a| FileId::parse(&a.file_id))
                .collect::<Option<Vec<FileId>>>()
                .ok_or(ParseError::InvalidAttachment)?;
            if content.is_empty() && attachments.is_empty() {
                return Err(ParseError::MissingContent);
            }
            Ok(Command::Chat {
                room,
                content,
                client_msg_id,
                attachments,
            })
        }
        "join" => Ok(Command::Join {
            room: room("join")?,
            since_seq: raw.data.as_ref().and_then(|d| d.since_seq),
        }),
        "leave" => Ok(Command::Leave(room("leave")?)),
        "history" => Ok(Command::History {
            room: room("history")?,
            before_seq: raw.data.as_ref().and_then(|d| d.before_seq),
            limit: raw.data.as_ref().and_then(|d| d.limit),
        }),
        "typing" => Ok(Command::Typing(room("typing")?)),
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

    const L: ParseLimits = ParseLimits {
        max_name: 64,
        max_depth: 32,
    };

    #[test]
    fn chats_may_carry_attachments_of_uploaded_files() {
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        let text = format!(
            r#"{{"type":"chat","room":"r1","data":{{"attachments":[{{"file_id":"{id}"}}]}}}}"#
        );
        match parse(text.as_bytes(), L) {
            Ok(Command::Chat {
                content,
                attachments,
                ..
            }) => {
                assert_eq!(content, "");
                assert_eq!(attachments, vec![FileId::parse(id).unwrap()]);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            r#"{"type":"chat","data":{"attachments":[{"file_id":"../etc"}]}}"#,
            r#"{"type":"chat","data":{"attachments":[{"id":"x"}]}}"#,
            r#"{"type":"chat","data":{"attachments":"x"}}"#,
        ] {
            assert!(parse(bad.as_bytes(), L).is_err(), "{bad}");
        }
        let empty = r#"{"type":"chat","data":{"content":"","attachments":[]}}"#;
        assert_eq!(parse(empty.as_bytes(), L), Err(ParseError::MissingContent));
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name, 64).unwrap()
    }

    #[test]
    fn parses_each_command() {
        let chat = parse(br#"{"type":"chat","room":"r1","data":{"content":"hi"}}"#, L).unwrap();
        assert_eq!(
            chat,
            Command::Chat {
                room: Some(room("r1")),
                content: "hi".into(),
                client_msg_id: None,
                attachments: Vec::new(),
            }
        );
        let global = parse(br#"{"type":"chat","data":{"content":"hi \"q\""}}"#, L).unwrap();
        assert_eq!(
            global,
            Command::Chat {
                room: None,
                content: "hi \"q\"".into(),
                client_msg_id: None,
                attachments: Vec::new(),
            }
        );
        assert_eq!(
            parse(br#"{"type":"join","room":"a"}"#, L),
            Ok(Command::Join {
                room: room("a"),
                since_seq: None
            })
        );
        assert_eq!(
            parse(br#"{"type":"leave","room":"a"}"#, L),
            Ok(Command::Leave(room("a")))
        );
        assert_eq!(parse(br#"{"type":"ping"}"#, L), Ok(Command::Ping));
    }

    #[test]
    fn ignores_server_assigned_fields() {
        let msg =
            br#"{"id":"x","from":"mallory","timestamp":"t","type":"chat","data":{"content":"c"}}"#;
        assert_eq!(
            parse(msg, L),
            Ok(Command::Chat {
                room: None,
                content: "c".into(),
                client_msg_id: None,
                attachments: Vec::new(),
            })
        );
    }

    #[test]
    fn refuses_bad_input_with_a_reason() {
        assert_eq!(
            parse(b"{not json", L),
            Err(ParseError::Malformed { line: 1, column: 2 })
        );
        assert_eq!(parse(b"[1,2]", L), Err(ParseError::WrongShape));
        assert_eq!(parse(br#"{"room":"a"}"#, L), Err(ParseError::MissingType));
        assert_eq!(
            parse(br#"{"type":"dance"}"#, L),
            Err(ParseError::UnknownType("dance".into()))
        );
        assert_eq!(
            parse(br#"{"type":"join"}"#, L),
            Err(ParseError::MissingRoom("join"))
        );
        assert_eq!(
            parse(br#"{"type":"join","room":"no spaces"}"#, L),
            Err(ParseError::InvalidRoom(NameError::BadChar))
        );
        assert_eq!(
            parse(br#"{"type":"chat","data":{}}"#, L),
            Err(ParseError::MissingContent)
        );
        assert_eq!(
            parse(br#"{"type":"chat","data":{"content":""}}"#, L),
            Err(ParseError::MissingContent)
        );
        assert_eq!(
            parse(br#"{"type":"chat","data":{"content":5}}"#, L),
            Err(ParseError::WrongShape)
        );
        assert_eq!(
            parse(
                br#"{"type":"chat","client_msg_id":"a b","data":{"content":"x"}}"#,
                L
            ),
            Err(ParseError::InvalidClientMsgId(NameError::BadChar))
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        // Each of these overflowed a shard's stack before the depth check.
        let mut inside_data = br#"{"type":"chat","data":{"content":"x","deep":"#.to_vec();
        inside_data.extend(std::iter::repeat_n(b'[', 9_500));
        let mut unknown = br#"{"type":"ping","x":"#.to_vec();
        unknown.extend(std::iter::repeat_n(b'{', 9_500));
        let balanced = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for text in [
            vec![b'['; 9_500],
            balanced.into_bytes(),
            inside_data,
            unknown,
            "{\"\":".repeat(12_000).into_bytes(),
        ] {
            assert_eq!(parse(&text, L), Err(ParseError::TooDeep(32)));
        }
        let ok = br#"{"type":"chat","data":{"content":"[[[[{{{{","x":[[1]]}}"#;
        assert!(parse(ok, L).is_ok());
    }

    #[test]
    fn client_msg_id_is_carried() {
        let msg = br#"{"type":"chat","client_msg_id":"m-1","data":{"content":"x"}}"#;
        assert_eq!(
            parse(msg, L),
            Ok(Command::Chat {
                room: None,
                content: "x".into(),
                client_msg_id: Some(room("m-1")),
                attachments: Vec::new(),
            })
        );
    }
}
