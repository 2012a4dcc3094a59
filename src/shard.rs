//! One shard's state: its connections and their rooms, owned by the shard's
//! thread and shared between its tasks with `Rc` (no locks).

use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::broker::Origin;
use crate::config::Wire;
use crate::model::{Ack, EventKind, Payload, Recovery, Topic};
use crate::node::Node;
use crate::protocol::envelope::{AckData, ErrorData, Event as SystemEvent, RecoveredData};
use crate::protocol::{self, ClientId, ErrorCode, Header, Kind, RoomName};
use crate::queue::{ClientQueue, CloseReason, WriterOptions};
use crate::rooms::{client_key, ConnId, Fanout, LocalRooms, PresenceLimiter, ShardMsg, Voice};
use crate::shutdown::Phase;
use crate::ws::deflate::Window;
use crate::ws::frame::{self, OpCode};

/// The demo dialect's error code for a message that was accepted and then
/// lost (its README leaves codes to the server; the conn adapter uses 1xx
/// for requests, this one for delivery).
pub const MESSAGE_FAILED_CODE: u16 = 200;

/// FastChat's `MSG_ACK`.
#[derive(serde::Serialize)]
struct FastChatAck<'a> {
    message_id: &'a str,
    status: &'a str,
}

/// What the heartbeat needs of a connection.
pub struct ConnState {
    pub id: ConnId,
    pub queue: Rc<ClientQueue>,
    /// When a frame last came in ([`stamp`]: 8 bytes, not an `Instant`'s 16;
    /// with `grants` below, the state fits an 80-byte allocation, not 96).
    last_seen: Cell<u64>,
    /// Who is connected (native connections, once open): a removal from a
    /// private conversation finds the user's connections by it.
    client: RefCell<Option<ClientId>>,
    /// The login session of its token, as a [`session_key`] (0: none): a
    /// logout closes the connections of that session only. A key, not the
    /// id, to keep every connection's state small.
    session: Cell<u64>,
    /// Its dialect: replies the shard makes (acks, failures) are framed in it.
    wire: Cell<Wire>,
    /// It hears global (room-less) messages: an open chat connection. The
    /// shard's connection map is their audience (no list of its own).
    global: Cell<bool>,
    /// The permessage-deflate window it agreed to, if any: room messages
    /// reach it compressed for that window.
    pub deflate: Option<Window>,
    /// Conversations another user opened with this one, for its handler to
    /// join (dialects whose clients never ask to join: FastChat). Boxed and
    /// made on first use, so idle connections pay one pointer.
    grants: std::cell::OnceCell<Box<RefCell<Grants>>>,
}

/// A login session's id (a UUID) folded to 64 bits, 0 for none or for an
/// id that is not a UUID. Two of one user's sessions sharing a key would
/// take 2^32 logins to be likely.
fn session_key(session: Option<&str>) -> u64 {
    let Some(id) = session.and_then(|s| uuid::Uuid::parse_str(s).ok()) else {
        return 0;
    };
    let (high, low) = id.as_u64_pair();
    (high ^ low).max(1)
}

/// A conversation opened with a connection's user by someone else.
#[derive(Debug, Clone)]
pub struct Grant {
    pub room: RoomName,
    /// Who opened it.
    pub from: ClientId,
    /// Their display name.
    pub name: String,
}

#[derive(Default)]
struct Grants {
    queued: std::collections::VecDeque<Grant>,
    waker: Option<std::task::Waker>,
}

impl ConnState {
    /// The next grant for this connection's handler.
    pub fn poll_grant(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Grant> {
        let mut grants = self.grants.get_or_init(Box::default).borrow_mut();
        match grants.queued.pop_front() {
            Some(grant) => std::task::Poll::Ready(grant),
            None => {
                grants.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }

    fn grant(&self, grant: Grant) {
        let mut grants = self.grants.get_or_init(Box::default).borrow_mut();
        grants.queued.push_back(grant);
        if let Some(waker) = grants.waker.take() {
            waker.wake();
        }
    }

    pub fn set_client(&self, client: ClientId, wire: Wire) {
        *self.client.borrow_mut() = Some(client);
        self.wire.set(wire);
    }

    /// The login session of the token it was opened (or signed in) with.
    pub fn set_session(&self, session: Option<&str>) {
        self.session.set(session_key(session));
    }

    /// Starts or stops hearing global messages.
    pub fn hear_global(&self, on: bool) {
        self.global.set(on);
    }

    /// How it hears a room or a global message: FastChat does not echo a
    /// sender's own chats and typing; with permessage-deflate, compressed.
    /// (Its client and dialect are set when its session opens, before any
    /// join.)
    pub fn voice(&self) -> Voice {
        let wire = self.wire.get();
        let own = match (wire, &*self.client.borrow()) {
            (Wire::FastChat, Some(client)) => client_key(client),
            _ => 0,
        };
        Voice {
            wire,
            own,
            deflate: self.deflate,
        }
    }

    fn is_client(&self, client: &ClientId) -> bool {
        self.client.borrow().as_ref() == Some(client)
    }

    /// Records inbound traffic (any frame proves the peer is alive).
    pub fn touch(&self) {
        self.last_seen.set(stamp(Instant::now()));
    }
}

/// Milliseconds since the process's first stamp: a connection's last
/// inbound frame, compared with the heartbeat's idle timeout.
fn stamp(at: Instant) -> u64 {
    static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);
    u64::try_from(at.saturating_duration_since(*EPOCH).as_millis()).unwrap_or(u64::MAX)
}

pub struct Shard {
    pub index: usize,
    pub node: Arc<Node>,
    pub rooms: LocalRooms,
    /// Caps presence events per room (a join storm is not N² messages).
    pub presence: PresenceLimiter,
    conns: RefCell<HashMap<ConnId, Rc<ConnState>>>,
    next_id: Cell<u64>,
    /// One empty Ping frame, shared by every heartbeat.
    ping: Bytes,
    /// What every connection's writer on this shard is told (shared: one
    /// copy per shard, not per connection).
    pub writer: Rc<WriterOptions>,
}

impl Shard {
    pub fn new(index: usize, node: Arc<Node>) -> Shard {
        Shard {
            index,
            presence: PresenceLimiter::new(
                node.config.limits.presence_per_second,
                node.config.limits.presence_summary_max,
            ),
            rooms: LocalRooms::new(
                node.config.store.max_recover as usize,
                node.config.server.deflate.threshold,
            ),
            writer: Rc::new(WriterOptions {
                write_timeout: node.config.limits.write_timeout,
                latency: node.metrics.fanout_latency.local(),
                coalesce: node.config.limits.write_coalesce,
            }),
            node,
            conns: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            ping: frame::encode(OpCode::Ping, b""),
        }
    }

    /// Adds a connection. During shutdown it is closed at once with 1001.
    pub fn register(&self, queue: Rc<ClientQueue>, deflate: Option<Window>) -> Rc<ConnState> {
        let n = self.next_id.get();
        self.next_id.set(n + 1);
        let id = ConnId(((self.index as u64) << 48) | n);
        let state = Rc::new(ConnState {
            id,
            queue,
            last_seen: Cell::new(stamp(Instant::now())),
            client: RefCell::new(None),
            session: Cell::new(0),
            wire: Cell::new(Wire::ChatApi),
            global: Cell::new(false),
            deflate,
            grants: std::cell::OnceCell::new(),
        });
        if self.node.shutdown.phase() != Phase::Running {
            state.queue.halt();
            state.queue.close(CloseReason::Shutdown);
        }
        self.conns.borrow_mut().insert(id, state.clone());
        self.node.metrics.connected.inc();
        self.node.metrics.connections_total.inc();
        state
    }

    pub fn unregister(&self, id: ConnId) {
        self.conns.borrow_mut().remove(&id);
    }

    /// The dispatcher: delivers one inbox message to local queues.
    pub fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Deliver {
                topic: Topic::Room(room),
                payload: Payload::Event(event),
                ..
            } if event.kind == EventKind::Revoke => self.revoke(&room, &event.sender),
            ShardMsg::Deliver {
                payload: Payload::Event(event),
                ..
            } if event.kind == EventKind::Grant => self.grant(&event),
            ShardMsg::Deliver {
                payload: Payload::Event(event),
                ..
            } if event.kind == EventKind::SignOut => self.sign_out(&event.sender, &event.body),
            ShardMsg::Deliver {
                topic: Topic::Global,
                payload,
                arrived,
            } => {
                let conns = self.conns.borrow();
                let audience = conns
                    .values()
                    .filter(|c| c.global.get())
                    .map(|c| (&c.queue, c.voice()));
                let fanout = self.rooms.fanout_to(audience, &payload, arrived);
                self.count(fanout);
            }
            ShardMsg::Deliver {
                topic,
                payload,
                arrived,
            } => {
                let fanout = self.rooms.fanout(&topic, &payload, arrived);
                self.count(fanout);
            }
            ShardMsg::Drain => self.for_each(|c| c.queue.close(CloseReason::Shutdown)),
            ShardMsg::Failed(origin) => self.publish_failed(origin),
            ShardMsg::Acked(ack) => self.acked(ack),
            ShardMsg::Recovered(recovery) => self.recovered(recovery),
        }
    }

    /// `user`'s tokens were revoked: their connections here are closed
    /// (4001), whatever they speak; with a `session` (not empty), only
    /// those opened with that login session's token.
    fn sign_out(&self, user: &ClientId, session: &str) {
        let key = session_key(Some(session));
        self.for_each(|c| {
            let ended = session.is_empty() || c.session.get() == key;
            if c.is_client(user) && ended {
                c.queue.close(CloseReason::SignedOut);
            }
        });
    }

    /// `user` was removed from `room`: their connections here stop being
    /// members at once and are told (their sessions forget the room at
    /// their next request).
    fn revoke(&self, room: &RoomName, user: &ClientId) {
        let conns = self.conns.borrow();
        for id in self.rooms.member_ids(room) {
            let Some(conn) = conns.get(&id).filter(|c| c.is_client(user)) else {
                continue;
            };
            self.rooms.leave(room, id);
            let header = Header {
                kind: Kind::System,
                room: Some(room.as_str()),
                from: None,
            };
            let data = crate::protocol::envelope::SystemData {
                event: SystemEvent::Removed,
                client_id: None,
            };
            let frame = protocol::encode(header, &data).into_frame(OpCode::Text);
            let _ = conn.queue.push(frame, Instant::now());
        }
    }

    /// A conversation was opened with `event.to`: their connections here
    /// whose dialect joins on its own (FastChat) are told.
    fn grant(&self, event: &crate::model::Event) {
        let Some(user) = &event.to else { return };
        let max = self.node.config.limits.max_name_length;
        let (room, name) = event.body.split_once('\n').unwrap_or((&event.body, ""));
        let Ok(room) = RoomName::parse(room, max) else {
            return;
        };
        for conn in self.conns.borrow().values() {
            if conn.wire.get() == Wire::FastChat && conn.is_client(user) {
                conn.grant(Grant {
                    room: room.clone(),
                    from: event.sender.clone(),
                    name: name.to_owned(),
                });
            }
        }
    }

    /// Tells a sender (if still connected) that its accepted message was
    /// lost on the bus or by the store: `MESSAGE_FAILED` with its
    /// `client_msg_id`.
    fn publish_failed(&self, origin: Origin) {
        if self.wire_of(ConnId(origin.conn)) == Some(Wire::FastChat) {
            let text = protocol::fastchat::error(
                "MESSAGE_FAILED",
                "the message could not be stored or delivered",
                None,
            );
            return self.reply(
                ConnId(origin.conn),
                crate::ws::Outgoing::from_payload(text.as_bytes()),
            );
        }
        if self.wire_of(ConnId(origin.conn)).is_some_and(Wire::is_demo) {
            let text = protocol::demo::error(
                MESSAGE_FAILED_CODE,
                "the message could not be stored or delivered",
            );
            return self.reply(
                ConnId(origin.conn),
                crate::ws::Outgoing::from_payload(text.as_bytes()),
            );
        }
        let header = Header {
            kind: Kind::Error,
            room: None,
            from: None,
        };
        let data = ErrorData {
            code: ErrorCode::MessageFailed,
            message: "message not delivered: the message bus or the store failed",
            client_msg_id: origin.client_msg_id.as_ref().map(RoomName::as_str),
            retry_after_ms: None,
        };
        self.reply(ConnId(origin.conn), protocol::encode(header, &data));
    }

    /// `{"type":"ack","room":R,"data":{"client_msg_id","id","seq"}}` to the
    /// sender of a stored message, if still connected.
    fn acked(&self, ack: Ack) {
        match self.wire_of(ConnId(ack.origin.conn)) {
            // The demo dialect has no acks: its sender sees its own message.
            Some(w) if w.is_demo() => return,
            None => return,
            Some(Wire::FastChat) => {
                let mut id = uuid::Uuid::encode_buffer();
                let message_id = match &ack.origin.client_msg_id {
                    Some(own) => own.as_str(),
                    None => ack.id.hyphenated().encode_lower(&mut id),
                };
                let data = FastChatAck {
                    message_id,
                    status: "delivered",
                };
                let text = protocol::fastchat::message("MSG_ACK", &data);
                return self.reply(
                    ConnId(ack.origin.conn),
                    crate::ws::Outgoing::from_payload(text.as_bytes()),
                );
            }
            Some(_) => {}
        }
        let header = Header {
            kind: Kind::Ack,
            room: Some(ack.room.as_str()),
            from: None,
        };
        let mut id = uuid::Uuid::encode_buffer();
        let data = AckData {
            client_msg_id: ack.origin.client_msg_id.as_ref().map(RoomName::as_str),
            id: ack.id.hyphenated().encode_lower(&mut id),
            seq: ack.seq,
        };
        self.reply(ConnId(ack.origin.conn), protocol::encode(header, &data));
    }

    /// Queues a reply for one connection of this shard, if it is still here.
    /// The dialect of a connection of this shard, if it is still here.
    fn wire_of(&self, id: ConnId) -> Option<Wire> {
        self.conns.borrow().get(&id).map(|c| c.wire.get())
    }

    fn reply(&self, id: ConnId, msg: crate::ws::Outgoing) {
        let Some(conn) = self.conns.borrow().get(&id).cloned() else {
            return;
        };
        let frame = msg.into_frame(OpCode::Text);
        let len = frame.len() as u64;
        if conn.queue.push(frame, Instant::now()).is_ok() {
            self.node.metrics.messages_out.inc();
            self.node.metrics.bytes_out.inc_by(len);
        }
    }

    /// A joining member's catch-up: the stored messages after its
    /// `since_seq` in order, then `recovered`, then (from here on) the live
    /// ones it does not have yet. All in this one turn, so nothing slips
    /// between them.
    fn recovered(&self, recovery: Recovery) {
        let Some(caught_up) =
            self.rooms
                .caught_up(&recovery.room, ConnId(recovery.conn), recovery.up_to)
        else {
            return; // left (or disconnected) meanwhile
        };
        let queue = &caught_up.queue;
        let now = Instant::now();
        let mut sent = 0u64;
        for event in &recovery.events {
            let Some(frame) = crate::rooms::encode::frame(event, caught_up.wire) else {
                continue;
            };
            sent += frame.len() as u64;
            let _ = queue.push(frame, now);
        }
        let header = Header {
            kind: Kind::System,
            room: Some(recovery.room.as_str()),
            from: None,
        };
        let data = RecoveredData {
            event: SystemEvent::Recovered,
            // Held live messages were dropped: the member has a gap.
            recovered: recovery.complete && !caught_up.overflowed,
            oldest_seq: recovery.oldest,
        };
        let frame = protocol::encode(header, &data).into_frame(OpCode::Text);
        sent += frame.len() as u64;
        let _ = queue.push(frame, now);
        for (frame, arrived) in &caught_up.held {
            sent += frame.len() as u64;
            let _ = queue.push(frame.clone(), *arrived);
        }
        let m = &self.node.metrics;
        let count = recovery.events.len() + 1 + caught_up.held.len();
        m.messages_out.inc_by(count as u64);
        m.bytes_out.inc_by(sent);
    }

    fn count(&self, fanout: Fanout) {
        let len = fanout.frame_len;
        let m = &self.node.metrics;
        if fanout.delivered > 0 {
            m.messages_out.inc_by(fanout.delivered);
            m.bytes_out.inc_by(fanout.delivered * len as u64);
        }
        if let Some(depth) = fanout.sample_depth {
            m.queue_depth.observe(depth as f64);
        }
    }

    /// Heartbeat sweep: closes connections silent for longer than their
    /// dialect's idle timeout (`heartbeat.idle_timeout`, FastChat's own
    /// `fastchat.idle_timeout`) and, when `ping` is set, queues a Ping to
    /// every other one. One pass over the shard's connections per tick, not
    /// a timer per connection.
    pub fn sweep(&self, now: Instant, ping: bool) {
        // (A slow-consumer close is counted where the connection ends.)
        let now_ms = stamp(now);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = &self.node.config;
        let idle_ms = ms(config.heartbeat.idle_timeout);
        let fastchat_idle_ms = ms(config.fastchat.idle_timeout);
        self.for_each(|c| {
            let limit = match c.wire.get() {
                Wire::FastChat => fastchat_idle_ms,
                _ => idle_ms,
            };
            if now_ms.saturating_sub(c.last_seen.get()) >= limit {
                c.queue.close(CloseReason::HeartbeatTimeout);
            } else if !c.queue.check_stalled(now) && ping {
                let _ = c.queue.push(self.ping.clone(), now);
            }
        });
    }

    /// Shutdown, first phase: every reader stops taking input.
    pub fn halt_all(&self) {
        self.for_each(|c| c.queue.halt());
    }

    /// The callers only push to, close or halt queues, which wake tasks but
    /// never run them, so the borrow cannot be re-entered.
    fn for_each(&self, f: impl FnMut(&Rc<ConnState>)) {
        self.conns.borrow().values().for_each(f);
    }
}

/// Write-throughs between two turns for the rest of the shard. Without
/// turns, a batch's writes to every member ran in one go, and the senders'
/// reads waited behind them: at 600k-800k deliveries/s latency rose by a
/// quarter (p50 42 vs 32 ms at 600k/s); with a turn every 64 writes it is
/// the old build's (BENCHMARKS.md, session 9).
const FLUSH_TURN: usize = 64;

/// Inbox messages delivered per batch.
const BATCH: usize = 64;

/// Delivers inbox messages in arrival order, in batches to amortise wake-ups.
pub async fn dispatch(shard: Rc<Shard>, mut inbox: UnboundedReceiver<ShardMsg>) {
    let mut batch = Vec::with_capacity(BATCH);
    while inbox.recv_many(&mut batch, BATCH).await > 0 {
        let n = batch.len();
        let node = &shard.node;
        // What waited (node-wide) when this batch was taken.
        node.metrics
            .inbox_backlog
            .set(node.registry.backlog() as i64);
        for msg in batch.drain(..) {
            shard.handle(msg);
        }
        // The batch's frames for parked writers: one write per connection,
        // a turn for the rest of the shard (the senders' reads) every
        // `FLUSH_TURN` writes, but only while less than a batch waits: a
        // fan-out that is behind finishes its writes and takes the next
        // batch first. (Turns regardless let a join storm's handshakes add
        // to the inbox faster than it emptied: 12,000 messages waited, and
        // the storm's memory peak stayed as ~170 bytes more per idle
        // connection.) Nothing else adds to the list meanwhile: only this
        // task fans out.
        while shard.rooms.flush_some(&shard.writer.latency, FLUSH_TURN) {
            if inbox.len() < BATCH {
                tokio::task::yield_now().await;
            }
        }
        node.registry.handled(n);
    }
}

/// One sweep of the shard's connections per tick (a quarter of the shortest
/// of the heartbeat intervals and the slow-consumer timeout), pinging every
/// `ping_interval`.
pub async fn heartbeat(shard: Rc<Shard>) {
    let hb = shard.node.config.heartbeat.clone();
    let slow = shard.node.config.limits.slow_consumer_timeout;
    let fastchat_idle = shard.node.config.fastchat.idle_timeout;
    let shortest = hb
        .ping_interval
        .min(hb.idle_timeout)
        .min(fastchat_idle)
        .min(slow);
    let tick = (shortest / 4).max(Duration::from_millis(5));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_ping = Instant::now();
    loop {
        interval.tick().await;
        let now = Instant::now();
        let ping = now.duration_since(last_ping) >= hb.ping_interval;
        if ping {
            last_ping = now;
        }
        shard.sweep(now, ping);
    }
}
