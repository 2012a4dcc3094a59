//! Delivery in `seq` order when several nodes share one history.
//!
//! Each node numbers its groups from the shared store's counters and
//! publishes them after the commit, so two nodes' messages to one room can
//! reach the bus (and so this node) out of order: node A commits 5 and 6,
//! node B then commits 7 and publishes first. [`Order`] sits between the bus
//! and this node's fan-out: per room it delivers `next`, holds what arrives
//! ahead of it, and, when a gap has not closed within
//! `store.reorder_timeout`, has the store thread read the missing numbers
//! (every number below one that arrived is committed: the counter row is
//! locked until the commit). Every client on every node thus gets a room's
//! messages in `seq` order.
//!
//! A room is watched from the moment the node subscribes to it. Its
//! baseline (what was stored before) is read from the store after the
//! subscription, so nothing committed later is missed, and nothing earlier
//! is delivered live. Events without a `seq` (presence, typing) and rooms
//! the node does not watch pass straight through.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;

use crate::broker::{Delivery, Origin, Payload, Topic};
use crate::model::Event;
use crate::protocol::RoomName;
use crate::rooms::Registry;

/// What the store thread is asked to do for the order.
#[derive(Debug)]
pub(crate) enum Wake {
    /// Read the room's last stored `seq`: the node's baseline for it.
    Baseline(RoomName),
    /// A gap opened in the room: fill it if it is still open after the
    /// reorder timeout.
    Gap(RoomName),
    /// The bus was down: read what the store has after the last `seq`
    /// delivered (other nodes' messages that never came over the bus).
    CatchUp(RoomName),
}

/// The reorder stage: this node's [`Delivery`] when it shares its history
/// with other nodes.
pub struct Order {
    registry: Arc<Registry>,
    rooms: Mutex<HashMap<RoomName, RoomOrder>>,
    wake: mpsc::UnboundedSender<Wake>,
}

impl Order {
    /// The order in front of `registry`, and the receiver of its requests
    /// (for the store thread).
    pub fn new(registry: Arc<Registry>) -> (Arc<Order>, OrderWakes) {
        let (wake, rx) = mpsc::unbounded_channel();
        let order = Order {
            registry,
            rooms: Mutex::new(HashMap::new()),
            wake,
        };
        (Arc::new(order), OrderWakes(rx))
    }

    /// The node subscribed to `room`: order its messages from now on.
    pub(crate) fn watch(&self, room: &RoomName) {
        self.rooms.lock().insert(room.clone(), RoomOrder::default());
        let _ = self.wake.send(Wake::Baseline(room.clone()));
    }

    /// The node's last member left `room`.
    pub(crate) fn forget(&self, room: &RoomName) {
        self.rooms.lock().remove(room.as_str());
    }

    /// Whether `room` waits for its baseline (`None`: not watched).
    pub(crate) fn needs_baseline(&self, room: &RoomName) -> Option<bool> {
        let rooms = self.rooms.lock();
        rooms.get(room.as_str()).map(|o| o.next.is_none())
    }

    /// Sets `room`'s baseline (if it has none yet) and returns the last
    /// `seq` delivered to this node's fan-out (`None`: not watched).
    pub(crate) fn baseline(&self, room: &RoomName, last: u64) -> Option<u64> {
        self.with(room, |o| o.baseline(last))?;
        self.delivered(room)
    }

    /// The last `seq` of `room` handed to this node's fan-out.
    pub(crate) fn delivered(&self, room: &RoomName) -> Option<u64> {
        let rooms = self.rooms.lock();
        let next = rooms.get(room.as_str())?.next?;
        Some(next - 1)
    }

    /// The numbers `room` waits for, `(from, to)` inclusive, if a gap is
    /// still open.
    pub(crate) fn gap(&self, room: &RoomName) -> Option<(u64, u64)> {
        let mut rooms = self.rooms.lock();
        let order = rooms.get_mut(room.as_str())?;
        let gap = order.gap();
        if gap.is_none() {
            order.waiting = false;
        }
        gap
    }

    /// What the store had of a gap: delivered in order. With `all`, the
    /// store gave everything it has there: the numbers it lacks (deleted by
    /// retention) are skipped (returned: how many); otherwise the rest of
    /// the gap is asked for again.
    pub(crate) fn fill(&self, room: &RoomName, events: Vec<Event>, all: bool) -> u64 {
        self.with(room, |o| o.fill(events, all)).unwrap_or(0)
    }

    /// Stored messages of `room` read after a bus outage: delivered in
    /// order, what was delivered already dropped.
    pub(crate) fn catch_up(&self, room: &RoomName, events: Vec<Event>) {
        self.with(room, |o| {
            for event in events {
                o.offer(Arc::new(event));
            }
        });
    }

    /// Asks the store thread to catch `room` up (again).
    pub(crate) fn request_catch_up(&self, room: RoomName) {
        let _ = self.wake.send(Wake::CatchUp(room));
    }

    /// Runs `f` on `room`'s order and delivers what it released, in order,
    /// under the lock (so two callers cannot interleave a room's messages);
    /// asks for a gap fill if one opened.
    fn with<T>(&self, room: &RoomName, f: impl FnOnce(&mut RoomOrder) -> T) -> Option<T> {
        let mut rooms = self.rooms.lock();
        let order = rooms.get_mut(room.as_str())?;
        let out = f(order);
        let topic = Topic::Room(room.clone());
        for event in order.ready.drain(..) {
            self.registry.deliver(&topic, Payload::Event(event));
        }
        if order.gap().is_some() && !order.waiting {
            order.waiting = true;
            let _ = self.wake.send(Wake::Gap(room.clone()));
        }
        Some(out)
    }
}

impl Delivery for Order {
    fn deliver(&self, topic: &Topic, payload: Payload) {
        if let (Topic::Room(room), Payload::Event(event)) = (topic, &payload) {
            if event.seq.is_some() {
                let event = event.clone();
                if self.with(room, |o| o.offer(event)).is_some() {
                    return;
                }
            }
        }
        self.registry.deliver(topic, payload);
    }

    fn failed(&self, origin: Origin) {
        self.registry.failed(origin);
    }

    /// Every watched room is caught up from the store: its messages other
    /// nodes stored while the bus was down reached nobody here, and a room
    /// without later traffic would never show the gap.
    fn resync(&self) {
        let rooms: Vec<RoomName> = self.rooms.lock().keys().cloned().collect();
        for room in rooms {
            self.request_catch_up(room);
        }
    }
}

/// The store thread's end of [`Order`]'s requests.
pub struct OrderWakes(pub(crate) mpsc::UnboundedReceiver<Wake>);

/// One room's order on this node.
#[derive(Default)]
pub(crate) struct RoomOrder {
    /// The next `seq` to deliver; `None` until the baseline is read.
    next: Option<u64>,
    /// Events that arrived ahead of `next` (or before the baseline).
    ahead: BTreeMap<u64, Arc<Event>>,
    /// Released, in order, for delivery.
    ready: Vec<Arc<Event>>,
    /// A gap fill is asked for.
    waiting: bool,
}

impl RoomOrder {
    fn offer(&mut self, event: Arc<Event>) {
        let Some(seq) = event.seq else { return };
        match self.next {
            // Delivered already, or stored before this node watched the room.
            Some(next) if seq < next => {}
            _ => {
                self.ahead.insert(seq, event);
                self.release();
            }
        }
    }

    /// Everything up to `last` was stored before the node watched the room.
    fn baseline(&mut self, last: u64) {
        if self.next.is_some() {
            return;
        }
        self.next = Some(last + 1);
        self.ahead = self.ahead.split_off(&(last + 1));
        self.release();
    }

    /// The store's copy of a gap; with `all`, whatever it lacks is skipped.
    fn fill(&mut self, events: Vec<Event>, all: bool) -> u64 {
        self.waiting = false;
        for event in events {
            self.offer(Arc::new(event));
        }
        let Some((from, to)) = self.gap().filter(|_| all) else {
            return 0;
        };
        self.next = Some(to + 1);
        self.release();
        to - from + 1
    }

    /// Moves the run that starts at `next` from `ahead` to `ready`.
    fn release(&mut self) {
        let Some(mut next) = self.next else { return };
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != next {
                break;
            }
            self.ready.push(entry.remove());
            next += 1;
        }
        self.next = Some(next);
    }

    /// The missing numbers before the first one held, if any.
    fn gap(&self) -> Option<(u64, u64)> {
        let next = self.next?;
        let (&first, _) = self.ahead.first_key_value()?;
        (first > next).then(|| (next, first - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClientId;

    fn event(seq: u64) -> Arc<Event> {
        let room = RoomName::parse("r", 64).unwrap();
        let sender = ClientId::parse("u", 64).unwrap();
        let mut e = Event::chat(Topic::Room(room), sender, "x");
        e.seq = Some(seq);
        Arc::new(e)
    }

    fn released(o: &mut RoomOrder) -> Vec<u64> {
        o.ready.drain(..).filter_map(|e| e.seq).collect()
    }

    #[test]
    fn holds_until_the_baseline_then_drops_what_was_before_it() {
        let mut o = RoomOrder::default();
        o.offer(event(4));
        o.offer(event(6));
        o.offer(event(5));
        assert_eq!(released(&mut o), Vec::<u64>::new());
        o.baseline(4);
        assert_eq!(released(&mut o), vec![5, 6]);
        o.baseline(9); // a second answer changes nothing
        o.offer(event(7));
        assert_eq!(released(&mut o), vec![7]);
    }

    #[test]
    fn reorders_and_drops_duplicates() {
        let mut o = RoomOrder::default();
        o.baseline(0);
        o.offer(event(2));
        o.offer(event(3));
        assert_eq!(o.gap(), Some((1, 1)));
        o.offer(event(1));
        assert_eq!(released(&mut o), vec![1, 2, 3]);
        o.offer(event(2));
        assert_eq!(released(&mut o), Vec::<u64>::new());
        assert_eq!(o.gap(), None);
    }

    #[test]
    fn a_catch_up_delivers_what_is_new_once() {
        let (order, _wakes) = Order::new(Arc::new(Registry::new(Vec::new())));
        let room = RoomName::parse("r", 64).unwrap();
        order.watch(&room);
        order.baseline(&room, 2);
        order.deliver(&Topic::Room(room.clone()), Payload::Event(event(3)));
        assert_eq!(order.delivered(&room), Some(3));
        // The store has 3 (delivered live already) to 5.
        let stored = [3, 4, 5].iter().map(|&s| (*event(s)).clone()).collect();
        order.catch_up(&room, stored);
        assert_eq!(order.delivered(&room), Some(5));
        // The same again changes nothing.
        let stored = [4, 5].iter().map(|&s| (*event(s)).clone()).collect();
        order.catch_up(&room, stored);
        assert_eq!(order.delivered(&room), Some(5));
    }

    #[test]
    fn a_fill_delivers_what_the_store_has_and_skips_the_rest() {
        let mut o = RoomOrder::default();
        o.baseline(0);
        o.offer(event(5));
        assert_eq!(o.gap(), Some((1, 4)));
        let stored = [1, 2].iter().map(|&s| (*event(s)).clone()).collect();
        assert_eq!(o.fill(stored, true), 2);
        assert_eq!(released(&mut o), vec![1, 2, 5]);
        assert_eq!(o.gap(), None);
    }
}
