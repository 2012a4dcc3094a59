//! The native (chat-api) protocol on a connection: translates its JSON
//! commands into chat service calls and their results into envelopes.
//! (Events from others reach the connection through the fan-out, framed
//! once per message in `rooms::encode`.)

use bytes::Bytes;
use serde::Serialize;

use super::Deferred;
use super::{Conn, Handler};
use crate::accounts::Identity;
use crate::chat::{self, ChatError, Joined, Post, Session};
use crate::config::Wire;
use crate::protocol::command::FileId;
use crate::protocol::envelope::{Empty, ErrorData, Event, RecoveredData, SystemData};
use crate::protocol::{self, ClientId, Command, ErrorCode, Header, Kind, ParseLimits, RoomName};
use crate::ws::OpCode;

pub struct Native {
    session: Session,
    /// The URL's catch-up points, used once when the connection opens
    /// (boxed and then dropped: not kept in every idle task).
    cursors: Option<Box<Cursors>>,
}

struct Cursors {
    /// `?since_seq=` on the room URL: recover the URL room from there.
    url_since_seq: Option<u64>,
    /// `?notifications_since=`: recover the user's notifications from there.
    notifications_since: Option<u64>,
}

/// Where a join or history request that needed an access check goes on.
pub enum Resume {
    Join {
        room: RoomName,
        since_seq: Option<u64>,
        allowed: Result<(), ChatError>,
    },
    History {
        room: RoomName,
        before_seq: Option<u64>,
        limit: Option<u64>,
        allowed: Result<(), ChatError>,
    },
    /// A chat whose attachments were checked (their description, or why
    /// not).
    Post {
        room: RoomName,
        content: String,
        client_msg_id: Option<RoomName>,
        attachments: Result<String, ChatError>,
    },
}

/// Where a connection starts: its URL room and catch-up points.
pub struct Start {
    pub room: Option<RoomName>,
    pub since_seq: Option<u64>,
    pub notifications_since: Option<u64>,
}

impl Native {
    pub fn new(identity: Identity, client_id: ClientId, start: Start) -> Native {
        Native {
            session: Session::new(identity, client_id, start.room, Wire::ChatApi),
            cursors: Some(Box::new(Cursors {
                url_since_seq: start.since_seq,
                notifications_since: start.notifications_since,
            })),
        }
    }

    fn reply<D: Serialize>(&self, conn: &Conn, kind: Kind, room: Option<&RoomName>, data: &D) {
        let header = Header {
            kind,
            room: room.map(RoomName::as_str),
            from: None,
        };
        conn.reply(protocol::encode(header, data).into_frame(OpCode::Text));
    }

    fn error(&self, conn: &Conn, code: ErrorCode, message: &str, client_msg_id: Option<&str>) {
        let data = ErrorData {
            code,
            message,
            client_msg_id,
            retry_after_ms: None,
        };
        self.reply(conn, Kind::Error, None, &data);
    }

    /// A refusal of the chat service, in this protocol's terms.
    fn refused(&self, conn: &Conn, e: &ChatError, client_msg_id: Option<&RoomName>) {
        if let ChatError::RateLimited(wait) = e {
            let data = ErrorData {
                code: ErrorCode::RateLimited,
                message: &e.to_string(),
                client_msg_id: client_msg_id.map(RoomName::as_str),
                retry_after_ms: Some(wait.as_millis().max(1) as u64),
            };
            return self.reply(conn, Kind::Error, None, &data);
        }
        let code = match e {
            ChatError::NotMember(_) | ChatError::NotIn(_) => ErrorCode::NotMember,
            ChatError::RoomLimit(_) => ErrorCode::RoomLimit,
            ChatError::NotDelivered(_) | ChatError::NotStored(_) => ErrorCode::MessageFailed,
            ChatError::BadLimit(_) | ChatError::Attachment(_) => ErrorCode::Validation,
            ChatError::NoHistory => ErrorCode::Unsupported,
            ChatError::Forbidden(_) => ErrorCode::Forbidden,
            ChatError::RateLimited(_) => ErrorCode::RateLimited,
            ChatError::Unavailable => ErrorCode::MessageFailed,
        };
        let id = client_msg_id.map(RoomName::as_str);
        self.error(conn, code, &e.to_string(), id);
    }

    fn system(&self, conn: &Conn, event: Event, room: Option<&RoomName>) {
        let client_id = (event == Event::Connected).then(|| self.session.client().as_str());
        self.reply(conn, Kind::System, room, &SystemData { event, client_id });
    }

    /// Joins now if access is known, or defers to the store's answer.
    fn join_checked(
        &mut self,
        conn: &Conn,
        room: RoomName,
        since_seq: Option<u64>,
    ) -> Option<Deferred<Resume>> {
        match self.session.access_now(&room) {
            Some(Ok(())) => self.join(conn, room, since_seq),
            Some(Err(e)) => self.refused(conn, &e, None),
            None => {
                let check = self.session.access(conn.shard.node.clone(), room.clone());
                return Some(Box::pin(async move {
                    Resume::Join {
                        room,
                        since_seq,
                        allowed: check.await,
                    }
                }));
            }
        }
        None
    }

    fn post(
        &mut self,
        conn: &Conn,
        room: Option<RoomName>,
        body: &str,
        client_msg_id: Option<RoomName>,
        attachments: Option<String>,
    ) {
        let post = Post {
            room,
            body,
            client_msg_id: client_msg_id.clone(),
            to: None,
            attachments,
        };
        if let Err(e) = self.session.post(&conn.shard, &conn.state, post) {
            self.refused(conn, &e, client_msg_id.as_ref());
        }
    }

    /// A chat with attachments: the files are checked (a store round trip)
    /// before it is posted; the connection reads nothing meanwhile, so its
    /// messages stay in order.
    fn attach(
        &mut self,
        conn: &Conn,
        room: Option<RoomName>,
        content: String,
        client_msg_id: Option<RoomName>,
        ids: Vec<FileId>,
    ) -> Option<Deferred<Resume>> {
        let Some(room) = room.or_else(|| self.session.url_room().cloned()) else {
            let e = ChatError::Attachment("a chat with attachments needs a room".into());
            self.refused(conn, &e, client_msg_id.as_ref());
            return None;
        };
        if !self.session.is_in(&conn.shard, &conn.state, &room) {
            self.refused(conn, &ChatError::NotMember(room), client_msg_id.as_ref());
            return None;
        }
        let node = conn.shard.node.clone();
        let identity = self.session.identity().clone();
        Some(Box::pin(async move {
            let ids: Vec<String> = ids.iter().map(|f| f.as_str().to_owned()).collect();
            let attachments = chat::files::attach(&node, &identity, &room, &ids).await;
            Resume::Post {
                room,
                content,
                client_msg_id,
                attachments,
            }
        }))
    }

    /// Reads history now if access is known, or defers to the store.
    fn history_checked(
        &mut self,
        conn: &Conn,
        room: RoomName,
        before_seq: Option<u64>,
        limit: Option<u64>,
    ) -> Option<Deferred<Resume>> {
        match self.session.access_now(&room) {
            Some(Ok(())) => self.history(conn, room, before_seq, limit),
            Some(Err(e)) => self.refused(conn, &e, None),
            None => {
                let check = self.session.access(conn.shard.node.clone(), room.clone());
                return Some(Box::pin(async move {
                    Resume::History {
                        room,
                        before_seq,
                        limit,
                        allowed: check.await,
                    }
                }));
            }
        }
        None
    }

    fn join(&mut self, conn: &Conn, room: RoomName, since_seq: Option<u64>) {
        match self
            .session
            .join(&conn.shard, &conn.state, room.clone(), since_seq)
        {
            Ok(Joined::Now | Joined::Already | Joined::Recovering) => {
                self.system(conn, Event::Joined, Some(&room))
            }
            Ok(Joined::NoStore) => {
                self.system(conn, Event::Joined, Some(&room));
                let data = RecoveredData {
                    event: Event::Recovered,
                    recovered: false,
                    oldest_seq: None,
                };
                self.reply(conn, Kind::System, Some(&room), &data);
            }
            Err(e) => self.refused(conn, &e, None),
        }
    }
}

impl Native {
    /// Answers with one `history` message once the store has the page.
    fn history(&self, conn: &Conn, room: RoomName, before_seq: Option<u64>, limit: Option<u64>) {
        let store = conn.shard.node.store.as_ref();
        let page = match chat::history(store, room.clone(), before_seq, limit) {
            Ok(page) => page,
            Err(e) => return self.refused(conn, &e, None),
        };
        let conn = Conn {
            shard: conn.shard.clone(),
            state: conn.state.clone(),
        };
        tokio::task::spawn_local(async move {
            let header = Header {
                kind: Kind::History,
                room: Some(room.as_str()),
                from: None,
            };
            let frame = match page.await {
                Ok(Ok(events)) => {
                    let data = HistoryData {
                        messages: events.iter().map(envelope_value).collect(),
                    };
                    protocol::encode(header, &data)
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "history read failed");
                    let data = ErrorData {
                        code: ErrorCode::MessageFailed,
                        message: "history could not be read",
                        client_msg_id: None,
                        retry_after_ms: None,
                    };
                    protocol::encode(
                        Header {
                            kind: Kind::Error,
                            ..header
                        },
                        &data,
                    )
                }
                Err(_) => return,
            };
            conn.reply(frame.into_frame(OpCode::Text));
        });
    }
}

/// A `history` answer: the messages as live delivery frames them, newest
/// first.
#[derive(Serialize)]
pub struct HistoryData {
    pub messages: Vec<sonic_rs::Value>,
}

/// One stored event as the JSON value of its live envelope.
pub fn envelope_value(event: &crate::model::Event) -> sonic_rs::Value {
    match crate::rooms::encode::chat_api_json(event) {
        Some(json) => sonic_rs::from_slice(json.payload()).expect("an envelope is JSON"),
        None => sonic_rs::Value::new(),
    }
}

impl Handler for Native {
    type Resume = Resume;

    fn on_open(&mut self, conn: &Conn) {
        let personal = self.session.open(&conn.shard, &conn.state);
        let cursors = self.cursors.take();
        let (url_since_seq, notifications_since) =
            cursors.map_or((None, None), |c| (c.url_since_seq, c.notifications_since));
        let url_room = self.session.url_room().cloned();
        self.system(conn, Event::Connected, url_room.as_ref());
        // A user hears their notifications on every connection.
        if let Some(room) = personal {
            self.join(conn, room, notifications_since);
        }
        if let Some(room) = url_room {
            match self.session.access_now(&room) {
                Some(Ok(())) => self.join(conn, room, url_since_seq),
                Some(Err(e)) => self.refused(conn, &e, None),
                // Private: checked before the upgrade (`http`).
                None => self.join(conn, room, url_since_seq),
            }
        }
    }

    fn on_resume(&mut self, conn: &Conn, resume: Resume) {
        match resume {
            Resume::Join {
                room,
                since_seq,
                allowed: Ok(()),
            } => self.join(conn, room, since_seq),
            Resume::History {
                room,
                before_seq,
                limit,
                allowed: Ok(()),
            } => self.history(conn, room, before_seq, limit),
            Resume::Join {
                allowed: Err(e), ..
            }
            | Resume::History {
                allowed: Err(e), ..
            } => self.refused(conn, &e, None),
            Resume::Post {
                room,
                content,
                client_msg_id,
                attachments: Ok(attachments),
            } => self.post(conn, Some(room), &content, client_msg_id, Some(attachments)),
            Resume::Post {
                client_msg_id,
                attachments: Err(e),
                ..
            } => self.refused(conn, &e, client_msg_id.as_ref()),
        }
    }

    fn on_data(&mut self, conn: &Conn, opcode: OpCode, payload: Bytes) -> Option<Deferred<Resume>> {
        if opcode == OpCode::Binary {
            let message = "binary frames are not part of this protocol; send JSON text";
            self.error(conn, ErrorCode::Unsupported, message, None);
            return None;
        }
        let l = &conn.shard.node.config.limits;
        let limits = ParseLimits {
            max_name: l.max_name_length,
            max_depth: l.max_json_depth,
        };
        match protocol::parse(&payload, limits) {
            Err(e) => self.error(conn, ErrorCode::Validation, &e.to_string(), None),
            Ok(Command::Join { room, since_seq }) => {
                return self.join_checked(conn, room, since_seq)
            }
            Ok(Command::History {
                room,
                before_seq,
                limit,
            }) => return self.history_checked(conn, room, before_seq, limit),
            Ok(Command::Chat {
                room,
                content,
                client_msg_id,
                attachments,
            }) if !attachments.is_empty() => {
                return self.attach(conn, room, content.into_owned(), client_msg_id, attachments)
            }
            Ok(Command::Chat {
                room,
                content,
                client_msg_id,
                attachments: _,
            }) => self.post(conn, room, &content, client_msg_id, None),
            Ok(Command::Leave(room)) => match self.session.leave(&conn.shard, &conn.state, &room) {
                Ok(()) => self.system(conn, Event::Left, Some(&room)),
                Err(e) => self.refused(conn, &e, None),
            },
            Ok(Command::Typing(room)) => {
                if let Err(e) = self.session.typing(&conn.shard, &conn.state, room, true) {
                    self.refused(conn, &e, None);
                }
            }
            Ok(Command::Ping) => self.reply(conn, Kind::Pong, None, &Empty {}),
        }
        None
    }

    fn on_close(&mut self, conn: &Conn) {
        self.session.close(&conn.shard, &conn.state);
    }
}
