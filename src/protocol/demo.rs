//! The redis-chat-demo dialect: its requests, parsed into a typed
//! [`Request`] at the boundary, and the JSON shapes of its answers.
//!
//! The shapes follow both the protocol's README and what its shipped
//! client actually sends and reads (`../shared/notes/redis-chat-demo-wire.md`):
//! `signIn` also as `signId`; the access key as `accessKey` or
//! `userAccessKey`; the public channel as `recipientUUID` `""`, `"0"` or
//! `0`; objects carry both the capitalised and the README's lower-case keys.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;

use super::depth;

/// A validated demo request.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    SignUp {
        username: String,
        password: String,
    },
    SignIn {
        username: String,
        password: String,
    },
    SignOut,
    Users,
    /// `None`: the public channel (joined as `public` says); else the
    /// other user of a private one.
    ChannelJoin {
        recipient: Option<String>,
        public: Public,
    },
    ChannelMessage {
        recipient: Option<String>,
        message: String,
        public: Public,
    },
    ChannelMessages {
        recipient: Option<String>,
        offset: u64,
        limit: u64,
        public: Public,
    },
    ChannelLeave {
        recipient: Option<String>,
    },
}

/// The credentials a request carries (checked against the session's
/// sign-in).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    pub user: Option<String>,
    pub access_key: Option<String>,
}

/// Why a request was refused (answered with an `error`).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("the request is not JSON")]
    Malformed,
    #[error("JSON nested too deeply")]
    TooDeep,
    #[error("unknown request type")]
    UnknownType,
    #[error("the request misses {0}")]
    Missing(&'static str),
    #[error("limit must be below 100")]
    BadLimit,
}

#[derive(Deserialize)]
struct Login<'a> {
    #[serde(borrow, default)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    password: Option<Cow<'a, str>>,
}

/// `recipientUUID`: a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawRecipient<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Number(i64),
}

/// How a client names the public channel: the shipped client says `""`,
/// the README `0` (clients written from it send `"0"` or `0`). Each client
/// is answered in its own form, or it files public messages under a
/// channel it never joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Public {
    #[default]
    Empty,
    Zero,
    ZeroNumber,
}

/// A `recipientUUID` in an answer: a user's id, or the public channel in
/// the client's form.
#[derive(Debug, Clone, Copy)]
pub enum Recipient<'a> {
    User(&'a str),
    Public(Public),
}

impl Serialize for Recipient<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Recipient::User(id) => s.serialize_str(id),
            Recipient::Public(Public::Empty) => s.serialize_str(""),
            Recipient::Public(Public::Zero) => s.serialize_str("0"),
            Recipient::Public(Public::ZeroNumber) => s.serialize_i64(0),
        }
    }
}

#[derive(Deserialize)]
struct Channel<'a> {
    #[serde(rename = "recipientUUID", borrow, default)]
    recipient: Option<RawRecipient<'a>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "userUUID", borrow, default)]
    user: Option<Cow<'a, str>>,
    #[serde(rename = "accessKey", borrow, default)]
    access_key: Option<Cow<'a, str>>,
    #[serde(rename = "userAccessKey", borrow, default)]
    user_access_key: Option<Cow<'a, str>>,
    #[serde(rename = "signUp", borrow, default)]
    sign_up: Option<Login<'a>>,
    #[serde(rename = "signIn", borrow, default)]
    sign_in: Option<Login<'a>>,
    #[serde(rename = "signId", borrow, default)]
    sign_id: Option<Login<'a>>,
    #[serde(rename = "channelJoin", borrow, default)]
    channel_join: Option<Channel<'a>>,
    #[serde(rename = "channelMessage", borrow, default)]
    channel_message: Option<Channel<'a>>,
    #[serde(rename = "channelMessages", borrow, default)]
    channel_messages: Option<Channel<'a>>,
    #[serde(rename = "channelLeave", borrow, default)]
    channel_leave: Option<Channel<'a>>,
}

/// The public channel: `""`, `"0"`, `0` or absent.
fn recipient(c: &Channel<'_>) -> Option<String> {
    match &c.recipient {
        None => None,
        Some(RawRecipient::Number(0)) => None,
        Some(RawRecipient::Number(n)) => Some(n.to_string()),
        Some(RawRecipient::Text(t)) if t.is_empty() || t == "0" => None,
        Some(RawRecipient::Text(t)) => Some(t.to_string()),
    }
}

/// The form a request named the public channel in (absent: `""`, the
/// shipped client's).
fn public(c: &Channel<'_>) -> Public {
    match &c.recipient {
        Some(RawRecipient::Number(0)) => Public::ZeroNumber,
        Some(RawRecipient::Text(t)) if t == "0" => Public::Zero,
        _ => Public::Empty,
    }
}

fn login(l: Option<Login<'_>>) -> Result<(String, String), RequestError> {
    let l = l.ok_or(RequestError::Missing("username and password"))?;
    match (l.username, l.password) {
        (Some(u), Some(p)) => Ok((u.into_owned(), p.into_owned())),
        _ => Err(RequestError::Missing("username and password")),
    }
}

/// Parses one request (`max_depth`: the nesting bound of every parser).
pub fn parse(text: &[u8], max_depth: usize) -> Result<(Request, Credentials), RequestError> {
    depth::check(text, max_depth).map_err(|_| RequestError::TooDeep)?;
    let raw: Raw = sonic_rs::from_slice(text).map_err(|_| RequestError::Malformed)?;
    let credentials = Credentials {
        user: raw.user.map(Cow::into_owned).filter(|u| !u.is_empty()),
        access_key: raw
            .access_key
            .or(raw.user_access_key)
            .map(Cow::into_owned)
            .filter(|k| !k.is_empty()),
    };
    fn channel(c: Option<Channel<'_>>) -> Result<Channel<'_>, RequestError> {
        c.ok_or(RequestError::Missing("the channel"))
    }
    let request = match raw.kind.as_deref() {
        Some("signUp") => {
            let (username, password) = login(raw.sign_up)?;
            Request::SignUp { username, password }
        }
        Some("signIn") => {
            let (username, password) = login(raw.sign_in.or(raw.sign_id))?;
            Request::SignIn { username, password }
        }
        Some("signOut") => Request::SignOut,
        Some("users") => Request::Users,
        Some("channelJoin") => {
            let c = channel(raw.channel_join)?;
            Request::ChannelJoin {
                recipient: recipient(&c),
                public: public(&c),
            }
        }
        Some("channelMessage") => {
            let c = channel(raw.channel_message)?;
            let message = c
                .message
                .as_deref()
                .filter(|m| !m.is_empty())
                .ok_or(RequestError::Missing("message"))?
                .to_owned();
            Request::ChannelMessage {
                recipient: recipient(&c),
                message,
                public: public(&c),
            }
        }
        Some("channelMessages") => {
            let c = channel(raw.channel_messages)?;
            let limit = c.limit.unwrap_or(10);
            if limit == 0 || limit >= 100 {
                return Err(RequestError::BadLimit);
            }
            Request::ChannelMessages {
                recipient: recipient(&c),
                offset: c.offset.unwrap_or(0),
                limit,
                public: public(&c),
            }
        }
        Some("channelLeave") => Request::ChannelLeave {
            recipient: recipient(&channel(raw.channel_leave)?),
        },
        _ => return Err(RequestError::UnknownType),
    };
    Ok((request, credentials))
}

/// A user, as the demo shows one (never a password or a key).
#[derive(Serialize)]
pub struct User<'a> {
    #[serde(rename = "UUID")]
    pub uuid: &'a str,
    #[serde(rename = "Username")]
    pub username_cap: &'a str,
    pub username: &'a str,
    #[serde(rename = "OnLine")]
    pub online: bool,
}

/// A message, with both spellings of each key.
#[derive(Serialize)]
pub struct Message<'a> {
    #[serde(rename = "UUID")]
    pub uuid: &'a str,
    #[serde(rename = "SenderUUID")]
    pub sender_cap: &'a str,
    #[serde(rename = "senderUUID")]
    pub sender: &'a str,
    #[serde(rename = "RecipientUUID")]
    pub recipient_cap: Recipient<'a>,
    #[serde(rename = "recipientUUID")]
    pub recipient: Recipient<'a>,
    #[serde(rename = "Message")]
    pub message_cap: &'a str,
    pub message: &'a str,
    #[serde(rename = "CreatedAt")]
    pub created_cap: &'a str,
    #[serde(rename = "createdAt")]
    pub created: &'a str,
    pub created_at: &'a str,
}

impl<'a> Message<'a> {
    pub fn new(
        uuid: &'a str,
        sender: &'a str,
        recipient: Recipient<'a>,
        text: &'a str,
        at: &'a str,
    ) -> Self {
        Message {
            uuid,
            sender_cap: sender,
            sender,
            recipient_cap: recipient,
            recipient,
            message_cap: text,
            message: text,
            created_cap: at,
            created: at,
            created_at: at,
        }
    }
}

/// `{"type": T, T: body}`: every demo answer's shape.
pub fn answer<B: Serialize>(kind: &str, body: &B) -> String {
    struct Keyed<'a, B>(&'a str, &'a B);
    impl<B: Serialize> Serialize for Keyed<'_, B> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(2))?;
            m.serialize_entry("type", self.0)?;
            m.serialize_entry(self.0, self.1)?;
            m.end()
        }
    }
    sonic_rs::to_string(&Keyed(kind, body)).expect("plain structs serialise")
}

/// The `channelRead` answer: `{"type":"channelRead","channelMessages":{...}}`
/// (the README's odd pairing of names, kept).
pub fn channel_read<B: Serialize>(body: &B) -> String {
    #[derive(Serialize)]
    struct Read<'a, B> {
        #[serde(rename = "type")]
        kind: &'static str,
        #[serde(rename = "channelMessages")]
        body: &'a B,
    }
    sonic_rs::to_string(&Read {
        kind: "channelRead",
        body,
    })
    .expect("plain structs serialise")
}

/// An `error` answer: `message` and `error` carry the same text (the
/// README's client reads one, the shipped client the other).
pub fn error(code: u16, text: &str) -> String {
    #[derive(Serialize)]
    struct Body<'a> {
        code: u16,
        message: &'a str,
        error: &'a str,
    }
    answer(
        "error",
        &Body {
            code,
            message: text,
            error: text,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_readme_and_the_shipped_client_send() {
        let (r, c) = parse(
            br#"{"SUUID":"s","type":"signIn","signIn":{"username":"Pablo","password":"pw"}}"#,
            32,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::SignIn {
                username: "Pablo".into(),
                password: "pw".into()
            }
        );
        assert_eq!(c, Credentials::default());
        let (r, _) = parse(
            br#"{"type":"signIn","signId":{"username":"a","password":"b"}}"#,
            32,
        )
        .unwrap();
        assert!(matches!(r, Request::SignIn { .. }));
        for (text, public) in [
            (r#""""#, Public::Empty),
            (r#""0""#, Public::Zero),
            ("0", Public::ZeroNumber),
        ] {
            let text = format!(
                r#"{{"type":"channelJoin","userUUID":"u","accessKey":"k","channelJoin":{{"recipientUUID":{text}}}}}"#
            );
            let (r, c) = parse(text.as_bytes(), 32).unwrap();
            assert_eq!(
                r,
                Request::ChannelJoin {
                    recipient: None,
                    public
                }
            );
            assert_eq!(c.access_key.as_deref(), Some("k"));
        }
        let (r, c) = parse(
            br#"{"type":"channelLeave","userAccessKey":"k2","channelLeave":{"recipientUUID":"x"}}"#,
            32,
        )
        .unwrap();
        assert_eq!(
            r,
            Request::ChannelLeave {
                recipient: Some("x".into())
            }
        );
        assert_eq!(c.access_key.as_deref(), Some("k2"));
        let bad = parse(
            br#"{"type":"channelMessages","channelMessages":{"limit":100}}"#,
            32,
        );
        assert_eq!(bad, Err(RequestError::BadLimit));
        assert_eq!(parse(b"{", 32), Err(RequestError::Malformed));
        assert_eq!(
            parse(br#"{"type":"x"}"#, 32),
            Err(RequestError::UnknownType)
        );
    }

    #[test]
    fn answers_are_keyed_by_their_type() {
        assert_eq!(
            answer("ready", &sonic_rs::json!({"sessionUUID":"s"})),
            r#"{"type":"ready","ready":{"sessionUUID":"s"}}"#
        );
        assert_eq!(
            error(100, "no"),
            r#"{"type":"error","error":{"code":100,"message":"no","error":"no"}}"#
        );
    }
}
