//! Presence coalescing per room, so a join storm is not N² messages.
//!
//! Every join or leave is announced to every member: N clients joining one
//! room at once cost N² deliveries, which (before any limit) filled every
//! member's queue within one turn of the event loop. Each shard announces at
//! most `limits.presence_per_second` joins and leaves per room one by one
//! within a one-second window; the rest of the window's changes are
//! coalesced (the latest status per client) into one summary event when the
//! window ends, listing at most `limits.presence_summary_max` clients (the
//! rest are counted). A storm of 10,000 joins into one room is then a few
//! dozen single events and one summary per shard per second, to each
//! member.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::{ClientId, RoomName};

const WINDOW: Duration = Duration::from_secs(1);

/// One shard's presence budget per room (owned by the shard's thread).
pub struct PresenceLimiter {
    per_second: u32,
    summary_max: usize,
    windows: RefCell<HashMap<RoomName, Window>>,
}

struct Window {
    start: Instant,
    sent: u32,
    /// Changes over the budget, latest status per client (an empty map
    /// allocates nothing).
    pending: HashMap<ClientId, bool>,
}

/// A window's coalesced changes: who came online and who went offline
/// (each at most `presence_summary_max`, in name order), and how many more
/// changed than are listed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub online: Vec<ClientId>,
    pub offline: Vec<ClientId>,
    pub more: usize,
}

impl PresenceLimiter {
    pub fn new(per_second: u32, summary_max: usize) -> PresenceLimiter {
        PresenceLimiter {
            per_second,
            summary_max,
            windows: RefCell::new(HashMap::new()),
        }
    }

    /// Whether presence is on at all (`presence_per_second` > 0).
    pub fn enabled(&self) -> bool {
        self.per_second > 0
    }

    /// Whether `client`'s change to `online` in `room` may be announced now;
    /// `false`: it was kept for the window's summary ([`Self::due`]).
    pub fn admit(&self, room: &RoomName, client: &ClientId, online: bool, now: Instant) -> bool {
        if !self.enabled() {
            return false;
        }
        let mut windows = self.windows.borrow_mut();
        let w = windows.entry(room.clone()).or_insert(Window {
            start: now,
            sent: 0,
            pending: HashMap::new(),
        });
        // A window with changes waiting keeps collecting until its summary
        // went out: a later single event must not overtake it.
        if w.pending.is_empty() && now.saturating_duration_since(w.start) >= WINDOW {
            w.start = now;
            w.sent = 0;
        }
        if w.pending.is_empty() && w.sent < self.per_second {
            w.sent += 1;
            return true;
        }
        w.pending.insert(client.clone(), online);
        false
    }

    /// The summaries of windows that ended with changes waiting (their
    /// rooms start a new window); forgets quiet rooms whose window ended.
    pub fn due(&self, now: Instant) -> Vec<(RoomName, Summary)> {
        let mut out = Vec::new();
        self.windows.borrow_mut().retain(|room, w| {
            if now.saturating_duration_since(w.start) < WINDOW {
                return true;
            }
            if !w.pending.is_empty() {
                let pending = std::mem::take(&mut w.pending);
                out.push((room.clone(), self.summarise(pending)));
                // The summary counts as this window's announcement.
                w.start = now;
                w.sent = self.per_second;
                return true;
            }
            false
        });
        out
    }

    fn summarise(&self, pending: HashMap<ClientId, bool>) -> Summary {
        let total = pending.len();
        let mut changes: Vec<(ClientId, bool)> = pending.into_iter().collect();
        changes.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut summary = Summary::default();
        for (client, online) in changes.into_iter().take(self.summary_max) {
            match online {
                true => summary.online.push(client),
                false => summary.offline.push(client),
            }
        }
        summary.more = total - summary.online.len() - summary.offline.len();
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ClientId {
        ClientId::parse(s, 64).unwrap()
    }

    #[test]
    fn over_the_budget_changes_wait_for_one_summary() {
        let limiter = PresenceLimiter::new(3, 100);
        let (a, b) = (
            RoomName::parse("a", 64).unwrap(),
            RoomName::parse("b", 64).unwrap(),
        );
        let t0 = Instant::now();
        let now: Vec<bool> = (0..6)
            .map(|i| limiter.admit(&a, &id(&format!("c{i}")), true, t0))
            .collect();
        assert_eq!(now, [true, true, true, false, false, false]);
        // c4 left again before the summary: its latest status counts.
        assert!(!limiter.admit(&a, &id("c4"), false, t0));
        assert!(
            limiter.admit(&b, &id("x"), true, t0),
            "rooms have separate budgets"
        );
        assert!(limiter.due(t0).is_empty(), "the window has not ended");
        // Past the window, a change still joins the waiting summary.
        assert!(!limiter.admit(&a, &id("c6"), true, t0 + WINDOW));
        let due = limiter.due(t0 + WINDOW);
        assert_eq!(due.len(), 1);
        let (room, summary) = &due[0];
        assert_eq!(room, &a);
        assert_eq!(
            summary,
            &Summary {
                online: vec![id("c3"), id("c5"), id("c6")],
                offline: vec![id("c4")],
                more: 0,
            }
        );
        // The summary used the new window's budget: later changes wait for
        // the next one.
        assert!(!limiter.admit(&a, &id("c7"), true, t0 + WINDOW));
        assert_eq!(limiter.due(t0 + WINDOW * 2).len(), 1);
        assert!(limiter.admit(&a, &id("c8"), true, t0 + WINDOW * 3));
        // Quiet rooms are forgotten.
        assert!(limiter.due(t0 + WINDOW * 5).is_empty());
        assert!(limiter.windows.borrow().is_empty());
    }

    #[test]
    fn a_summary_lists_at_most_its_maximum_and_counts_the_rest() {
        let limiter = PresenceLimiter::new(1, 2);
        let room = RoomName::parse("r", 64).unwrap();
        let t0 = Instant::now();
        for i in 0..6 {
            limiter.admit(&room, &id(&format!("c{i}")), i % 2 == 0, t0);
        }
        let (_, summary) = limiter.due(t0 + WINDOW).pop().unwrap();
        assert_eq!(summary.online, [id("c2")]);
        assert_eq!(summary.offline, [id("c1")]);
        assert_eq!(summary.more, 3);
    }

    #[test]
    fn zero_turns_presence_off() {
        let limiter = PresenceLimiter::new(0, 100);
        let room = RoomName::parse("r", 64).unwrap();
        let t0 = Instant::now();
        assert!(!limiter.admit(&room, &id("a"), true, t0));
        assert!(limiter.due(t0 + WINDOW).is_empty());
    }
}
