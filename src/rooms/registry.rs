//! The node-wide view of rooms: which shards have members of which room.
//!
//! Lock-sharded by room name hash so that joins in different rooms rarely
//! contend. A broadcast takes its room's lock once, and sends the frame to
//! each shard that has members (one inbox message per shard, never one per
//! recipient). Sending under the lock makes every shard see a room's messages
//! in one order, whichever shard published them.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use tokio::sync::mpsc::UnboundedSender;

use crate::model::{Ack, Delivery, Origin, Payload, Recovery, Topic};
use crate::protocol::RoomName;

/// Lock stripes for the room map; a power of two well above the core count.
const BUCKETS: usize = 64;

/// What a shard's inbox carries.
#[derive(Debug)]
pub enum ShardMsg {
    /// A frame for this shard's audience of `topic`, which arrived at the
    /// node at `arrived`.
    Deliver {
        topic: Topic,
        payload: Payload,
        arrived: Instant,
    },
    /// Shutdown: every message published before this one has been delivered;
    /// close every connection after flushing its queue.
    Drain,
    /// A message this shard's connection published was lost on the bus.
    Failed(Origin),
    /// A message this shard's connection posted is stored.
    Acked(Ack),
    /// A joining member's catch-up.
    Recovered(Recovery),
}

struct RoomEntry {
    /// Members per shard; a shard with 0 gets no copy of the room's messages.
    per_shard: Box<[u32]>,
    total: u32,
}

pub struct Registry {
    buckets: Box<[Mutex<HashMap<RoomName, RoomEntry>>]>,
    hasher: RandomState,
    inboxes: Box<[UnboundedSender<ShardMsg>]>,
    /// Messages sent to the inboxes and not yet handled, node-wide. The
    /// inboxes themselves are unbounded (the Redis push handler cannot
    /// wait); readers stop reading while this is above
    /// `limits.inbox_high_water`, which bounds it.
    backlog: AtomicUsize,
    /// Orders global and relay broadcasts across shards, as a room lock does.
    broadcast: Mutex<()>,
    rooms: AtomicUsize,
}

impl Registry {
    pub fn new(inboxes: Vec<UnboundedSender<ShardMsg>>) -> Registry {
        Registry {
            buckets: (0..BUCKETS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            inboxes: inboxes.into_boxed_slice(),
            backlog: AtomicUsize::new(0),
            broadcast: Mutex::new(()),
            rooms: AtomicUsize::new(0),
        }
    }

    fn bucket(&self, room: &str) -> &Mutex<HashMap<RoomName, RoomEntry>> {
        let h = self.hasher.hash_one(room) as usize;
        &self.buckets[h % BUCKETS]
    }

    /// Records a member of `room` on `shard`; true if it is the node's first.
    pub fn join(&self, room: &RoomName, shard: usize) -> bool {
        let mut map = self.bucket(room.as_str()).lock();
        let shards = self.inboxes.len();
        let entry = map.entry(room.clone()).or_insert_with(|| RoomEntry {
            per_shard: vec![0; shards].into_boxed_slice(),
            total: 0,
        });
        entry.per_shard[shard] += 1;
        entry.total += 1;
        let first = entry.total == 1;
        if first {
            self.rooms.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    /// Removes a member of `room` on `shard`; true if it was the node's last.
    pub fn leave(&self, room: &RoomName, shard: usize) -> bool {
        let mut map = self.bucket(room.as_str()).lock();
        let Some(entry) = map.get_mut(room.as_str()) else {
            return false;
        };
        debug_assert!(entry.per_shard[shard] > 0, "leave without join");
        entry.per_shard[shard] = entry.per_shard[shard].saturating_sub(1);
        entry.total = entry.total.saturating_sub(1);
        if entry.total == 0 {
            map.remove(room.as_str());
            self.rooms.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Rooms with at least one member on this node.
    pub fn room_count(&self) -> usize {
        self.rooms.load(Ordering::Relaxed)
    }

    /// Messages waiting in shard inboxes (published, not yet fanned out).
    pub fn backlog(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    /// A shard handled `n` inbox messages.
    pub fn handled(&self, n: usize) {
        self.backlog.fetch_sub(n, Ordering::Relaxed);
    }

    fn send(&self, shard: usize, msg: ShardMsg) {
        // Counted first, so `handled` never runs below zero. A shard that
        // already stopped (shutdown) has no one left to deliver to.
        self.backlog.fetch_add(1, Ordering::Relaxed);
        if self.inboxes[shard].send(msg).is_err() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Tells the sender's shard that its message is stored.
    pub fn acked(&self, ack: Ack) {
        if ack.origin.shard < self.inboxes.len() {
            self.send(ack.origin.shard, ShardMsg::Acked(ack));
        }
    }

    /// Hands a joining member its catch-up (through its shard's inbox, so it
    /// is ordered with the live messages published before and after it).
    pub fn recovered(&self, recovery: Recovery) {
        if recovery.shard < self.inboxes.len() {
            self.send(recovery.shard, ShardMsg::Recovered(recovery));
        }
    }

    /// Sends `Drain` to every shard (after all publishers have stopped).
    pub fn drain_all(&self) {
        let _order = self.broadcast.lock();
        for shard in 0..self.inboxes.len() {
            self.send(shard, ShardMsg::Drain);
        }
    }
}

impl Delivery for Registry {
    fn failed(&self, origin: Origin) {
        if origin.shard < self.inboxes.len() {
            self.send(origin.shard, ShardMsg::Failed(origin));
        }
    }

    fn deliver(&self, topic: &Topic, payload: Payload) {
        let arrived = Instant::now();
        let msg = || ShardMsg::Deliver {
            topic: topic.clone(),
            payload: payload.clone(),
            arrived,
        };
        match topic {
            Topic::Room(room) => {
                let map = self.bucket(room.as_str()).lock();
                let Some(entry) = map.get(room.as_str()) else {
                    return;
                };
                for (shard, _) in entry.per_shard.iter().enumerate().filter(|(_, n)| **n > 0) {
                    self.send(shard, msg());
                }
            }
            Topic::Global | Topic::Relay => {
                let _order = self.broadcast.lock();
                for shard in 0..self.inboxes.len() {
                    self.send(shard, msg());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tokio::sync::mpsc::unbounded_channel;

    #[test]
    fn room_messages_reach_only_shards_with_members() {
        let (tx0, mut rx0) = unbounded_channel();
        let (tx1, mut rx1) = unbounded_channel();
        let reg = Registry::new(vec![tx0, tx1]);
        let room = RoomName::parse("r", 64).unwrap();
        assert!(reg.join(&room, 1));
        assert!(!reg.join(&room, 1));
        assert_eq!(reg.room_count(), 1);
        let x = Payload::Frame(Bytes::from_static(b"x"));
        reg.deliver(&Topic::Room(room.clone()), x);
        assert!(rx0.try_recv().is_err());
        assert!(
            matches!(rx1.try_recv(), Ok(ShardMsg::Deliver { topic: Topic::Room(r), payload: Payload::Frame(f), .. }) if r == room && &f[..] == b"x")
        );
        assert!(!reg.leave(&room, 1));
        assert!(reg.leave(&room, 1));
        assert_eq!(reg.room_count(), 0);
        reg.deliver(&Topic::Room(room), Payload::Frame(Bytes::from_static(b"y")));
        assert!(rx1.try_recv().is_err());
    }
}
