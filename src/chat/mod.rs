//! The chat service: what a connection may do in the chat (join, leave,
//! post), with its access checks, in terms of events rather than any wire
//! format. It is the one caller of the shard's local rooms, the node's
//! registry and the broker for chat traffic; a protocol handler (`conn`)
//! only translates its wire format to these calls and their results back.
//! (`/relay` stays raw and does not pass through here.)

pub mod conversations;
pub mod files;
pub mod presence;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use crate::accounts::access::{self, RoomKind};
use crate::accounts::rate::Action;
use crate::accounts::{AccountError, Identity};
use crate::broker::{Origin, Payload, Publish, PublishError};
use crate::config::Wire;
use crate::model::{Event, Topic};
use crate::node::Node;
use crate::protocol::{ClientId, RoomName};
use crate::shard::{ConnState, Shard};
use crate::store::{Busy, StoreError, StoreHandle};
use tokio::sync::oneshot;

/// Why the service refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    #[error("join room {0} before posting to it")]
    NotMember(RoomName),
    #[error("not in room {0}")]
    NotIn(RoomName),
    #[error("a connection may be in at most {0} rooms")]
    RoomLimit(usize),
    #[error("message not delivered: {0}")]
    NotDelivered(PublishError),
    #[error("message not stored: {0}")]
    NotStored(Busy),
    #[error("history needs a store (store.backend is none)")]
    NoHistory,
    #[error("history limit must be 1 to {0}")]
    BadLimit(u32),
    #[error("not allowed in room {0}")]
    Forbidden(RoomName),
    #[error("the access check failed; try again")]
    Unavailable,
    #[error("too many messages; try again in {} ms", .0.as_millis().max(1))]
    RateLimited(std::time::Duration),
    #[error("attachments: {0}")]
    Attachment(String),
}

impl ChatError {
    /// An access refusal of the accounts service, for `room`.
    fn from_access(e: AccountError, room: &RoomName) -> ChatError {
        match e {
            AccountError::Unavailable | AccountError::NoStore => ChatError::Unavailable,
            _ => ChatError::Forbidden(room.clone()),
        }
    }
}

/// Most messages one history page may ask for.
pub const MAX_HISTORY_LIMIT: u32 = 100;
/// A history page without a `limit`.
pub const DEFAULT_HISTORY_LIMIT: u32 = 10;

/// Asks the store for a page of `room`'s history (newest first, `seq <
/// before_seq`); any client may read a room's history (rooms are public).
pub fn history(
    store: Option<&StoreHandle>,
    room: RoomName,
    before_seq: Option<u64>,
    limit: Option<u64>,
) -> Result<oneshot::Receiver<Result<Vec<Event>, StoreError>>, ChatError> {
    let limit = match limit {
        None => DEFAULT_HISTORY_LIMIT,
        Some(n) if (1..=u64::from(MAX_HISTORY_LIMIT)).contains(&n) => n as u32,
        Some(_) => return Err(ChatError::BadLimit(MAX_HISTORY_LIMIT)),
    };
    let store = store.ok_or(ChatError::NoHistory)?;
    store
        .history(room, before_seq, limit)
        .map_err(ChatError::NotStored)
}

/// Asks the store how many messages `room` holds (what retention left).
pub fn count(
    store: Option<&StoreHandle>,
    room: RoomName,
) -> Result<oneshot::Receiver<Result<u64, StoreError>>, ChatError> {
    let store = store.ok_or(ChatError::NoHistory)?;
    store.count(room).map_err(ChatError::NotStored)
}

/// A chat to post.
pub struct Post<'a> {
    /// `None`: the URL room, or (without one) every native client.
    pub room: Option<RoomName>,
    pub body: &'a str,
    /// The client's id for it (idempotent send; echoed in errors).
    pub client_msg_id: Option<RoomName>,
    /// The user it is for, in a direct conversation (dialects that say so).
    pub to: Option<ClientId>,
    /// Its attachments as [`files::attach`] described them.
    pub attachments: Option<String>,
}

/// What a join did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    Now,
    Already,
    /// Joined; the catch-up from the store (then `recovered`) follows.
    Recovering,
    /// Joined; there is no store to catch up from.
    NoStore,
}

/// One connection's part in the chat: who it is and where it is.
pub struct Session {
    identity: Identity,
    client: ClientId,
    /// The dialect the connection speaks (its frames in every room).
    wire: Wire,
    /// Its own per-user limits (chats, typing per minute; 0: none), if not
    /// `limits.rate`'s.
    rates: Option<(u32, u32)>,
    /// The room from the URL: the target of a chat that names no room.
    url_room: Option<RoomName>,
    /// Rooms joined, in join order (at most `max_rooms_per_connection`).
    rooms: Vec<RoomName>,
}

impl Session {
    pub fn new(
        identity: Identity,
        client: ClientId,
        url_room: Option<RoomName>,
        wire: Wire,
    ) -> Session {
        Session {
            identity,
            client,
            wire,
            rates: None,
            url_room,
            rooms: Vec::new(),
        }
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn client(&self) -> &ClientId {
        &self.client
    }

    pub fn url_room(&self) -> Option<&RoomName> {
        self.url_room.as_ref()
    }

    /// The connection is open: it hears room-less (global) chats, and a
    /// user is online. A user's own channel (notifications) is `Some`.
    pub fn open(&self, shard: &Shard, conn: &ConnState) -> Option<RoomName> {
        conn.set_client(self.client.clone(), self.wire);
        conn.set_session(self.identity.session());
        conn.hear_global(true);
        let user = self.identity.user()?;
        shard.node.accounts.online.connected(&user.id);
        access::personal_room(&user.id, shard.node.config.limits.max_name_length)
    }

    /// Goes on in `wire`, a variant of its dialect (the demo's public
    /// channel named as `"0"` or `0`): rooms joined from now on are heard
    /// in it.
    pub fn speak(&mut self, conn: &ConnState, wire: Wire) {
        self.wire = wire;
        conn.set_client(self.client.clone(), wire);
    }

    /// Sets the per-user limits (chats, typing per minute; 0: none), which
    /// otherwise are `limits.rate`'s.
    pub fn with_rates(mut self, messages: u32, typing: u32) -> Session {
        self.rates = Some((messages, typing));
        self
    }

    /// Takes one chat (`typing`: one typing indicator) from the user's
    /// bucket.
    fn rate(&self, node: &Node, typing: bool) -> Result<(), ChatError> {
        let r = &node.config.limits.rate;
        let (messages, typings) = self
            .rates
            .unwrap_or((r.messages_per_minute, r.typing_per_minute));
        let (action, per_minute) = match typing {
            false => (Action::Message, messages),
            true => (Action::Typing, typings),
        };
        node.accounts
            .rate
            .take(self.client.as_str(), action, per_minute, Instant::now())
            .map_err(ChatError::RateLimited)
    }

    /// The connection signs in or out (dialects whose sign-in happens on the
    /// open socket): it leaves every room under its old name and goes on as
    /// `identity`, `client`.
    pub fn reidentify(
        &mut self,
        shard: &Shard,
        conn: &ConnState,
        identity: Identity,
        client: ClientId,
    ) {
        for room in std::mem::take(&mut self.rooms) {
            self.leave_room(shard, conn, &room);
        }
        let online = &shard.node.accounts.online;
        if let Some(user) = self.identity.user() {
            online.disconnected(&user.id);
        }
        if let Some(user) = identity.user() {
            online.connected(&user.id);
        }
        self.identity = identity;
        self.client = client;
        conn.set_client(self.client.clone(), self.wire);
        conn.set_session(self.identity.session());
    }

    /// Whether the connection is in `room` (and was not removed from it).
    pub fn is_in(&self, shard: &Shard, conn: &ConnState, room: &RoomName) -> bool {
        self.rooms.contains(room) && shard.rooms.is_member(room, conn.id)
    }

    /// Whether this client may use `room`, if that is known without asking
    /// the store (public rooms, personal channels); `None`: ask
    /// [`Session::access`].
    pub fn access_now(&self, room: &RoomName) -> Option<Result<(), ChatError>> {
        match access::kind(room) {
            RoomKind::Public => Some(Ok(())),
            RoomKind::Personal(owner) => Some(match self.identity.user() {
                Some(u) if u.id == owner => Ok(()),
                _ => Err(ChatError::Forbidden(room.clone())),
            }),
            RoomKind::Internal => Some(Err(ChatError::Forbidden(room.clone()))),
            RoomKind::Private(_) if self.identity.user().is_none() => {
                Some(Err(ChatError::Forbidden(room.clone())))
            }
            RoomKind::Private(_) => None,
        }
    }

    /// Asks the store whether this client may use `room` (a private
    /// conversation: members only).
    pub fn access(
        &self,
        node: Arc<Node>,
        room: RoomName,
    ) -> impl Future<Output = Result<(), ChatError>> + 'static {
        let identity = self.identity.clone();
        async move {
            node.accounts
                .may_use(&identity, &room)
                .await
                .map_err(|e| ChatError::from_access(e, &room))
        }
    }

    /// Rooms the client was removed from (on any node) are forgotten here
    /// too, so their bookkeeping is undone exactly once.
    fn forget_revoked(&mut self, shard: &Shard, conn: &ConnState) {
        let revoked: Vec<RoomName> = self
            .rooms
            .iter()
            .filter(|r| !shard.rooms.is_member(r, conn.id))
            .cloned()
            .collect();
        for room in revoked {
            self.rooms.retain(|r| r != &room);
            self.leave_room(shard, conn, &room);
        }
    }

    /// Joins `room`; with `since_seq`, the stored messages after it come
    /// first (from the store, through the shard's inbox), then
    /// `recovered`, then live ones: no gap and no duplicate, even while
    /// others keep posting.
    pub fn join(
        &mut self,
        shard: &Shard,
        conn: &ConnState,
        room: RoomName,
        since_seq: Option<u64>,
    ) -> Result<Joined, ChatError> {
        self.forget_revoked(shard, conn);
        if self.rooms.contains(&room) {
            return Ok(Joined::Already);
        }
        let node = &shard.node;
        let limit = node.config.limits.max_rooms_per_connection;
        if self.rooms.len() >= limit {
            return Err(ChatError::RoomLimit(limit));
        }
        // The node subscribes (and, sharing its history, starts ordering the
        // room) before a catch-up is asked for: the catch-up ends where the
        // room's live messages on this node begin.
        if node.registry.join(&room, shard.index) {
            node.broker.subscribe(&room);
            if let Some(store) = &node.store {
                store.subscribed(&room);
            }
        }
        let joined = match (since_seq, &node.store) {
            (None, _) => {
                shard
                    .rooms
                    .join(&room, conn.id, conn.queue.clone(), conn.voice());
                Joined::Now
            }
            (Some(_), None) => {
                shard
                    .rooms
                    .join(&room, conn.id, conn.queue.clone(), conn.voice());
                Joined::NoStore
            }
            (Some(since), Some(store)) => {
                shard
                    .rooms
                    .join_catching_up(&room, conn.id, conn.queue.clone(), conn.voice());
                match store.recover(room.clone(), since, shard.index, conn.id.0) {
                    Ok(()) => Joined::Recovering,
                    Err(Busy) => {
                        // No catch-up: live from here on.
                        shard.rooms.caught_up(&room, conn.id, 0);
                        Joined::NoStore
                    }
                }
            }
        };
        self.presence(shard, &room, true);
        if let Some(user) = self.identity.user() {
            node.accounts.online.joined(&user.id, room.as_str());
        }
        // The shard's copy of the name, so the parsed one is freed: one name
        // per room, not one per member.
        let room = shard.rooms.interned(&room).unwrap_or(room);
        if self.url_room.as_ref() == Some(&room) {
            self.url_room = Some(room.clone());
        }
        // Grown one at a time: most connections join one room, and a first
        // push reserves four (48 bytes more in every idle connection).
        self.rooms.reserve_exact(1);
        self.rooms.push(room);
        Ok(joined)
    }

    pub fn leave(
        &mut self,
        shard: &Shard,
        conn: &ConnState,
        room: &RoomName,
    ) -> Result<(), ChatError> {
        let i = self
            .rooms
            .iter()
            .position(|r| r == room)
            .ok_or_else(|| ChatError::NotIn(room.clone()))?;
        let room = self.rooms.remove(i);
        self.leave_room(shard, conn, &room);
        Ok(())
    }

    /// Posts a chat to `room`, or (without one) to the URL room, or (without
    /// that) to every native client of every node.
    pub fn post(&self, shard: &Shard, conn: &ConnState, post: Post<'_>) -> Result<(), ChatError> {
        let Post {
            room,
            body,
            client_msg_id,
            to,
            attachments,
        } = post;
        let topic = match room.or_else(|| self.url_room.clone()) {
            Some(room) if !self.rooms.contains(&room) => return Err(ChatError::NotMember(room)),
            // Removed from it (a private conversation) since the join.
            Some(room) if !shard.rooms.is_member(&room, conn.id) => {
                return Err(ChatError::Forbidden(room))
            }
            // A user's channel carries the server's notifications only.
            Some(room) if matches!(access::kind(&room), RoomKind::Personal(_)) => {
                return Err(ChatError::Forbidden(room))
            }
            Some(room) => Topic::Room(room),
            None => Topic::Global,
        };
        self.rate(&shard.node, false)?;
        let mut event = Event::chat(topic.clone(), self.client.clone(), body);
        event.to = to;
        event.attachments = attachments.map(Into::into);
        event.client_msg_id = client_msg_id.clone();
        let origin = Origin {
            shard: shard.index,
            conn: conn.id.0,
            client_msg_id,
        };
        // Room chats are stored first (then delivered and acked by the
        // store); room-less global chats stay ephemeral.
        if let (Some(store), Topic::Room(room)) = (&shard.node.store, &topic) {
            store.append(event, origin).map_err(|busy| {
                shard.node.metrics.store.errors.inc();
                ChatError::NotStored(busy)
            })?;
            if matches!(access::kind(room), RoomKind::Private(_)) && body.contains('@') {
                let mentioned = conversations::mentions(
                    shard.node.clone(),
                    room.clone(),
                    self.client.clone(),
                    body.to_owned(),
                );
                tokio::task::spawn_local(mentioned);
            }
            return Ok(());
        }
        let publish = Publish {
            topic: &topic,
            payload: Payload::Event(Arc::new(event)),
            origin: Some(origin),
        };
        shard
            .node
            .broker
            .publish(shard.index, publish)
            .map_err(ChatError::NotDelivered)
    }

    /// Tells `room`'s members (on every node) that this client is typing:
    /// ephemeral, never stored; rate-limited per user.
    pub fn typing(
        &mut self,
        shard: &Shard,
        conn: &ConnState,
        room: RoomName,
        typing: bool,
    ) -> Result<(), ChatError> {
        self.forget_revoked(shard, conn);
        if !self.rooms.contains(&room) {
            return Err(ChatError::NotMember(room));
        }
        let node = &shard.node;
        self.rate(node, true)?;
        let topic = Topic::Room(room.clone());
        let mut event = Event::typing(room, self.client.clone());
        if !typing {
            event.body = crate::protocol::fastchat::STOPPED.into();
        }
        let publish = Publish {
            topic: &topic,
            payload: Payload::Event(Arc::new(event)),
            origin: None,
        };
        node.broker
            .publish(shard.index, publish)
            .map_err(ChatError::NotDelivered)
    }

    /// The connection is going: leave every room, stop hearing global chats.
    pub fn close(&mut self, shard: &Shard, conn: &ConnState) {
        for room in std::mem::take(&mut self.rooms) {
            self.leave_room(shard, conn, &room);
        }
        conn.hear_global(false);
        if let Some(user) = self.identity.user() {
            shard.node.accounts.online.disconnected(&user.id);
        }
    }

    /// Removes the membership everywhere and tells the room.
    fn leave_room(&self, shard: &Shard, conn: &ConnState, room: &RoomName) {
        let node = &shard.node;
        shard.rooms.leave(room, conn.id);
        if node.registry.leave(room, shard.index) {
            node.broker.unsubscribe(room);
            if let Some(store) = &node.store {
                store.unsubscribed(room);
            }
        }
        self.presence(shard, room, false);
        if let Some(user) = self.identity.user() {
            node.accounts.online.left(&user.id, room.as_str());
        }
    }

    /// Announces this client in `room` (coalesced per room in a storm: a
    /// join storm is not N² messages; see `rooms::presence`).
    fn presence(&self, shard: &Shard, room: &RoomName, online: bool) {
        presence::announce(shard, room, &self.client, online);
    }
}
