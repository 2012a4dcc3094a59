//! One shard's members: the queues a frame is pushed to.
//!
//! Owned by the shard's thread alone (no locks): the shard's dispatcher reads
//! it to fan out, the shard's connections change it on join and leave.

use bytes::Bytes;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use super::encode;
use crate::config::Wire;
use crate::metrics::LocalHistogram;
use crate::model::{EventKind, Payload, Topic};
use crate::protocol::RoomName;
use crate::queue::{ClientQueue, PushError};
use crate::ws::deflate::{self, Window};

/// A connection's id, unique in the process (shard index in the top bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// How a member hears a room: its dialect, (for a dialect that does not
/// echo a sender's own messages) its client's key, and the permessage-deflate
/// window it agreed to.
#[derive(Debug, Clone, Copy)]
pub struct Voice {
    pub wire: Wire,
    pub own: u64,
    pub deflate: Option<Window>,
}

impl From<Wire> for Voice {
    fn from(wire: Wire) -> Voice {
        Voice {
            wire,
            own: 0,
            deflate: None,
        }
    }
}

/// A client id's key for [`Voice::own`] (never 0).
pub fn client_key(client: &crate::protocol::ClientId) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    client.as_str().hash(&mut h);
    h.finish() | 1
}

/// A set of queues with O(1) insert and remove and a dense list to iterate.
#[derive(Default)]
pub struct Members {
    list: Vec<Member>,
    index: HashMap<ConnId, usize>,
    /// Stored messages that arrived for members still catching up (several
    /// nodes: a message after the catch-up's end can arrive before the
    /// catch-up); pushed after it. Empty unless someone is catching up.
    held: RefCell<HashMap<ConnId, Held>>,
}

/// One catching-up member's held messages.
#[derive(Default)]
struct Held {
    frames: Vec<(u64, Bytes, Instant)>,
    /// More arrived than may be held: the catch-up cannot be complete.
    overflowed: bool,
}

/// A member's catch-up went out: its queue and the live messages held for
/// it meanwhile (after the catch-up's end, in order).
pub struct CaughtUp {
    pub queue: Rc<ClientQueue>,
    /// The member's dialect (its catch-up is framed in it).
    pub wire: Wire,
    pub held: Vec<(Bytes, Instant)>,
    /// Messages were dropped while holding: the member has a gap.
    pub overflowed: bool,
}

/// One member's queue, and which stored messages it already has.
struct Member {
    id: ConnId,
    queue: Rc<ClientQueue>,
    /// The dialect it speaks: its frame of each message is that dialect's.
    wire: Wire,
    /// Which of a fan-out's frames it gets ([`Frames`]): its dialect's,
    /// compressed for its permessage-deflate window if it has one.
    slot: u8,
    /// For a dialect that does not echo a sender's own chats and typing
    /// back (FastChat): the key of its client ([`client_key`]); else 0.
    own: u64,
    /// Stored messages (`seq`) up to this one are not pushed: the member
    /// got them from the store in its catch-up (`CATCHING_UP`: it is
    /// catching up now, so every stored message is in its catch-up).
    has_up_to: Cell<u64>,
}

/// `has_up_to` of a member whose catch-up from the store is on its way.
const CATCHING_UP: u64 = u64::MAX;

/// What one fan-out did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    pub delivered: u64,
    /// Bytes of the frame each recipient got.
    pub frame_len: usize,
    /// Depth of the last queue pushed to: one sample per fan-out.
    pub sample_depth: Option<usize>,
}

impl Members {
    pub fn insert(&mut self, id: ConnId, queue: Rc<ClientQueue>, voice: impl Into<Voice>) -> bool {
        self.insert_member(id, queue, voice.into(), 0)
    }

    fn insert_member(
        &mut self,
        id: ConnId,
        queue: Rc<ClientQueue>,
        voice: Voice,
        has_up_to: u64,
    ) -> bool {
        if self.index.contains_key(&id) {
            return false;
        }
        self.index.insert(id, self.list.len());
        self.list.push(Member {
            id,
            queue,
            wire: voice.wire,
            slot: Frames::slot(voice.wire, voice.deflate),
            own: voice.own,
            has_up_to: Cell::new(has_up_to),
        });
        true
    }

    pub fn remove(&mut self, id: ConnId) -> bool {
        let Some(i) = self.index.remove(&id) else {
            return false;
        };
        self.held.get_mut().remove(&id);
        self.list.swap_remove(i);
        if let Some(moved) = self.list.get(i) {
            self.index.insert(moved.id, i);
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Pushes a refcount clone of the payload's frame in each member's
    /// dialect to every member's queue (framed once per dialect present, on
    /// first need; of a stored message, `seq`: to every member that does not
    /// have it yet; held for one catching up, at most `max_held`). A dialect
    /// without a frame for the event (e.g. typing in the demo's) is skipped.
    /// Members with permessage-deflate get the frame compressed, once per
    /// dialect and window, if it is `deflate_threshold` bytes or more.
    /// Queues whose parked writers were not woken go into `flush` (see
    /// [`LocalRooms::flush`]).
    pub fn fanout(
        &self,
        payload: &Payload,
        arrived: Instant,
        max_held: usize,
        deflate_threshold: usize,
        flush: &mut Vec<Rc<ClientQueue>>,
    ) -> Fanout {
        let mut out = Fanout::default();
        let seq = match payload {
            Payload::Event(event) => event.seq,
            Payload::Frame(_) => None,
        };
        let mut frames = Frames::new(payload, deflate_threshold);
        let sender = own_key(payload);
        for member in &self.list {
            if member.own != 0 && member.own == sender {
                continue;
            }
            let Some(frame) = frames.get(member.slot, member.wire) else {
                continue;
            };
            out.frame_len = frame.len();
            let has_up_to = member.has_up_to.get();
            if let Some(seq) = seq.filter(|&seq| seq <= has_up_to) {
                if has_up_to == CATCHING_UP {
                    let mut held = self.held.borrow_mut();
                    let held = held.entry(member.id).or_default();
                    if held.frames.len() < max_held {
                        held.frames.push((seq, frame.clone(), arrived));
                    } else {
                        held.overflowed = true;
                    }
                }
                continue;
            }
            push(&member.queue, frame, arrived, &mut out, flush);
        }
        out
    }
}

/// Whose own chat or typing this is, as a [`client_key`] (for members that
/// skip those); 0 for anything else.
fn own_key(payload: &Payload) -> u64 {
    match payload {
        Payload::Event(e) if matches!(e.kind, EventKind::Chat | EventKind::Typing) => {
            client_key(&e.sender)
        }
        _ => 0,
    }
}

/// One recipient's refcount clone of the frame, counted; its queue goes
/// into `flush` when its writer was left parked.
fn push(
    queue: &Rc<ClientQueue>,
    frame: &Bytes,
    arrived: Instant,
    out: &mut Fanout,
    flush: &mut Vec<Rc<ClientQueue>>,
) {
    match queue.push_deferred(frame.clone(), arrived) {
        Ok((depth, deferred)) => {
            out.delivered += 1;
            out.sample_depth = Some(depth);
            if deferred {
                flush.push(queue.clone());
            }
        }
        // A queue that overflowed now is closing; the close is counted where
        // the connection ends.
        Err(PushError::Full | PushError::Closed) => {}
    }
}

/// Frame slots per dialect: the plain frame, then one per deflate window.
const SLOTS_PER_WIRE: usize = 1 + Window::COUNT;

/// One fan-out's frames, each made on first need: per dialect, the plain
/// frame and the frame compressed for each permessage-deflate window some
/// member asked for (or the plain one again, for a payload under the
/// threshold or one that does not shrink).
struct Frames<'a> {
    payload: &'a Payload,
    deflate_threshold: usize,
    /// `None`: not made yet; `Some(None)`: the dialect has no frame for it.
    slots: [Option<Option<Bytes>>; Wire::ALL.len() * SLOTS_PER_WIRE],
}

impl<'a> Frames<'a> {
    fn new(payload: &'a Payload, deflate_threshold: usize) -> Self {
        Frames {
            payload,
            deflate_threshold,
            slots: std::array::from_fn(|_| None),
        }
    }

    /// The slot of a member speaking `wire` with `deflate`.
    fn slot(wire: Wire, deflate: Option<Window>) -> u8 {
        (wire.index() * SLOTS_PER_WIRE + deflate.map_or(0, |w| 1 + w.index())) as u8
    }

    /// The frame in `slot` (of dialect `wire`); the common case, a frame
    /// already made, is one index.
    #[inline]
    fn get(&mut self, slot: u8, wire: Wire) -> Option<&Bytes> {
        let i = usize::from(slot);
        if self.slots[i].is_none() {
            self.make(i, wire);
        }
        self.slots[i].as_ref().and_then(Option::as_ref)
    }

    #[cold]
    #[inline(never)]
    fn make(&mut self, i: usize, wire: Wire) {
        let plain = i - i % SLOTS_PER_WIRE;
        if self.slots[plain].is_none() {
            self.slots[plain] = Some(match self.payload {
                Payload::Event(event) => encode::frame(event, wire),
                Payload::Frame(frame) => Some(frame.clone()),
            });
        }
        if i != plain {
            let window = Window::from_index(i % SLOTS_PER_WIRE - 1);
            let frame = self.slots[plain]
                .clone()
                .flatten()
                .map(|p| deflate::compress_frame(&p, window, self.deflate_threshold).unwrap_or(p));
            self.slots[i] = Some(frame);
        }
    }
}

/// All of one shard's membership.
#[derive(Default)]
pub struct LocalRooms {
    /// Most live messages held per member during its catch-up.
    max_held: usize,
    /// Frames shorter than this go uncompressed to permessage-deflate members.
    deflate_threshold: usize,
    rooms: RefCell<HashMap<RoomName, Members>>,
    /// Every relay connection. (The audience of global messages is the
    /// shard's connections that hear them: [`LocalRooms::fanout_to`].)
    relay: RefCell<Members>,
    /// Queues pushed to since the last [`LocalRooms::flush`] whose writers
    /// were left parked.
    unflushed: RefCell<Vec<Rc<ClientQueue>>>,
}

impl LocalRooms {
    /// A shard's rooms; at most `max_held` live messages are held for a
    /// member while its catch-up is read; frames under `deflate_threshold`
    /// bytes go uncompressed.
    pub fn new(max_held: usize, deflate_threshold: usize) -> LocalRooms {
        LocalRooms {
            max_held,
            deflate_threshold,
            ..LocalRooms::default()
        }
    }

    pub fn join(
        &self,
        room: &RoomName,
        id: ConnId,
        queue: Rc<ClientQueue>,
        voice: impl Into<Voice>,
    ) -> bool {
        self.rooms
            .borrow_mut()
            .entry(room.clone())
            .or_default()
            .insert(id, queue, voice)
    }

    /// The room's name as this shard keeps it (a refcount clone), if it has
    /// members here.
    pub fn interned(&self, room: &RoomName) -> Option<RoomName> {
        let rooms = self.rooms.borrow();
        rooms
            .get_key_value(room.as_str())
            .map(|(name, _)| name.clone())
    }

    /// Joins a member whose catch-up from the store is on its way: until
    /// [`LocalRooms::caught_up`], stored messages are not pushed to it (the
    /// catch-up has them), other events are.
    pub fn join_catching_up(
        &self,
        room: &RoomName,
        id: ConnId,
        queue: Rc<ClientQueue>,
        voice: impl Into<Voice>,
    ) -> bool {
        self.rooms
            .borrow_mut()
            .entry(room.clone())
            .or_default()
            .insert_member(id, queue, voice.into(), CATCHING_UP)
    }

    /// The member's catch-up went out with everything up to `seq`: live
    /// stored messages after it are pushed again, starting with those held
    /// meanwhile (returned, for after the catch-up). `None`: not a member.
    pub fn caught_up(&self, room: &RoomName, id: ConnId, seq: u64) -> Option<CaughtUp> {
        let rooms = self.rooms.borrow();
        let members = rooms.get(room.as_str())?;
        let member = &members.list[*members.index.get(&id)?];
        member.has_up_to.set(seq);
        let held = members.held.borrow_mut().remove(&id).unwrap_or_default();
        Some(CaughtUp {
            queue: member.queue.clone(),
            wire: member.wire,
            held: held
                .frames
                .into_iter()
                .filter(|(s, _, _)| *s > seq)
                .map(|(_, frame, at)| (frame, at))
                .collect(),
            overflowed: held.overflowed,
        })
    }

    pub fn leave(&self, room: &RoomName, id: ConnId) -> bool {
        let mut rooms = self.rooms.borrow_mut();
        let Some(members) = rooms.get_mut(room.as_str()) else {
            return false;
        };
        let removed = members.remove(id);
        if members.is_empty() {
            rooms.remove(room.as_str());
        }
        removed
    }

    /// The connections in `room` on this shard.
    pub fn member_ids(&self, room: &RoomName) -> Vec<ConnId> {
        let rooms = self.rooms.borrow();
        rooms
            .get(room.as_str())
            .map(|m| m.list.iter().map(|m| m.id).collect())
            .unwrap_or_default()
    }

    /// Whether `id` is a member of `room` here.
    pub fn is_member(&self, room: &RoomName, id: ConnId) -> bool {
        let rooms = self.rooms.borrow();
        rooms
            .get(room.as_str())
            .is_some_and(|m| m.index.contains_key(&id))
    }

    pub fn add_relay(&self, id: ConnId, queue: Rc<ClientQueue>, deflate: Option<Window>) {
        let voice = Voice {
            deflate,
            ..Voice::from(Wire::ChatApi)
        };
        self.relay.borrow_mut().insert(id, queue, voice);
    }

    pub fn remove_relay(&self, id: ConnId) {
        self.relay.borrow_mut().remove(id);
    }

    /// Fans `payload` out to this shard's audience of `topic`: an event is
    /// framed once (per wire protocol) only if someone here is to get it.
    /// (`Topic::Global` has no members here: see [`LocalRooms::fanout_to`].)
    pub fn fanout(&self, topic: &Topic, payload: &Payload, arrived: Instant) -> Fanout {
        let rooms;
        let relay;
        let members = match topic {
            Topic::Room(room) => {
                rooms = self.rooms.borrow();
                match rooms.get(room.as_str()) {
                    Some(members) => members,
                    None => return Fanout::default(),
                }
            }
            Topic::Global => return Fanout::default(),
            Topic::Relay => {
                relay = self.relay.borrow();
                &*relay
            }
        };
        if members.is_empty() {
            return Fanout::default();
        }
        let mut unflushed = self.unflushed.borrow_mut();
        members.fanout(
            payload,
            arrived,
            self.max_held,
            self.deflate_threshold,
            &mut unflushed,
        )
    }

    /// Writes what the fan-outs since the last call left queued for parked
    /// writers (`ClientQueue::flush`): one write per connection for all of
    /// them, at most `n` connections per call; true while some are left.
    /// The shard's dispatch calls it after each inbox batch until none are
    /// left; until then those writers are not woken.
    pub fn flush_some(&self, latency: &LocalHistogram, n: usize) -> bool {
        // (No clock read for a batch with nothing to write through.)
        if self.unflushed.borrow().is_empty() {
            return false;
        }
        let mut unflushed = self.unflushed.take();
        let start = unflushed.len().saturating_sub(n);
        let now = Instant::now();
        for queue in unflushed.drain(start..) {
            queue.flush(latency, now);
        }
        let left = !unflushed.is_empty();
        // The list (and its buffer, for the next batch) goes back.
        *self.unflushed.borrow_mut() = unflushed;
        left
    }

    /// Fans `payload` out to an audience given by the caller, each queue
    /// with how it hears: a global message to the shard's connections. A
    /// list of them here as well would be ~90 bytes more per idle
    /// connection (a member entry and its index) for a rare message.
    pub fn fanout_to<'a>(
        &self,
        audience: impl Iterator<Item = (&'a Rc<ClientQueue>, Voice)>,
        payload: &Payload,
        arrived: Instant,
    ) -> Fanout {
        let mut out = Fanout::default();
        let mut frames = Frames::new(payload, self.deflate_threshold);
        let sender = own_key(payload);
        let mut unflushed = self.unflushed.borrow_mut();
        for (queue, voice) in audience {
            if voice.own != 0 && voice.own == sender {
                continue;
            }
            let slot = Frames::slot(voice.wire, voice.deflate);
            if let Some(frame) = frames.get(slot, voice.wire) {
                out.frame_len = frame.len();
                push(queue, frame, arrived, &mut out, &mut unflushed);
            }
        }
        out
    }

    pub fn room_count(&self) -> usize {
        self.rooms.borrow().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::Limits;

    fn queue() -> Rc<ClientQueue> {
        Rc::new(ClientQueue::new(Limits {
            max_messages: 2,
            max_bytes: 2,
            slow_timeout: std::time::Duration::from_secs(5),
        }))
    }

    /// A stored chat with `seq` and body `body`, as a payload.
    fn stored(seq: u64, body: &str) -> Payload {
        let room = RoomName::parse("r", 64).unwrap();
        let sender = crate::protocol::ClientId::parse("u", 64).unwrap();
        let mut e = crate::model::Event::chat(Topic::Room(room), sender, body);
        e.seq = Some(seq);
        Payload::Event(std::sync::Arc::new(e))
    }

    fn frame(bytes: &'static [u8]) -> Payload {
        Payload::Frame(Bytes::from_static(bytes))
    }

    #[test]
    fn remove_keeps_the_index_dense() {
        let mut m = Members::default();
        let qs: Vec<_> = (0..4).map(|_| queue()).collect();
        for (i, q) in qs.iter().enumerate() {
            assert!(m.insert(ConnId(i as u64), q.clone(), Wire::ChatApi));
        }
        assert!(!m.insert(ConnId(0), qs[0].clone(), Wire::ChatApi));
        assert!(m.remove(ConnId(1)));
        assert!(!m.remove(ConnId(1)));
        assert_eq!(
            m.fanout(&frame(b"x"), Instant::now(), 0, 0, &mut Vec::new())
                .delivered,
            3
        );
        assert!(m.remove(ConnId(3)));
        assert!(m.remove(ConnId(0)));
        assert!(m.remove(ConnId(2)));
        assert!(m.is_empty());
        assert_eq!(qs[1].len(), 0);
        assert_eq!(qs[2].len(), 1);
    }

    #[test]
    fn a_global_message_reaches_the_given_audience_but_not_a_sender_that_skips_its_own() {
        let rooms = LocalRooms::default();
        let sender = crate::protocol::ClientId::parse("u", 64).unwrap();
        let chat = Payload::Event(std::sync::Arc::new(crate::model::Event::chat(
            Topic::Global,
            sender.clone(),
            "to all",
        )));
        let (native, fastchat_sender, fastchat_other) = (queue(), queue(), queue());
        let voice = |wire, own| Voice {
            wire,
            own,
            deflate: None,
        };
        let other = crate::protocol::ClientId::parse("v", 64).unwrap();
        let audience = [
            (&native, voice(Wire::ChatApi, 0)),
            (&fastchat_sender, voice(Wire::FastChat, client_key(&sender))),
            (&fastchat_other, voice(Wire::FastChat, client_key(&other))),
        ];
        let out = rooms.fanout_to(audience.into_iter(), &chat, Instant::now());
        assert_eq!(out.delivered, 2);
        assert_eq!(
            (native.len(), fastchat_sender.len(), fastchat_other.len()),
            (1, 0, 1)
        );
        // No room has members of a global topic: the caller names them.
        assert_eq!(
            rooms
                .fanout(&Topic::Global, &chat, Instant::now())
                .delivered,
            0
        );
    }

    #[test]
    fn a_joined_room_name_is_kept_once() {
        let rooms = LocalRooms::default();
        let first = RoomName::parse("lobby", 64).unwrap();
        let second = RoomName::parse("lobby", 64).unwrap();
        assert!(rooms.interned(&first).is_none(), "no members yet");
        rooms.join(&first, ConnId(1), queue(), Wire::ChatApi);
        let kept = rooms.interned(&second).unwrap();
        assert_eq!(kept, second);
        assert_eq!(kept.as_str().as_ptr(), first.as_str().as_ptr());
    }

    #[test]
    fn fanout_skips_a_queue_over_its_byte_bound() {
        let rooms = LocalRooms::default();
        let room = RoomName::parse("r", 64).unwrap();
        rooms.join(&room, ConnId(1), queue(), Wire::ChatApi);
        let (frame, now) = (frame(b"x"), Instant::now());
        let topic = Topic::Room(room.clone());
        assert_eq!(rooms.fanout(&topic, &frame, now).delivered, 1);
        assert_eq!(rooms.fanout(&topic, &frame, now).sample_depth, Some(2));
        let skipped = rooms.fanout(&topic, &frame, now);
        assert_eq!((skipped.delivered, skipped.sample_depth), (0, None));
        assert!(rooms.leave(&room, ConnId(1)));
        assert_eq!(rooms.room_count(), 0);
    }

    #[test]
    fn each_dialect_gets_its_own_frame_and_one_without_one_is_skipped() {
        let rooms = LocalRooms::default();
        let room = RoomName::parse("r", 64).unwrap();
        let big = || {
            Rc::new(ClientQueue::new(Limits {
                max_messages: 16,
                max_bytes: 1 << 20,
                slow_timeout: std::time::Duration::from_secs(5),
            }))
        };
        let (native, demo) = (big(), big());
        rooms.join(&room, ConnId(1), native.clone(), Wire::ChatApi);
        rooms.join(&room, ConnId(2), demo.clone(), Wire::Demo);
        let topic = Topic::Room(room.clone());
        let out = rooms.fanout(&topic, &stored(1, "hello"), Instant::now());
        assert_eq!(out.delivered, 2);
        let sender = crate::protocol::ClientId::parse("u", 64).unwrap();
        let typing = Payload::Event(std::sync::Arc::new(crate::model::Event::typing(
            room, sender,
        )));
        assert_eq!(
            rooms.fanout(&topic, &typing, Instant::now()).delivered,
            1,
            "no typing in the demo"
        );
        let text = |q: &ClientQueue| {
            let mut frames = std::collections::VecDeque::new();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = q.poll_drain(&mut cx, &mut frames);
            frames
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
        };
        let (n, d) = (text(&native), text(&demo));
        assert!(
            n[0].contains(r#""type":"chat""#) && n[1].contains(r#""type":"typing""#),
            "{n:?}"
        );
        assert_eq!(d.len(), 1);
        assert!(
            d[0].contains(r#""type":"channelMessage""#) && d[0].contains(r#""Message":"hello""#),
            "{d:?}"
        );
    }

    #[test]
    fn a_catching_up_member_gets_later_stored_messages_after_its_catch_up() {
        let rooms = LocalRooms::new(2, 0);
        let room = RoomName::parse("r", 64).unwrap();
        let q = Rc::new(ClientQueue::new(Limits {
            max_messages: 16,
            max_bytes: 1 << 20,
            slow_timeout: std::time::Duration::from_secs(5),
        }));
        rooms.join_catching_up(&room, ConnId(1), q.clone(), Wire::ChatApi);
        let members = rooms.rooms.borrow();
        let m = members.get("r").unwrap();
        let now = Instant::now();
        for (seq, body) in [(4, "four"), (6, "six")] {
            assert_eq!(
                m.fanout(&stored(seq, body), now, 2, 0, &mut Vec::new())
                    .delivered,
                0,
                "held"
            );
        }
        // Not stored (presence): pushed at once.
        assert_eq!(
            m.fanout(&frame(b"p"), now, 2, 0, &mut Vec::new()).delivered,
            1
        );
        drop(members);
        let caught = rooms.caught_up(&room, ConnId(1), 5).unwrap();
        assert_eq!(
            caught.held.len(),
            1,
            "4 was in the catch-up; 6 comes after it"
        );
        assert!(String::from_utf8_lossy(&caught.held[0].0).contains("six"));
        assert!(!caught.overflowed);
        // From now on, live: after 5 pushed, up to 5 skipped.
        let members = rooms.rooms.borrow();
        let m = members.get("r").unwrap();
        assert_eq!(
            m.fanout(&stored(5, "x"), now, 2, 0, &mut Vec::new())
                .delivered,
            0
        );
        assert_eq!(
            m.fanout(&stored(7, "x"), now, 2, 0, &mut Vec::new())
                .delivered,
            1
        );
    }

    #[test]
    fn holding_more_than_the_bound_marks_the_catch_up_incomplete() {
        let rooms = LocalRooms::new(1, 0);
        let room = RoomName::parse("r", 64).unwrap();
        rooms.join_catching_up(&room, ConnId(1), queue(), Wire::ChatApi);
        let topic = Topic::Room(room.clone());
        for seq in [1, 2] {
            let mut e = crate::model::Event::chat(
                topic.clone(),
                crate::protocol::ClientId::parse("u", 64).unwrap(),
                "x",
            );
            e.seq = Some(seq);
            let payload = Payload::Event(std::sync::Arc::new(e));
            rooms.fanout(&topic, &payload, Instant::now());
        }
        let caught = rooms.caught_up(&room, ConnId(1), 0).unwrap();
        assert_eq!(caught.held.len(), 1);
        assert!(caught.overflowed);
    }
}
