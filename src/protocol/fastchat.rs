//! The FastChat dialect: its messages (`{"type","data"}`), parsed into a
//! typed [`Message`] with the spec's validation (user ids UUID v4, display
//! names 3–50 characters, messages 1–1000 characters, HTML and script tags
//! stripped), and the JSON shapes of what the server sends.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use super::depth;

/// A validated FastChat message from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Hello {
        user_id: String,
        display_name: String,
    },
    OpenChat {
        target: String,
    },
    Msg {
        to: String,
        content: String,
        message_id: Option<String>,
    },
    /// The client's acknowledgement of a message it received (by the
    /// `message_id` its `MSG` carried).
    MsgAck {
        message_id: Option<String>,
    },
    Typing {
        is_typing: bool,
    },
    Ping,
}

/// Why a message was refused: `code` is the spec's.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: &'static str,
    pub message: &'static str,
}

const fn validation(message: &'static str) -> Refusal {
    Refusal {
        code: "VALIDATION",
        message,
    }
}

/// `body` of a typing event when the user stopped.
pub const STOPPED: &str = "stop";

#[derive(Deserialize, Default)]
struct Data<'a> {
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    display_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    target_user_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message_id: Option<Cow<'a, str>>,
    #[serde(default)]
    is_typing: Option<bool>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<Data<'a>>,
}

/// HTML and script tags removed (a `<script>` element with its content);
/// what is left, trimmed.
pub fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let lower = after.to_ascii_lowercase();
        if lower.starts_with("<script") {
            // Drop the whole element (or everything, if it never closes).
            rest = match lower.find("</script") {
                Some(end) => match after[end..].find('>') {
                    Some(close) => &after[end + close + 1..],
                    None => "",
                },
                None => "",
            };
            continue;
        }
        match after.find('>') {
            Some(close) => rest = &after[close + 1..],
            None => {
                // A lone `<` is text, not a tag.
                out.push('<');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out.trim().to_owned()
}

/// A user id: a UUID v4, in its hyphenated lower-case form.
pub fn user_id(text: &str) -> Result<String, Refusal> {
    match uuid::Uuid::parse_str(text) {
        Ok(id) if id.get_version_num() == 4 => Ok(id.hyphenated().to_string()),
        _ => Err(validation("user ids are UUID v4")),
    }
}

/// Parses and validates one message.
pub fn parse(text: &[u8], max_depth: usize) -> Result<Message, Refusal> {
    depth::check(text, max_depth).map_err(|_| validation("JSON nested too deeply"))?;
    let raw: Raw = sonic_rs::from_slice(text).map_err(|_| validation("not a JSON message"))?;
    let data = raw.data.unwrap_or_default();
    match raw.kind.as_deref() {
        Some("HELLO") => {
            let id = user_id(data.user_id.as_deref().unwrap_or(""))?;
            let name = strip_tags(data.display_name.as_deref().unwrap_or(""));
            if !(3..=50).contains(&name.chars().count()) {
                return Err(validation("display names are 3 to 50 characters"));
            }
            Ok(Message::Hello {
                user_id: id,
                display_name: name,
            })
        }
        Some("OPEN_CHAT") => Ok(Message::OpenChat {
            target: user_id(data.target_user_id.as_deref().unwrap_or(""))?,
        }),
        Some("MSG") => {
            let to = user_id(data.to.as_deref().unwrap_or(""))?;
            let content = strip_tags(data.content.as_deref().unwrap_or(""));
            if !(1..=1000).contains(&content.chars().count()) {
                return Err(validation("messages are 1 to 1000 characters"));
            }
            Ok(Message::Msg {
                to,
                content,
                message_id: data
                    .message_id
                    .map(Cow::into_owned)
                    .filter(|m| !m.is_empty()),
            })
        }
        Some("MSG_ACK") => Ok(Message::MsgAck {
            message_id: data
                .message_id
                .map(Cow::into_owned)
                .filter(|m| !m.is_empty()),
        }),
        Some("TYPING") => Ok(Message::Typing {
            is_typing: data.is_typing.unwrap_or(true),
        }),
        Some("PING") => Ok(Message::Ping),
        _ => Err(validation("unknown message type")),
    }
}

/// `{"type": kind, "data": data}`.
pub fn message<D: Serialize>(kind: &str, data: &D) -> String {
    #[derive(Serialize)]
    struct Envelope<'a, D> {
        #[serde(rename = "type")]
        kind: &'a str,
        data: &'a D,
    }
    sonic_rs::to_string(&Envelope { kind, data }).expect("plain structs serialise")
}

#[derive(Serialize)]
pub struct Msg<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub content: &'a str,
    /// The id the sender gave (`MSG`'s `message_id`), else chatd's own.
    pub message_id: &'a str,
    /// chatd's own id for the message (the one REST and the native
    /// protocol show), beside the sender's.
    pub id: &'a str,
    pub timestamp: &'a str,
}

#[derive(Serialize)]
pub struct Typing<'a> {
    pub user_id: &'a str,
    pub is_typing: bool,
}

#[derive(Serialize)]
pub struct Presence {
    pub users: sonic_rs::Value,
}

/// One entry of a PRESENCE list.
#[derive(Serialize)]
pub struct PresenceUser<'a> {
    pub user_id: &'a str,
    pub display_name: &'a str,
    pub online: bool,
}

/// `ERROR` with the spec's code; `retry_after_ms` in `details` when rate
/// limited.
pub fn error(code: &str, text: &str, retry_after_ms: Option<u64>) -> String {
    #[derive(Serialize)]
    struct Details {
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        code: &'a str,
        message: &'a str,
        details: Details,
    }
    message(
        "ERROR",
        &Body {
            code,
            message: text,
            details: Details { retry_after_ms },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_and_scripts() {
        assert_eq!(strip_tags("<b>hi</b> there"), "hi there");
        assert_eq!(strip_tags("a<script>alert(1)</script>b"), "ab");
        assert_eq!(strip_tags("x <SCRIPT src=e>y"), "x");
        assert_eq!(strip_tags("1 < 2"), "1 < 2");
    }

    #[test]
    fn validates_as_the_spec_says() {
        let id = "6f1c1b0e-2a4b-4c8d-9e0f-1a2b3c4d5e6f";
        let hello = format!(
            r#"{{"type":"HELLO","data":{{"user_id":"{id}","display_name":"<i>Ann</i>"}}}}"#
        );
        assert_eq!(
            parse(hello.as_bytes(), 32),
            Ok(Message::Hello {
                user_id: id.into(),
                display_name: "Ann".into()
            })
        );
        let v7 = uuid::Uuid::now_v7().to_string();
        let bad = format!(r#"{{"type":"HELLO","data":{{"user_id":"{v7}","display_name":"Ann"}}}}"#);
        assert_eq!(parse(bad.as_bytes(), 32).unwrap_err().code, "VALIDATION");
        let short =
            format!(r#"{{"type":"HELLO","data":{{"user_id":"{id}","display_name":"Al"}}}}"#);
        assert!(parse(short.as_bytes(), 32).is_err());
        let long = format!(
            r#"{{"type":"MSG","data":{{"to":"{id}","content":"{}"}}}}"#,
            "x".repeat(1001)
        );
        assert!(parse(long.as_bytes(), 32).is_err());
        let empty = format!(r#"{{"type":"MSG","data":{{"to":"{id}","content":"<b></b>"}}}}"#);
        assert!(parse(empty.as_bytes(), 32).is_err());
        assert_eq!(
            parse(br#"{"type":"PING","data":{}}"#, 32),
            Ok(Message::Ping)
        );
        assert!(parse(br#"{"type":"NOPE"}"#, 32).is_err());
    }
}
