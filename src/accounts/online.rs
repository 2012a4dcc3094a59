//! Who is online: a user is online while they have at least one connection.
//!
//! One node counts its own connections per user. With Redis, each node also
//! keeps its online users in Redis under a lease it renews (see
//! `broker::redis`'s presence lease), so that every node answers for all of
//! them and a node that dies takes its users offline when its lease ends.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// This node's connections per user, and (with Redis) the users other
/// nodes report online.
#[derive(Clone, Default)]
pub struct Online {
    inner: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    local: HashMap<String, usize>,
    /// The rooms each local user is in (connections per room), so that if
    /// this node dies another can tell those rooms the user went offline.
    rooms: HashMap<String, HashMap<String, usize>>,
    /// Users online on other nodes, per node (refreshed from Redis).
    remote: HashMap<String, HashSet<String>>,
}

impl Online {
    /// A connection of `user` opened here; true if the user just came online
    /// on this node.
    pub fn connected(&self, user: &str) -> bool {
        let mut s = self.inner.lock();
        let n = s.local.entry(user.to_owned()).or_default();
        *n += 1;
        *n == 1
    }

    /// A connection of `user` closed here; true if it was their last here.
    pub fn disconnected(&self, user: &str) -> bool {
        let mut s = self.inner.lock();
        let Some(n) = s.local.get_mut(user) else {
            return false;
        };
        *n -= 1;
        if *n == 0 {
            s.local.remove(user);
            return true;
        }
        false
    }

    /// A connection of `user` joined `room`.
    pub fn joined(&self, user: &str, room: &str) {
        let mut s = self.inner.lock();
        let rooms = s.rooms.entry(user.to_owned()).or_default();
        *rooms.entry(room.to_owned()).or_default() += 1;
    }

    /// A connection of `user` left `room`.
    pub fn left(&self, user: &str, room: &str) {
        let mut s = self.inner.lock();
        let Some(rooms) = s.rooms.get_mut(user) else {
            return;
        };
        if let Some(n) = rooms.get_mut(room) {
            *n -= 1;
            if *n == 0 {
                rooms.remove(room);
            }
        }
        if rooms.is_empty() {
            s.rooms.remove(user);
        }
    }

    /// Each local user with the rooms they are in.
    pub fn local_rooms(&self) -> HashMap<String, Vec<String>> {
        let s = self.inner.lock();
        s.local
            .keys()
            .map(|u| {
                let rooms = s
                    .rooms
                    .get(u)
                    .map(|r| r.keys().cloned().collect())
                    .unwrap_or_default();
                (u.clone(), rooms)
            })
            .collect()
    }

    /// Whether `user` has a connection on any node.
    pub fn is_online(&self, user: &str) -> bool {
        let s = self.inner.lock();
        s.local.contains_key(user) || s.remote.values().any(|users| users.contains(user))
    }

    /// What the other nodes report: node id → its online users.
    pub fn set_remote(&self, remote: HashMap<String, HashSet<String>>) {
        self.inner.lock().remote = remote;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_while_any_connection_is_open_on_any_node() {
        let o = Online::default();
        assert!(o.connected("u"));
        assert!(!o.connected("u"));
        assert!(!o.disconnected("u"));
        assert!(o.is_online("u"));
        assert!(o.disconnected("u"));
        assert!(!o.is_online("u"));
        let remote = HashMap::from([("n2".to_owned(), HashSet::from(["u".to_owned()]))]);
        o.set_remote(remote);
        assert!(o.is_online("u"));
    }
}
