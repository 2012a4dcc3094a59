//! A cap on presence events per room, so a join storm is not N² messages.
//!
//! Every join or leave is announced to every member: N clients joining one
//! room at once cost N² deliveries, which (before this cap) filled every
//! member's queue within one turn of the event loop. Each shard lets through
//! at most `limits.presence_per_second` events per room per one-second
//! window; the rest are not sent (counted as suppressed). Presence is a hint
//! to clients, not a record: a client that needs the exact member list asks
//! for it rather than replaying every presence event.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::protocol::RoomName;

const WINDOW: Duration = Duration::from_secs(1);

/// One shard's presence budget per room (owned by the shard's thread).
pub struct PresenceLimiter {
    per_second: u32,
    windows: RefCell<HashMap<RoomName, Window>>,
}

struct Window {
    start: Instant,
    sent: u32,
}

impl PresenceLimiter {
    pub fn new(per_second: u32) -> PresenceLimiter {
        PresenceLimiter {
            per_second,
            windows: RefCell::new(HashMap::new()),
        }
    }

    /// Whether one more presence event may go to `room` now.
    pub fn allow(&self, room: &RoomName, now: Instant) -> bool {
        if self.per_second == 0 {
            return false;
        }
        let mut windows = self.windows.borrow_mut();
        let w = windows.entry(room.clone()).or_insert(Window {
            start: now,
            sent: 0,
        });
        if now.saturating_duration_since(w.start) >= WINDOW {
            *w = Window {
                start: now,
                sent: 0,
            };
        }
        if w.sent < self.per_second {
            w.sent += 1;
            return true;
        }
        false
    }

    /// Forgets rooms whose window has ended (called by the heartbeat sweep).
    pub fn prune(&self, now: Instant) {
        self.windows
            .borrow_mut()
            .retain(|_, w| now.saturating_duration_since(w.start) < WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_n_per_room_per_window() {
        let limiter = PresenceLimiter::new(3);
        let (a, b) = (
            RoomName::parse("a", 64).unwrap(),
            RoomName::parse("b", 64).unwrap(),
        );
        let t0 = Instant::now();
        let allowed = (0..10).filter(|_| limiter.allow(&a, t0)).count();
        assert_eq!(allowed, 3);
        assert!(limiter.allow(&b, t0), "rooms have separate budgets");
        assert!(limiter.allow(&a, t0 + WINDOW), "a new window");
        limiter.prune(t0 + WINDOW * 3);
        assert!(limiter.windows.borrow().is_empty());
        assert!(
            !PresenceLimiter::new(0).allow(&a, t0),
            "0 turns presence off"
        );
    }
}
