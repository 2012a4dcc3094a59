//! Rate limits (token buckets), per user or per source address, shared by
//! all connections on this node: a client cannot get around a limit by
//! opening more connections. Chats and typing per user; failed logins per
//! account and per address, and new accounts per address (`auth.throttle`).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What is limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Message,
    Typing,
    /// A failed login (per account, and per source address).
    LoginFailure,
    /// A new account (per source address), whichever way it is made.
    NewAccount,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Buckets past this many are pruned of full ones (idle users).
const PRUNE_AT: usize = 10_000;

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, Action), Bucket>>,
}

impl RateLimiter {
    /// Takes one `action` for `who` at `per_minute` (a burst of up to
    /// `per_minute`, refilled evenly; 0: no limit), or says how long until
    /// one is free.
    pub fn take(
        &self,
        who: &str,
        action: Action,
        per_minute: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        self.bucket(who, action, per_minute, now, true)
    }

    /// Whether one `action` for `who` would be allowed now (or how long
    /// until it is), taking nothing: a login is checked before its costly
    /// hash, and only a failure is counted.
    pub fn check(
        &self,
        who: &str,
        action: Action,
        per_minute: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        self.bucket(who, action, per_minute, now, false)
    }

    fn bucket(
        &self,
        who: &str,
        action: Action,
        per_minute: u32,
        now: Instant,
        take: bool,
    ) -> Result<(), Duration> {
        if per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(per_minute);
        let per_sec = capacity / 60.0;
        let refill = |b: &mut Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * per_sec).min(capacity);
            b.at = now;
        };
        let mut buckets = self.buckets.lock();
        if buckets.len() >= PRUNE_AT {
            buckets.retain(|_, b| {
                refill(b);
                b.tokens < capacity
            });
        }
        let bucket = buckets.entry((who.to_owned(), action)).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        refill(bucket);
        if bucket.tokens >= 1.0 {
            if take {
                bucket.tokens -= 1.0;
            }
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_sec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_interval_per_user_and_action() {
        let r = RateLimiter::default();
        let t = Instant::now();
        for _ in 0..3 {
            assert!(r.take("u", Action::Message, 3, t).is_ok());
        }
        let wait = r.take("u", Action::Message, 3, t).unwrap_err();
        assert!(
            wait > Duration::from_secs(19) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(r.take("v", Action::Message, 3, t).is_ok(), "per user");
        assert!(r.take("u", Action::Typing, 3, t).is_ok(), "per action");
        assert!(r
            .take("u", Action::Message, 3, t + Duration::from_secs(20))
            .is_ok());
        assert!(r.take("u", Action::Message, 0, t).is_ok(), "0 is no limit");
    }

    #[test]
    fn a_check_takes_nothing() {
        let r = RateLimiter::default();
        let t = Instant::now();
        for _ in 0..5 {
            assert!(r.check("a", Action::LoginFailure, 1, t).is_ok());
        }
        assert!(r.take("a", Action::LoginFailure, 1, t).is_ok());
        assert!(r.check("a", Action::LoginFailure, 1, t).is_err());
    }
}
