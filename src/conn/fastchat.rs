//! The FastChat dialect on a connection: translates its messages into
//! account and chat service calls and their results into its messages.
//!
//! HELLO names the user (a UUID v4; created as a chatd user on first sight,
//! or, with `auth.enabled`, it must be the token's user). A chat opened
//! with OPEN_CHAT is the pair's direct conversation (the same one REST's
//! `dm/{id}` and the other dialects see); the other user's FastChat
//! connections are told at once (a grant) and join it. MSG is a chat in it
//! (stored, sequenced; MSG_ACK once stored), TYPING goes to the current
//! chat. PRESENCE (the online users) goes to every FastChat connection on
//! every node whenever a user comes or goes.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;

use super::{Conn, Deferred, Handler};
use crate::accounts::{AccountError, Identity};
use crate::chat::{conversations, ChatError, Post, Session};
use crate::config::Wire;
use crate::node::Node;
use crate::protocol::fastchat::{self, Message, PresenceUser};
use crate::protocol::{ClientId, RoomName};
use crate::shard::Grant;
use crate::store::directory::{DirectoryError, DirectoryRequest, User, UserRecord};
use crate::ws::{OpCode, Outgoing};

/// The room every FastChat connection is in, for PRESENCE (a reserved
/// name: clients cannot join it).
pub const LOBBY: &str = "fastchat:lobby";

pub struct FastChat {
    session: Session,
    /// The client's address (new users are counted per address).
    from: std::net::IpAddr,
    /// The identity the upgrade's token gave (with `auth.enabled`).
    upgraded_as: Identity,
    /// After HELLO: who this is.
    user: Option<User>,
    /// Open chats: the other user's id → the conversation.
    chats: HashMap<String, RoomName>,
    /// The chat TYPING goes to (the last opened).
    current: Option<RoomName>,
}

/// What a message's store work found.
pub enum Step {
    Error(String),
    Hello {
        user: User,
        /// Conversations opened before (other user's id, room).
        chats: Vec<(String, RoomName)>,
    },
    Opened {
        room: RoomName,
        target: User,
    },
}

fn error(code: &str, text: &str) -> Step {
    Step::Error(fastchat::error(code, text, None))
}

impl FastChat {
    pub fn new(node: &Node, upgraded_as: Identity, from: std::net::IpAddr) -> FastChat {
        let rates = &node.config.fastchat.rate_limit;
        let session = Session::new(
            Identity::Anonymous,
            ClientId::generate(),
            None,
            Wire::FastChat,
        )
        .with_rates(rates.messages_per_minute, rates.typing_per_minute);
        FastChat {
            session,
            from,
            upgraded_as,
            user: None,
            chats: HashMap::new(),
            current: None,
        }
    }

    fn send(&self, conn: &Conn, text: &str) {
        conn.reply(Outgoing::from_payload(text.as_bytes()).into_frame(OpCode::Text));
    }

    fn refuse(&self, conn: &Conn, code: &str, text: &str) {
        self.send(conn, &fastchat::error(code, text, None));
    }

    /// A chat service refusal in FastChat's codes.
    fn refused(&self, conn: &Conn, e: &ChatError) {
        let text = match e {
            ChatError::RateLimited(wait) => {
                let ms = wait.as_millis().max(1) as u64;
                fastchat::error("RATE_LIMITED", &e.to_string(), Some(ms))
            }
            ChatError::NotMember(_) | ChatError::Forbidden(_) => {
                fastchat::error("CHAT_NOT_OPENED", &e.to_string(), None)
            }
            _ => fastchat::error("MESSAGE_FAILED", &e.to_string(), None),
        };
        self.send(conn, &text);
    }

    /// The target's MSG_ACK: the message it names (by the id its MSG
    /// carried) is recorded as delivered to this user, in the store (a
    /// delivery receipt: `GET /api/chat-api/rooms/{room}/receipts`).
    fn acknowledged(&self, conn: &Conn, me: &User, message_id: Option<String>) {
        let node = &conn.shard.node;
        let max = node.config.limits.max_name_length;
        let Some(Ok(id)) = message_id.map(|m| RoomName::parse(&m, max)) else {
            return self.refuse(conn, "VALIDATION", "MSG_ACK needs the message_id of a MSG");
        };
        let Some(store) = &node.store else { return };
        // The message is from the other user of one of this user's chats.
        let keys: Vec<_> = self
            .chats
            .iter()
            .filter_map(|(other, room)| {
                Some((room.clone(), ClientId::parse(other, max).ok()?, id.clone()))
            })
            .collect();
        if !keys.is_empty() && store.delivered(keys, me.id.clone()).is_err() {
            node.metrics.store.errors.inc();
        }
    }

    fn join(&mut self, conn: &Conn, room: RoomName) -> bool {
        match self.session.join(&conn.shard, &conn.state, room, None) {
            Ok(_) => true,
            Err(e) => {
                self.refused(conn, &e);
                false
            }
        }
    }

    fn chat_opened(&self, conn: &Conn, room: &RoomName, target_id: &str, target_name: &str) {
        #[derive(serde::Serialize)]
        struct Opened<'a> {
            chat_id: &'a str,
            participants: [&'a str; 2],
            target_user_id: &'a str,
            target_display_name: &'a str,
        }
        let me = self.user.as_ref().map_or("", |u| u.id.as_str());
        let data = Opened {
            chat_id: room.as_str(),
            participants: [me, target_id],
            target_user_id: target_id,
            target_display_name: target_name,
        };
        self.send(conn, &fastchat::message("CHAT_OPENED", &data));
    }
}

/// The FastChat username of a user first seen in a HELLO (`fc-` and 29 of
/// the id's hex digits: within the 32 characters a username may have).
fn username_of(id: &str) -> String {
    let hex: String = id.chars().filter(|c| *c != '-').take(29).collect();
    format!("fc-{hex}")
}

/// The password hash of a user FastChat made (no password: no login).
const NO_PASSWORD: &str = "!";

/// Who says HELLO: the user id and display name, whether the upgrade's
/// token is that user's, and the client's address.
struct Greeting {
    id: String,
    display_name: String,
    token_user: bool,
    from: std::net::IpAddr,
}

async fn hello(node: Arc<Node>, greeting: Greeting) -> Step {
    let Greeting {
        id,
        display_name,
        token_user,
        from,
    } = greeting;
    let accounts = &node.accounts;
    let key = id.clone();
    let found = match accounts.ask(|tx| DirectoryRequest::UserById(key, tx)).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => return error("MESSAGE_FAILED", &e.to_string()),
        Err(e) => return error("MESSAGE_FAILED", &e.to_string()),
    };
    let user = match found {
        // A user with a password (registered over REST or another dialect)
        // is only theirs who hold their token: HELLO alone would let anyone
        // read their conversations.
        Some(record) if record.password_hash != NO_PASSWORD && !token_user => {
            return error("UNAUTHORIZED", "this user signs in with a token (?token=)");
        }
        Some(record) => record.user,
        None => {
            // A new user: counted per address, as every new account is.
            if let Err(e) = accounts.new_account_from(from) {
                let AccountError::Throttled(wait) = e else {
                    return error("MESSAGE_FAILED", &e.to_string());
                };
                let ms = wait.as_millis().max(1) as u64;
                return Step::Error(fastchat::error(
                    "RATE_LIMITED",
                    "too many new users from this address",
                    Some(ms),
                ));
            }
            let user = User {
                id: id.clone(),
                username: username_of(&id),
                display_name,
                avatar_file_id: None,
                created_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            };
            // No password: a FastChat user has none (any login fails).
            let record = UserRecord {
                user: user.clone(),
                password_hash: NO_PASSWORD.into(),
                token_gen: 0,
            };
            match accounts
                .ask(|tx| DirectoryRequest::CreateUser(record, tx))
                .await
            {
                Ok(Ok(())) | Ok(Err(DirectoryError::Taken)) => user,
                Ok(Err(DirectoryError::Store(e))) => {
                    return error("MESSAGE_FAILED", &e.to_string())
                }
                Err(e) => return error("MESSAGE_FAILED", &e.to_string()),
            }
        }
    };
    // Chats opened before: rejoined, so their messages arrive.
    let uid = user.id.clone();
    let conversations = match accounts
        .ask(|tx| DirectoryRequest::ConversationsOf(uid, tx))
        .await
    {
        Ok(Ok(c)) => c,
        _ => Vec::new(),
    };
    let max = node.config.limits.max_name_length;
    let mut chats = Vec::new();
    for c in conversations
        .into_iter()
        .filter(|c| c.kind == crate::store::directory::ConversationKind::Direct)
    {
        let cid = c.id.clone();
        let Ok(Ok(members)) = accounts.ask(|tx| DirectoryRequest::Members(cid, tx)).await else {
            continue;
        };
        let (Some(other), Ok(room)) = (
            members.into_iter().find(|m| *m != user.id),
            RoomName::parse(&c.id, max),
        ) else {
            continue;
        };
        chats.push((other, room));
    }
    Step::Hello { user, chats }
}

async fn open_chat(node: Arc<Node>, me: User, target: String) -> Step {
    let target = match node.accounts.user(&target).await {
        Ok(user) => user,
        Err(AccountError::NotFound(_)) => return error("USER_NOT_FOUND", "no such user"),
        Err(e) => return error("MESSAGE_FAILED", &e.to_string()),
    };
    let dm = match conversations::direct(&node, &me, &target.id).await {
        Ok(dm) => dm,
        Err(e) => return error("MESSAGE_FAILED", &e.to_string()),
    };
    let max = node.config.limits.max_name_length;
    let Ok(room) = RoomName::parse(&dm.id, max) else {
        return error("MESSAGE_FAILED", "bad conversation id");
    };
    Step::Opened { room, target }
}

/// Publishes the online users to every FastChat connection.
pub async fn roster(node: Arc<Node>) {
    let Ok(users) = node.accounts.users().await else {
        return;
    };
    let online: Vec<PresenceUser> = users
        .iter()
        .filter(|u| node.accounts.online.is_online(&u.id))
        .map(|u| PresenceUser {
            user_id: &u.id,
            display_name: &u.display_name,
            online: true,
        })
        .collect();
    let list = sonic_rs::to_string(&online).expect("plain structs serialise");
    let max = node.config.limits.max_name_length;
    let (Ok(room), Ok(server)) = (RoomName::parse(LOBBY, max), ClientId::parse("server", max))
    else {
        return;
    };
    let topic = crate::model::Topic::Room(room.clone());
    let event = crate::model::Event::roster(room, server, &list);
    let publish = crate::broker::Publish {
        topic: &topic,
        payload: crate::model::Payload::Event(Arc::new(event)),
        origin: None,
    };
    if let Err(e) = node.broker.publish(0, publish) {
        tracing::debug!(error = %e, "fastchat presence not published");
    }
}

impl Handler for FastChat {
    type Resume = Step;
    const GRANTS: bool = true;

    fn on_open(&mut self, conn: &Conn) {
        self.session.open(&conn.shard, &conn.state);
    }

    fn on_data(&mut self, conn: &Conn, opcode: OpCode, payload: Bytes) -> Option<Deferred<Step>> {
        if opcode == OpCode::Binary {
            self.refuse(conn, "VALIDATION", "send JSON text");
            return None;
        }
        let node = conn.shard.node.clone();
        let message = match fastchat::parse(&payload, node.config.limits.max_json_depth) {
            Ok(m) => m,
            Err(e) => {
                self.refuse(conn, e.code, e.message);
                return None;
            }
        };
        match message {
            Message::Hello {
                user_id,
                display_name,
            } => {
                let token_user = match &self.upgraded_as {
                    Identity::User(u) => u.user.id == user_id,
                    _ => false,
                };
                if !token_user && node.config.auth.enabled {
                    self.refuse(conn, "UNAUTHORIZED", "HELLO must name the token's user");
                    return None;
                }
                // One identity per connection: a second HELLO as someone
                // else would also escape the first one's rate limits.
                if self.user.as_ref().is_some_and(|u| u.id != user_id) {
                    let text = "this connection said HELLO as another user; open a new one";
                    self.refuse(conn, "UNAUTHORIZED", text);
                    return None;
                }
                let greeting = Greeting {
                    id: user_id,
                    display_name,
                    token_user,
                    from: self.from,
                };
                return Some(Box::pin(hello(node, greeting)));
            }
            Message::Ping => {
                #[derive(serde::Serialize)]
                struct Pong {
                    timestamp: String,
                }
                let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                let pong = Pong {
                    timestamp: now.to_string(),
                };
                self.send(conn, &fastchat::message("PONG", &pong));
                return None;
            }
            _ => {}
        }
        let Some(me) = self.user.clone() else {
            self.refuse(conn, "UNAUTHORIZED", "send HELLO first");
            return None;
        };
        match message {
            Message::OpenChat { target } => {
                return Some(Box::pin(open_chat(node, me, target)));
            }
            Message::Msg {
                to,
                content,
                message_id,
            } => {
                let Some(room) = self.chats.get(&to).cloned() else {
                    self.refuse(
                        conn,
                        "CHAT_NOT_OPENED",
                        "open the chat with OPEN_CHAT first",
                    );
                    return None;
                };
                let max = node.config.limits.max_name_length;
                // Without one, the message gets an id here: the target's
                // MSG_ACK names the message by it.
                let message_id = message_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let client_msg_id = match RoomName::parse(&message_id, max) {
                    Ok(id) => id,
                    Err(_) => {
                        self.refuse(
                            conn,
                            "VALIDATION",
                            "message_id: 1-64 of A-Z a-z 0-9 _ - . : @",
                        );
                        return None;
                    }
                };
                let post = Post {
                    room: Some(room),
                    body: &content,
                    client_msg_id: Some(client_msg_id.clone()),
                    to: ClientId::parse(&to, max).ok(),
                    attachments: None,
                };
                match self.session.post(&conn.shard, &conn.state, post) {
                    // Without a store nothing acks later: it is sent now.
                    Ok(()) if node.store.is_none() => {
                        #[derive(serde::Serialize)]
                        struct Ack<'a> {
                            message_id: &'a str,
                            status: &'a str,
                        }
                        let ack = Ack {
                            message_id: client_msg_id.as_str(),
                            status: "sent",
                        };
                        self.send(conn, &fastchat::message("MSG_ACK", &ack));
                    }
                    Ok(()) => {}
                    Err(e) => self.refused(conn, &e),
                }
            }
            Message::Typing { is_typing } => {
                let Some(room) = self.current.clone() else {
                    self.refuse(conn, "CHAT_NOT_OPENED", "open a chat first");
                    return None;
                };
                if let Err(e) = self
                    .session
                    .typing(&conn.shard, &conn.state, room, is_typing)
                {
                    self.refused(conn, &e);
                }
            }
            Message::MsgAck { message_id } => self.acknowledged(conn, &me, message_id),
            Message::Hello { .. } | Message::Ping => {}
        }
        None
    }

    fn on_resume(&mut self, conn: &Conn, step: Step) {
        let node = conn.shard.node.clone();
        match step {
            Step::Error(text) => self.send(conn, &text),
            Step::Hello { user, chats } => {
                let max = node.config.limits.max_name_length;
                let Ok(client) = ClientId::parse(&user.id, max) else {
                    return self.refuse(conn, "VALIDATION", "user id is not valid");
                };
                // The token's login session, when HELLO names its user.
                let session = match &self.upgraded_as {
                    Identity::User(u) if u.user.id == user.id => u.session.clone(),
                    _ => None,
                };
                self.session.reidentify(
                    &conn.shard,
                    &conn.state,
                    Identity::signed_in(user.clone(), session),
                    client,
                );
                self.user = Some(user.clone());
                #[derive(serde::Serialize)]
                struct Ack<'a> {
                    user_id: &'a str,
                    status: &'a str,
                }
                let ack = Ack {
                    user_id: &user.id,
                    status: "connected",
                };
                self.send(conn, &fastchat::message("HELLO_ACK", &ack));
                // Its own channel (for grants) and the lobby (for PRESENCE).
                let channel = crate::accounts::access::personal_room(&user.id, max);
                let lobby = RoomName::parse(LOBBY, max).ok();
                for room in channel.into_iter().chain(lobby) {
                    self.join(conn, room);
                }
                for (other, room) in chats {
                    if self.join(conn, room.clone()) {
                        self.chats.insert(other, room);
                    }
                }
                tokio::task::spawn_local(roster(node));
            }
            Step::Opened { room, target } => {
                if !self.join(conn, room.clone()) {
                    return;
                }
                self.chats.insert(target.id.clone(), room.clone());
                self.current = Some(room.clone());
                self.chat_opened(conn, &room, &target.id, &target.display_name);
                let Some(me) = self.user.clone() else { return };
                let max = node.config.limits.max_name_length;
                let (Some(channel), Ok(from), Ok(to)) = (
                    crate::accounts::access::personal_room(&target.id, max),
                    ClientId::parse(&me.id, max),
                    ClientId::parse(&target.id, max),
                ) else {
                    return;
                };
                let topic = crate::model::Topic::Room(channel.clone());
                let event =
                    crate::model::Event::grant(channel, from, to, room.as_str(), &me.display_name);
                let publish = crate::broker::Publish {
                    topic: &topic,
                    payload: crate::model::Payload::Event(Arc::new(event)),
                    origin: None,
                };
                if let Err(e) = node.broker.publish(conn.shard.index, publish) {
                    tracing::warn!(error = %e, "chat opening not published");
                }
            }
        }
    }

    fn on_grant(&mut self, conn: &Conn, grant: Grant) {
        if self.chats.contains_key(grant.from.as_str()) {
            return;
        }
        if self.join(conn, grant.room.clone()) {
            self.chats
                .insert(grant.from.as_str().to_owned(), grant.room.clone());
            if self.current.is_none() {
                self.current = Some(grant.room.clone());
            }
            self.chat_opened(conn, &grant.room, grant.from.as_str(), &grant.name);
        }
    }

    fn on_close(&mut self, conn: &Conn) {
        let was_user = self.user.is_some();
        self.session.close(&conn.shard, &conn.state);
        if was_user {
            tokio::task::spawn_local(roster(conn.shard.node.clone()));
        }
    }
}
