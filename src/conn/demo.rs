//! The redis-chat-demo dialect on a connection: translates its requests
//! into account and chat service calls, and their results into its answers.
//! Live messages reach the connection through the fan-out, framed once per
//! message for this dialect (`rooms::encode`).
//!
//! Its public channel is the room `demo.public_room`; a private channel is
//! the direct conversation of the two users (the same one REST's `dm/{id}`
//! and the native protocol see). Sign-in creates the user if absent, as the
//! protocol says; the access key is the login token.

use bytes::Bytes;
use serde::Serialize;
use std::sync::Arc;

use super::{Conn, Deferred, Handler};
use crate::accounts::{AccountError, Identity, Login, Origin};
use crate::chat::{self, conversations, Post, Session};
use crate::config::Wire;
use crate::node::Node;
use crate::protocol::demo::{self, Credentials, Request};
use crate::protocol::{ClientId, RoomName};
use crate::store::directory::{DirectoryRequest, User};
use crate::ws::{OpCode, Outgoing};

/// Error codes (the README leaves them to the server; these follow the
/// reference's numbering).
mod code {
    pub const AUTH: u16 = 100;
    pub const JOIN: u16 = 101;
    pub const HISTORY: u16 = 102;
    pub const MESSAGE: u16 = 104;
    pub const LEAVE: u16 = 105;
    pub const REQUEST: u16 = 110;
}

pub struct Demo {
    session: Session,
    /// The client's address (new accounts are counted per address).
    from: std::net::IpAddr,
    session_uuid: String,
    /// The signed-in user, their access key (the login's token) and its
    /// session.
    signed_in: Option<Login>,
}

/// What a request's store work found, for the connection to finish.
pub enum Step {
    /// Just an answer.
    Reply(String),
    /// Signed in (or up): go on as this user.
    SignedIn(Login),
    /// Join this room, then answer (`public`: it is the public channel,
    /// to be heard in this variant of the dialect).
    Join {
        room: RoomName,
        answer: String,
        public: Option<Wire>,
    },
    /// Leave this room (the private channel with `recipient`).
    Leave { room: RoomName, recipient: String },
    /// Post to this room (joining it first if needed, as in `Join`).
    Post {
        room: RoomName,
        to: Option<ClientId>,
        message: String,
        public: Option<Wire>,
    },
}

impl Demo {
    pub fn new(from: std::net::IpAddr) -> Demo {
        let anonymous = ClientId::generate();
        Demo {
            from,
            session: Session::new(Identity::Anonymous, anonymous, None, Wire::Demo),
            session_uuid: uuid::Uuid::new_v4().to_string(),
            signed_in: None,
        }
    }

    fn send(&self, conn: &Conn, text: &str) {
        conn.reply(Outgoing::from_payload(text.as_bytes()).into_frame(OpCode::Text));
    }

    /// The signed-in user, if the request's credentials are theirs.
    fn user_for(&self, credentials: &Credentials) -> Option<&User> {
        let login = self.signed_in.as_ref()?;
        let same_user = credentials
            .user
            .as_deref()
            .is_none_or(|u| u == login.user.id);
        let key = credentials.access_key.as_deref() == Some(login.token.as_str());
        (same_user && key).then_some(&login.user)
    }
}

#[derive(Serialize)]
struct Ready<'a> {
    #[serde(rename = "sessionUUID")]
    session: &'a str,
}

#[derive(Serialize)]
struct Authorized<'a> {
    #[serde(rename = "userUUID")]
    user: &'a str,
    #[serde(rename = "accessKey")]
    key: &'a str,
}

#[derive(Serialize)]
struct Unauthorized<'a> {
    #[serde(rename = "userUUID")]
    user: &'a str,
}

#[derive(Serialize)]
struct Users<'a> {
    total: usize,
    received: usize,
    users: Vec<demo::User<'a>>,
}

#[derive(Serialize)]
struct ChannelJoin<'a> {
    #[serde(rename = "recipientUUID")]
    recipient: demo::Recipient<'a>,
    messages: Vec<demo::Message<'a>>,
    users: Vec<demo::User<'a>>,
}

#[derive(Serialize)]
struct ChannelRead<'a> {
    #[serde(rename = "messagesTotal")]
    total: u64,
    #[serde(rename = "messagesReceived")]
    received: usize,
    messages: Vec<demo::Message<'a>>,
}

#[derive(Serialize)]
struct ChannelLeave<'a> {
    #[serde(rename = "recipientUUID")]
    recipient: &'a str,
}

fn users_view<'a>(node: &Node, users: &'a [User]) -> Vec<demo::User<'a>> {
    users
        .iter()
        .map(|u| demo::User {
            uuid: &u.id,
            username_cap: shown_name(u),
            username: shown_name(u),
            online: node.accounts.online.is_online(&u.id),
        })
        .collect()
}

/// The name the demo shows for a user: the name as typed when the user
/// signed up (`Pablo`, kept as the display name; the stored username is
/// lower-cased), else the username.
fn shown_name(u: &User) -> &str {
    if u.display_name.eq_ignore_ascii_case(&u.username) {
        &u.display_name
    } else {
        &u.username
    }
}

/// The room of a channel: the public room, or the direct conversation
/// with `recipient`. Reads no list that grows with the users (it is on
/// every message's path).
async fn channel_room(
    node: &Node,
    me: &User,
    recipient: Option<&str>,
) -> Result<RoomName, AccountError> {
    let max = node.config.limits.max_name_length;
    let name = match recipient {
        None => node.config.demo.public_room.clone(),
        Some(other) => conversations::direct(node, me, other).await?.id,
    };
    RoomName::parse(&name, max).map_err(|_| AccountError::NotFound("room"))
}

/// The room of a channel and its users (what a join answers with).
async fn channel(
    node: &Node,
    me: &User,
    recipient: Option<&str>,
) -> Result<(RoomName, Vec<User>), AccountError> {
    let room = channel_room(node, me, recipient).await?;
    let users = match recipient {
        None => node.accounts.users().await?,
        Some(other) => vec![me.clone(), node.accounts.user(other).await?],
    };
    Ok((room, users))
}

/// The last messages of `room` (newest first), `offset` from the newest;
/// and how many the store holds (not the newest `seq`: retention may have
/// removed the oldest).
async fn page(
    node: &Node,
    room: &RoomName,
    offset: u64,
    limit: u64,
) -> Result<(u64, Vec<crate::model::Event>), AccountError> {
    let store = node.store.as_ref();
    let newest = chat::history(store, room.clone(), None, Some(1))
        .map_err(|_| AccountError::Unavailable)?
        .await
        .map_err(|_| AccountError::Unavailable)??;
    let Some(newest) = newest.first().and_then(|e| e.seq) else {
        return Ok((0, Vec::new()));
    };
    let total = chat::count(store, room.clone())
        .map_err(|_| AccountError::Unavailable)?
        .await
        .map_err(|_| AccountError::Unavailable)??;
    if offset >= newest {
        return Ok((total, Vec::new()));
    }
    let before = newest + 1 - offset;
    let events = chat::history(store, room.clone(), Some(before), Some(limit))
        .map_err(|_| AccountError::Unavailable)?
        .await
        .map_err(|_| AccountError::Unavailable)??;
    Ok((total, events))
}

/// A stored chat as the demo shows it: id, sender, recipient (`None`: the
/// public channel), text, time.
type Row = (String, String, Option<String>, String, String);

/// Stored chats as the demo's messages: the recipient is the public
/// channel, else whichever of the pair did not send it.
fn messages_json(events: &[crate::model::Event], me: &str, other: Option<&str>) -> Vec<Row> {
    events
        .iter()
        .map(|e| {
            let recipient = match other {
                None => None,
                Some(other) if e.sender.as_str() == me => Some(other.to_owned()),
                Some(_) => Some(me.to_owned()),
            };
            (
                e.id.hyphenated().to_string(),
                e.sender.as_str().to_owned(),
                recipient,
                e.body.to_string(),
                humantime::format_rfc3339_millis(e.ts).to_string(),
            )
        })
        .collect()
}

/// The rows as messages, the public channel named in `public`'s form.
fn as_messages(rows: &[Row], public: demo::Public) -> Vec<demo::Message<'_>> {
    rows.iter()
        .map(|(id, from, to, text, at)| {
            let to = match to {
                Some(user) => demo::Recipient::User(user),
                None => demo::Recipient::Public(public),
            };
            demo::Message::new(id, from, to, text, at)
        })
        .collect()
}

/// The dialect variant a connection hears the public channel in: its
/// public messages name the channel as it joined it (`None`: not the
/// public channel).
fn public_wire(is_public: bool, form: demo::Public) -> Option<Wire> {
    is_public.then_some(match form {
        demo::Public::Empty => Wire::Demo,
        demo::Public::Zero => Wire::DemoPublicZero,
        demo::Public::ZeroNumber => Wire::DemoPublicZeroNumber,
    })
}

/// Logs `username` in: the session goes on as them, the access key is the
/// login token.
async fn signed_in_as(
    node: &Node,
    username: &str,
    password: String,
    from: std::net::IpAddr,
) -> Result<Step, (u16, AccountError)> {
    let origin = Origin {
        address: from,
        device: "redis-chat-demo",
    };
    let login = node
        .accounts
        .login(username, password, origin)
        .await
        .map_err(|e| (code::AUTH, e))?;
    Ok(Step::SignedIn(login))
}

/// The store work of one request, off the connection's turn.
async fn work(node: Arc<Node>, request: Request, me: Option<User>, from: std::net::IpAddr) -> Step {
    let result = run(&node, request, me, from).await;
    result.unwrap_or_else(|(code, e)| Step::Reply(demo::error(code, &e.to_string())))
}

async fn run(
    node: &Node,
    request: Request,
    me: Option<User>,
    from: std::net::IpAddr,
) -> Result<Step, (u16, AccountError)> {
    let accounts = &node.accounts;
    let signed_in = |code| me.clone().ok_or((code, AccountError::Forbidden));
    match request {
        Request::SignUp { username, password } => {
            accounts
                .register(&username, password.clone(), &username, from)
                .await
                .map_err(|e| (code::AUTH, e))?;
            signed_in_as(node, &username, password, from).await
        }
        Request::SignIn { username, password } => {
            // The protocol creates a user that does not exist yet.
            let name = username.to_ascii_lowercase();
            let exists = accounts
                .ask(|tx| DirectoryRequest::UserByName(name, tx))
                .await
                .map_err(|e| (code::AUTH, e))?
                .map_err(|e| (code::AUTH, e.into()))?
                .is_some();
            if !exists {
                match accounts
                    .register(&username, password.clone(), &username, from)
                    .await
                {
                    Ok(_) | Err(AccountError::Taken) => {}
                    Err(e) => return Err((code::AUTH, e)),
                }
            }
            signed_in_as(node, &username, password, from).await
        }
        Request::Users => {
            let users = accounts.users().await.map_err(|e| (code::AUTH, e))?;
            let view = users_view(node, &users);
            let body = Users {
                total: view.len(),
                received: view.len(),
                users: view,
            };
            Ok(Step::Reply(demo::answer("users", &body)))
        }
        Request::ChannelJoin { recipient, public } => {
            let me = signed_in(code::JOIN)?;
            let (room, users) = channel(node, &me, recipient.as_deref())
                .await
                .map_err(|e| (code::JOIN, e))?;
            let (_, mut events) = page(node, &room, 0, 10)
                .await
                .map_err(|e| (code::JOIN, e))?;
            events.reverse();
            let rows = messages_json(&events, &me.id, recipient.as_deref());
            let body = ChannelJoin {
                recipient: match recipient.as_deref() {
                    Some(user) => demo::Recipient::User(user),
                    None => demo::Recipient::Public(public),
                },
                messages: as_messages(&rows, public),
                users: users_view(node, &users),
            };
            Ok(Step::Join {
                room,
                answer: demo::answer("channelJoin", &body),
                public: public_wire(recipient.is_none(), public),
            })
        }
        Request::ChannelMessage {
            recipient,
            message,
            public,
        } => {
            let me = signed_in(code::MESSAGE)?;
            let room = channel_room(node, &me, recipient.as_deref())
                .await
                .map_err(|e| (code::MESSAGE, e))?;
            let max = node.config.limits.max_name_length;
            let wire = public_wire(recipient.is_none(), public);
            let to = recipient.and_then(|r| ClientId::parse(&r, max).ok());
            Ok(Step::Post {
                room,
                to,
                message,
                public: wire,
            })
        }
        Request::ChannelMessages {
            recipient,
            offset,
            limit,
            public,
        } => {
            let me = signed_in(code::HISTORY)?;
            let room = channel_room(node, &me, recipient.as_deref())
                .await
                .map_err(|e| (code::HISTORY, e))?;
            let (total, events) = page(node, &room, offset, limit)
                .await
                .map_err(|e| (code::HISTORY, e))?;
            let rows = messages_json(&events, &me.id, recipient.as_deref());
            let body = ChannelRead {
                total,
                received: rows.len(),
                messages: as_messages(&rows, public),
            };
            Ok(Step::Reply(demo::channel_read(&body)))
        }
        // Answered on the connection's turn (no store work).
        Request::SignOut | Request::ChannelLeave { .. } => {
            Err((code::REQUEST, AccountError::NotFound("request")))
        }
    }
}

impl Handler for Demo {
    type Resume = Step;

    fn on_open(&mut self, conn: &Conn) {
        self.session.open(&conn.shard, &conn.state);
        let ready = Ready {
            session: &self.session_uuid,
        };
        self.send(conn, &demo::answer("ready", &ready));
    }

    fn on_data(&mut self, conn: &Conn, opcode: OpCode, payload: Bytes) -> Option<Deferred<Step>> {
        if opcode == OpCode::Binary {
            self.send(conn, &demo::error(code::REQUEST, "send JSON text"));
            return None;
        }
        let node = conn.shard.node.clone();
        let (request, credentials) = match demo::parse(&payload, node.config.limits.max_json_depth)
        {
            Ok(parsed) => parsed,
            Err(e) => {
                self.send(conn, &demo::error(code::REQUEST, &e.to_string()));
                return None;
            }
        };
        match request {
            Request::SignOut => {
                let login = self.signed_in.take();
                let anonymous = ClientId::generate();
                self.session
                    .reidentify(&conn.shard, &conn.state, Identity::Anonymous, anonymous);
                let user = login
                    .as_ref()
                    .map(|l| l.user.id.clone())
                    .unwrap_or_default();
                let answer = demo::answer("unauthorized", &Unauthorized { user: &user });
                let Some(login) = login else {
                    self.send(conn, &answer);
                    return None;
                };
                // The access key was a login token: its session ends, so the
                // token is refused everywhere from now on (and sockets
                // opened with it elsewhere close; this one went anonymous).
                let shard = conn.shard.index;
                Some(Box::pin(async move {
                    let ended = node.accounts.end_session(&login.user, &login.session).await;
                    match ended {
                        Ok(()) | Err(AccountError::NotFound(_)) => {
                            conversations::sign_out_everywhere(
                                &node,
                                shard,
                                &login.user,
                                Some(&login.session),
                            );
                            Step::Reply(answer)
                        }
                        Err(e) => Step::Reply(demo::error(code::AUTH, &e.to_string())),
                    }
                }))
            }
            Request::ChannelLeave { recipient: None } => {
                let text = demo::error(code::LEAVE, "the public channel cannot be left");
                self.send(conn, &text);
                None
            }
            Request::ChannelLeave {
                recipient: Some(other),
            } => {
                let Some(me) = self.user_for(&credentials).cloned() else {
                    self.send(conn, &demo::error(code::LEAVE, "sign in first"));
                    return None;
                };
                Some(Box::pin(async move {
                    match channel_room(&node, &me, Some(&other)).await {
                        Ok(room) => Step::Leave {
                            room,
                            recipient: other,
                        },
                        Err(e) => Step::Reply(demo::error(code::LEAVE, &e.to_string())),
                    }
                }))
            }
            Request::Users | Request::SignIn { .. } | Request::SignUp { .. } => {
                Some(Box::pin(work(node, request, None, self.from)))
            }
            _ => {
                let me = self.user_for(&credentials).cloned();
                if me.is_none() {
                    let text = demo::error(code::AUTH, "sign in first (userUUID and accessKey)");
                    self.send(conn, &text);
                    return None;
                }
                Some(Box::pin(work(node, request, me, self.from)))
            }
        }
    }

    fn on_resume(&mut self, conn: &Conn, step: Step) {
        match step {
            Step::Reply(text) => self.send(conn, &text),
            Step::SignedIn(login) => {
                let max = conn.shard.node.config.limits.max_name_length;
                let Ok(client) = ClientId::parse(&login.user.id, max) else {
                    return self.send(conn, &demo::error(code::AUTH, "user id is not valid"));
                };
                let identity = Identity::signed_in(login.user.clone(), Some(login.session.clone()));
                self.session
                    .reidentify(&conn.shard, &conn.state, identity, client);
                let body = Authorized {
                    user: &login.user.id,
                    key: &login.token,
                };
                self.send(conn, &demo::answer("authorized", &body));
                self.signed_in = Some(login);
            }
            Step::Leave { room, recipient } => {
                // Not in it: nothing to leave, and the answer is the same.
                let _ = self.session.leave(&conn.shard, &conn.state, &room);
                let body = ChannelLeave {
                    recipient: &recipient,
                };
                self.send(conn, &demo::answer("channelLeave", &body));
            }
            Step::Join {
                room,
                answer,
                public,
            } => {
                if let Some(wire) = public {
                    self.session.speak(&conn.state, wire);
                }
                match self.session.join(&conn.shard, &conn.state, room, None) {
                    Ok(_) => self.send(conn, &answer),
                    Err(e) => self.send(conn, &demo::error(code::JOIN, &e.to_string())),
                }
            }
            Step::Post {
                room,
                to,
                message,
                public,
            } => {
                if !self.session.is_in(&conn.shard, &conn.state, &room) {
                    if let Some(wire) = public {
                        self.session.speak(&conn.state, wire);
                    }
                    if let Err(e) = self
                        .session
                        .join(&conn.shard, &conn.state, room.clone(), None)
                    {
                        return self.send(conn, &demo::error(code::MESSAGE, &e.to_string()));
                    }
                }
                let post = Post {
                    room: Some(room),
                    body: &message,
                    client_msg_id: None,
                    to,
                    attachments: None,
                };
                if let Err(e) = self.session.post(&conn.shard, &conn.state, post) {
                    self.send(conn, &demo::error(code::MESSAGE, &e.to_string()));
                }
            }
        }
    }

    fn on_close(&mut self, conn: &Conn) {
        self.session.close(&conn.shard, &conn.state);
    }
}
